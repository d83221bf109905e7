"""The journal: what was sent to Kintone and what Kintone answered, one SQLite file per environment.

Rooms: ``store`` (``Journal``: runs, changesets, the sent/applied/failed protocol, refs,
events), ``schema`` (tables and migrations, the schema version), ``lock`` (one run at a time),
``records`` (the frozen rows it hands out). The file is a plain database: see docs/journal.md.
"""

from .lock import Lock, LockHolder, pid_alive
from .records import Actor, BatchRecord, ChangesetRecord, Event, RunRecord, error_detail, utc_now
from .schema import MIGRATIONS, SCHEMA_VERSION
from .store import BUSY_TIMEOUT_MS, EVENT_KINDS, UNKNOWN_ID, Journal

__all__ = [
    "BUSY_TIMEOUT_MS",
    "EVENT_KINDS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "UNKNOWN_ID",
    "Actor",
    "BatchRecord",
    "ChangesetRecord",
    "Event",
    "Journal",
    "Lock",
    "LockHolder",
    "RunRecord",
    "error_detail",
    "pid_alive",
    "utc_now",
]
