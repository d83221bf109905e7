"""Real processes against `kmigrate sandbox serve`: fresh runners at once, SIGKILLs at the
points that matter. Every wait has a timeout; the kill points come from the server's own
kill switch (its Nth request), so no sleep decides anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kmigrate.config import load_project
from kmigrate.journal import UNKNOWN_ID, Journal
from kmigrate.sandbox import Sandbox
from tests.projects import free_port

from .projects import JOURNAL_APP, item_codes, write_project

pytestmark = pytest.mark.slow

USER = {"KINTONE_USERNAME": "ci", "KINTONE_PASSWORD": "pw-SECRET-2"}
EXPECTED = sorted([f"I{i:05d}" for i in range(250)] + ["LATE-1"])


def kmigrate(*args: str, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kmigrate", *args],
        env={**os.environ, **USER},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


class Served:
    def __init__(self, tmp_path: Path, *extra: str):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.definition = write_project(tmp_path / "definition", base_url=self.url)
        self.store = tmp_path / "served.sqlite3"
        self.pid_file = tmp_path / "client.pid"
        self.process = kmigrate(
            "sandbox",
            "--file",
            str(self.definition / "sandbox.yaml"),
            "--store",
            str(self.store),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--quiet",
            *extra,
        )
        end = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            try:
                httpx.get(f"{self.url}/__sandbox/faults", timeout=1)  # not counted by the kill switch
                return
            except httpx.TransportError:
                assert time.monotonic() < end, "the sandbox server did not start"
                time.sleep(0.05)

    def runner(self, name: str) -> Path:
        """A fresh runner's folder: the project's files, no .kmigrate/."""
        return write_project(self.tmp_path / name, base_url=self.url)

    def apply(self, root: Path, *args: str) -> subprocess.Popen:
        return kmigrate("-C", str(root), "apply", "--yes", *args)

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=20)

    def records(self, app: int) -> list[dict]:
        with Sandbox.open(self.definition / "sandbox.yaml", self.store) as box:
            return box.records(app)

    def markers(self) -> list[dict]:
        return [r for r in self.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def journal_of(root: Path) -> Journal:
    return Journal.open(load_project(root).environment().journal_path)


def test_four_fresh_runners_started_at_once_apply_each_batch_exactly_once(served: Served) -> None:
    runners = [served.runner(f"runner-{n}") for n in range(4)]
    processes = [served.apply(root, "--wait", "120") for root in runners]
    outcomes = [finish(p) for p in processes]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
    assert "pw-SECRET-2" not in "".join(out for _, out in outcomes)
    served.stop()
    assert item_codes(served.records(1)) == EXPECTED
    assert {r["Status"]["value"] for r in served.records(1) if r["code"]["value"] != "LATE-1"} == {"Checked"}
    assert "pw-SECRET-2" not in json.dumps(served.records(JOURNAL_APP))  # no secret in the journal app
    keys = sorted(r["key"]["value"] for r in served.markers())
    assert keys == ["items:0001:0", "items:0001:1", "items:0002:0"]
    applied_here = []
    for root in runners:
        with journal_of(root) as journal:
            assert journal.state()["0002"].state == "applied"  # every runner knows everything
            applied_here += [e for e in journal.events(kinds=["applied"])]
    assert len(applied_here) == 3  # each batch applied by exactly one runner, all told


def test_a_kill_between_the_bulk_and_the_marker_ids_ends_exact(tmp_path: Path) -> None:
    # Request 7 of a fresh run is the PUT of batch 0's ids into its marker (fields check, lease
    # read and take, markers read, the reconciliation's probe, bulk 0, then the ids): SIGKILL the
    # runner before it is handled.
    served = Served(tmp_path, "--kill-client", "7:before", "--client-pid-file", str(tmp_path / "client.pid"))
    try:
        root = served.runner("a")
        proc = served.apply(root)
        (tmp_path / "client.pid").write_text(str(proc.pid))
        code, out = finish(proc)
        assert code == -9, out
        assert [r["ids"]["value"] for r in served.markers()] == [""]
        code, out = finish(served.apply(root))  # the same runner comes back
        assert code == 0, out
        assert served.markers()[0]["ids"]["value"].startswith('{"first":[')
        fresh = served.runner("fresh")
        code, out = finish(served.apply(fresh))
        assert code == 0 and "Nothing to do" in out, out
        with journal_of(fresh) as journal:
            assert len(journal.refs()["first"]) == 250 and UNKNOWN_ID not in journal.refs()["first"]
    finally:
        served.stop()
    assert item_codes(served.records(1)) == EXPECTED


def test_a_kill_after_kintone_committed_a_bulk_is_settled_by_its_marker(tmp_path: Path) -> None:
    # Request 10 is V0002's bulk: Kintone commits it, the runner dies before the answer.
    served = Served(tmp_path, "--kill-client", "10:commit", "--client-pid-file", str(tmp_path / "client.pid"))
    try:
        root = served.runner("a")
        proc = served.apply(root)
        (tmp_path / "client.pid").write_text(str(proc.pid))
        code, out = finish(proc)
        assert code == -9, out
        with journal_of(root) as journal:
            assert [(b.changeset, b.index) for b in journal.in_doubt()] == [("0002", 0)]
        code, out = finish(served.apply(root))
        assert code == 0, out  # no `kmigrate resolve`: the marker settled it
        with journal_of(root) as journal:
            assert journal.in_doubt() == [] and journal.state()["0002"].state == "applied"
    finally:
        served.stop()
    assert item_codes(served.records(1)) == EXPECTED


def test_a_dead_runners_lease_expires_and_the_next_runner_takes_it_over(tmp_path: Path) -> None:
    # The first runner is killed at its first bulk, holding the lease (5 s, as the test sets);
    # the next one queues (--wait) until it expires, takes it over and logs that.
    served = Served(tmp_path, "--kill-client", "6:before", "--client-pid-file", str(tmp_path / "client.pid"))
    try:
        root = served.runner("a")
        proc = served.apply(root, "--lease", "5")
        (tmp_path / "client.pid").write_text(str(proc.pid))
        assert finish(proc)[0] == -9
        # As if it had died on another machine: its process cannot be seen, only the expiry counts.
        query = {"app": JOURNAL_APP, "query": 'key = "items:lease"'}
        lease = httpx.get(f"{served.url}/k/v1/records.json", params=query, timeout=10).json()["records"][0]
        moved = {
            "app": JOURNAL_APP,
            "id": lease["$id"]["value"],
            "record": {"host": {"value": "other-machine"}},
        }
        assert httpx.put(f"{served.url}/k/v1/record.json", json=moved, timeout=10).status_code == 200
        second = served.runner("b")
        code, out = finish(served.apply(second, "--wait", "60"))
        assert code == 0, out
        with journal_of(second) as journal:
            (taken,) = journal.events(kinds=["unlocked"])
        assert taken.detail is not None and "expired" in taken.detail["reason"]
    finally:
        served.stop()
    assert item_codes(served.records(1)) == EXPECTED
