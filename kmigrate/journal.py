"""The journal: what was sent to Kintone and what Kintone answered, in SQLite (sqlite-utils).

One file per environment. The runner's protocol, each step its own committed transaction:

    mark_sent(v, i, hash, run)        before the bulk request leaves
    mark_applied(v, i, results, refs) after Kintone accepted it (results = its ids/revisions)
    mark_failed(v, i, error)          after Kintone refused it (a bulk is all-or-nothing)
    mark_unsent(v, i)                 the request certainly never left (no connection)

A batch still ``sent`` when a run starts is *in doubt*: the previous run died (or lost the
answer) between sending and journaling. It is never sent again blindly; ``resolve`` settles it
after someone (or something) has checked Kintone.

The journal stores what Kintone returned and ids, never a token or password. The schema has
its own version in ``meta``; an older journal is migrated on open, a newer one refused.
See docs/journal.md.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from . import __version__
from .errors import InDoubtError, JournalError, KintoneError, LockedError
from .plan import APPLIED, FAILED, PARTIAL, PENDING, SENT, ChangesetPlan, JournaledChangeset, canonical_json

BUSY_TIMEOUT_MS = 30_000  # a second writer waits for the first one's short transaction

# Stands in a ref for a record whose id was in a lost answer (a batch resolved as applied by
# hand). Kintone ids start at 1. Keeping the slot keeps every later id at its position, so
# `{ref: x, index: i}` never lands on another record; the runner refuses to send a lost id.
UNKNOWN_ID = 0

# Event kinds (the append-only log).
EVENT_KINDS = (
    "applied",
    "skipped",
    "failed",
    "repaired",
    "unlocked",
    "resolved",
    "drift",
    "baseline",
    "synced",
)

_SCHEMA_V1 = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started TEXT NOT NULL, finished TEXT,
        user TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, kmigrate_version TEXT NOT NULL,
        env TEXT, outcome TEXT)""",
    """CREATE TABLE changesets (
        version TEXT PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL,
        source_checksum TEXT NOT NULL, rendered_checksum TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'partial', 'applied')),
        batch_count INTEGER NOT NULL,
        first_applied TEXT, last_applied TEXT)""",
    """CREATE TABLE batches (
        changeset TEXT NOT NULL REFERENCES changesets(version), idx INTEGER NOT NULL, hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'applied', 'failed')),
        sent_at TEXT, answered_at TEXT, run_id INTEGER REFERENCES runs(id),
        result TEXT, error TEXT,
        PRIMARY KEY (changeset, idx))""",
    # seq keeps the order ids were created in, across batches and changesets.
    """CREATE TABLE refs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, position INTEGER NOT NULL, id INTEGER NOT NULL,
        changeset TEXT NOT NULL, batch INTEGER NOT NULL)""",
    "CREATE INDEX refs_by_name ON refs (name, seq)",
    "CREATE INDEX refs_by_batch ON refs (changeset, batch)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, run_id INTEGER, kind TEXT NOT NULL,
        changeset TEXT, batch INTEGER, user TEXT NOT NULL, host TEXT NOT NULL, kmigrate_version TEXT NOT NULL,
        detail TEXT)""",
    "CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END",
    "CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END",
    """CREATE TABLE lock (
        id INTEGER PRIMARY KEY CHECK (id = 1), run_id INTEGER, user TEXT NOT NULL, host TEXT NOT NULL,
        pid INTEGER NOT NULL, since TEXT NOT NULL)""",
]

# MIGRATIONS[n] takes a journal from schema version n to n + 1, inside one transaction.
MIGRATIONS: list[Sequence[str]] = [_SCHEMA_V1]
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Actor:
    """Who writes to the journal: recorded with runs, events and the lock."""

    user: str
    host: str
    pid: int
    version: str = __version__

    @classmethod
    def current(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name (e.g. a container with an unknown uid)
            user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
        return cls(user=user, host=socket.gethostname(), pid=os.getpid())


@dataclass(frozen=True)
class LockHolder:
    run_id: int | None
    user: str
    host: str
    pid: int
    since: str

    def __str__(self) -> str:
        run = f", run {self.run_id}" if self.run_id is not None else ""
        return f"{self.user}@{self.host} (pid {self.pid}{run}) since {self.since}"


@dataclass(frozen=True)
class RunRecord:
    id: int
    started: str
    finished: str | None
    user: str
    host: str
    pid: int
    kmigrate_version: str
    env: str | None
    outcome: str | None


@dataclass(frozen=True)
class ChangesetRecord:
    version: str
    name: str
    path: str
    source_checksum: str
    rendered_checksum: str
    state: str  # pending | partial | applied
    batch_count: int
    first_applied: str | None
    last_applied: str | None


@dataclass(frozen=True)
class BatchRecord:
    changeset: str
    index: int
    hash: str
    state: str  # pending | sent | applied | failed
    sent_at: str | None
    answered_at: str | None
    run_id: int | None
    result: Any  # the bulk's `results` as Kintone returned them (ids, revisions), once applied
    error: dict[str, Any] | None  # what Kintone said, once failed


@dataclass(frozen=True)
class Event:
    id: int
    time: str
    run_id: int | None
    kind: str
    changeset: str | None
    batch: int | None
    user: str
    host: str
    kmigrate_version: str
    detail: dict[str, Any] | None


def error_detail(error: BaseException | Mapping[str, Any]) -> dict[str, Any]:
    """What the journal keeps of an error: Kintone's code, message, status, errors and index."""
    if isinstance(error, Mapping):
        return dict(error)
    detail: dict[str, Any] = {"type": type(error).__name__, "message": getattr(error, "message", str(error))}
    if isinstance(error, KintoneError):
        detail.update(
            code=error.code,
            status=error.status,
            errors=error.errors,
            error_id=error.error_id,
            bulk_index=error.bulk_index,
        )
    return detail


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True
    return True


class Journal:
    """The journal over an injected ``sqlite_utils.Database`` (in memory in tests)."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        *,
        actor: Actor | None = None,
        clock: Callable[[], str] = utc_now,
        path: Path | None = None,
    ):
        self.db = db
        self.actor = actor or Actor.current()
        self.clock = clock
        self.path = path
        self._where = f"journal {path}" if path else "journal"
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise JournalError(f"{self._where}: cannot be opened: {exc}") from exc
        self._migrate()

    @classmethod
    def open(cls, path: Path | str, **kwargs: Any) -> Journal:
        """The journal at ``path``, created (with its folders) if missing."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
            # WAL: `status` can read while `apply` writes; FULL: a commit survives a power cut.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"journal {path}: cannot be opened: {exc}", hint="check the path and its permissions"
            ) from exc
        return cls(sqlite_utils.Database(conn), path=path, **kwargs)

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions and schema ------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction. IMMEDIATE takes the write lock up front, so two
        processes serialize here (waiting up to the busy timeout) instead of failing midway."""
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"{self._where}: cannot start a transaction: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full, RAISE(ROLLBACK))
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"{self._where}: write failed: {exc}") from exc
            raise

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        try:
            return list(self.db.query(sql, params))
        except sqlite3.Error as exc:
            raise JournalError(f"{self._where}: read failed: {exc}") from exc

    @property
    def schema_version(self) -> int:
        if "meta" not in self.db.table_names():
            return 0
        rows = self._rows("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(rows[0]["value"]) if rows else 0

    def _migrate(self) -> None:
        try:
            found = self.schema_version
        except (sqlite3.Error, ValueError) as exc:
            raise JournalError(
                f"{self._where}: not a kmigrate journal ({exc})",
                hint="point `journal =` in kmigrate.toml at another file",
            ) from exc
        target = len(MIGRATIONS)
        if found > target:
            raise JournalError(
                f"{self._where} has schema version {found}, but this kmigrate ({__version__}) knows only up to {target}",
                hint="a newer kmigrate wrote it: upgrade kmigrate; do not edit the journal by hand",
            )
        if found == target:
            return
        if found == 0 and set(self.db.table_names()) - {"sqlite_sequence"}:
            raise JournalError(
                f"{self._where}: the file holds tables but no kmigrate schema version: not a kmigrate journal",
                hint="point `journal =` in kmigrate.toml at another file",
            )
        with self._tx() as conn:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = self.schema_version
            for step in range(current, target):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            if current < target:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(target),),
                )

    # ---- runs -----------------------------------------------------------------------------

    def start_run(self, env: str | None = None) -> int:
        a = self.actor
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO runs (started, user, host, pid, kmigrate_version, env) VALUES (?, ?, ?, ?, ?, ?)",
                (self.clock(), a.user, a.host, a.pid, a.version, env),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, outcome: str) -> None:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE runs SET finished = ?, outcome = ? WHERE id = ?", (self.clock(), outcome, run_id)
            )
            if cur.rowcount != 1:
                raise JournalError(f"{self._where}: no run {run_id}")

    def runs(self) -> list[RunRecord]:
        return [RunRecord(**r) for r in self._rows("SELECT * FROM runs ORDER BY id")]

    # ---- changesets -------------------------------------------------------------------------

    def record_changeset(self, cs: ChangesetPlan) -> None:
        """Journal a changeset about to run and its batches (as ``pending``).

        Call it after the drift check: it takes the plan's checksums and batch hashes. A batch
        already ``applied`` or ``sent`` must keep its hash (else it is drift, or in doubt).
        """
        with self._tx() as conn:
            exists = conn.execute("SELECT 1 FROM changesets WHERE version = ?", (cs.version,)).fetchone()
            if exists:
                conn.execute(
                    "UPDATE changesets SET name = ?, path = ?, source_checksum = ?, rendered_checksum = ?, batch_count = ? WHERE version = ?",
                    (
                        cs.name,
                        str(cs.path),
                        cs.source_checksum,
                        cs.rendered_checksum,
                        len(cs.batches),
                        cs.version,
                    ),
                )
            else:
                conn.execute(
                    "INSERT INTO changesets (version, name, path, source_checksum, rendered_checksum, state, batch_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        cs.version,
                        cs.name,
                        str(cs.path),
                        cs.source_checksum,
                        cs.rendered_checksum,
                        PENDING,
                        len(cs.batches),
                    ),
                )
            known = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    "SELECT idx, hash, state FROM batches WHERE changeset = ?", (cs.version,)
                )
            }
            for index, batch_hash in enumerate(
                cs.batch_hashes
            ):  # the plan's hashes: no second compile of a big changeset
                old = known.pop(index, None)
                if old is None:
                    conn.execute(
                        "INSERT INTO batches (changeset, idx, hash, state) VALUES (?, ?, ?, ?)",
                        (cs.version, index, batch_hash, PENDING),
                    )
                elif old[0] != batch_hash:
                    if old[1] in (APPLIED, SENT):
                        raise JournalError(
                            f"{self._where}: changeset {cs.id} batch {index} is {old[1]} with other content than planned now",
                            hint="the changeset changed after it was (partly) applied: see `kmigrate status`; `kmigrate repair` accepts the change",
                        )
                    conn.execute(
                        "UPDATE batches SET hash = ? WHERE changeset = ? AND idx = ?",
                        (batch_hash, cs.version, index),
                    )
            for index, (_, state) in known.items():  # the plan has fewer batches now
                if state in (APPLIED, SENT):
                    raise JournalError(
                        f"{self._where}: changeset {cs.id} batch {index} is {state} but no longer planned",
                        hint="see `kmigrate status`",
                    )
                conn.execute("DELETE FROM batches WHERE changeset = ? AND idx = ?", (cs.version, index))
            self._refresh_state(conn, cs.version)

    def set_changeset_state(self, version: str, state: str, run_id: int | None = None) -> None:
        """Set a changeset's state by hand (``applied`` for a changeset with no batches, logged)."""
        if state not in (PENDING, PARTIAL, APPLIED):
            raise ValueError(f"not a changeset state: {state!r}")
        with self._tx() as conn:
            self._require_changeset(conn, version)
            now = self.clock()
            if state == APPLIED:
                conn.execute(
                    "UPDATE changesets SET state = ?, first_applied = COALESCE(first_applied, ?), last_applied = ? WHERE version = ?",
                    (state, now, now, version),
                )
                # No batch logged it: say it here, or `history` would never show it applied.
                self._event(conn, "applied", run_id=run_id, changeset=version, detail={"batches": 0})
            else:
                conn.execute("UPDATE changesets SET state = ? WHERE version = ?", (state, version))

    def changesets(self) -> list[ChangesetRecord]:
        return [ChangesetRecord(**r) for r in self._rows("SELECT * FROM changesets ORDER BY version")]

    def changeset(self, version: str) -> ChangesetRecord | None:
        rows = self._rows("SELECT * FROM changesets WHERE version = ?", (version,))
        return ChangesetRecord(**rows[0]) if rows else None

    def state(self) -> dict[str, JournaledChangeset]:
        """What the planner needs: per changeset its checksums and its batches' states and hashes."""
        states: dict[str, dict[int, str]] = {}
        hashes: dict[str, dict[int, str]] = {}
        for row in self._rows("SELECT changeset, idx, state, hash FROM batches ORDER BY changeset, idx"):
            states.setdefault(row["changeset"], {})[row["idx"]] = row["state"]
            hashes.setdefault(row["changeset"], {})[row["idx"]] = row["hash"]
        return {
            r["version"]: JournaledChangeset(
                version=r["version"],
                source_checksum=r["source_checksum"],
                rendered_checksum=r["rendered_checksum"],
                batch_states=states.get(r["version"], {}),
                batch_hashes=hashes.get(r["version"], {}),
                state=r["state"],
            )
            for r in self._rows(
                "SELECT version, source_checksum, rendered_checksum, state FROM changesets ORDER BY version"
            )
        }

    def repair(
        self,
        version: str,
        source_checksum: str,
        rendered_checksum: str,
        batch_hashes: Mapping[int, str] | None = None,
        run_id: int | None = None,
        note: str | None = None,
    ) -> None:
        """Accept a changed changeset: store its new checksums (and the hashes of its journaled
        batches, if given), logging the old and new values as a ``repaired`` event."""
        with self._tx() as conn:
            old = self._require_changeset(conn, version)
            detail: dict[str, Any] = {
                "source_checksum": [old["source_checksum"], source_checksum],
                "rendered_checksum": [old["rendered_checksum"], rendered_checksum],
            }
            conn.execute(
                "UPDATE changesets SET source_checksum = ?, rendered_checksum = ? WHERE version = ?",
                (source_checksum, rendered_checksum, version),
            )
            if batch_hashes:
                changed = {}
                for index, new_hash in batch_hashes.items():
                    row = conn.execute(
                        "SELECT hash FROM batches WHERE changeset = ? AND idx = ?", (version, index)
                    ).fetchone()
                    if row is not None and row[0] != new_hash:
                        conn.execute(
                            "UPDATE batches SET hash = ? WHERE changeset = ? AND idx = ?",
                            (new_hash, version, index),
                        )
                        changed[str(index)] = [row[0], new_hash]
                detail["batch_hashes"] = changed
            if note:
                detail["note"] = note
            self._event(conn, "repaired", run_id=run_id, changeset=version, detail=detail)

    # ---- batches: the sent / applied / failed protocol ------------------------------------------

    def mark_sent(self, version: str, index: int, batch_hash: str, run_id: int | None) -> None:
        """Journal, before it leaves, that this batch is being sent. Committed on return."""
        with self._tx() as conn:
            row = self._require_batch(conn, version, index)
            if row["state"] == SENT:
                raise InDoubtError(
                    f"changeset {version} batch {index} was sent at {row['sent_at']} and its answer never journaled",
                    hint=f"check Kintone, then `kmigrate resolve {version} {index} --applied` or `--not-applied`",
                )
            if row["state"] == APPLIED:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is already applied; it must not be sent again"
                )
            if row["hash"] != batch_hash:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} was journaled with other content than the one being sent",
                    hint="journal the changeset again (record_changeset) before sending",
                )
            conn.execute(
                "UPDATE batches SET state = ?, sent_at = ?, answered_at = NULL, run_id = ?, result = NULL, error = NULL WHERE changeset = ? AND idx = ?",
                (SENT, self.clock(), run_id, version, index),
            )

    def mark_applied(
        self,
        version: str,
        index: int,
        results: Any,
        refs: Mapping[str, Sequence[int]] | None = None,
        run_id: int | None = None,
    ) -> None:
        """Journal Kintone's success answer (``results``: ids and revisions) and the ids each ref
        gained from this batch, in order. Only a ``sent`` batch can become applied."""
        with self._tx() as conn:
            row = self._require_batch(conn, version, index)
            if row["state"] != SENT:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}, not sent: it cannot become applied"
                )
            self._apply(conn, version, index, results, refs, run_id or row["run_id"])
            self._event(
                conn,
                "applied",
                run_id=run_id or row["run_id"],
                changeset=version,
                batch=index,
                detail={"refs": {k: len(v) for k, v in (refs or {}).items()}},
            )

    def mark_failed(
        self, version: str, index: int, error: BaseException | Mapping[str, Any], run_id: int | None = None
    ) -> None:
        """Journal Kintone's refusal. By bulk atomicity nothing of the batch was applied, so it
        can be sent again once the cause is fixed."""
        detail = error_detail(error)
        with self._tx() as conn:
            row = self._require_batch(conn, version, index)
            if row["state"] != SENT:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}, not sent: it cannot become failed"
                )
            conn.execute(
                "UPDATE batches SET state = ?, answered_at = ?, error = ? WHERE changeset = ? AND idx = ?",
                (FAILED, self.clock(), canonical_json(detail), version, index),
            )
            self._event(
                conn, "failed", run_id=run_id or row["run_id"], changeset=version, batch=index, detail=detail
            )

    def mark_unsent(self, version: str, index: int) -> None:
        """The request certainly never reached Kintone (no connection): back to ``pending``."""
        with self._tx() as conn:
            row = self._require_batch(conn, version, index)
            if row["state"] != SENT:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}, not sent"
                )
            conn.execute(
                "UPDATE batches SET state = ?, sent_at = NULL, run_id = NULL WHERE changeset = ? AND idx = ?",
                (PENDING, version, index),
            )

    def in_doubt(self) -> list[BatchRecord]:
        """Batches sent whose answer was never journaled, oldest first."""
        return self._batches("WHERE state = ? ORDER BY changeset, idx", (SENT,))

    def resolve(
        self,
        version: str,
        index: int,
        applied: bool,
        *,
        results: Any = None,
        refs: Mapping[str, Sequence[int]] | None = None,
        run_id: int | None = None,
        note: str | None = None,
    ) -> None:
        """Settle an in-doubt batch after checking Kintone: ``applied`` (with the ids found, if
        it created records a ref names) or not applied (back to ``pending``, to be sent again)."""
        with self._tx() as conn:
            row = self._require_batch(conn, version, index)
            if row["state"] != SENT:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}, not in doubt: nothing to resolve"
                )
            if applied:
                self._apply(conn, version, index, results, refs, run_id or row["run_id"])
            else:
                conn.execute(
                    "UPDATE batches SET state = ?, sent_at = NULL, answered_at = NULL, run_id = NULL WHERE changeset = ? AND idx = ?",
                    (PENDING, version, index),
                )
            detail: dict[str, Any] = {"applied": applied, "sent_at": row["sent_at"]}
            if note:
                detail["note"] = note
            self._event(conn, "resolved", run_id=run_id, changeset=version, batch=index, detail=detail)

    def lost_ids(self) -> dict[str, list[tuple[str, int]]]:
        """Per ref, the (changeset, batch) whose ids were lost (resolved as applied by hand)."""
        out: dict[str, list[tuple[str, int]]] = {}
        for r in self._rows(
            "SELECT DISTINCT name, changeset, batch FROM refs WHERE id = ? ORDER BY name, changeset, batch",
            (UNKNOWN_ID,),
        ):
            out.setdefault(r["name"], []).append((r["changeset"], r["batch"]))
        return out

    def batches(self, version: str | None = None) -> list[BatchRecord]:
        if version is None:
            return self._batches("ORDER BY changeset, idx", ())
        return self._batches("WHERE changeset = ? ORDER BY idx", (version,))

    def refs(self) -> dict[str, list[int]]:
        """Every ref's ids, in the order Kintone created them (``UNKNOWN_ID`` where lost)."""
        out: dict[str, list[int]] = {}
        try:  # plain tuples: a ref can hold 100,000 ids
            rows = self.db.conn.execute("SELECT name, id FROM refs ORDER BY name, seq").fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"{self._where}: read failed: {exc}") from exc
        for name, record_id in rows:
            out.setdefault(name, []).append(record_id)
        return out

    # ---- the journal app's markers (kmigrate.remote.sync) ------------------------------------

    def import_applied(
        self,
        *,
        version: str,
        name: str,
        path: str,
        source_checksum: str,
        rendered_checksum: str,
        batch_count: int,
        index: int,
        batch_hash: str,
        refs: Mapping[str, Sequence[int]],
        kind: str = "applied",
        detail: Mapping[str, Any] | None = None,
        run_id: int | None = None,
    ) -> None:
        """Journal a batch as applied on another word than this journal's own answer: a marker
        in the journal app (another runner applied it) or a baseline. The changeset takes the
        given checksums unless it has batches applied already (then drift stays visible)."""
        with self._tx() as conn:
            row = conn.execute("SELECT state FROM changesets WHERE version = ?", (version,)).fetchone()
            started = conn.execute(
                "SELECT COUNT(*) FROM batches WHERE changeset = ? AND state IN ('applied', 'sent') AND idx != ?",
                (version, index),
            ).fetchone()[0]
            if row is None:
                conn.execute(
                    "INSERT INTO changesets (version, name, path, source_checksum, rendered_checksum, state, "
                    "batch_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (version, name, path, source_checksum, rendered_checksum, PENDING, batch_count),
                )
            elif not started:
                conn.execute(
                    "UPDATE changesets SET source_checksum = ?, rendered_checksum = ?, batch_count = ? "
                    "WHERE version = ?",
                    (source_checksum, rendered_checksum, batch_count, version),
                )
            conn.execute(
                "INSERT INTO batches (changeset, idx, hash, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(changeset, idx) DO UPDATE SET hash = excluded.hash",
                (version, index, batch_hash, PENDING),
            )
            self._apply(conn, version, index, None, refs, run_id)
            self._event(
                conn,
                kind,
                run_id=run_id,
                changeset=version,
                batch=index,
                detail={**(detail or {}), "refs": {k: len(v) for k, v in refs.items()}},
            )

    def batch_refs(self, version: str, index: int) -> dict[str, list[int]]:
        """The ids one batch gave each ref, in order."""
        out: dict[str, list[int]] = {}
        for r in self._rows(
            "SELECT name, id FROM refs WHERE changeset = ? AND batch = ? ORDER BY seq", (version, index)
        ):
            out.setdefault(r["name"], []).append(r["id"])
        return out

    # ---- events ----------------------------------------------------------------------------

    def log_event(
        self,
        kind: str,
        *,
        run_id: int | None = None,
        changeset: str | None = None,
        batch: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append to the event log (e.g. ``skipped``, ``drift``) in its own transaction."""
        with self._tx() as conn:
            self._event(conn, kind, run_id=run_id, changeset=changeset, batch=batch, detail=detail)

    def events(self, changeset: str | None = None, kinds: Sequence[str] | None = None) -> list[Event]:
        where, params = [], []
        if changeset is not None:
            where.append("changeset = ?")
            params.append(changeset)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [
            Event(**{**r, "detail": json.loads(r["detail"]) if r["detail"] else None})
            for r in self._rows(sql, params)
        ]

    # ---- the lock --------------------------------------------------------------------------

    def lock_holder(self) -> LockHolder | None:
        rows = self._rows("SELECT run_id, user, host, pid, since FROM lock")
        return LockHolder(**rows[0]) if rows else None

    def is_stale(self, holder: LockHolder) -> bool:
        """The holder ran on this host and its process is gone (a lock from another host is
        never judged stale: its process cannot be seen from here)."""
        return holder.host == self.actor.host and not pid_alive(holder.pid)

    def acquire_lock(
        self,
        run_id: int | None = None,
        *,
        wait: float = 0.0,
        poll: float = 0.1,
        take_over_stale: bool = False,
    ) -> LockHolder:
        """Take the journal's lock, atomically, or raise ``LockedError`` naming its holder.

        ``wait`` seconds to keep trying while a live run holds it. A stale lock (its process is
        gone) is only taken over when asked (``take_over_stale``), and that is logged."""
        deadline = time.monotonic() + wait
        while True:
            with self._tx() as conn:
                row = conn.execute("SELECT run_id, user, host, pid, since FROM lock WHERE id = 1").fetchone()
                holder = LockHolder(*row) if row else None
                if holder is not None and take_over_stale and self.is_stale(holder):
                    conn.execute("DELETE FROM lock WHERE id = 1")
                    self._event(
                        conn,
                        "unlocked",
                        run_id=run_id,
                        detail={"holder": holder.__dict__, "reason": "stale: its process is gone"},
                    )
                    holder = None
                if holder is None:
                    a = self.actor
                    mine = LockHolder(run_id, a.user, a.host, a.pid, self.clock())
                    conn.execute(
                        "INSERT INTO lock (id, run_id, user, host, pid, since) VALUES (1, ?, ?, ?, ?, ?)",
                        (mine.run_id, mine.user, mine.host, mine.pid, mine.since),
                    )
                    return mine
            if self.is_stale(holder):
                raise LockedError(
                    f"{self._where} is locked by {holder}, but that process is gone: the lock is stale",
                    hint="if no kmigrate is running for this environment, free it with `kmigrate unlock`",
                )
            if time.monotonic() >= deadline:
                raise LockedError(
                    f"{self._where} is locked by {holder}: another kmigrate is running on this environment",
                    hint="wait for it to finish; if it is gone, `kmigrate unlock` frees the lock",
                )
            time.sleep(poll)

    def release_lock(self) -> bool:
        """Free the lock if this process holds it; False if it did not."""
        a = self.actor
        with self._tx() as conn:
            return (
                conn.execute(
                    "DELETE FROM lock WHERE id = 1 AND host = ? AND pid = ?", (a.host, a.pid)
                ).rowcount
                == 1
            )

    def force_unlock(self, reason: str | None = None) -> LockHolder | None:
        """Free the lock whoever holds it (``kmigrate unlock``), logging an ``unlocked`` event."""
        with self._tx() as conn:
            row = conn.execute("SELECT run_id, user, host, pid, since FROM lock WHERE id = 1").fetchone()
            if row is None:
                return None
            holder = LockHolder(*row)
            conn.execute("DELETE FROM lock WHERE id = 1")
            detail: dict[str, Any] = {"holder": holder.__dict__, "stale": self.is_stale(holder)}
            if reason:
                detail["reason"] = reason
            self._event(conn, "unlocked", run_id=holder.run_id, detail=detail)
            return holder

    @contextmanager
    def locked(self, run_id: int | None = None, **kwargs: Any) -> Iterator[LockHolder]:
        holder = self.acquire_lock(run_id, **kwargs)
        try:
            yield holder
        except BaseException:
            # The error in flight says what happened and what to do; a release that fails too
            # (the journal unwritable) must not replace it. The lock is stale once we exit.
            try:
                self.release_lock()
            except (JournalError, sqlite3.Error):
                pass
            raise
        self.release_lock()

    # ---- inside transactions ----------------------------------------------------------------

    def _event(
        self,
        conn: sqlite3.Connection,
        kind: str,
        *,
        run_id: int | None = None,
        changeset: str | None = None,
        batch: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        a = self.actor
        conn.execute(
            "INSERT INTO events (time, run_id, kind, changeset, batch, user, host, kmigrate_version, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.clock(),
                run_id,
                kind,
                changeset,
                batch,
                a.user,
                a.host,
                a.version,
                canonical_json(detail) if detail is not None else None,
            ),
        )

    def _apply(
        self,
        conn: sqlite3.Connection,
        version: str,
        index: int,
        results: Any,
        refs: Mapping[str, Sequence[int]] | None,
        run_id: int | None,
    ) -> None:
        now = self.clock()
        conn.execute(
            "UPDATE batches SET state = ?, answered_at = ?, run_id = ?, result = ?, error = NULL WHERE changeset = ? AND idx = ?",
            (APPLIED, now, run_id, canonical_json(results) if results is not None else None, version, index),
        )
        conn.execute("DELETE FROM refs WHERE changeset = ? AND batch = ?", (version, index))
        conn.executemany(
            "INSERT INTO refs (name, position, id, changeset, batch) VALUES (?, ?, ?, ?, ?)",
            [
                (name, pos, int(i), version, index)
                for name, ids in (refs or {}).items()
                for pos, i in enumerate(ids)
            ],
        )
        conn.execute(
            "UPDATE changesets SET first_applied = COALESCE(first_applied, ?), last_applied = ? WHERE version = ?",
            (now, now, version),
        )
        self._refresh_state(conn, version)

    def _refresh_state(self, conn: sqlite3.Connection, version: str) -> None:
        total, applied = conn.execute(
            "SELECT c.batch_count, (SELECT COUNT(*) FROM batches b WHERE b.changeset = c.version AND b.state = 'applied') FROM changesets c WHERE version = ?",
            (version,),
        ).fetchone()
        if total == 0:
            return  # nothing to derive from: the runner sets it (set_changeset_state)
        state = APPLIED if applied == total else PARTIAL if applied else PENDING
        conn.execute("UPDATE changesets SET state = ? WHERE version = ?", (state, version))

    def _require_changeset(self, conn: sqlite3.Connection, version: str) -> dict[str, Any]:
        cur = conn.execute("SELECT * FROM changesets WHERE version = ?", (version,))
        row = cur.fetchone()
        if row is None:
            raise JournalError(
                f"{self._where}: no changeset {version} is journaled", hint="see `kmigrate status`"
            )
        return dict(zip([d[0] for d in cur.description], row, strict=False))

    def _require_batch(self, conn: sqlite3.Connection, version: str, index: int) -> dict[str, Any]:
        cur = conn.execute("SELECT * FROM batches WHERE changeset = ? AND idx = ?", (version, index))
        row = cur.fetchone()
        if row is None:
            raise JournalError(
                f"{self._where}: changeset {version} has no batch {index} journaled",
                hint="journal the changeset first (record_changeset)",
            )
        return dict(zip([d[0] for d in cur.description], row, strict=False))

    def _batches(self, where: str, params: Sequence[Any]) -> list[BatchRecord]:
        return [
            BatchRecord(
                changeset=r["changeset"],
                index=r["idx"],
                hash=r["hash"],
                state=r["state"],
                sent_at=r["sent_at"],
                answered_at=r["answered_at"],
                run_id=r["run_id"],
                result=json.loads(r["result"]) if r["result"] else None,
                error=json.loads(r["error"]) if r["error"] else None,
            )
            for r in self._rows(f"SELECT * FROM batches {where}", params)
        ]


__all__ = [
    "SCHEMA_VERSION",
    "UNKNOWN_ID",
    "Actor",
    "BatchRecord",
    "ChangesetRecord",
    "Event",
    "Journal",
    "LockHolder",
    "RunRecord",
    "error_detail",
    "pid_alive",
]
