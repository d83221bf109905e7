"""The sandbox's record store: SQLite, one row per record, values kept in Kintone's read shape.

Tables are keyed by app id only; field definitions come from the sandbox file each time it is
opened, so the file may change between runs. ``uniq`` emulates "prohibit duplicate values":
rebuilt from the records on open (a field may have become unique since), then kept in step by
every write; ``uniq_complete`` names the fields whose every record is in it (the last rebuild
found no duplicate), the only ones a query may be answered from (``unique_ids``). Queries read
the records they may select through the primary key (``select``). Writes run inside
``transaction()``, which nests through SAVEPOINTs so a bulk request is one transaction and each
call within it is atomic as well.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..paths import create_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    app INTEGER NOT NULL,
    id INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequences (
    app INTEGER PRIMARY KEY,
    next_id INTEGER NOT NULL,
    next_row INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uniq (
    app INTEGER NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (app, field, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uniq_by_record ON uniq (app, id);
CREATE TABLE IF NOT EXISTS uniq_complete (
    app INTEGER NOT NULL,
    field TEXT NOT NULL,
    PRIMARY KEY (app, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS request_counts (
    day TEXT NOT NULL,
    app INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, app)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    uploaded REAL NOT NULL,
    attached INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS created_apps (
    id INTEGER PRIMARY KEY,
    preview TEXT NOT NULL,
    preview_revision INTEGER NOT NULL,
    live TEXT,
    live_revision INTEGER,
    created TEXT NOT NULL,
    creator TEXT NOT NULL
);
"""
SCHEMA_VERSION = "1"


@dataclass
class StoredRecord:
    """``data``: {"values": {code: read-shape value}, "creator", "created", "modifier", "updated",
    "status", "assignees"}."""

    id: int
    revision: int
    data: dict[str, Any]


@dataclass(frozen=True)
class StoredFile:
    key: str
    name: str
    content_type: str
    size: int
    uploaded: float  # seconds since the epoch
    attached: bool  # False: an upload's temporary key; True: a key a record holds


@dataclass
class CreatedApp:
    """An app made through the admin API: its pre-live (``preview``) and live settings, each in
    the sandbox file's app shape (``{id, name, guest_space_id?, properties}``); ``live`` is None
    until the first deploy."""

    id: int
    preview: dict[str, Any]
    preview_revision: int
    live: dict[str, Any] | None
    live_revision: int | None
    created: str  # Kintone's createdAt, e.g. 2026-01-31T09:15:00.000Z
    creator: str


class Store:
    def __init__(self, path: Path | None = None):
        try:
            if path is not None:
                create_private(path)  # 0600 in a 0700 folder: records, user names
            # One connection shared by the server's threads; the Sandbox serialises requests.
            self.conn = sqlite3.connect(
                str(path) if path else ":memory:", isolation_level=None, check_same_thread=False, timeout=10
            )
            self.conn.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"the sandbox store {path} cannot be opened: {exc}",
                hint="point `sandbox_store` (or --store) at a new file, or delete this one",
            ) from None
        self._depth = 0

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The outermost level is BEGIN IMMEDIATE .. COMMIT; inner levels are SAVEPOINTs."""
        depth = self._depth
        if depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.conn.execute(f"SAVEPOINT sp{depth}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if depth == 0:
                self.conn.execute("ROLLBACK")
            else:
                self.conn.execute(f"ROLLBACK TO sp{depth}")
                self.conn.execute(f"RELEASE sp{depth}")
            raise
        self._depth -= 1
        if depth == 0:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute(f"RELEASE sp{depth}")

    # -- ids -----------------------------------------------------------------------------------

    def _sequence(self, app: int) -> tuple[int, int]:
        row = self.conn.execute("SELECT next_id, next_row FROM sequences WHERE app = ?", (app,)).fetchone()
        if row is None:
            self.conn.execute("INSERT INTO sequences VALUES (?, 1, 1)", (app,))
            return 1, 1
        return row

    def allocate_ids(self, app: int, count: int) -> list[int]:
        next_id, _ = self._sequence(app)
        self.conn.execute("UPDATE sequences SET next_id = ? WHERE app = ?", (next_id + count, app))
        return list(range(next_id, next_id + count))

    def allocate_row_ids(self, app: int, count: int) -> list[int]:
        _, next_row = self._sequence(app)
        self.conn.execute("UPDATE sequences SET next_row = ? WHERE app = ?", (next_row + count, app))
        return list(range(next_row, next_row + count))

    # -- records -------------------------------------------------------------------------------

    def get(self, app: int, record_id: int) -> StoredRecord | None:
        row = self.conn.execute(
            "SELECT id, revision, data FROM records WHERE app = ? AND id = ?", (app, record_id)
        ).fetchone()
        return StoredRecord(row[0], row[1], json.loads(row[2])) if row else None

    def all(self, app: int) -> list[StoredRecord]:
        rows = self.conn.execute("SELECT id, revision, data FROM records WHERE app = ? ORDER BY id", (app,))
        return [StoredRecord(r[0], r[1], json.loads(r[2])) for r in rows]

    def select(
        self, app: int, low: int, high: int, ids: Iterable[int] | None = None, *, descending: bool = False
    ) -> Iterator[StoredRecord]:
        """The app's records with ``low <= id <= high`` (and among ``ids`` when given) in id
        order, read a growing chunk at a time through the primary key, so a reader that stops
        early reads little, and no statement stays open between two records."""
        if ids is not None:
            wanted = sorted((i for i in ids if low <= i <= high), reverse=descending)
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                by_id = {
                    r[0]: r
                    for r in self.conn.execute(
                        f"SELECT id, revision, data FROM records WHERE app = ? AND id IN ({marks})",
                        (app, *chunk),
                    )
                }
                for i in chunk:
                    if i in by_id:
                        yield StoredRecord(i, by_id[i][1], json.loads(by_id[i][2]))
            return
        sql = (
            "SELECT id, revision, data FROM records WHERE app = ? AND id BETWEEN ? AND ?"
            f" ORDER BY id {'DESC' if descending else 'ASC'} LIMIT ?"
        )
        size = 16
        while low <= high:
            rows = self.conn.execute(sql, (app, low, high, size)).fetchall()
            for row in rows:
                yield StoredRecord(row[0], row[1], json.loads(row[2]))
            if len(rows) < size:
                return
            if descending:
                high = rows[-1][0] - 1
            else:
                low = rows[-1][0] + 1
            size = min(size * 4, 4096)

    def count(self, app: int) -> int:
        return self.conn.execute("SELECT count(*) FROM records WHERE app = ?", (app,)).fetchone()[0]

    def insert_many(self, app: int, records: Iterable[StoredRecord]) -> None:
        self.conn.executemany(
            "INSERT INTO records (app, id, revision, data) VALUES (?, ?, ?, ?)",
            [
                (app, r.id, r.revision, json.dumps(r.data, ensure_ascii=False, separators=(",", ":")))
                for r in records
            ],
        )

    def update_many(self, app: int, records: Iterable[StoredRecord]) -> None:
        self.conn.executemany(
            "UPDATE records SET revision = ?, data = ? WHERE app = ? AND id = ?",
            [
                (r.revision, json.dumps(r.data, ensure_ascii=False, separators=(",", ":")), app, r.id)
                for r in records
            ],
        )

    def delete_many(self, app: int, ids: Iterable[int]) -> None:
        ids = list(ids)
        self.conn.executemany("DELETE FROM records WHERE app = ? AND id = ?", [(app, i) for i in ids])
        self.conn.executemany("DELETE FROM uniq WHERE app = ? AND id = ?", [(app, i) for i in ids])

    # -- unique values -------------------------------------------------------------------------

    def unique_owner(self, app: int, field: str, value: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM uniq WHERE app = ? AND field = ? AND value = ?", (app, field, value)
        ).fetchone()
        return row[0] if row else None

    def unique_owners(self, app: int, field: str, values: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for value, owner in self.conn.execute(
                f"SELECT value, id FROM uniq WHERE app = ? AND field = ? AND value IN ({marks})",
                (app, field, *chunk),
            ):
                found[value] = owner
        return found

    def unique_ids(self, app: int, field: str, values: Iterable[str]) -> set[int] | None:
        """The ids of the records whose ``field`` holds one of ``values`` (each non-empty), from
        the unique index; None when the index may not hold every record (``uniq_complete``)."""
        complete = self.conn.execute(
            "SELECT 1 FROM uniq_complete WHERE app = ? AND field = ?", (app, field)
        ).fetchone()
        if complete is None:
            return None
        return set(self.unique_owners(app, field, sorted(values)).values())

    def set_uniques(self, app: int, rows: Iterable[tuple[str, str, int]], *, new: bool = False) -> None:
        """(field, value, id) rows; a record's old value for that field is dropped first
        (``new``: the records were just inserted and have none)."""
        rows = list(rows)
        if not new:
            self.conn.executemany(
                "DELETE FROM uniq WHERE app = ? AND field = ? AND id = ?", [(app, f, i) for f, _, i in rows]
            )
        self.conn.executemany(
            "INSERT INTO uniq (app, field, value, id) VALUES (?, ?, ?, ?)",
            [(app, f, v, i) for f, v, i in rows if v != ""],
        )

    def rebuild_uniques(self, unique_fields: Mapping[int, list[str]]) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM uniq")
            self.conn.execute("DELETE FROM uniq_complete")
            for app, codes in unique_fields.items():
                if not codes:
                    continue
                rows = []
                seen: set[tuple[str, str]] = set()
                repeated: set[str] = set()  # fields a value of which two records hold: not complete
                for rec in self.all(app):
                    for code in codes:
                        value = rec.data["values"].get(code)
                        if value is None or value == "":
                            continue
                        if not isinstance(value, str) or (code, value) in seen:
                            repeated.add(code)
                        else:
                            seen.add((code, value))
                            rows.append((app, code, value, rec.id))
                self.conn.executemany("INSERT INTO uniq VALUES (?, ?, ?, ?)", rows)
                self.conn.executemany(
                    "INSERT INTO uniq_complete VALUES (?, ?)", [(app, c) for c in codes if c not in repeated]
                )

    # -- apps created through the admin API --------------------------------------------------

    def created_apps(self) -> list[CreatedApp]:
        rows = self.conn.execute(
            "SELECT id, preview, preview_revision, live, live_revision, created, creator"
            " FROM created_apps ORDER BY id"
        )
        return [
            CreatedApp(r[0], json.loads(r[1]), r[2], json.loads(r[3]) if r[3] else None, r[4], r[5], r[6])
            for r in rows
        ]

    def save_created_app(self, app: CreatedApp) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO created_apps"
            " (id, preview, preview_revision, live, live_revision, created, creator)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                app.id,
                json.dumps(app.preview, ensure_ascii=False),
                app.preview_revision,
                json.dumps(app.live, ensure_ascii=False) if app.live is not None else None,
                app.live_revision,
                app.created,
                app.creator,
            ),
        )

    # -- the daily request counter -------------------------------------------------------------

    def count_requests(self, day: str, apps: Iterable[int]) -> None:
        self.conn.executemany(
            "INSERT INTO request_counts (day, app, count) VALUES (?, ?, 1)"
            " ON CONFLICT (day, app) DO UPDATE SET count = count + 1",
            [(day, app) for app in apps],
        )

    def request_counts(self, day: str) -> dict[int, int]:
        rows = self.conn.execute("SELECT app, count FROM request_counts WHERE day = ?", (day,))
        return {app: count for app, count in rows}

    # -- files ---------------------------------------------------------------------------------

    def put_file(self, file: StoredFile, data: bytes) -> None:
        self.conn.execute(
            "INSERT INTO files (key, name, content_type, size, data, uploaded, attached)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (file.key, file.name, file.content_type, file.size, data, file.uploaded, int(file.attached)),
        )

    def get_file(self, key: str) -> StoredFile | None:
        row = self.conn.execute(
            "SELECT key, name, content_type, size, uploaded, attached FROM files WHERE key = ?", (key,)
        ).fetchone()
        return StoredFile(row[0], row[1], row[2], row[3], row[4], bool(row[5])) if row else None

    def file_data(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT data FROM files WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def copy_file(self, key: str, new_key: str) -> None:
        """An upload attached to a record: a permanent copy under ``new_key``."""
        self.conn.execute(
            "INSERT INTO files (key, name, content_type, size, data, uploaded, attached)"
            " SELECT ?, name, content_type, size, data, uploaded, 1 FROM files WHERE key = ?",
            (new_key, key),
        )

    def drop_expired_uploads(self, before: float) -> None:
        self.conn.execute("DELETE FROM files WHERE attached = 0 AND uploaded < ?", (before,))

    def reset(self) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM files")
            self.conn.execute("DELETE FROM records")
            self.conn.execute("DELETE FROM sequences")
            self.conn.execute("DELETE FROM uniq")
