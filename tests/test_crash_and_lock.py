"""Real processes: SIGKILL an apply mid-run against `kmigrate sandbox serve`; two applies at once;
no secret anywhere. These start subprocesses, so they take a few seconds each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kmigrate.config import load_project
from kmigrate.journal import Journal
from kmigrate.sandbox import Sandbox

from .projects import TOKEN, free_port, items_project, write_changeset, write_items_csv

BATCH = 2000  # records per bulk request: 20 calls x 100


def kmigrate(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kmigrate", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def wait_for_server(url: str, proc: subprocess.Popen, deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read()
        try:
            httpx.get(
                f"{url}/k/v1/app.json", params={"id": 1}, headers={"X-Cybozu-API-Token": TOKEN}, timeout=1
            )
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the sandbox server did not start")


@pytest.fixture
def served_items(tmp_path):
    """An items project whose `remote` env is a `kmigrate sandbox serve` process on localhost."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = items_project(tmp_path, base_url=url)
    store = tmp_path / "served.sqlite3"
    server = kmigrate(
        "sandbox",
        "--file",
        str(root / "sandbox.yaml"),
        "--store",
        str(store),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--quiet",
    )
    try:
        wait_for_server(url, server)
        yield root, store
    finally:
        server.terminate()
        server.wait(timeout=10)


def codes_in(root: Path, store: Path) -> list[str]:
    with Sandbox.open(root / "sandbox.yaml", store) as sandbox:
        return [r["code"]["value"] for r in sandbox.records(1)]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_applies_every_record_exactly_once(served_items):
    root, store = served_items
    total = 20 * BATCH
    write_items_csv(root, "items.csv", range(total))
    write_changeset(
        root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    creds = {"KINTONE_API_TOKEN": TOKEN}

    run = kmigrate("-C", str(root), "-e", "remote", "apply", "--yes", env=creds)
    # Plain progress lines (no terminal): kill as soon as the third batch is reported. Wherever
    # the kill lands (between batches, inside the next request, before its answer is journaled),
    # `apply` alone must finish the job: an in-doubt batch is settled by reading Kintone.
    for line in run.stderr:
        if "(2000 records; 3/20 bulk requests)" in line:
            break
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL

    env = load_project(root).environment("remote")
    with Journal.open(env.journal_path) as journal:
        states = [b.state for b in journal.batches("0001")]
    assert states[:3] == ["applied"] * 3 and "failed" not in states

    code, output = finish(kmigrate("-C", str(root), "-e", "remote", "apply", "--yes", env=creds))
    assert code == 0, output
    codes = codes_in(root, store)
    assert len(codes) == total and len(set(codes)) == total  # every record, exactly once
    with Journal.open(env.journal_path) as journal:
        assert {b.state for b in journal.batches("0001")} == {"applied"}
        kinds = [e.kind for e in journal.events()]
        assert "unlocked" in kinds  # the dead run's lock was taken over, logged
        assert "resolved" not in kinds  # no person was needed
        assert kinds.count("reconciled") == states.count("sent")


@pytest.mark.slow
def test_two_applies_never_interleave(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env = load_project(root).environment()
    # Another process holds the journal's lock, as a running apply would, until told to let go.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from kmigrate.journal import Journal\n"
                f"j = Journal.open({str(env.journal_path)!r}); j.acquire_lock()\n"
                "print('locked', flush=True); sys.stdin.readline(); j.release_lock(); print('released', flush=True)"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, output = finish(kmigrate("-C", str(root), "apply"))
        assert code == 1 and "locked by" in output and f"pid {holder.pid}" in output, output
        assert codes_in(root, env.sandbox_store) == []  # nothing was sent

        waiting = kmigrate("-C", str(root), "apply", "--wait", "60")
        # Let go only once the second apply has started its run (journaled before it asks for
        # the lock), so it overlaps the holder: its lock comes from waiting, not from a slow start.
        deadline = time.monotonic() + 30
        while len(journal_runs(env.journal_path)) < 2:
            assert waiting.poll() is None and time.monotonic() < deadline, "the waiting apply never started"
            time.sleep(0.02)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        code, output = finish(waiting)
        assert code == 0, output
        assert codes_in(root, env.sandbox_store) == ["A"]
        runs = journal_runs(env.journal_path)
        assert [r.outcome for r in runs] == ["locked out", "applied"]
    finally:
        holder.kill()
        holder.wait(timeout=10)


def journal_runs(path: Path) -> list:
    if not path.exists():
        return []
    with Journal.open(path) as journal:
        return journal.runs()


@pytest.mark.slow
def test_no_secret_in_output_plan_or_journal(served_items):
    root, store = served_items
    write_changeset(
        root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}, {code: B}]}\n"
    )
    write_changeset(
        root, "V0002__b.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n"
    )  # fails: unique
    creds = {"KINTONE_API_TOKEN": TOKEN, "KINTONE_PASSWORD": "pw-SECRET-1234", "KINTONE_USERNAME": "alice"}
    outputs = []
    for args in (
        ["plan", "--format", "json"],
        ["plan"],
        ["apply", "--yes"],
        ["status"],
        ["history"],
        ["apply", "--yes", "--dry-run"],
    ):
        code, output = finish(
            kmigrate("-C", str(root), "-e", "remote", *args, env={**creds, "KMIGRATE_DEBUG": ""})
        )
        outputs.append(output)
    assert "GAIA" in "".join(outputs) or "CB_VA01" in "".join(
        outputs
    )  # the failing apply did talk to Kintone
    env = load_project(root).environment("remote")
    journal_bytes = b"".join(p.read_bytes() for p in env.journal_path.parent.glob("*"))
    for secret in (TOKEN, "pw-SECRET-1234"):
        assert all(secret not in out for out in outputs)
        assert secret.encode() not in journal_bytes


# ---- in-process: Ctrl-C and journal failures at each step of a send ----------------------------

from click.testing import CliRunner  # noqa: E402

from kmigrate import api  # noqa: E402
from kmigrate.cli import main  # noqa: E402
from kmigrate.client import NO_RETRY, Client  # noqa: E402
from kmigrate.config import Credentials  # noqa: E402
from kmigrate.errors import InputError, JournalError, TransportError  # noqa: E402
from kmigrate.sandbox import SANDBOX_BASE_URL  # noqa: E402

CREDS = Credentials(api_tokens=(TOKEN,))


class OnBulk(httpx.BaseTransport):
    """Forwards to the sandbox; on the n-th bulk request raises ``exc``, after Kintone ran it
    (``delivered``) or before the request left."""

    def __init__(self, inner: httpx.BaseTransport, n: int, exc: BaseException, delivered: bool):
        self.inner, self.n, self.exc, self.delivered, self.bulks = inner, n, exc, delivered, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("bulkRequest.json"):
            self.bulks += 1
            if self.bulks == self.n:
                if self.delivered:
                    self.inner.handle_request(request)
                raise self.exc
        return self.inner.handle_request(request)


def items_4500(tmp_path):
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(4500))  # batches of 2000, 2000, 500
    write_changeset(
        root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    project = load_project(root)
    return root, project, project.environment()


def cli(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def journaled(env):
    with Journal.open(env.journal_path) as journal:
        return (
            [b.state for b in journal.batches("0001")],
            journal.lock_holder(),
            [r.outcome for r in journal.runs()],
        )


def test_ctrl_c_during_a_send_leaves_the_batch_in_doubt_with_a_message_and_no_lock(tmp_path, monkeypatch):
    root, project, env = items_4500(tmp_path)
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Client(
            SANDBOX_BASE_URL,
            CREDS,
            transport=OnBulk(sandbox.transport(), 2, KeyboardInterrupt(), delivered=True),
        )
        monkeypatch.setattr(api, "connect", lambda env: client)
        result = cli(root, "apply")
        assert result.exit_code == 1, result.output
        assert "interrupted (Ctrl-C) while the bulk request was being sent" in result.output
        assert "V0001__items" in result.output and "kmigrate resolve 0001 1 --applied" in result.output
        assert "this run applied 1 batch(es), 2000 record(s)" in result.output
        assert journaled(env) == (["applied", "sent", "pending"], None, ["interrupted"])

        monkeypatch.setattr(
            api, "connect", lambda env: Client(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport())
        )
        assert cli(root, "resolve", "0001", "1", "--applied").exit_code == 0  # Kintone did run it
        assert cli(root, "apply").exit_code == 0
        codes = sorted(r["code"]["value"] for r in sandbox.records(1))
    assert codes == [f"I{i:06d}" for i in range(4500)]  # every record exactly once


def test_ctrl_c_between_batches_says_apply_resumes(tmp_path, monkeypatch):
    root, project, env = items_4500(tmp_path)
    original, calls = Journal.mark_sent, []

    def mark_sent(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Journal, "mark_sent", mark_sent)
    result = cli(root, "apply")
    assert (
        result.exit_code == 1
        and "interrupted (Ctrl-C)" in result.output
        and "`kmigrate apply` resumes" in result.output
    )
    assert journaled(env) == (["applied", "pending", "pending"], None, ["interrupted"])
    monkeypatch.setattr(Journal, "mark_sent", original)
    assert cli(root, "apply").exit_code == 0
    assert len(codes_in(root, env.sandbox_store)) == 4500


def test_a_journal_that_fails_after_kintone_applied_says_so_and_is_not_hidden_by_the_cleanup(
    tmp_path, monkeypatch
):
    root, project, env = items_4500(tmp_path)
    original = Journal.mark_applied

    def mark_applied(self, version, index, *args, **kwargs):
        if index == 1:  # the journal turns read-only: this write and every later one fail
            self.db.execute("PRAGMA query_only = ON")
        return original(self, version, index, *args, **kwargs)

    monkeypatch.setattr(Journal, "mark_applied", mark_applied)
    with pytest.raises(JournalError) as info:
        api.apply(api.Context(project, env))
    text = str(info.value)
    assert "V0001__items batch 1: Kintone applied it, but the journal could not record that" in text
    assert "kmigrate resolve 0001 1 --applied" in text
    states, holder, outcomes = journaled(env)
    assert states == ["applied", "sent", "pending"] and outcomes == [None]
    assert holder is not None and holder.pid == os.getpid()  # stale once this process exits
    monkeypatch.setattr(Journal, "mark_applied", original)
    api.unlock(api.Context(project, env))
    api.resolve(api.Context(project, env), "0001", 1, applied=True)
    api.apply(api.Context(project, env))
    assert sorted(codes_in(root, env.sandbox_store)) == [f"I{i:06d}" for i in range(4500)]


def test_a_request_that_never_left_goes_back_to_pending_and_names_the_batch(tmp_path):
    root, project, env = items_4500(tmp_path)
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        refused = httpx.ConnectError("connection refused")
        client = Client(
            SANDBOX_BASE_URL,
            CREDS,
            transport=OnBulk(sandbox.transport(), 2, refused, delivered=False),
            retry=NO_RETRY,
        )
        with pytest.raises(TransportError, match="nothing was sent") as info:
            api.apply(api.Context(project, env), client=client)
        assert (
            not info.value.sent_maybe and "V0001__items" in str(info.value) and "batch 1" in str(info.value)
        )
        assert journaled(env)[0] == ["applied", "pending", "pending"]
        assert len(sandbox.records(1)) == 2000


def test_a_bulk_the_client_refuses_before_sending_is_not_left_in_doubt(tmp_path):
    root, project, env = items_4500(tmp_path)

    class Refusing(Client):
        def bulk(self, requests, guest_space_id=None):
            raise InputError("bulk request 0: not allowed")

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InputError, match="not allowed") as info:
            api.apply(
                api.Context(project, env),
                client=Refusing(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()),
            )
    assert "V0001__items" in str(info.value)
    assert journaled(env)[0] == ["pending", "pending", "pending"]
