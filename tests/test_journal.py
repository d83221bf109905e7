"""The journal: schema and versions, the sent/applied/failed protocol, refs, events, the lock."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils

from kmigrate.client import Client
from kmigrate.config import Credentials
from kmigrate.errors import InDoubtError, JournalError, KintoneError, LockedError
from kmigrate.journal import MIGRATIONS, SCHEMA_VERSION, Actor, Journal
from kmigrate.plan import APPLIED, FAILED, PARTIAL, PENDING, SENT, Batch, Call, ChangesetPlan, Segment

HOST = socket.gethostname()


def make_changeset(
    version: str = "0001", batches: int = 2, records: int = 3, tag: str = "x"
) -> ChangesetPlan:
    """A changeset of `batches` bulk requests, each adding `records` records to app 1."""
    out = []
    for b in range(batches):
        records_payload = [{"title": {"value": f"{tag}-{b}-{r}"}} for r in range(records)]
        call = Call(
            "POST",
            "/k/v1/records.json",
            {"app": 1, "records": records_payload},
            (Segment(0, b * records, records, ref="orders"),),
        )
        out.append(Batch(index=b, calls=(call,)))
    return ChangesetPlan(
        version=version,
        name=f"cs_{version}",
        path=Path(f"changesets/V{version}__cs.yaml"),
        source_checksum=f"src-{tag}",
        rendered_checksum=f"out-{tag}",
        batches=tuple(out),
    )


def started_journal(path: Path) -> tuple[Journal, ChangesetPlan, int]:
    """A file journal with ``make_changeset()`` recorded and a run started."""
    j = Journal.open(path)
    cs = make_changeset()
    j.record_changeset(cs)
    return j, cs, j.start_run("sandbox")


def memory_journal(**kw: Any) -> Journal:
    return Journal(sqlite_utils.Database(memory=True), **kw)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def read_other_connection(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# ---- schema ---------------------------------------------------------------------------------


def test_a_new_journal_has_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "prod.db"
    j = Journal.open(path)
    assert path.is_file() and j.schema_version == SCHEMA_VERSION
    assert {"meta", "runs", "changesets", "batches", "refs", "events", "lock"} <= set(j.db.table_names())
    j.close()
    assert Journal.open(path).schema_version == SCHEMA_VERSION  # reopening keeps it


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path).close()
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError) as err:
        Journal.open(path)
    assert "schema version 99" in str(err.value) and "upgrade kmigrate" in str(err.value)


def test_an_older_schema_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal.open(path) as j:
        run = j.start_run("prod")

    def add_note(db: sqlite_utils.Database) -> None:
        db.table("runs").add_column("note", str)

    with Journal.open(path, migrations=[*MIGRATIONS, add_note]) as j:
        assert j.schema_version == SCHEMA_VERSION + 1
        assert "note" in j.db.table("runs").columns_dict
        assert [r["id"] for r in j.db.query("SELECT id FROM runs")] == [run]


def test_a_version_1_journal_gains_the_reconciliation_columns_and_keeps_its_batches(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    cs = make_changeset(batches=1)
    with Journal.open(path, migrations=MIGRATIONS[:1]) as old:
        assert old.schema_version == 1 and "probe" not in old.db.table("batches").columns_dict
        old.db.table("changesets").insert(
            {
                "version": "0001",
                "name": "cs",
                "path": "p",
                "source_checksum": "s",
                "rendered_checksum": "r",
                "state": "pending",
                "batch_count": 1,
            }
        )
        old.db.table("batches").insert(
            {"changeset": "0001", "idx": 0, "hash": cs.batches[0].hash, "state": SENT}
        )
    with Journal.open(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        (batch,) = j.in_doubt()
        assert (batch.state, batch.probe, batch.done_calls, batch.done_hash) == (SENT, None, 0, None)
        j.resolve("0001", 0, applied=False)
        assert j.batches("0001")[0].state == PENDING


def test_a_version_2_journal_gains_the_sent_requests_and_takes_in_the_old_side_file(tmp_path: Path) -> None:
    path = tmp_path / "served.db"
    with Journal.open(path, migrations=MIGRATIONS[:2]) as old:
        assert old.schema_version == 2 and "sent_requests" not in old.db.table_names()
        old.keep_sent("0001", 0, [{"api": "/k/v1/records.json"}])  # nowhere to keep it: nothing
        run = old.start_run("served")
    # The side file kmigrate up to schema 2 kept beside the journal (kmigrate/sent_content.py).
    side = sqlite_utils.Database(tmp_path / "served.sent.db")
    side.table("sent").insert_all(
        [
            {"changeset": "0001", "idx": 0, "requests": '[{"api": "/k/v1/records.json"}]'},
            {"changeset": "0002", "idx": 3, "requests": '[{"api": "/k/v1/record.json"}]'},
        ],
        pk=("changeset", "idx"),
    )
    side.close()
    with Journal.open(path) as j:
        assert j.schema_version == SCHEMA_VERSION == 3
        assert j.sent() == {
            "0001": {0: [{"api": "/k/v1/records.json"}]},
            "0002": {3: [{"api": "/k/v1/record.json"}]},
        }
        assert [r.id for r in j.runs()] == [run]  # the old data stays
        j.keep_sent("0002", 3, [{"api": "/k/v1/records.json", "payload": {"app": 1}}])
        assert j.sent()["0002"][3] == [{"api": "/k/v1/records.json", "payload": {"app": 1}}]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["served.db"]  # one file again


def test_mark_applied_keeps_what_the_batch_sent_in_its_own_commit(tmp_path: Path) -> None:
    cs = make_changeset(batches=2)
    path = tmp_path / "j.db"
    with Journal.open(path) as j:
        j.record_changeset(cs)
        run = j.start_run()
        j.mark_sent("0001", 0, cs.batches[0].hash, run)
        commits = []
        j.db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        j.mark_applied(
            "0001", 0, [{"ids": ["1", "2", "3"]}], {"orders": [1, 2, 3]}, sent=cs.batches[0].requests_json()
        )
        assert len(commits) == 1  # the answer and what was sent: one transaction
        j.db.conn.set_trace_callback(None)
        assert j.sent() == {"0001": {0: cs.batches[0].requests()}}
        # The runner's event handler keeps it again after the fact: already kept, nothing written.
        j.db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        j.keep_sent("0001", 0, [{"other": True}])
        j.db.conn.set_trace_callback(None)
        assert len(commits) == 1 and j.sent()["0001"][0] == cs.batches[0].requests()
        # Refused (batch 1 was never sent): nothing of it is kept either.
        with pytest.raises(JournalError, match="not sent"):
            j.mark_applied("0001", 1, [], sent=cs.batches[1].requests_json())
        assert 1 not in j.sent()["0001"]
        j.keep_sent("0001", 1, cs.batches[1].requests())  # not kept by mark_applied: written
        assert j.sent()["0001"][1] == cs.batches[1].requests()
    with Journal.open(path) as again:  # another process's journal: the rows are in the file
        assert again.sent() == {"0001": {0: cs.batches[0].requests(), 1: cs.batches[1].requests()}}


def test_an_unreadable_side_file_is_named_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "served.db"
    Journal.open(path).close()
    (tmp_path / "served.sent.db").write_bytes(b"not sqlite" * 200)
    with pytest.raises(JournalError, match="served.sent.db"):
        Journal.open(path)
    assert (tmp_path / "served.sent.db").exists()


def test_files_that_are_not_journals_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError, match="garbage.db"):
        Journal.open(garbage)
    other = tmp_path / "other.db"
    sqlite_utils.Database(other)["customers"].insert({"id": 1})
    with pytest.raises(JournalError, match="not a kmigrate journal"):
        Journal.open(other)


# ---- runs and changesets ---------------------------------------------------------------------


def test_runs_record_who_where_and_how_it_ended() -> None:
    j = memory_journal(actor=Actor("alice", "box", 42, "9.9"))
    run = j.start_run("sandbox")
    (r,) = j.runs()
    assert (r.id, r.user, r.host, r.pid, r.kmigrate_version, r.env, r.outcome, r.finished) == (
        run,
        "alice",
        "box",
        42,
        "9.9",
        "sandbox",
        None,
        None,
    )
    j.finish_run(run, "applied")
    assert j.runs()[0].outcome == "applied" and j.runs()[0].finished is not None
    with pytest.raises(JournalError, match="no run 999"):
        j.finish_run(999, "x")
    assert [r.outcome for r in j.runs()] == ["applied"]


def test_record_changeset_gives_the_planner_its_state() -> None:
    j = memory_journal()
    cs = make_changeset()
    assert j.state() == {}
    j.record_changeset(cs)
    state = j.state()["0001"]
    assert (state.source_checksum, state.rendered_checksum) == ("src-x", "out-x")
    assert state.batch_states == {0: PENDING, 1: PENDING}
    assert state.batch_hashes == {0: cs.batches[0].hash, 1: cs.batches[1].hash}
    rec = j.changeset("0001")
    assert rec is not None and (rec.name, rec.path, rec.state, rec.batch_count) == (
        "cs_0001",
        str(cs.path),
        PENDING,
        2,
    )


def test_record_changeset_again_follows_an_unapplied_change_but_guards_applied_batches() -> None:
    j = memory_journal()
    j.record_changeset(make_changeset(batches=3))
    run = j.start_run()
    j.mark_sent("0001", 0, make_changeset(batches=3).batches[0].hash, run)
    j.mark_applied("0001", 0, [{"ids": ["1", "2", "3"]}], {"orders": [1, 2, 3]})
    # Batch 0 unchanged, batch 1 changed, batch 2 dropped: fine, none of those is applied.
    changed = make_changeset(batches=2, tag="x")
    changed = ChangesetPlan(
        **{**changed.__dict__, "batches": (changed.batches[0], make_changeset(batches=2, tag="y").batches[1])}
    )
    j.record_changeset(changed)
    assert j.state()["0001"].batch_hashes == {0: changed.batches[0].hash, 1: changed.batches[1].hash}
    assert j.changeset("0001").state == PARTIAL
    # Applied batch 0 with other content: refused.
    with pytest.raises(JournalError, match="batch 0 is applied"):
        j.record_changeset(make_changeset(batches=2, tag="z"))
    with pytest.raises(JournalError, match="batch 0 is applied but no longer planned"):
        j.record_changeset(ChangesetPlan(**{**changed.__dict__, "batches": ()}))


# ---- the protocol ---------------------------------------------------------------------------


def test_sent_then_applied_each_committed_and_visible_from_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j, cs, run = started_journal(path)
    j.mark_sent("0001", 0, cs.batches[0].hash, run)
    assert read_other_connection(path, "SELECT state, run_id FROM batches WHERE idx = 0") == [(SENT, run)]
    results = [{"ids": ["10", "11", "12"], "revisions": ["1", "1", "1"]}]
    j.mark_applied("0001", 0, results, {"orders": [10, 11, 12]}, run_id=run)
    assert read_other_connection(path, "SELECT state FROM batches WHERE idx = 0") == [(APPLIED,)]
    assert read_other_connection(path, "SELECT state FROM changesets") == [(PARTIAL,)]
    batch = j.batches("0001")[0]
    assert batch.result == results and batch.sent_at and batch.answered_at and batch.error is None
    j.mark_sent("0001", 1, cs.batches[1].hash, run)
    j.mark_applied("0001", 1, [{"ids": ["13", "14", "15"]}], {"orders": [13, 14, 15]}, run_id=run)
    rec = j.changeset("0001")
    assert rec.state == APPLIED and rec.first_applied and rec.last_applied
    assert j.refs() == {"orders": [10, 11, 12, 13, 14, 15]}
    assert [(e.kind, e.batch, e.run_id) for e in j.events()] == [("applied", 0, run), ("applied", 1, run)]
    assert j.state()["0001"].batch_states == {0: APPLIED, 1: APPLIED}


def journal_commits(journal: Journal) -> list[tuple[str, str]]:
    """(synchronous level, the batch state written) of each commit from now on, as SQLite ran them."""
    commits: list[tuple[str, str]] = []
    level, state = ["FULL"], [""]

    def trace(sql: str) -> None:
        if sql.startswith("PRAGMA synchronous = "):
            level[0] = sql.rsplit(" ", 1)[-1]
        elif sql.startswith('update "batches" set "state" = '):
            state[0] = sql.split("'")[1]
        elif sql == "COMMIT":
            commits.append((level[0], state[0]))
            state[0] = ""

    journal.db.conn.set_trace_callback(trace)
    return commits


def test_sent_waits_for_the_disk_and_the_runners_applied_is_synced_by_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j, cs, run = started_journal(path)
    commits = journal_commits(j)
    j.mark_sent("0001", 0, cs.batches[0].hash, run)
    j.mark_applied("0001", 0, [{"ids": ["1", "2", "3"]}], {"orders": [1, 2, 3]}, run_id=run, durable=False)
    j.mark_sent("0001", 1, cs.batches[1].hash, run)
    j.mark_applied("0001", 1, [{"ids": ["4", "5", "6"]}], {"orders": [4, 5, 6]}, run_id=run)
    j.finish_run(run, "applied")
    assert commits == [("FULL", SENT), ("NORMAL", APPLIED), ("FULL", SENT), ("FULL", APPLIED), ("FULL", "")]
    assert j.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for whatever comes next
    # Not waited for is still committed: another connection (or a process after this one died) reads it.
    assert read_other_connection(path, "SELECT state FROM batches ORDER BY idx") == [(APPLIED,), (APPLIED,)]


def test_a_relaxed_commit_that_cannot_start_leaves_the_journal_waiting_for_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j, cs, run = started_journal(path)
    j.mark_sent("0001", 0, cs.batches[0].hash, run)
    j.db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(str(path))
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: BEGIN times out
    try:
        with pytest.raises(JournalError, match="cannot start a transaction"):
            j.mark_applied(
                "0001", 0, [{"ids": ["1", "2", "3"]}], {"orders": [1, 2, 3]}, run_id=run, durable=False
            )
    finally:
        other.close()
    assert j.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again: the next sent waits


def test_failed_keeps_kintones_answer_and_the_batch_can_be_sent_again() -> None:
    j = memory_journal()
    cs = make_changeset()
    j.record_changeset(cs)
    run = j.start_run()
    j.mark_sent("0001", 0, cs.batches[0].hash, run)
    error = KintoneError(
        "Missing or invalid input.",
        code="CB_VA01",
        status=400,
        errors={"records[1].title.value": {"messages": ["Required."]}},
        error_id="e1",
        bulk_index=0,
    )
    j.mark_failed("0001", 0, error)
    batch = j.batches("0001")[0]
    assert batch.state == FAILED
    assert batch.error == {
        "type": "KintoneError",
        "message": "Missing or invalid input.",
        "code": "CB_VA01",
        "status": 400,
        "errors": {"records[1].title.value": {"messages": ["Required."]}},
        "error_id": "e1",
        "bulk_index": 0,
    }
    assert j.changeset("0001").state == PENDING
    (event,) = j.events(kinds=["failed"])
    assert event.detail["code"] == "CB_VA01" and event.run_id == run
    j.mark_sent("0001", 0, cs.batches[0].hash, run)  # resending a failed batch is fine
    assert j.batches("0001")[0].error is None and j.batches("0001")[0].state == SENT


def test_illegal_transitions_are_refused() -> None:
    j = memory_journal()
    cs = make_changeset()
    j.record_changeset(cs)
    h = cs.batches[0].hash
    with pytest.raises(JournalError, match="not sent"):
        j.mark_applied("0001", 0, [])
    with pytest.raises(JournalError, match="not sent"):
        j.mark_failed("0001", 0, {"message": "x"})
    with pytest.raises(JournalError, match="other content"):
        j.mark_sent("0001", 0, "0" * 64, None)
    with pytest.raises(JournalError, match="no batch 7"):
        j.mark_sent("0001", 7, h, None)
    with pytest.raises(JournalError, match="no batch"):
        j.mark_sent("0099", 0, h, None)
    j.mark_sent("0001", 0, h, None)
    with pytest.raises(InDoubtError, match="kmigrate resolve"):
        j.mark_sent("0001", 0, h, None)
    j.mark_applied("0001", 0, [])
    with pytest.raises(JournalError, match="already applied"):
        j.mark_sent("0001", 0, h, None)


def test_a_request_that_never_left_goes_back_to_pending() -> None:
    j = memory_journal()
    cs = make_changeset()
    j.record_changeset(cs)
    j.mark_sent("0001", 0, cs.batches[0].hash, None)
    j.mark_unsent("0001", 0)
    assert j.batches("0001")[0].state == PENDING and j.in_doubt() == []


def test_in_doubt_batches_are_resolved_either_way_and_logged() -> None:
    j = memory_journal()
    a, b = make_changeset("0001"), make_changeset("0002", tag="b")
    j.record_changeset(a)
    j.record_changeset(b)
    run = j.start_run()
    j.mark_sent("0001", 1, a.batches[1].hash, run)
    j.mark_sent("0002", 0, b.batches[0].hash, run)
    assert [(d.changeset, d.index) for d in j.in_doubt()] == [("0001", 1), ("0002", 0)]
    j.resolve(
        "0001",
        1,
        applied=True,
        results=[{"ids": ["7", "8", "9"]}],
        refs={"orders": [7, 8, 9]},
        note="found in Kintone",
    )
    j.resolve("0002", 0, applied=False)
    assert j.in_doubt() == []
    assert j.batches("0001")[1].state == APPLIED and j.batches("0002")[0].state == PENDING
    assert j.refs() == {"orders": [7, 8, 9]}
    assert [(e.kind, e.changeset, e.detail["applied"]) for e in j.events(kinds=["resolved"])] == [
        ("resolved", "0001", True),
        ("resolved", "0002", False),
    ]
    with pytest.raises(JournalError, match="nothing to resolve"):
        j.resolve("0002", 0, applied=True)


def test_refs_keep_creation_order_across_batches_and_changesets() -> None:
    j = memory_journal()
    a, b = make_changeset("0001", batches=2), make_changeset("0002", batches=1, tag="b")
    j.record_changeset(a)
    j.record_changeset(b)
    for cs, index, ids in [(a, 0, [5, 3]), (a, 1, [9]), (b, 0, [1])]:
        j.mark_sent(cs.version, index, cs.batches[index].hash, None)
        j.mark_applied(cs.version, index, [], {"orders": ids, f"r{cs.version}": ids[:1]})
    assert j.refs() == {"orders": [5, 3, 9, 1], "r0001": [5, 9], "r0002": [1]}


def test_repair_stores_new_checksums_and_logs_old_and_new() -> None:
    j = memory_journal()
    cs = make_changeset()
    j.record_changeset(cs)
    j.repair("0001", "src-new", "out-new", batch_hashes={0: "h-new"}, note="typo fix")
    state = j.state()["0001"]
    assert (state.source_checksum, state.rendered_checksum, state.batch_hashes[0]) == (
        "src-new",
        "out-new",
        "h-new",
    )
    (event,) = j.events(kinds=["repaired"])
    assert event.detail == {
        "source_checksum": ["src-x", "src-new"],
        "rendered_checksum": ["out-x", "out-new"],
        "batch_hashes": {"0": [cs.batches[0].hash, "h-new"]},
        "note": "typo fix",
    }
    with pytest.raises(JournalError, match="no changeset 0009"):
        j.repair("0009", "a", "b")


def test_a_changeset_without_batches_is_marked_applied_by_hand() -> None:
    j = memory_journal()
    j.record_changeset(make_changeset(batches=0))
    assert j.changeset("0001").state == PENDING
    j.set_changeset_state("0001", APPLIED)
    assert j.changeset("0001").state == APPLIED and j.changeset("0001").first_applied


def test_the_event_log_is_append_only() -> None:
    j = memory_journal(actor=Actor("carol", "h1", 7, "1.2.3"))
    j.log_event("skipped", run_id=None, changeset="0001", detail={"why": "applied"})
    (event,) = j.events()
    assert (event.kind, event.user, event.host, event.kmigrate_version, event.detail) == (
        "skipped",
        "carol",
        "h1",
        "1.2.3",
        {"why": "applied"},
    )
    for sql in ("UPDATE events SET kind = 'x'", "DELETE FROM events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            j.db.execute(sql)
        j.db.conn.rollback()
    with pytest.raises(ValueError, match="unknown event kind 'whatever'"):
        j.log_event("whatever")
    assert len(j.events()) == 1


# ---- the lock ------------------------------------------------------------------------------


def test_the_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal.open(path, actor=Actor("alice", HOST, os.getpid()))
    second = Journal.open(path, actor=Actor("bob", HOST, os.getppid()))  # a live process
    holder = first.acquire_lock(run_id=3)
    assert (holder.user, holder.pid, holder.run_id) == ("alice", os.getpid(), 3)
    with pytest.raises(LockedError) as err:
        second.acquire_lock()
    assert f"alice@{HOST} (pid {os.getpid()}, run 3) since {holder.since}" in str(err.value)
    assert "stale" not in str(err.value)
    assert second.release_lock() is False  # not bob's
    assert first.release_lock() is True
    assert second.acquire_lock().user == "bob"


class FakeClock:
    """The lock's monotonic clock and sleep: a sleep moves the clock, and may run a hook."""

    def __init__(self, on_sleep: Any = None) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


def test_waiting_for_the_lock_takes_it_once_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal.open(path, actor=Actor("alice", HOST, os.getpid()))
    first.acquire_lock()
    # The holder lets go during bob's third wait.
    clock = FakeClock(on_sleep=lambda n: n == 3 and first.release_lock())
    second = Journal.open(
        path, actor=Actor("bob", HOST, os.getppid()), monotonic=clock.monotonic, sleep=clock.sleep
    )
    assert second.acquire_lock(wait=5, poll=0.5).user == "bob"
    assert clock.sleeps == [0.5, 0.5, 0.5]
    assert first.lock_holder() is not None and first.lock_holder().user == "bob"


def test_waiting_for_the_lock_gives_up_at_the_deadline_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal.open(path, actor=Actor("alice", HOST, os.getpid()))
    first.acquire_lock(run_id=4)
    clock = FakeClock()
    second = Journal.open(
        path, actor=Actor("bob", HOST, os.getppid()), monotonic=clock.monotonic, sleep=clock.sleep
    )
    with pytest.raises(LockedError, match=f"locked by alice@{HOST} \\(pid {os.getpid()}, run 4\\)"):
        second.acquire_lock(wait=2, poll=0.5)
    assert clock.sleeps == [0.5] * 4  # tried at 0, 0.5, 1, 1.5 and 2 seconds, then gave up
    with pytest.raises(LockedError):
        second.acquire_lock()  # no wait: one try, no sleep
    assert len(clock.sleeps) == 4 and first.lock_holder().user == "alice"


def test_a_stale_lock_is_reported_and_taken_over_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    gone = Journal.open(path, actor=Actor("alice", HOST, dead_pid()))
    gone.acquire_lock(run_id=1)
    me = Journal.open(path, actor=Actor("bob", HOST, os.getpid()))
    with pytest.raises(LockedError) as err:
        me.acquire_lock()
    assert "stale" in str(err.value) and "kmigrate unlock" in str(err.value) and "alice@" in str(err.value)
    assert me.acquire_lock(take_over_stale=True).user == "bob"
    (event,) = me.events(kinds=["unlocked"])
    assert event.detail["holder"]["user"] == "alice" and event.user == "bob"


def test_a_lock_from_another_host_is_never_judged_stale(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path, actor=Actor("alice", "elsewhere", dead_pid())).acquire_lock()
    me = Journal.open(path, actor=Actor("bob", HOST, os.getpid()))
    with pytest.raises(LockedError) as err:
        me.acquire_lock(take_over_stale=True)
    assert "alice@elsewhere" in str(err.value) and "stale" not in str(err.value)


def test_force_unlock_frees_any_lock_and_logs_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path, actor=Actor("alice", "elsewhere", 123)).acquire_lock(run_id=5)
    me = Journal.open(path, actor=Actor("bob", HOST, os.getpid()))
    holder = me.force_unlock(reason="alice's laptop died")
    assert holder is not None and holder.user == "alice" and me.lock_holder() is None
    (event,) = me.events(kinds=["unlocked"])
    assert (
        event.detail["holder"]["host"] == "elsewhere"
        and event.detail["reason"] == "alice's laptop died"
        and event.run_id == 5
    )
    assert me.force_unlock() is None
    with me.locked(run_id=9) as mine:
        assert me.lock_holder() == mine
    assert me.lock_holder() is None


def _race_for_the_lock(path: str, barrier: Any, results: Any, hold: Any) -> None:
    j = Journal.open(path)
    barrier.wait()
    try:
        j.acquire_lock()
        results.put("won")
        hold.wait(10)  # keep it until the loser has tried
        j.release_lock()
    except LockedError as exc:
        results.put(f"lost: {exc}")
        hold.set()


def test_two_processes_racing_for_the_lock_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    Journal.open(path).close()
    ctx = multiprocessing.get_context("fork")
    for _ in range(3):
        barrier, results, hold = ctx.Barrier(2), ctx.Queue(), ctx.Event()
        procs = [
            ctx.Process(target=_race_for_the_lock, args=(str(path), barrier, results, hold)) for _ in range(2)
        ]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=20) for _ in procs)
        for p in procs:
            p.join(20)
            assert p.exitcode == 0
        assert outcomes[1] == "won" and outcomes[0].startswith("lost: ") and "locked by" in outcomes[0]
        assert Journal.open(path).lock_holder() is None


def _write_events(path: str, barrier: Any, n: int) -> None:
    j = Journal.open(path)
    barrier.wait()
    for i in range(n):
        j.log_event("skipped", detail={"i": i, "pid": os.getpid()})


def test_concurrent_writers_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    Journal.open(path).close()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_events, args=(str(path), barrier, 60)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(Journal.open(path).events()) == 120


# ---- crashes ----------------------------------------------------------------------------------


def _send_then_die(path: str) -> None:
    j = Journal.open(path)
    cs = make_changeset()
    j.record_changeset(cs)
    run = j.start_run("prod")
    j.acquire_lock(run)
    j.mark_sent("0001", 0, cs.batches[0].hash, run)
    j.mark_applied("0001", 0, [{"ids": ["1", "2", "3"]}], {"orders": [1, 2, 3]}, run)
    j.mark_sent("0001", 1, cs.batches[1].hash, run)
    os.kill(os.getpid(), signal.SIGKILL)  # dies between send and answer


def test_a_run_killed_between_send_and_answer_leaves_the_batch_in_doubt_and_the_lock_stale(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    proc = multiprocessing.get_context("fork").Process(target=_send_then_die, args=(str(path),))
    proc.start()
    proc.join(20)
    assert proc.exitcode == -signal.SIGKILL
    j = Journal.open(path)
    assert [(d.changeset, d.index) for d in j.in_doubt()] == [("0001", 1)]
    assert j.batches("0001")[0].state == APPLIED and j.refs() == {"orders": [1, 2, 3]}
    assert j.changeset("0001").state == PARTIAL
    holder = j.lock_holder()
    assert holder is not None and holder.pid == proc.pid and j.is_stale(holder)
    assert j.runs()[0].outcome is None  # never finished


# ---- secrets ----------------------------------------------------------------------------------


def test_no_token_or_password_reaches_the_journal_file(tmp_path: Path) -> None:
    token, password = "SECRET-token-123456", "SECRET-pass-654321"

    def kintone(request: httpx.Request) -> httpx.Response:
        body = request.read()
        # A Kintone that echoes a request header back in its error must not leak it either.
        if b"fail" in body:
            return httpx.Response(
                400,
                json={
                    "results": [
                        {
                            "code": "CB_VA01",
                            "id": "e",
                            "message": "bad",
                            "errors": {"records[0].title.value": {"messages": ["x"]}},
                        }
                    ]
                },
            )
        return httpx.Response(200, json={"results": [{"ids": ["1", "2", "3"], "revisions": ["1", "1", "1"]}]})

    path = tmp_path / "prod.db"
    j = Journal.open(path)
    client = Client(
        "https://example.cybozu.com",
        Credentials((token,), "alice", password),
        transport=httpx.MockTransport(kintone),
    )
    ok, bad = make_changeset("0001", batches=1), make_changeset("0002", batches=1, tag="fail")
    run = j.start_run("production")
    with j.locked(run):
        for cs in (ok, bad):
            j.record_changeset(cs)
            batch = cs.batches[0]
            j.mark_sent(cs.version, batch.index, batch.hash, run)
            try:
                results = client.bulk(batch.requests())
            except KintoneError as exc:
                j.mark_failed(cs.version, batch.index, exc, run)
            else:
                j.mark_applied(
                    cs.version, batch.index, results, {"orders": [int(i) for i in results[0]["ids"]]}, run
                )
    j.finish_run(run, "failed")
    assert j.batches("0002")[0].state == FAILED and j.batches("0001")[0].state == APPLIED
    dump = "\n".join(j.db.conn.iterdump())
    j.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("prod.db"))
    assert "CB_VA01" in dump and b"CB_VA01" in raw  # the scan sees real content
    for secret in (token, password):
        assert secret not in dump and secret.encode() not in raw


def test_a_write_sqlite_already_rolled_back_is_a_journal_error_not_a_rollback_error() -> None:
    j = memory_journal()
    j.record_changeset(make_changeset(batches=1))
    # SQLite ends the transaction itself on some errors (a full disk, RAISE(ROLLBACK)).
    j.db.execute(
        "CREATE TRIGGER no_sent BEFORE UPDATE ON batches BEGIN SELECT RAISE(ROLLBACK, 'disk is full'); END"
    )
    with pytest.raises(JournalError, match="write failed: disk is full"):
        j.mark_sent("0001", 0, make_changeset(batches=1).batches[0].hash, None)
    assert j.batches("0001")[0].state == PENDING
