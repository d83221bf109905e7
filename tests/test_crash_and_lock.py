"""Real processes: SIGKILL an apply mid-run against `kmigrate sandbox serve`; two applies at once;
no secret anywhere. These start subprocesses, so they take a few seconds each."""

from __future__ import annotations

import os
import random
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
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def wait_for_server(url: str, proc: subprocess.Popen, deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read()
        try:
            httpx.get(f"{url}/k/v1/app.json", params={"id": 1}, headers={"X-Cybozu-API-Token": TOKEN}, timeout=1)
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
    server = kmigrate("sandbox", "--file", str(root / "sandbox.yaml"), "--store", str(store),
                      "serve", "--host", "127.0.0.1", "--port", str(port), "--quiet")
    try:
        wait_for_server(url, server)
        yield root, store
    finally:
        server.terminate()
        server.wait(timeout=10)


def codes_in(root: Path, store: Path) -> list[str]:
    with Sandbox.open(root / "sandbox.yaml", store) as sandbox:
        return [r["code"]["value"] for r in sandbox.records(1)]


def test_sigkill_mid_run_then_resume_applies_every_record_exactly_once(served_items):
    root, store = served_items
    total = 20 * BATCH
    write_items_csv(root, "items.csv", range(total))
    write_changeset(root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n")
    creds = {"KINTONE_API_TOKEN": TOKEN}

    run = kmigrate("-C", str(root), "-e", "remote", "apply", "--yes", env=creds)
    # Plain progress lines (no terminal): kill somewhere after the third batch, at a random moment
    # so that across runs the kill lands both between batches and inside a request.
    for line in run.stderr:
        if "batch 3/20 applied" in line:
            break
    time.sleep(random.uniform(0, 0.15))
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL

    env = load_project(root).environment("remote")
    with Journal.open(env.journal_path) as journal:
        states = [b.state for b in journal.batches("0001")]
    assert states[:3] == ["applied"] * 3 and "failed" not in states

    code, output = finish(kmigrate("-C", str(root), "-e", "remote", "apply", "--yes", env=creds))
    if "sent" in states:  # the kill fell between send and answer: settle it by looking at Kintone
        assert code == 1 and "resolve 0001" in output, output
        index = states.index("sent")
        wanted = {f"I{i:06d}" for i in range(index * BATCH, (index + 1) * BATCH)}
        present = len(wanted & set(codes_in(root, store)))
        assert present in (0, BATCH), "a bulk request is all-or-nothing"
        verdict = "--applied" if present == BATCH else "--not-applied"
        code, output = finish(kmigrate("-C", str(root), "-e", "remote", "resolve", "0001", str(index), verdict))
        assert code == 0, output
        code, output = finish(kmigrate("-C", str(root), "-e", "remote", "apply", "--yes", env=creds))
    assert code == 0, output

    codes = codes_in(root, store)
    assert len(codes) == total and len(set(codes)) == total  # every record, exactly once
    with Journal.open(env.journal_path) as journal:
        assert {b.state for b in journal.batches("0001")} == {"applied"}
        assert any(e.kind == "unlocked" for e in journal.events())  # the dead run's lock was taken over, logged


def test_two_applies_never_interleave(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env = load_project(root).environment()
    # Another process holds the journal's lock, as a running apply would.
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from kmigrate.journal import Journal\n"
            f"j = Journal.open({str(env.journal_path)!r}); j.acquire_lock()\n"
            "print('locked', flush=True); time.sleep(float(sys.argv[1])); j.release_lock()"
        ), "3"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    code, output = finish(kmigrate("-C", str(root), "apply"))
    assert code == 1 and "locked by" in output and f"pid {holder.pid}" in output, output
    assert codes_in(root, env.sandbox_store) == []  # nothing was sent

    code, output = finish(kmigrate("-C", str(root), "apply", "--wait", "30"))  # waits for the holder, then runs
    assert code == 0, output
    holder.wait(timeout=10)
    assert codes_in(root, env.sandbox_store) == ["A"]


def test_no_secret_in_output_plan_or_journal(served_items):
    root, store = served_items
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}, {code: B}]}\n")
    write_changeset(root, "V0002__b.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")  # fails: unique
    creds = {"KINTONE_API_TOKEN": TOKEN, "KINTONE_PASSWORD": "pw-SECRET-1234", "KINTONE_USERNAME": "alice"}
    outputs = []
    for args in (["plan", "--format", "json"], ["plan"], ["apply", "--yes"], ["status"], ["history"], ["apply", "--yes", "--dry-run"]):
        code, output = finish(kmigrate("-C", str(root), "-e", "remote", *args, env={**creds, "KMIGRATE_DEBUG": ""}))
        outputs.append(output)
    assert "GAIA" in "".join(outputs) or "CB_VA01" in "".join(outputs)  # the failing apply did talk to Kintone
    env = load_project(root).environment("remote")
    journal_bytes = b"".join(p.read_bytes() for p in env.journal_path.parent.glob("*"))
    for secret in (TOKEN, "pw-SECRET-1234"):
        assert all(secret not in out for out in outputs)
        assert secret.encode() not in journal_bytes
