"""The runner: applies a ``Plan`` batch by batch, journaling before each send and after each answer.

For each pending changeset, in version order, and each of its batches not yet applied:

    resolve refs (from the journal) -> journal `sent` -> one bulk request -> journal `applied`
                                                                        or `failed` (and stop)

A bulk request is all-or-nothing in Kintone, so a failed batch left nothing behind and is sent
again by the next run once its cause is fixed. A batch whose answer was lost (the connection
broke after sending, or the process died) stays ``sent``: it is *in doubt*, and no run sends it
again until ``kmigrate resolve`` has settled it.

``check_preconditions`` is the pure gate run before anything is sent: drift (an applied
changeset changed), order (a new changeset older than an applied one) and in-doubt batches.
The runner never prints; it reports through ``on_event``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .changeset import LoadedChangeset
from .changeset_files import version_key
from .client import Client
from .drift import find_drift
from .drift import started as _started
from .errors import (
    DriftError,
    InDoubtError,
    InputError,
    JournalError,
    KintoneError,
    Location,
    OrderError,
    TransportError,
)
from .journal import UNKNOWN_ID, Journal
from .plan import APPLIED, FAILED, SENT, Batch, Call, ChangesetPlan, JournaledChangeset, Plan

# Locates (operation, record), both 0-based, of a changeset in the user's files.
Locator = Callable[[str, int, int | None], Location]


@dataclass(frozen=True)
class RunEvent:
    """What the runner reports as it goes: ``kind`` is one of ``changeset_skipped``,
    ``changeset_started``, ``batch_skipped`` (applied by an earlier run), ``batch_sent`` (journaled
    as sent, the request about to leave), ``batch_applied``, ``batch_failed``, ``batch_in_doubt``
    (the answer was lost), ``changeset_applied``. ``kmigrate apply --format json`` prints each."""

    kind: str
    changeset: ChangesetPlan
    batch: Batch | None = None
    records: int = 0


@dataclass
class RunSummary:
    """The end of a run, for the closing lines of ``apply``."""

    applied_batches: int = 0
    applied_records: int = 0
    skipped_changesets: int = 0
    applied_changesets: list[str] = field(default_factory=list)
    requests_sent: int = 0


# ---- before anything is sent: pure checks ----------------------------------------------------


def check_preconditions(
    changesets: Sequence[LoadedChangeset],
    state: Mapping[str, JournaledChangeset],
    *,
    out_of_order: bool = False,
) -> None:
    """Raise before anything is sent if the journal and the files disagree."""
    drift = find_drift(changesets, state)
    if drift:
        loaded = {c.version for c in changesets}
        gone = [v for v, j in state.items() if _started(j) and v not in loaded]
        hint = (
            "an applied changeset is history: put the old content back and write a new changeset for the change, "
            "or accept the new content with `kmigrate repair` (logged)"
        )
        if gone:  # repair accepts new content; it cannot accept a file that is not there
            hint += f"; a deleted changeset must be restored ({', '.join('V' + v for v in sorted(gone))}): to undo its records, write a new changeset"
        raise DriftError("applied changesets changed:\n  " + "\n  ".join(drift.values()), hint=hint)
    in_doubt = [
        (v, i) for v, j in sorted(state.items()) for i, s in sorted(j.batch_states.items()) if s == SENT
    ]
    if in_doubt:
        version, index = in_doubt[0]
        raise InDoubtError(
            f"changeset V{version} batch {index} was sent but its answer was never journaled: it may or may not have been applied"
            + (f" ({len(in_doubt) - 1} more in doubt)" if len(in_doubt) > 1 else ""),
            hint=f"check what Kintone holds, then `kmigrate resolve {version} {index} --applied` or `--not-applied`",
        )
    applied = [v for v, j in state.items() if _started(j)]
    if applied and not out_of_order:
        newest = max(applied, key=version_key)
        older = [
            c for c in changesets if c.version not in applied and version_key(c.version) < version_key(newest)
        ]
        if older:
            names = ", ".join(c.id for c in older)
            raise OrderError(
                f"{names} {'is' if len(older) == 1 else 'are'} older than V{newest}, which is already applied",
                hint="give it a version after the newest applied one (`kmigrate new`), or pass --out-of-order if applying it late is right",
            )


# ---- sending ---------------------------------------------------------------------------------


_RECORD_KEY = re.compile(r"^(?:records|ids)\[(\d+)\]")


def _failing_position(error: KintoneError) -> int | None:
    """The record position inside the failing call, from keys like ``records[5].title.value``."""
    for key in error.errors:
        m = _RECORD_KEY.match(key)
        if m:
            return int(m.group(1))
    return None


def ids_created(call: Call, result: Mapping[str, Any]) -> dict[str, list[int]]:
    """The ids a successful call created (or upserted), per ref name of its segments, in order."""
    named = [s for s in call.segments if s.ref]
    if not named:
        return {}
    if "ids" in result:
        ids = [int(i) for i in result["ids"]]
    else:
        ids = [int(r["id"]) for r in result.get("records", [])]
    out: dict[str, list[int]] = {}
    position = 0
    for seg in call.segments:
        if seg.ref:
            out.setdefault(seg.ref, []).extend(ids[position : position + seg.count])
        position += seg.count
    return out


class _LostId:
    """Takes the place of an id the journal lost (``UNKNOWN_ID``) while payloads are resolved:
    it cannot be mistaken for a field value, and a payload holding one is never sent."""

    def __repr__(self) -> str:
        return "<lost id>"


_LOST = _LostId()


def _holds_lost_id(value: Any) -> bool:
    if value is _LOST:
        return True
    if isinstance(value, Mapping):
        return any(_holds_lost_id(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_lost_id(v) for v in value)
    return False


def _interruption(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"


def lost_ids(batch: Batch) -> dict[str, list[int]]:
    """What a batch resolved as applied by hand gives each ref it creates records for: one
    ``UNKNOWN_ID`` per record, so the ids after it keep their positions."""
    out: dict[str, list[int]] = {}
    for call in batch.calls:
        if call.method in ("POST", "PUT"):
            for seg in call.segments:
                if seg.ref:
                    out.setdefault(seg.ref, []).extend([UNKNOWN_ID] * seg.count)
    return out


class Runner:
    """Applies plans through one ``Client``, journaling in one ``Journal``."""

    def __init__(
        self,
        client: Client,
        journal: Journal,
        *,
        run_id: int | None = None,
        locate: Locator | None = None,
        on_event: Callable[[RunEvent], None] = lambda event: None,
    ):
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self.locate = locate
        self.on_event = on_event
        self._lost: dict[str, list[tuple[str, int]]] = {}
        self._ids: dict[str, str] = {}

    def run(self, plan: Plan) -> RunSummary:
        summary = RunSummary()
        refs = self.journal.refs()  # read once, extended as batches land: no per-batch re-read
        self._lost = self.journal.lost_ids()
        self._ids = {c.version: c.id for c in plan.changesets}
        for name in self._lost:
            refs[name] = [_LOST if i == UNKNOWN_ID else i for i in refs[name]]
        requests_before = self.client.request_count
        try:
            for cs in plan.changesets:
                if cs.state == APPLIED:
                    summary.skipped_changesets += 1
                    self.on_event(RunEvent("changeset_skipped", cs))
                    continue
                self._run_changeset(cs, refs, summary)
        finally:
            summary.requests_sent = self.client.request_count - requests_before
        return summary

    def _run_changeset(self, cs: ChangesetPlan, refs: dict[str, list[int]], summary: RunSummary) -> None:
        self.journal.record_changeset(cs)
        self.on_event(RunEvent("changeset_started", cs))
        for batch in cs.batches:  # may be compiled lazily: never held all at once
            if batch.state == APPLIED:
                self.on_event(RunEvent("batch_skipped", cs, batch, batch.record_count))
                continue
            self._send(cs, batch, refs)  # a failure raises: the CLI reports what this run did
            summary.applied_batches += 1
            summary.applied_records += batch.record_count
            self.on_event(RunEvent("batch_applied", cs, batch, batch.record_count))
        if not cs.batches:  # nothing to send (e.g. an empty data file): applied by definition
            self.journal.set_changeset_state(cs.version, APPLIED, self.run_id)
        summary.applied_changesets.append(cs.id)
        self.on_event(RunEvent("changeset_applied", cs))

    def _send(self, cs: ChangesetPlan, batch: Batch, refs: dict[str, list[int]]) -> None:
        requests = [call.resolved(refs) for call in batch.calls]
        lost = sorted(name for name in batch.consumes if name in self._lost)
        if lost and any(_holds_lost_id(r) for r in requests):
            raise self._lost_ref_error(cs, batch, lost)
        self.journal.mark_sent(cs.version, batch.index, batch.hash, self.run_id)
        self.on_event(RunEvent("batch_sent", cs, batch, batch.record_count))
        where = Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}")
        settle = f"`kmigrate resolve {cs.version} {batch.index}"
        try:
            results = self.client.bulk(requests, batch.guest_space_id)
        except KintoneError as exc:
            # Kintone refused it: nothing of it was applied (a bulk is all-or-nothing).
            self._journal_answer(
                cs,
                batch,
                "Kintone refused it, so nothing of it was applied",
                f"{settle} --not-applied`",
                lambda refused=exc: self.journal.mark_failed(cs.version, batch.index, refused, self.run_id),
            )
            self.on_event(RunEvent("batch_failed", cs, batch))
            raise self._explain(cs, batch, exc) from exc
        except (TransportError, InputError) as exc:
            if isinstance(exc, TransportError) and exc.sent_maybe:
                self.on_event(RunEvent("batch_in_doubt", cs, batch, batch.record_count))
                raise InDoubtError(
                    f"changeset {cs.id} batch {batch.index}: {exc.message}",
                    hint=f"the batch stays in doubt: check what Kintone holds, then {settle} --applied` or `--not-applied`",
                ) from exc
            # Certainly never sent (no connection, or refused by the client before sending).
            self._journal_answer(
                cs,
                batch,
                "it was never sent",
                f"{settle} --not-applied`",
                lambda: self.journal.mark_unsent(cs.version, batch.index),
            )
            if isinstance(exc, TransportError):
                raise TransportError(exc.message, sent_maybe=False, location=where, hint=exc.hint) from exc
            raise InputError(exc.message, location=where, hint=exc.hint) from exc
        except (KeyboardInterrupt, Exception) as exc:
            # Ctrl-C (or a bug) while the request may be on the wire: it stays `sent`, in doubt.
            self.on_event(RunEvent("batch_in_doubt", cs, batch, batch.record_count))
            raise InDoubtError(
                f"changeset {cs.id} batch {batch.index}: {_interruption(exc)} while the bulk request was being sent: "
                "Kintone may or may not have applied it",
                location=where,
                hint=f"the batch is in doubt and will not be sent again blindly: check what Kintone holds, then {settle} --applied` or `--not-applied`",
            ) from exc
        created: dict[str, list[int]] = {}
        for call, result in zip(batch.calls, results, strict=False):
            for name, ids in ids_created(call, result).items():
                created.setdefault(name, []).extend(ids)
        self._journal_answer(
            cs,
            batch,
            "Kintone applied it",
            f"{settle} --applied` (never send it again)",
            lambda: self.journal.mark_applied(cs.version, batch.index, results, created, self.run_id),
        )
        for name, ids in created.items():
            refs.setdefault(name, []).extend(ids)

    def _journal_answer(
        self, cs: ChangesetPlan, batch: Batch, outcome: str, command: str, write: Callable[[], None]
    ) -> None:
        """Journal Kintone's answer; if that fails (or Ctrl-C lands there) the batch stays
        `sent`, so say what Kintone did and how to settle it."""
        try:
            write()
        except (KeyboardInterrupt, Exception) as exc:
            raise JournalError(
                f"changeset {cs.id} batch {batch.index}: {outcome}, but the journal could not record that "
                f"({_interruption(exc)}); the batch is left in doubt",
                location=Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}"),
                hint=f"once the journal is writable again, {command}",
            ) from exc

    def _lost_ref_error(self, cs: ChangesetPlan, batch: Batch, names: list[str]) -> JournalError:
        producers = "; ".join(
            f"ref {name!r}: {self._ids.get(v, 'V' + v)} batch {i}"
            for name in names
            for v, i in self._lost[name]
        )
        return JournalError(
            f"changeset {cs.id} batch {batch.index} needs ids that were never journaled ({producers} "
            "was resolved as applied by hand, and the answer holding the ids of the records it created was lost); nothing was sent",
            location=Location(file=cs.path, changeset=cs.id),
            hint=f"make the operations of {cs.id} that use {', '.join(repr(n) for n in names)} find those records another way "
            "(e.g. `update` by a unique key), then `kmigrate apply` again",
        )

    def _explain(self, cs: ChangesetPlan, batch: Batch, exc: KintoneError) -> KintoneError:
        """The same error, located in the user's files, saying what stays committed."""
        location = Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index} of {len(cs.batches)}")
        if exc.bulk_index is not None and 0 <= exc.bulk_index < len(batch.calls):
            call = batch.calls[exc.bulk_index]
            position = _failing_position(exc)
            spot = call.locate(position) if position is not None else None
            operations = sorted({s.operation for s in call.segments})
            if spot is not None:
                location = self._where(cs, spot[0], spot[1], location)
            elif len(operations) == 1:
                location = self._where(cs, operations[0], None, location)
        # Batches run in order and a run stops at the first failure: every earlier one is applied.
        kept = f"this batch was rolled back whole; {batch.index} earlier batch(es) of {cs.id} and every earlier changeset stay applied"
        return KintoneError(
            f"{exc.message}; {kept}",
            code=exc.code,
            status=exc.status,
            errors=exc.errors,
            error_id=exc.error_id,
            bulk_index=exc.bulk_index,
            location=location,
            hint=(exc.hint + "; " if exc.hint else "")
            + "fix the cause and run `kmigrate apply` again: it resumes at this batch",
        )

    def _where(self, cs: ChangesetPlan, operation: int, record: int | None, fallback: Location) -> Location:
        if self.locate is not None:
            return self.locate(cs.version, operation, record)
        summary = cs.operations[operation] if operation < len(cs.operations) else None
        return Location(
            file=cs.path,
            line=summary.line if summary else None,
            changeset=cs.id,
            operation=operation + 1,
            record=None if record is None else record + 1,
            detail=f"{summary.kind} {summary.app}" if summary else fallback.detail,
        )


__all__ = [
    "RunEvent",
    "RunSummary",
    "Runner",
    "check_preconditions",
    "find_drift",
    "ids_created",
    "lost_ids",
    "FAILED",
]
