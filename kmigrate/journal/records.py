"""What the journal hands out: who wrote (``Actor``) and one frozen record per table row."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..errors import KintoneError


def utc_now() -> str:
    """UTC ISO 8601 with milliseconds: ``2025-04-01T09:30:00.123Z``."""
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
    # What was read from Kintone just before sending (journaled with `sent`), so a lost answer
    # can be settled by reading Kintone again: see kmigrate/reconcile.py.
    probe: Any = None
    # Leading calls of the batch known to be applied while the rest is not (a failed bulk under
    # the reading that keeps the requests before the failing one); only the rest is sent again.
    done_calls: int = 0
    done_hash: str | None = None  # the hash of those calls' requests: they must not change
    done_results: Any = None  # what is known of those calls' results (ids recovered)


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
