"""Machine output: ``--format json`` of ``apply``, ``status`` and ``history`` as JSON lines.

Pure: each function returns one line's object; ``JsonLines`` writes them, one JSON document a
line, to the stream it is given (the CLI gives it stdout, and prints nothing else there).

Every stream has the same frame::

    {"format": 1, "kmigrate": "0.1.0", "command": "apply", "environment": "sandbox"}
    {"event": "changeset_started", ...}          # zero or more events, in the order they happened
    {"summary": {...}, "outcome": "applied", "exit_code": 0}

The first line always holds ``format`` (bumped only when a key changes meaning or goes away);
every event line holds ``event``; the last line holds ``summary``, also when the command
failed (then ``outcome`` is ``"failed"`` and ``error`` says why, as stderr does).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import IO, TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .errors import KmigrateError
    from .journal import Event
    from .plan import ChangesetPlan
    from .runner import RunEvent, RunSummary
    from .status import ChangesetStatus

EVENTS_FORMAT = 1


def header(command: str, environment: str) -> dict[str, Any]:
    return {"format": EVENTS_FORMAT, "kmigrate": __version__, "command": command, "environment": environment}


def run_event(event: RunEvent) -> dict[str, Any]:
    """One runner event: its kind, the changeset and (for batch events) the batch."""
    line: dict[str, Any] = {
        "event": event.kind,
        "changeset": event.changeset.id,
        "version": event.changeset.version,
    }
    if event.batch is not None:
        line.update(
            batch=event.batch.index,
            batches=len(event.changeset.batches),
            calls=len(event.batch.calls),
            records=event.records,
            hash=event.batch.hash,
        )
    return line


def planned(cs: ChangesetPlan) -> dict[str, Any]:
    """A dry run's line per changeset: what ``apply`` would do with it."""
    return {
        "event": "changeset_planned",
        "changeset": cs.id,
        "version": cs.version,
        "state": cs.state,
        "batches": len(cs.batches),
        "pending_batches": len(cs.pending_batches),
    }


def run_summary(summary: RunSummary | None, outcome: str) -> dict[str, Any]:
    """The last line of ``apply``: ``outcome`` is applied, nothing to do, declined or failed."""
    body = asdict(summary) if summary is not None else None
    return {"summary": body, "outcome": outcome, "exit_code": 0}


def failure(line: dict[str, Any], error: KmigrateError, outcome: str = "failed") -> dict[str, Any]:
    """A summary line for a command that stopped on ``error`` (its message, not a traceback)."""
    return {**line, "outcome": outcome, "exit_code": error.exit_code, "error": str(error)}


def status_event(row: ChangesetStatus) -> dict[str, Any]:
    return {"event": "changeset", **asdict(row), "path": str(row.path) if row.path else None}


def status_summary(rows: Iterable[ChangesetStatus]) -> dict[str, Any]:
    by_state: dict[str, int] = {}
    total = 0
    for row in rows:
        by_state[row.state] = by_state.get(row.state, 0) + 1
        total += 1
    return {"summary": {"changesets": total, "by_state": by_state}, "outcome": "ok", "exit_code": 0}


def history_event(event: Event) -> dict[str, Any]:
    return {"event": "journal_event", **asdict(event)}


def history_summary(count: int) -> dict[str, Any]:
    return {"summary": {"events": count}, "outcome": "ok", "exit_code": 0}


class JsonLines:
    """Writes one JSON document a line and flushes it, so a reader sees each event as it happens."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, line: Mapping[str, Any]) -> None:
        self.stream.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()
