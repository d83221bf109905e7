"""The journal's schema and its migrations.

``MIGRATIONS[n]`` takes a journal from schema version ``n`` to ``n + 1``; each runs inside the
one transaction that also stores the new version in ``meta``, so a journal is always at a
version, never between two. A released migration never changes (journals out there were made
by it); a schema change is a new migration appended here, see docs/journal.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]

# Version 1 is plain SQL: it needs what sqlite-utils' `create` cannot say (CHECK constraints,
# AUTOINCREMENT, append-only triggers), and it is history now.
_APPEND_ONLY = "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
_V1_SQL = (
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
        changeset TEXT NOT NULL REFERENCES changesets(version), idx INTEGER NOT NULL,
        hash TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'applied', 'failed')),
        sent_at TEXT, answered_at TEXT, run_id INTEGER REFERENCES runs(id),
        result TEXT, error TEXT,
        PRIMARY KEY (changeset, idx))""",
    # seq keeps the order ids were created in, across batches and changesets.
    """CREATE TABLE refs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, position INTEGER NOT NULL,
        id INTEGER NOT NULL, changeset TEXT NOT NULL, batch INTEGER NOT NULL)""",
    "CREATE INDEX refs_by_name ON refs (name, seq)",
    "CREATE INDEX refs_by_batch ON refs (changeset, batch)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, run_id INTEGER, kind TEXT NOT NULL,
        changeset TEXT, batch INTEGER, user TEXT NOT NULL, host TEXT NOT NULL,
        kmigrate_version TEXT NOT NULL, detail TEXT)""",
    f"CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events {_APPEND_ONLY}",
    f"CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events {_APPEND_ONLY}",
    """CREATE TABLE lock (
        id INTEGER PRIMARY KEY CHECK (id = 1), run_id INTEGER, user TEXT NOT NULL, host TEXT NOT NULL,
        pid INTEGER NOT NULL, since TEXT NOT NULL)""",
)


def _v1(db: sqlite_utils.Database) -> None:
    for statement in _V1_SQL:
        db.execute(statement)


def _v2(db: sqlite_utils.Database) -> None:
    """Automatic reconciliation: what was read before a send, and a failed bulk's applied prefix."""
    batches = db.table("batches")
    batches.add_column("probe", str)  # JSON, journaled with `sent`
    batches.add_column("done_calls", int, not_null_default=0)
    batches.add_column("done_hash", str)
    batches.add_column("done_results", str)  # JSON


def _v3(db: sqlite_utils.Database) -> None:
    """What each applied batch sent (its requests as planned, refs unresolved), for `repair`'s
    diff: kept in the journal itself (before, a second file: `<env>.sent.db`, taken in by
    ``Journal.open``)."""
    db.table("sent_requests").create(
        {"changeset": str, "idx": int, "requests": str},
        pk=("changeset", "idx"),
        not_null={"changeset", "idx", "requests"},
    )


MIGRATIONS: Sequence[Migration] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    """The version in ``meta``; 0 for a file with no ``meta`` (a new journal)."""
    if not db.table("meta").exists():
        return 0
    row = next(db.table("meta").rows_where("key = ?", ["schema_version"]), None)
    return int(row["value"]) if row else 0


def upgrade(db: sqlite_utils.Database, migrations: Sequence[Migration]) -> int:
    """Run the migrations a journal lacks; call inside a write transaction. Returns the version."""
    current = schema_version(db)
    for step in range(current, len(migrations)):
        migrations[step](db)
    if current < len(migrations):
        db.table("meta").upsert({"key": "schema_version", "value": str(len(migrations))}, pk="key")
    return len(migrations)
