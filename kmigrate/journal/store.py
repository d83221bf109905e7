"""The journal: what was sent to Kintone and what Kintone answered, in SQLite (sqlite-utils).

One file per environment. The runner's protocol, each step its own committed transaction:

    mark_sent(v, i, hash, run, probe) before the bulk request leaves (probe: what was read first)
    mark_applied(v, i, results, refs) after Kintone accepted it (results = its ids/revisions)
    mark_failed(v, i, error)          after Kintone refused it
    mark_unsent(v, i)                 the request certainly never left (no connection)

A batch still ``sent`` when a run starts is *in doubt*: the previous run died (or lost the
answer) between sending and journaling. It is never sent again blindly; ``resolve`` settles it
once Kintone has been read (by the runner's reconciliation, or by a person).

Writes go through sqlite-utils inside ``_tx`` (``BEGIN IMMEDIATE``: its inserts and updates
nest as savepoints); raw SQL is kept for the transaction itself and a few set-wise statements.
The journal stores what Kintone returned and ids, never a token or password. See
docs/journal.md.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

from .. import __version__
from ..errors import InDoubtError, JournalError
from ..paths import create_private
from ..plan import (
    APPLIED,
    FAILED,
    PARTIAL,
    PENDING,
    SENT,
    ChangesetPlan,
    JournaledChangeset,
    canonical_json,
    plain,
)
from .lock import Lock, LockHolder
from .records import Actor, BatchRecord, ChangesetRecord, Event, RunRecord, error_detail, utc_now
from .schema import MIGRATIONS, Migration, schema_version, upgrade

BUSY_TIMEOUT_MS = 30_000  # a second writer waits for the first one's short transaction

# Stands in a ref for a record whose id was in a lost answer (a batch resolved as applied by
# hand without ids). Kintone ids start at 1. Keeping the slot keeps every later id at its
# position, so `{ref: x, index: i}` never lands on another record; the runner refuses to send it.
UNKNOWN_ID = 0

# Event kinds (the append-only log).
EVENT_KINDS = (
    "applied",
    "skipped",
    "failed",
    "repaired",
    "unlocked",
    "resolved",
    "reconciled",
    "drift",
    "synced",  # learnt from the journal app's markers (kmigrate.remote.sync)
    "baseline",  # recorded as applied without sending (`kmigrate journal baseline`)
    "uploaded",  # a batch's attachments uploaded before its bulk: path, sha256, fileKey (kmigrate.attachments)
)


def _json(value: Any) -> str | None:
    return None if value is None else canonical_json(value)


def _unjson(text: str | None) -> Any:
    return json.loads(text) if text else None


SENT_REQUESTS = "sent_requests"  # what applied batches sent (schema 3); "sent" in the old side file


class Journal:
    """The journal over an injected ``sqlite_utils.Database`` (in memory in tests).

    ``monotonic`` and ``sleep`` drive the lock's waiting; ``migrations`` is the schema's
    history (``schema.MIGRATIONS``), injectable so a test can add a step."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        *,
        actor: Actor | None = None,
        clock: Callable[[], str] = utc_now,
        path: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        migrations: Sequence[Migration] = MIGRATIONS,
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
        self._migrate(migrations)
        # FULL (Journal.open): a commit is on disk when it returns; see _tx's ``durable``.
        self._full_sync = db.execute("PRAGMA synchronous").fetchone()[0] == 2
        self._has_sent_table = SENT_REQUESTS in db.table_names()
        self._kept: set[tuple[str, int]] = set()  # batches whose sent requests mark_applied kept
        self.lock = Lock(
            db,
            self._tx,
            actor=self.actor,
            now=clock,
            log_unlocked=self._log_unlocked,
            where=self._where,
            monotonic=monotonic,
            sleep=sleep,
        )

    @classmethod
    def open(cls, path: Path | str, **kwargs: Any) -> Journal:
        """The journal at ``path``, created (with its folders) if missing."""
        path = Path(path)
        try:
            create_private(path)  # 0600 in a 0700 folder: it holds error bodies and host names
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
            # WAL: `status` can read while `apply` writes; FULL: a commit survives a power cut.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"journal {path}: cannot be opened: {exc}", hint="check the path and its permissions"
            ) from exc
        journal = cls(sqlite_utils.Database(conn), path=path, **kwargs)
        try:
            journal._take_in_sent_file()
        except BaseException:
            journal.close()
            raise
        return journal

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions and schema ------------------------------------------------------------

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite_utils.Database]:
        """One committed write transaction. IMMEDIATE takes the write lock up front, so two
        processes serialize here (waiting up to the busy timeout) instead of failing midway.
        sqlite-utils' own writes inside it become savepoints of this transaction.

        ``durable=False``: committed without waiting for the disk (``synchronous = NORMAL``). In
        WAL mode it survives the process dying, and it reaches the disk with the next durable
        commit (which syncs the whole log); only an OS crash or power cut before that loses it."""
        conn = self.db.conn
        relaxed = not durable and self._full_sync
        if relaxed:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise JournalError(f"{self._where}: cannot start a transaction: {exc}") from exc
            yield self.db
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full, RAISE(ROLLBACK))
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"{self._where}: write failed: {exc}") from exc
            raise
        finally:
            if relaxed:
                conn.execute("PRAGMA synchronous = FULL")

    def _rows(
        self, table: str, where: str | None = None, params: Sequence[Any] = (), **kw: Any
    ) -> list[dict]:
        try:
            return list(self.db.table(table).rows_where(where, list(params), **kw))
        except sqlite3.Error as exc:
            raise JournalError(f"{self._where}: read failed: {exc}") from exc

    @property
    def schema_version(self) -> int:
        return schema_version(self.db)

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        try:
            found = self.schema_version
        except (sqlite3.Error, ValueError) as exc:
            raise JournalError(
                f"{self._where}: not a kmigrate journal ({exc})",
                hint="point `journal =` in kmigrate.toml at another file",
            ) from exc
        target = len(migrations)
        if found > target:
            raise JournalError(
                f"{self._where} has schema version {found}, "
                f"but this kmigrate ({__version__}) knows only up to {target}",
                hint="a newer kmigrate wrote it: upgrade kmigrate; do not edit the journal by hand",
            )
        if found == target:
            return
        if found == 0 and set(self.db.table_names()) - {"sqlite_sequence"}:
            raise JournalError(
                f"{self._where}: the file holds tables but no kmigrate schema version: not a kmigrate journal",
                hint="point `journal =` in kmigrate.toml at another file",
            )
        with self._tx() as db:
            upgrade(db, migrations)  # re-reads the version inside the write lock: no double step

    # ---- runs -----------------------------------------------------------------------------

    def start_run(self, env: str | None = None) -> int:
        a = self.actor
        with self._tx() as db:
            table = db.table("runs").insert(
                {
                    "started": self.clock(),
                    "user": a.user,
                    "host": a.host,
                    "pid": a.pid,
                    "kmigrate_version": a.version,
                    "env": env,
                }
            )
            return int(table.last_rowid or 0)

    def finish_run(self, run_id: int, outcome: str) -> None:
        with self._tx() as db:
            try:
                db.table("runs").update(run_id, {"finished": self.clock(), "outcome": outcome})
            except NotFoundError:
                raise JournalError(f"{self._where}: no run {run_id}") from None

    def runs(self) -> list[RunRecord]:
        return [RunRecord(**r) for r in self._rows("runs", order_by="id")]

    # ---- changesets -------------------------------------------------------------------------

    def record_changeset(self, cs: ChangesetPlan) -> None:
        """Journal a changeset about to run and its batches (as ``pending``).

        Call it after the drift check: it takes the plan's checksums and batch hashes. A batch
        already ``applied`` or ``sent`` must keep its hash (else it is drift, or in doubt).
        """
        hashes = cs.batch_hashes  # the plan's hashes: no second compile of a big changeset
        with self._tx() as db:
            columns = {
                "name": cs.name,
                "path": str(cs.path),
                "source_checksum": cs.source_checksum,
                "rendered_checksum": cs.rendered_checksum,
                "batch_count": len(hashes),
            }
            changesets = db.table("changesets")
            if next(changesets.rows_where("version = ?", [cs.version]), None) is not None:
                changesets.update(cs.version, columns)
            else:
                changesets.insert({"version": cs.version, "state": PENDING, **columns})
            batches = db.table("batches")
            known = {
                r["idx"]: (r["hash"], r["state"])
                for r in batches.rows_where("changeset = ?", [cs.version], select="idx, hash, state")
            }
            for index, batch_hash in enumerate(hashes):
                old = known.pop(index, None)
                if old is None:
                    batches.insert(
                        {"changeset": cs.version, "idx": index, "hash": batch_hash, "state": PENDING}
                    )
                elif old[0] != batch_hash:
                    if old[1] in (APPLIED, SENT):
                        raise JournalError(
                            f"{self._where}: changeset {cs.id} batch {index} is {old[1]} "
                            "with other content than planned now",
                            hint="the changeset changed after it was (partly) applied: see `kmigrate status`; "
                            "`kmigrate repair` accepts the change",
                        )
                    batches.update((cs.version, index), {"hash": batch_hash})
            for index, (_, state) in known.items():  # the plan has fewer batches now
                if state in (APPLIED, SENT):
                    raise JournalError(
                        f"{self._where}: changeset {cs.id} batch {index} is {state} but no longer planned",
                        hint="see `kmigrate status`",
                    )
                batches.delete((cs.version, index))
            self._refresh_state(db, cs.version)

    def set_changeset_state(self, version: str, state: str, run_id: int | None = None) -> None:
        """Set a changeset's state by hand (``applied`` for a changeset with no batches, logged)."""
        if state not in (PENDING, PARTIAL, APPLIED):
            raise ValueError(f"not a changeset state: {state!r}")
        with self._tx() as db:
            old = self._require_changeset(db, version)
            if state == APPLIED:
                now = self.clock()
                db.table("changesets").update(
                    version,
                    {"state": state, "first_applied": old["first_applied"] or now, "last_applied": now},
                )
                # No batch logged it: say it here, or `history` would never show it applied.
                self._event(db, "applied", run_id=run_id, changeset=version, detail={"batches": 0})
            else:
                db.table("changesets").update(version, {"state": state})

    def changesets(self) -> list[ChangesetRecord]:
        return [ChangesetRecord(**r) for r in self._rows("changesets", order_by="version")]

    def changeset(self, version: str) -> ChangesetRecord | None:
        rows = self._rows("changesets", "version = ?", [version])
        return ChangesetRecord(**rows[0]) if rows else None

    def state(self) -> dict[str, JournaledChangeset]:
        """What the planner needs: per changeset its checksums and its batches' states and hashes."""
        states: dict[str, dict[int, str]] = {}
        hashes: dict[str, dict[int, str]] = {}
        for row in self._rows("batches", select="changeset, idx, state, hash", order_by="changeset, idx"):
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
                "changesets", select="version, source_checksum, rendered_checksum, state", order_by="version"
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
        kind: str = "repaired",
    ) -> None:
        """Accept a changed changeset: store its new checksums (and the hashes of its journaled
        batches, if given), logging the old and new values as a ``repaired`` event (``synced``:
        a repair made elsewhere, taken from the journal app)."""
        with self._tx() as db:
            old = self._require_changeset(db, version)
            detail: dict[str, Any] = {
                "source_checksum": [old["source_checksum"], source_checksum],
                "rendered_checksum": [old["rendered_checksum"], rendered_checksum],
            }
            db.table("changesets").update(
                version, {"source_checksum": source_checksum, "rendered_checksum": rendered_checksum}
            )
            if batch_hashes:
                changed = {}
                batches = db.table("batches")
                for index, new_hash in batch_hashes.items():
                    row = next(batches.rows_where("changeset = ? AND idx = ?", [version, index]), None)
                    if row is not None and row["hash"] != new_hash:
                        batches.update((version, index), {"hash": new_hash})
                        changed[str(index)] = [row["hash"], new_hash]
                detail["batch_hashes"] = changed
            if note:
                detail["note"] = note
            self._event(db, kind, run_id=run_id, changeset=version, detail=detail)

    # ---- batches: the sent / applied / failed protocol ------------------------------------------

    def mark_sent(
        self, version: str, index: int, batch_hash: str, run_id: int | None, probe: Any = None
    ) -> None:
        """Journal, before it leaves, that this batch is being sent, with what was read from
        Kintone just before (``probe``, for reconciliation). Committed on return."""
        with self._tx() as db:
            row = self._require_batch(db, version, index)
            if row["state"] == SENT:
                raise InDoubtError(
                    f"changeset {version} batch {index} was sent at {row['sent_at']} and its answer never journaled",
                    hint=f"run `kmigrate apply` to settle it by reading Kintone, or check Kintone and "
                    f"`kmigrate resolve {version} {index} --applied` or `--not-applied`",
                )
            if row["state"] == APPLIED:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is already applied; it must not be sent again"
                )
            if row["hash"] != batch_hash:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} was journaled "
                    "with other content than the one being sent",
                    hint="journal the changeset again (record_changeset) before sending",
                )
            db.table("batches").update(
                (version, index),
                {
                    "state": SENT,
                    "sent_at": self.clock(),
                    "answered_at": None,
                    "run_id": run_id,
                    "result": None,
                    "error": None,
                    "probe": _json(probe),
                },
            )

    def mark_applied(
        self,
        version: str,
        index: int,
        results: Any,
        refs: Mapping[str, Sequence[int]] | None = None,
        run_id: int | None = None,
        *,
        sent: bytes | None = None,
        durable: bool = True,
    ) -> None:
        """Journal Kintone's success answer (``results``: ids and revisions) and the ids each ref
        gained from this batch, in order. Only a ``sent`` batch can become applied. ``sent``:
        what it sent, as ``keep_sent`` keeps it, written in the same transaction (one commit).
        ``durable=False`` (the runner's): on disk with the next durable commit (``_tx``)."""
        with self._tx(durable=durable) as db:
            row = self._require_sent(db, version, index, "become applied")
            run = run_id or row["run_id"]
            self._apply(db, version, index, results, refs, run)
            detail = {"refs": {k: len(v) for k, v in (refs or {}).items()}}
            self._event(db, "applied", run_id=run, changeset=version, batch=index, detail=detail)
            if sent is not None:
                self._keep_sent(db, version, index, sent)
        if sent is not None:
            self._kept.add((version, index))

    def mark_failed(
        self,
        version: str,
        index: int,
        error: BaseException | Mapping[str, Any],
        run_id: int | None = None,
        *,
        done: tuple[int, str, Any] | None = None,
    ) -> None:
        """Journal Kintone's refusal. Nothing of the batch was applied, unless ``done`` says
        (calls, hash, results) that its first calls were (the reading of a failed bulk that keeps
        the requests before the failing one): the batch is sent again from there once fixed."""
        detail = error_detail(error)
        with self._tx() as db:
            row = self._require_sent(db, version, index, "become failed")
            update: dict[str, Any] = {"state": FAILED, "answered_at": self.clock(), "error": _json(detail)}
            if done is not None:
                update.update(self._done_columns(row, done))
                detail = {**detail, "done_calls": update["done_calls"]}
            db.table("batches").update((version, index), update)
            self._event(
                db, "failed", run_id=run_id or row["run_id"], changeset=version, batch=index, detail=detail
            )

    def keep_done(
        self,
        version: str,
        index: int,
        done: tuple[int, str, Any],
        *,
        run_id: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Journal that the first calls of a batch not applied (``pending`` or ``failed``) took
        effect, ``done`` = (calls, hash, results), as learnt after the fact (the journal app's
        marker kept with them); logged as ``reconciled``."""
        with self._tx() as db:
            row = self._require_batch(db, version, index)
            if row["state"] not in (PENDING, FAILED):
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}: "
                    "only a batch not applied can have applied calls journaled"
                )
            db.table("batches").update((version, index), self._done_columns(row, done))
            logged = {"applied": False, "done_calls": done[0], **(detail or {})}
            self._event(db, "reconciled", run_id=run_id, changeset=version, batch=index, detail=logged)

    def mark_unsent(self, version: str, index: int) -> None:
        """The request certainly never reached Kintone (no connection): back to ``pending``."""
        with self._tx() as db:
            self._require_sent(db, version, index, "go back to pending")
            db.table("batches").update((version, index), {"state": PENDING, "sent_at": None, "run_id": None})

    def in_doubt(self) -> list[BatchRecord]:
        """Batches sent whose answer was never journaled, oldest first."""
        return self._batches("state = ?", [SENT])

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
        done: tuple[int, str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        kind: str = "resolved",
    ) -> None:
        """Settle an in-doubt batch once Kintone was read: ``applied`` (with the ids found, if it
        created records a ref names) or not applied (back to ``pending``, to be sent again;
        ``done`` = (calls, hash, results) when its first calls did apply). Logged as ``kind``
        (``resolved`` by a person, ``reconciled`` by the runner) with ``detail``."""
        with self._tx() as db:
            row = self._require_batch(db, version, index)
            if row["state"] != SENT:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}, "
                    "not in doubt: nothing to resolve"
                )
            if applied:
                self._apply(db, version, index, results, refs, run_id or row["run_id"])
            else:
                update: dict[str, Any] = {
                    "state": PENDING,
                    "sent_at": None,
                    "answered_at": None,
                    "run_id": None,
                }
                if done is not None:
                    update.update(self._done_columns(row, done))
                db.table("batches").update((version, index), update)
            logged: dict[str, Any] = {"applied": applied, "sent_at": row["sent_at"], **(detail or {})}
            if note:
                logged["note"] = note
            self._event(db, kind, run_id=run_id, changeset=version, batch=index, detail=logged)

    def recover_ids(
        self, version: str, index: int, refs: Mapping[str, Sequence[int]], *, note: str | None = None
    ) -> int:
        """Put the ids read back from Kintone in the place of an applied batch's lost ones
        (``UNKNOWN_ID``), each at its position, so the ref keeps its order. Returns how many."""
        with self._tx() as db:
            row = self._require_batch(db, version, index)
            slots = list(db.table("refs").rows_where("changeset = ? AND batch = ?", [version, index]))
            lost = [r for r in slots if r["id"] == UNKNOWN_ID]
            if row["state"] != APPLIED or not lost:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} has no lost ids to recover "
                    f"(it is {row['state']})"
                )
            sizes = {name: len(ids) for name, ids in refs.items()}
            expected: dict[str, int] = {}
            for r in slots:
                expected[r["name"]] = expected.get(r["name"], 0) + 1
            if sizes != expected:
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} keeps {expected} ids per ref, not {sizes}"
                )
            for r in lost:
                db.table("refs").update(r["seq"], {"id": int(refs[r["name"]][r["position"]])})
            detail: dict[str, Any] = {"ids_recovered": len(lost)}
            if note:
                detail["note"] = note
            self._event(db, "resolved", changeset=version, batch=index, detail=detail)
            return len(lost)

    def lost_ids(self) -> dict[str, list[tuple[str, int]]]:
        """Per ref, the (changeset, batch) whose ids were lost (resolved as applied by hand)."""
        out: dict[str, list[tuple[str, int]]] = {}
        for r in self._rows(
            "refs",
            "id = ?",
            [UNKNOWN_ID],
            select="DISTINCT name, changeset, batch",
            order_by="name, changeset, batch",
        ):
            out.setdefault(r["name"], []).append((r["changeset"], r["batch"]))
        return out

    def batches(self, version: str | None = None) -> list[BatchRecord]:
        if version is None:
            return self._batches(None, [])
        return self._batches("changeset = ?", [version])

    def batch(self, version: str, index: int) -> BatchRecord | None:
        found = self._batches("changeset = ? AND idx = ?", [version, index])
        return found[0] if found else None

    def refs(self) -> dict[str, list[int]]:
        """Every ref's ids in the order written: by batch, then position (``UNKNOWN_ID`` where
        lost). Not by ``seq``: batches may apply out of order (``apply --parallel``)."""
        out: dict[str, list[int]] = {}
        try:  # plain tuples, not dicts: a ref can hold 100,000 ids
            rows = self.db.execute(
                "SELECT name, id FROM refs ORDER BY name, changeset, batch, position"
            ).fetchall()
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
        kind: str = "synced",
        detail: Mapping[str, Any] | None = None,
        run_id: int | None = None,
    ) -> None:
        """Journal a batch as applied on another word than this journal's own answer: a marker
        in the journal app (another runner applied it) or a baseline. The changeset takes the
        given checksums unless it has other batches applied already (drift stays visible)."""
        checksums = {
            "source_checksum": source_checksum,
            "rendered_checksum": rendered_checksum,
            "batch_count": batch_count,
        }
        with self._tx() as db:
            started = db.table("batches").count_where(
                "changeset = ? AND state IN (?, ?) AND idx != ?", [version, APPLIED, SENT, index]
            )
            if self._ensure_changeset(db, version, name, path, checksums) and not started:
                db.table("changesets").update(version, checksums)
            db.execute(
                "INSERT INTO batches (changeset, idx, hash, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(changeset, idx) DO UPDATE SET hash = excluded.hash",
                [version, index, batch_hash, PENDING],
            )
            self._apply(db, version, index, None, refs, run_id)
            logged = {**(detail or {}), "refs": {k: len(v) for k, v in refs.items()}}
            self._event(db, kind, run_id=run_id, changeset=version, batch=index, detail=logged)

    def import_partial(
        self,
        *,
        version: str,
        name: str,
        path: str,
        source_checksum: str,
        rendered_checksum: str,
        batch_count: int,
        index: int,
        done: tuple[int, str, Any],
        detail: Mapping[str, Any] | None = None,
        run_id: int | None = None,
    ) -> None:
        """Journal that the first calls of a batch not applied here took effect, ``done`` =
        (calls, hash, results), on a ``partial:K`` marker's word; logged as ``synced``. The
        batch is ``pending`` (its own hash comes with the plan, ``record_changeset``)."""
        checksums = {
            "source_checksum": source_checksum,
            "rendered_checksum": rendered_checksum,
            "batch_count": batch_count,
        }
        with self._tx() as db:
            self._ensure_changeset(db, version, name, path, checksums)
            db.execute(
                "INSERT INTO batches (changeset, idx, hash, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(changeset, idx) DO NOTHING",
                [version, index, done[1], PENDING],
            )
            row = self._require_batch(db, version, index)
            if row["state"] not in (PENDING, FAILED):
                raise JournalError(
                    f"{self._where}: changeset {version} batch {index} is {row['state']}: "
                    "a marker applied in part cannot say otherwise"
                )
            db.table("batches").update((version, index), self._done_columns(row, done))
            logged = {**(detail or {}), "done_calls": done[0]}
            self._event(db, "synced", run_id=run_id, changeset=version, batch=index, detail=logged)

    @staticmethod
    def _ensure_changeset(
        db: sqlite_utils.Database, version: str, name: str, path: str, checksums: Mapping[str, Any]
    ) -> bool:
        """The changeset's row, inserted (pending, with ``checksums``) if missing: True if it
        was there already (a marker's word must not overwrite its checksums then)."""
        if next(db.table("changesets").rows_where("version = ?", [version]), None) is not None:
            return True
        db.table("changesets").insert(
            {"version": version, "name": name, "path": path, "state": PENDING, **checksums}
        )
        return False

    def batch_refs(self, version: str, index: int) -> dict[str, list[int]]:
        """The ids one batch gave each ref, in order."""
        out: dict[str, list[int]] = {}
        for r in self._rows("refs", "changeset = ? AND batch = ?", [version, index], order_by="seq"):
            out.setdefault(r["name"], []).append(r["id"])
        return out

    # ---- what applied batches sent (for `repair`'s diff) -----------------------------------

    def keep_sent(self, version: str, index: int, requests: Sequence[Any] | bytes) -> None:
        """Keep what batch ``index`` of ``version`` sent (its requests as planned, refs
        unresolved: a list, or its JSON as ``Batch.requests_json`` gives it), replacing what an
        earlier content of it sent. A convenience for the eyes: the state never rests on it.
        A batch whose ``mark_applied`` kept it already (this journal, this process) is skipped."""
        if (version, index) in self._kept:
            return
        with self._tx() as db:
            self._keep_sent(db, version, index, requests)

    def _keep_sent(
        self, db: sqlite_utils.Database, version: str, index: int, requests: Sequence[Any] | bytes
    ) -> None:
        if not self._has_sent_table:
            return  # a journal at an older schema (a test's): nothing to keep it in
        text = (
            requests.decode()
            if isinstance(requests, bytes)
            else json.dumps(list(requests), ensure_ascii=False, default=plain)
        )
        db.execute(
            f"INSERT INTO {SENT_REQUESTS} (changeset, idx, requests) VALUES (?, ?, ?) "
            "ON CONFLICT(changeset, idx) DO UPDATE SET requests = excluded.requests",
            [version, index, text],
        )

    def sent(self) -> dict[str, dict[int, Any]]:
        """Changeset version -> batch index -> the requests it sent (where kept)."""
        if SENT_REQUESTS not in self.db.table_names():
            return {}
        out: dict[str, dict[int, Any]] = {}
        for row in self._rows(SENT_REQUESTS):
            out.setdefault(row["changeset"], {})[row["idx"]] = json.loads(row["requests"])
        return out

    def _take_in_sent_file(self) -> None:
        """Before schema 3 the sent requests lived in a second file beside the journal,
        ``<env>.sent.db``: its rows move in (what the journal has already wins) and the file goes,
        so each environment has one file again."""
        if self.path is None or SENT_REQUESTS not in self.db.table_names():
            return
        side = self.path.with_name(self.path.stem + ".sent.db")
        if not side.is_file():
            return
        try:
            other = sqlite_utils.Database(side)
            try:
                rows = list(other.table("sent").rows) if "sent" in other.table_names() else []
            finally:
                other.close()
        except sqlite3.Error as exc:
            raise JournalError(
                f"{self._where}: the file beside it, {side.name}, cannot be read ({exc})",
                hint=f"it only held what applied batches sent, for `repair`'s diff: move {side} away",
            ) from exc
        with self._tx() as db:
            db.table(SENT_REQUESTS).insert_all(
                ({"changeset": r["changeset"], "idx": r["idx"], "requests": r["requests"]} for r in rows),
                pk=("changeset", "idx"),
                ignore=True,
            )
        side.unlink()

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
        with self._tx() as db:
            self._event(db, kind, run_id=run_id, changeset=changeset, batch=batch, detail=detail)

    def events(self, changeset: str | None = None, kinds: Sequence[str] | None = None) -> list[Event]:
        where, params = [], []
        if changeset is not None:
            where.append("changeset = ?")
            params.append(changeset)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        return [
            Event(**{**r, "detail": _unjson(r["detail"])})
            for r in self._rows("events", " AND ".join(where) or None, params, order_by="id")
        ]

    # ---- the lock (kmigrate/journal/lock.py) ----------------------------------------------------

    def lock_holder(self) -> LockHolder | None:
        return self.lock.holder()

    def is_stale(self, holder: LockHolder) -> bool:
        return self.lock.is_stale(holder)

    def acquire_lock(self, run_id: int | None = None, **kwargs: Any) -> LockHolder:
        return self.lock.acquire(run_id, **kwargs)

    def release_lock(self) -> bool:
        return self.lock.release()

    def force_unlock(self, reason: str | None = None) -> LockHolder | None:
        return self.lock.force_unlock(reason)

    def locked(self, run_id: int | None = None, **kwargs: Any) -> Any:
        """``with journal.locked(run_id, wait=..., take_over_stale=...)``: held inside the block."""
        return self.lock.held(run_id, **kwargs)

    def _log_unlocked(self, holder: LockHolder, run_id: int | None, detail: dict[str, Any]) -> None:
        self._event(self.db, "unlocked", run_id=run_id, detail={"holder": asdict(holder), **detail})

    # ---- inside transactions ----------------------------------------------------------------

    def _event(
        self,
        db: sqlite_utils.Database,
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
        db.table("events").insert(
            {
                "time": self.clock(),
                "run_id": run_id,
                "kind": kind,
                "changeset": changeset,
                "batch": batch,
                "user": a.user,
                "host": a.host,
                "kmigrate_version": a.version,
                "detail": _json(detail),
            }
        )

    def _done_columns(self, row: Mapping[str, Any], done: tuple[int, str, Any]) -> dict[str, Any]:
        calls, calls_hash, results = done
        if calls < row["done_calls"]:
            raise JournalError(
                f"{self._where}: changeset {row['changeset']} batch {row['idx']} has {row['done_calls']} "
                f"calls applied already; {calls} cannot be fewer"
            )
        return {"done_calls": calls, "done_hash": calls_hash, "done_results": _json(results)}

    def _apply(
        self,
        db: sqlite_utils.Database,
        version: str,
        index: int,
        results: Any,
        refs: Mapping[str, Sequence[int]] | None,
        run_id: int | None,
    ) -> None:
        now = self.clock()
        db.table("batches").update(
            (version, index),
            {"state": APPLIED, "answered_at": now, "run_id": run_id, "result": _json(results), "error": None},
        )
        db.execute("DELETE FROM refs WHERE changeset = ? AND batch = ?", [version, index])
        db.table("refs").insert_all(
            (
                {"name": name, "position": pos, "id": int(i), "changeset": version, "batch": index}
                for name, ids in (refs or {}).items()
                for pos, i in enumerate(ids)
            ),
            batch_size=500,
        )
        old = self._require_changeset(db, version)
        db.table("changesets").update(
            version, {"first_applied": old["first_applied"] or now, "last_applied": now}
        )
        self._refresh_state(db, version)

    def _refresh_state(self, db: sqlite_utils.Database, version: str) -> None:
        total = self._require_changeset(db, version)["batch_count"]
        if total == 0:
            return  # nothing to derive from: the runner sets it (set_changeset_state)
        applied = db.table("batches").count_where("changeset = ? AND state = ?", [version, APPLIED])
        state = APPLIED if applied == total else PARTIAL if applied else PENDING
        db.table("changesets").update(version, {"state": state})

    def _require_changeset(self, db: sqlite_utils.Database, version: str) -> dict[str, Any]:
        row = next(db.table("changesets").rows_where("version = ?", [version]), None)
        if row is None:
            raise JournalError(
                f"{self._where}: no changeset {version} is journaled", hint="see `kmigrate status`"
            )
        return row

    def _require_batch(self, db: sqlite_utils.Database, version: str, index: int) -> dict[str, Any]:
        row = next(db.table("batches").rows_where("changeset = ? AND idx = ?", [version, index]), None)
        if row is None:
            raise JournalError(
                f"{self._where}: changeset {version} has no batch {index} journaled",
                hint="journal the changeset first (record_changeset)",
            )
        return row

    def _require_sent(self, db: sqlite_utils.Database, version: str, index: int, to: str) -> dict[str, Any]:
        row = self._require_batch(db, version, index)
        if row["state"] != SENT:
            raise JournalError(
                f"{self._where}: changeset {version} batch {index} is {row['state']}, not sent: it cannot {to}"
            )
        return row

    def _batches(self, where: str | None, params: Sequence[Any]) -> list[BatchRecord]:
        return [
            BatchRecord(
                changeset=r["changeset"],
                index=r["idx"],
                hash=r["hash"],
                state=r["state"],
                sent_at=r["sent_at"],
                answered_at=r["answered_at"],
                run_id=r["run_id"],
                result=_unjson(r["result"]),
                error=_unjson(r["error"]),
                probe=_unjson(r["probe"]),
                done_calls=r["done_calls"],
                done_hash=r["done_hash"],
                done_results=_unjson(r["done_results"]),
            )
            for r in self._rows("batches", where, params, order_by="changeset, idx")
        ]


__all__ = ["BUSY_TIMEOUT_MS", "EVENT_KINDS", "UNKNOWN_ID", "Journal"]
