"""The runner: applies a ``Plan`` batch by batch, journaling before each send and after each answer.

For each pending changeset, in version order, and each of its batches not yet applied:

    resolve refs (from the journal) -> read the probe -> journal `sent` (with the probe)
      -> one bulk request -> journal `applied`, or `failed` (and stop)

A batch whose answer was lost (the connection broke after sending, the process died, Ctrl-C)
stays ``sent``: it is *in doubt*. It is never sent again blindly: the runner reads Kintone
(``kmigrate.reconcile``) to find out whether it took effect, right away when the answer is
lost, or at the start of the next run; it journals the answer (with the ids the batch created)
and goes on: skipped if it applied, sent again if it certainly did not. Only when Kintone
cannot tell does it stop, naming the app, the record and why, for ``kmigrate resolve``.

A refused bulk rolled back whole in Kintone's reference; under the other reading (the requests
before the failing one stay committed) the runner checks those requests before anything is
sent again, and journals the ones that took effect so only the rest is sent.

What is refused before anything is sent (drift: an applied changeset changed; order: a new
changeset older than an applied one) is judged by ``drift.preflight``, which ``kmigrate.api``
runs before it starts the runner. The runner never prints; it reports through ``on_event``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import reconcile
from .attachments import file_markers, upload_files
from .errors import (
    DriftError,
    InDoubtError,
    InputError,
    JournalError,
    KintoneError,
    KmigrateError,
    Location,
    TransportError,
)
from .journal import UNKNOWN_ID, BatchRecord, Journal
from .pipeline import Ahead, Senders
from .plan import APPLIED, FAILED, SENT, Batch, Call, ChangesetPlan, Plan
from .planner.independence import Footprint, check_parallel, conflict, footprint
from .remote.records import SENT_MARKER, Marker, kept_by_refusal, sent_marker
from .remote.sync import marker_refs

if TYPE_CHECKING:
    from .client import Client, EncodedBulk
    from .remote.session import RemoteRun

# Locates (operation, record), both 0-based, of a changeset in the user's files.
Locator = Callable[[str, int, int | None], Location]

# Sends of one batch in one run: a lost answer is settled by reading Kintone, and a batch that
# certainly did not apply is sent again, this many times in all before the run gives up.
MAX_SENDS = 3


@dataclass(frozen=True)
class RunEvent:
    """What the runner reports as it goes: ``kind`` is one of ``changeset_skipped``,
    ``changeset_started``, ``batch_skipped`` (applied by an earlier run), ``batch_sent`` (journaled
    as sent, the request about to leave), ``batch_applied``, ``batch_in_doubt`` (its answer was
    lost), ``batch_reconciled`` (an in-doubt batch found applied in Kintone), ``batch_failed``,
    ``changeset_applied``. ``kmigrate apply --format json`` prints each."""

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
    requests_sent: int = 0  # every HTTP request: the bulks and the reads for reconciliation
    reconciled_batches: int = 0  # in-doubt batches settled by reading Kintone


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


def _created(calls: Sequence[Call], results: Sequence[Any]) -> dict[str, list[int]]:
    created: dict[str, list[int]] = {}
    for call, result in zip(calls, results, strict=True):
        for name, ids in ids_created(call, result or {}).items():
            created.setdefault(name, []).extend(ids)
    return created


def _keeps_ids(call: Call) -> bool:
    """The call creates (or names) records a ref keeps: its ids must be journaled."""
    return call.method in ("POST", "PUT") and any(s.ref for s in call.segments)


def calls_hash(calls: Sequence[Call]) -> str:
    """Identifies the first calls of a batch that took effect (refs unresolved, as Batch.hash)."""
    return hashlib.sha256(b"[" + b",".join(c.encoded() for c in calls) + b"]").hexdigest()


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


def resolve_batch(
    journal: Journal,
    cs: ChangesetPlan,
    batch: Batch,
    applied: bool,
    *,
    client: Client | None = None,
    ids_key: str | None = None,
    ids_query: str | None = None,
    note: str | None = None,
) -> list[str]:
    """``kmigrate resolve``: settle an in-doubt batch as a person found it in Kintone.

    As applied, the ids of the records it created for refs were in the lost answer: with
    ``ids_key`` (a unique field) or ``ids_query`` they are read back from Kintone through
    ``client`` (also for a batch resolved earlier without them); without, the journal keeps a
    lost-id placeholder for each (later ids keep their positions) and the refs are returned."""
    reading = ids_key is not None or ids_query is not None
    if reading and not applied:
        raise InputError("--ids-key and --ids-query go with --applied: they read back the records it created")
    if not reading:
        lost = lost_ids(batch) if applied else {}
        journal.resolve(cs.version, batch.index, applied, refs=lost, note=note)
        return sorted(lost)
    if not any(_keeps_ids(c) for c in batch.calls):
        raise InputError(
            f"changeset {cs.id} batch {batch.index} creates no records a ref keeps: there are no ids to read",
            hint=f"`kmigrate resolve {cs.version} {batch.index} --applied` is enough",
        )
    assert client is not None, "reading ids needs a client"
    refs = journal.refs()
    requests = [call.resolved(refs) for call in batch.calls]
    try:
        results = reconcile.read_ids(
            client,
            requests,
            batch.guest_space_id,
            [_keeps_ids(c) for c in batch.calls],
            key=ids_key,
            query=ids_query,
        )
    except ValueError as exc:
        raise InputError(
            f"changeset {cs.id} batch {batch.index}: {exc}; nothing was journaled",
            hint="name a field that is unique among those records (--ids-key) or a query that selects exactly them",
        ) from None
    created = _created(batch.calls, results)
    record = journal.batch(cs.version, batch.index)
    how = {"ids_read_by": f"key {ids_key}" if ids_key is not None else f"query {ids_query}"}
    if record is not None and record.state == APPLIED:
        journal.recover_ids(cs.version, batch.index, created, note=note)
    else:
        journal.resolve(cs.version, batch.index, True, results=results, refs=created, note=note, detail=how)
    return []


@dataclass
class _Prepared:
    """A batch made ready ahead of its turn (``Runner._prepare``): its requests with refs
    resolved and encoded, unless it waits for ids (``requests`` None) or holds attachments
    (``encoded`` None: uploaded and encoded at its turn); with ``--parallel``, its footprint."""

    batch: Batch
    requests: list[dict[str, Any]] | None = None
    encoded: EncodedBulk | None = None
    files: bool = False
    footprint: Footprint | None = None


@dataclass(frozen=True)
class _Ready:
    """A batch at its turn: the requests it sends."""

    cs: ChangesetPlan
    batch: Batch
    requests: list[dict[str, Any]]
    encoded: EncodedBulk | None
    where: Location


@dataclass
class _Flight:
    """A batch journaled `sent`, its bulk leaving or in flight."""

    ready: _Ready
    record: BatchRecord
    probe: Any
    footprint: Footprint | None = None
    partial: Marker | None = None  # the marker applied in part that this bulk makes whole


def _exchanged(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``call()``'s value, or what it raised (Ctrl-C included), for ``Runner._land``."""
    try:
        return call(), None
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - _land raises it or journals it
        return None, exc


def _snapshot(refs: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """The refs' ids as they stand, for the thread preparing batches (the runner extends its own)."""
    return {name: list(ids) for name, ids in refs.items()}


class _Flights:
    """``apply --parallel N``: up to N bulks of one changeset in flight at once, each proved
    independent of every other in flight (``planner.independence``) before it leaves. Bulks
    leave in plan order; each is journaled as it lands, on the runner's thread. After a
    failure nothing more leaves: those in flight land and are journaled, then the failure of
    the earliest batch is raised."""

    def __init__(self, runner: Runner, cs: ChangesetPlan, refs: dict[str, list[Any]], summary: RunSummary):
        self.runner, self.cs, self.refs, self.summary = runner, cs, refs, summary
        self.senders = Senders(runner.parallel)
        self.flying: dict[Future[Any], _Flight] = {}  # in the order they left
        self.failures: list[tuple[int, Exception]] = []

    def send(self, prepared: _Prepared) -> None:
        runner, batch = self.runner, prepared.batch
        try:
            ready = runner._ready(self.cs, batch, self.refs, prepared)
            fp = prepared.footprint
            if fp is None or ready.requests is not prepared.requests:
                fp = runner._footprint(self.cs, batch, ready.requests)
        except Exception as exc:  # noqa: BLE001 - _fail raises it, after those in flight landed
            self._fail(batch, exc)
        while self.flying and (
            len(self.flying) >= runner.parallel
            or any(conflict(fp, f.footprint) is not None for f in self.flying.values() if f.footprint)
        ):
            self._land_first()
        if self.failures:
            self.land_all()
        try:
            flight = runner._take_off(ready, self.refs)
        except Exception as exc:  # noqa: BLE001 - _fail raises it, after those in flight landed
            self._fail(batch, exc)
        if flight is None:  # its marker says it applied whole (journaled): nothing to send
            runner._count_applied(self.summary, self.cs, batch, True)
            return
        flight.footprint = fp
        self.flying[self.senders.submit(functools.partial(runner._exchange, flight))] = flight

    def _fail(self, batch: Batch, exc: Exception) -> NoReturn:
        """Nothing of ``batch`` left: those in flight land first, then the earliest failure."""
        self.failures.append((batch.index, exc))
        self.land_all()
        raise AssertionError("unreachable: land_all raises")

    def land_all(self) -> None:
        while self.flying:
            self._land_first()
        if self.failures:
            raise min(self.failures, key=lambda failure: failure[0])[1]

    def _land_first(self) -> None:
        done, _ = wait(list(self.flying), return_when=FIRST_COMPLETED)
        for future in [f for f in self.flying if f in done]:
            flight = self.flying.pop(future)
            failure = future.exception()
            answer = None if failure is not None else future.result()
            batch = flight.ready.batch
            try:
                landed = self.runner._land(flight, answer, failure, self.refs, 1)
                if landed is None:  # certainly not applied: sent again at once, alone
                    landed = self.runner._send(
                        self.cs, batch, self.refs, ready=flight.ready, attempts=range(2, MAX_SENDS + 1)
                    )
                self.runner._count_applied(self.summary, self.cs, batch, landed)
            except Exception as exc:  # noqa: BLE001 - raised by land_all once all have landed
                self.failures.append((batch.index, exc))

    def close(self) -> None:
        self.senders.close()


class _CannotTell(Exception):
    """Kintone cannot tell what of a batch took effect (``reasons`` say why), or, ``unreadable``,
    could not be read now (the next run tries again)."""

    def __init__(self, reasons: Sequence[str], unreadable: bool = False):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)
        self.unreadable = unreadable


class Runner:
    """Applies plans through one ``Client``, journaling in one ``Journal``.

    ``reconcile=False`` turns off the reads before each send (and so the automatic settling of
    in-doubt batches): for a Kintone where another mechanism settles them (issue #8's markers).
    """

    def __init__(
        self,
        client: Client,
        journal: Journal,
        *,
        run_id: int | None = None,
        locate: Locator | None = None,
        on_event: Callable[[RunEvent], None] = lambda event: None,
        reconcile: bool = True,
        remote: RemoteRun | None = None,
        parallel: int = 1,
        unique: Mapping[int, frozenset[str]] | None = None,
        lookups: Mapping[int, frozenset[int]] | None = None,
    ):
        self.parallel = check_parallel(parallel)  # bulks in flight at once (``apply --parallel``)
        # For the independence proof, where known: app id -> its unique field codes, and the apps
        # its lookups read.
        self.unique = unique
        self.lookups = lookups
        self.remote = remote  # the journal app: a marker leads every bulk (kmigrate.remote)
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self.locate = locate
        self.on_event = on_event
        self.reconcile = reconcile
        self._lost: dict[str, list[tuple[str, int]]] = {}
        self._ids: dict[str, str] = {}
        self._highest: dict[int, int] = {}  # app -> its highest record id, as far as this run knows
        self._applied_in: dict[str, set[int]] = {}  # changeset -> batches applied, whose ids are in the refs
        self._planned: dict[str, ChangesetPlan] = {}
        self._root: Path | None = None  # the project's, when the plan has attachments to read from it

    def run(self, plan: Plan) -> RunSummary:
        summary = RunSummary()
        refs: dict[str, list[Any]] = dict(self.journal.refs())  # read once, extended as batches land
        self._lost = self.journal.lost_ids()
        self._ids = {c.version: c.id for c in plan.changesets}
        self._planned = {c.version: c for c in plan.changesets}
        self._root = plan.root if plan.attachments else None
        for name in self._lost:
            refs[name] = [_LOST if i == UNKNOWN_ID else i for i in refs[name]]
        requests_before = self.client.request_count
        try:
            if self.remote is not None and self._lost:
                # Markers without their ids (a runner died or lost Kintone right after the
                # bulk): read back now, before this run's bulks can change those records.
                self._recover_by_marker(sorted(self._lost), refs, each=True)
            for cs in plan.changesets:
                if cs.state == APPLIED:
                    summary.skipped_changesets += 1
                    self.on_event(RunEvent("changeset_skipped", cs))
                    continue
                self._run_changeset(cs, refs, summary)
            if self.remote is not None:
                self.remote.finish()
        finally:
            summary.requests_sent = self.client.request_count - requests_before
        return summary

    def _run_changeset(self, cs: ChangesetPlan, refs: dict[str, list[Any]], summary: RunSummary) -> None:
        self.journal.record_changeset(cs)
        journaled = self.journal.state().get(cs.version)
        self._applied_in[cs.version] = {
            i for i, state in (journaled.batch_states.items() if journaled else ()) if state == APPLIED
        }
        self.on_event(RunEvent("changeset_started", cs))
        # The next bulks are prepared on a thread of their own while this one is in flight
        # (kmigrate.pipeline); the journal, the probe and the wire stay on this thread.
        ahead = Ahead(self._preparing(cs, _snapshot(refs), frozenset(self._lost)), depth=self.parallel)
        flights = _Flights(self, cs, refs, summary) if self.parallel > 1 else None
        try:
            for prepared in ahead:  # may be compiled lazily: never held all at once
                batch = prepared.batch
                if batch.state == APPLIED:
                    self.on_event(RunEvent("batch_skipped", cs, batch, batch.record_count))
                    continue
                record = self._journaled(cs, batch)
                if flights is not None and (record.state == SENT or prepared.requests is None):
                    flights.land_all()  # settled, or resolved with the ids of those in flight, alone
                if self.remote is not None:
                    try:  # renews the lease, writes owed ids; stops if it cannot
                        self.remote.before_batch()
                    except KmigrateError:
                        if flights is not None:
                            flights.land_all()  # those in flight are journaled before it stops
                        raise
                if record.state == SENT and self.remote is not None:  # its marker says what happened
                    if self._settle_by_marker(cs, batch, record, refs):
                        summary.reconciled_batches += 1
                        self.on_event(RunEvent("batch_reconciled", cs, batch, batch.record_count))
                        continue
                elif record.state == SENT:  # in doubt since an earlier run: read Kintone first
                    if self._settle_in_doubt(cs, batch, record, refs):
                        summary.reconciled_batches += 1
                        self.on_event(RunEvent("batch_reconciled", cs, batch, batch.record_count))
                        continue
                    summary.reconciled_batches += 1
                if flights is not None:
                    flights.send(prepared)
                    continue
                # A failure raises: the CLI reports what this run did.
                self._count_applied(summary, cs, batch, self._send(cs, batch, refs, prepared))
            if flights is not None:
                flights.land_all()
        finally:
            ahead.close()
            if flights is not None:
                flights.close()
        if not cs.batches:  # nothing to send (e.g. an empty data file): applied by definition
            self.journal.set_changeset_state(cs.version, APPLIED, self.run_id)
        summary.applied_changesets.append(cs.id)
        self.on_event(RunEvent("changeset_applied", cs))

    def _count_applied(self, summary: RunSummary, cs: ChangesetPlan, batch: Batch, reconciled: bool) -> None:
        if reconciled:
            summary.reconciled_batches += 1
        summary.applied_batches += 1
        summary.applied_records += batch.record_count
        self.on_event(RunEvent("batch_applied", cs, batch, batch.record_count))

    def _preparing(
        self, cs: ChangesetPlan, known: Mapping[str, Sequence[Any]], lost: frozenset[str]
    ) -> Iterator[_Prepared]:
        """The changeset's batches, each made ready to send as far as can be before its turn
        (this runs on ``Ahead``'s thread: no journal, no network). ``known``: the refs' ids
        journaled before the changeset started; a batch that needs ids from a batch of this
        changeset, or lost ones, is resolved at its turn."""
        waiting: set[str] = set()  # refs produced by batches of this changeset not applied before
        for batch in cs.batches:
            if batch.state == APPLIED:
                yield _Prepared(batch)
                continue
            yield self._prepare(cs, batch, known, waiting | lost)
            waiting |= batch.produces

    def _prepare(
        self, cs: ChangesetPlan, batch: Batch, known: Mapping[str, Sequence[Any]], unknown: set[str]
    ) -> _Prepared:
        batch.hash  # noqa: B018 - computed here, off the send's path (mark_sent journals it)
        if batch.consumes & unknown:
            return _Prepared(batch)
        try:
            requests = [call.resolved(known) for call in batch.calls]
        except KmigrateError:
            return _Prepared(batch)  # its turn raises it, in order
        files = self._root is not None and next(file_markers(requests), None) is not None
        encoded = None
        if not files:
            from .client import encode_bulk  # a run that sends has the client loaded

            try:
                # A call with no ref goes out as the bytes its hash was computed on.
                encoded = encode_bulk(requests, batch.guest_space_id, parts=batch.sendable_parts())
            except InputError:
                pass  # the client refuses it at its turn, before anything is sent
        prepared = _Prepared(batch, requests, encoded, files)
        if self.parallel > 1 and not files:
            prepared.footprint = self._footprint(cs, batch, requests)
        return prepared

    def _footprint(self, cs: ChangesetPlan, batch: Batch, requests: Sequence[Mapping[str, Any]]) -> Footprint:
        return footprint(
            cs.version,
            requests,
            produces=batch.produces,
            consumes=batch.consumes,
            unique=self.unique,
            lookups=self.lookups,
        )

    def _journaled(self, cs: ChangesetPlan, batch: Batch) -> BatchRecord:
        record = self.journal.batch(cs.version, batch.index)
        if record is None:  # record_changeset journaled every planned batch
            raise JournalError(f"changeset {cs.id} batch {batch.index} is not journaled")
        return record

    def _resolved(self, cs: ChangesetPlan, batch: Batch, refs: dict[str, list[Any]]) -> list[dict[str, Any]]:
        requests = [call.resolved(refs) for call in batch.calls]
        lost = sorted(name for name in batch.consumes if name in self._lost)
        if lost and any(_holds_lost_id(r) for r in requests):
            if self.remote is not None and self._recover_by_marker(lost, refs):
                return self._resolved(cs, batch, refs)
            raise self._lost_ref_error(cs, batch, lost)
        return requests

    def _with_uploads(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: list[dict[str, Any]],
        where: Location,
        *,
        search: bool = True,
    ) -> list[dict[str, Any]]:
        """Upload the batch's attachments now, right before its bulk (uploads cannot be in one):
        each file marker becomes the fileKey Kintone answered (``kmigrate.attachments``).
        ``search=False``: the requests are known to hold file markers."""
        # Walking a big batch costs: only a plan that made file markers is searched.
        if self._root is None or (search and next(file_markers(requests), None) is None):
            return requests
        sent, uploads = upload_files(
            requests,
            self._root,
            lambda name, content: self.client.upload_file(name, content, batch.guest_space_id),
            where,
        )
        # Journaled for the record (`kmigrate history`): the keys are not reused, a key is good once.
        self.journal.log_event(
            "uploaded", run_id=self.run_id, changeset=cs.version, batch=batch.index, detail={"files": uploads}
        )
        return sent

    def _recover_by_marker(
        self, names: Sequence[str], refs: dict[str, list[Any]], *, each: bool = False
    ) -> bool:
        """Read back the ids ``names`` lost, batch by batch in order, with the probe each
        batch's marker keeps (any runner's, a fresh machine's too); True if every one of them
        was found. It stops at the first batch Kintone cannot tell, unless ``each``."""
        assert self.remote is not None
        for version, index in sorted({p for name in names for p in self._lost.get(name, [])}):
            try:
                found = self._read_back(version, index, refs)
            except (DriftError, JournalError):
                if not each:
                    raise
                found = False  # early, for a batch that may never be needed: its turn says it
            if not found and not each:
                break
        fresh = self.journal.refs()
        self._lost = self.journal.lost_ids()
        refs.clear()
        refs.update({n: [_LOST if i == UNKNOWN_ID else i for i in ids] for n, ids in fresh.items()})
        return not any(name in self._lost for name in names)

    def _read_back(self, version: str, index: int, refs: Mapping[str, Sequence[Any]]) -> bool:
        """One batch's lost ids read back with its marker's probe and journaled; False when
        Kintone cannot tell (raises when it cannot be read now: no person needed for that)."""
        assert self.remote is not None
        cs = self._planned.get(version)
        batch = next((b for b in cs.batches if b.index == index), None) if cs is not None else None
        marker = self.remote.marker(cs, batch) if cs is not None and batch is not None else None
        if cs is None or batch is None or marker is None or not marker.probe:
            return False
        requests = [call.resolved(refs) for call in batch.calls]
        if any(_holds_lost_id(r) for r in requests):
            return False  # it needs lost ids itself: earlier batches first
        # Sent in two parts (partial:K, then the rest): the first K calls' ids are in the
        # marker, its probe covers the rest.
        known = list(marker.prefix_results or [])
        try:
            kept, verdicts = self._verdicts(batch, requests, marker.probe, len(known))
        except _CannotTell as cannot:
            if cannot.unreadable:
                raise TransportError(
                    f"changeset {cs.id} batch {batch.index}: the ids it created could not be read back from "
                    f"Kintone now ({'; '.join(cannot.reasons)}); nothing more was sent",
                    sent_maybe=False,
                    location=Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}"),
                    hint="run `kmigrate apply` again once Kintone answers: it reads them back first",
                ) from None
            return False
        if len(known) + kept != len(batch.calls):
            return False
        created = _created(batch.calls, known + [v.result for v in verdicts])
        self.journal.recover_ids(version, index, created, note="read back with its marker's probe")
        self.remote.write_found_ids(cs, marker, batch, created)
        return True

    # ---- one batch: probe, sent, bulk, answer ----------------------------------------------

    def _ready(
        self, cs: ChangesetPlan, batch: Batch, refs: dict[str, list[Any]], prepared: _Prepared | None
    ) -> _Ready:
        """The batch's requests as they will be sent: prepared ahead, or resolved now; its
        attachments uploaded (requests on the wire, so at its turn)."""
        where = Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}")
        if prepared is not None and prepared.requests is not None:
            requests, encoded = prepared.requests, prepared.encoded
            if prepared.files:
                requests = self._with_uploads(cs, batch, requests, where, search=False)
        else:
            requests, encoded = self._with_uploads(cs, batch, self._resolved(cs, batch, refs), where), None
        return _Ready(cs, batch, requests, encoded, where)

    def _send(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        refs: dict[str, list[Any]],
        prepared: _Prepared | None = None,
        *,
        ready: _Ready | None = None,
        attempts: range = range(1, MAX_SENDS + 1),
    ) -> bool:
        """Send the batch until Kintone applied it; True if its answer was lost and reading
        Kintone showed it applied."""
        ready = ready if ready is not None else self._ready(cs, batch, refs, prepared)
        reconciled = attempts.start > 1
        for attempt in attempts:
            flight = self._take_off(ready, refs)
            if flight is None:  # its marker says it applied whole (journaled)
                return True
            answer, failure = _exchanged(functools.partial(self._exchange, flight))
            landed = self._land(flight, answer, failure, refs, attempt)
            if landed is None:
                reconciled = True
                continue  # certainly not applied: send it again
            return landed or reconciled
        # Only a marker found applied in part on the last send gets here: what applied is journaled.
        raise TransportError(
            f"changeset {cs.id} batch {batch.index}: its marker says it applied in part; "
            f"gave up after {MAX_SENDS} sends",
            sent_maybe=False,
            location=ready.where,
            hint="run `kmigrate apply` again: it sends the rest",
        )

    def _take_off(self, ready: _Ready, refs: dict[str, list[Any]]) -> _Flight | None:
        """Read the probe and journal the batch `sent`: the last step before its bulk leaves.
        With a journal app, a batch some of which may have applied reads its marker first
        (None: the marker says it applied whole, journaled so, its ids added to ``refs``)."""
        cs, batch = ready.cs, ready.batch
        record = self._journaled(cs, batch)
        partial = None
        # done_hash set: some of it applied, or its marker was kept alone (partial:0).
        if self.remote is not None and (record.done_hash is not None or record.state == FAILED):
            settled = self._settle_partial(cs, batch, ready.requests, record, refs)
            if settled is None:
                return None
            partial, record = settled
        done = record.done_calls
        if done and record.done_hash != calls_hash(batch.calls[:done]):
            raise JournalError(
                f"changeset {cs.id} batch {batch.index}: its first {done} request(s) took effect in Kintone "
                "(they were kept when the rest of the bulk was refused), and the changeset changed there since",
                location=ready.where,
                hint="put those operations back as they were; change only what comes after them",
            )
        probe = self._probe(cs, batch, ready.requests, done)
        for entry in (probe or {}).get("calls") or ():
            if entry and entry.get("kind") == "add":  # read once a run: bulks in flight need it too
                self._highest.setdefault(int(entry["app"]), int(entry["after"]))
        if self.remote is not None:  # how the marker stands as this send leaves (kmigrate.remote)
            probe = {**(probe or {}), SENT_MARKER: sent_marker(self.remote.run, partial, done)}
        self.journal.mark_sent(cs.version, batch.index, batch.hash, self.run_id, probe)
        self.on_event(RunEvent("batch_sent", cs, batch, batch.record_count))
        return _Flight(ready, record, probe, partial=partial)

    def _exchange(self, flight: _Flight) -> Any:
        """The bulk request itself, and nothing else: it may run on a sender thread."""
        ready, done = flight.ready, flight.record.done_calls
        bulk = ready.encoded.since(done) if ready.encoded is not None else list(ready.requests[done:])
        if self.remote is None:
            return self.client.bulk(bulk, ready.batch.guest_space_id)
        return self.remote.bulk(ready.cs, ready.batch, bulk, flight.probe, flight.partial)

    def _land(
        self,
        flight: _Flight,
        answer: Any,
        failure: BaseException | None,
        refs: dict[str, list[Any]],
        attempt: int,
    ) -> bool | None:
        """Journal what became of a bulk (``answer``, or the ``failure`` its exchange raised):
        False when Kintone applied it, True when reading Kintone (or its marker) showed it
        applied, None when it certainly did not apply and may be sent again; else raise."""
        cs, batch, requests, where = (
            flight.ready.cs,
            flight.ready.batch,
            flight.ready.requests,
            flight.ready.where,
        )
        record, probe, done = flight.record, flight.probe, flight.record.done_calls
        settle = f"`kmigrate resolve {cs.version} {batch.index}"
        outcome = None
        try:
            if failure is not None:
                raise failure
            if self.remote is None:
                answer_results = answer
            else:
                outcome = answer
                if outcome.marker is not None:  # applied already: its marker says so
                    self._applied_by_marker(cs, batch, requests, probe, outcome.marker, refs)
                    return True
                if outcome.partial is not None:  # applied in part: take what the marker says
                    self._resolve_partial(
                        cs, batch, outcome.partial, "the journal app's marker, after the send"
                    )
                    return None  # the next send reads the marker first (done_hash is set)
                answer_results = outcome.results or []
        except KintoneError as exc:
            self._refused(cs, batch, requests, probe, record, exc)
            raise self._explain(cs, batch, exc, sent_from=done) from exc
        except (TransportError, InputError) as exc:
            if isinstance(exc, TransportError) and exc.sent_maybe:
                self.on_event(RunEvent("batch_in_doubt", cs, batch, batch.record_count))
                try:  # the answer was lost: read Kintone now rather than leave it for a person
                    if self._settle(cs, batch, requests, probe, record, refs):
                        return True
                except _CannotTell as cannot:
                    raise self._ask(cs, batch, f"lost its answer ({exc.message})", cannot) from exc
                if attempt < MAX_SENDS:
                    return None
                raise TransportError(
                    f"changeset {cs.id} batch {batch.index}: {exc.message}; Kintone was read and it did not "
                    f"apply; gave up after {MAX_SENDS} sends",
                    sent_maybe=False,
                    location=where,
                    hint="check the network, then run `kmigrate apply` again: it resumes at this batch",
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
            # Ctrl-C (or a bug) while the request may be on the wire: it stays `sent`, in doubt;
            # the next `kmigrate apply` reads Kintone to settle it.
            self.on_event(RunEvent("batch_in_doubt", cs, batch, batch.record_count))
            raise InDoubtError(
                f"changeset {cs.id} batch {batch.index}: {_interruption(exc)} while the bulk request was being "
                "sent: Kintone may or may not have applied it",
                location=where,
                hint="the batch is in doubt and will not be sent again blindly: the next `kmigrate apply` "
                f"reads Kintone to settle it (or check Kintone, then {settle} --applied` or `--not-applied`)",
            ) from exc
        results = list(record.done_results or []) + list(answer_results)
        self._applied(cs, batch, results, refs, "Kintone applied it")
        if self.remote is not None and outcome is not None:
            self.remote.after_applied(cs, batch, outcome, _created(batch.calls, results))
        return False

    # ---- with a journal app: its marker says whether a batch applied (kmigrate.remote) ------

    def _settle_by_marker(
        self, cs: ChangesetPlan, batch: Batch, record: BatchRecord, refs: dict[str, list[Any]]
    ) -> bool:
        """A batch left `sent` by an earlier run: applied if its marker is in the journal app
        (True), else not (back to `pending`, False). A late first copy and a resend cannot both
        apply: the marker's key is unique."""
        assert self.remote is not None
        marker = self.remote.marker(cs, batch)
        if marker is not None and marker.applied_calls is not None:
            self._resolve_partial(cs, batch, marker, "the journal app's marker")
            return False
        if marker is None:
            self.journal.resolve(
                cs.version,
                batch.index,
                False,
                run_id=self.run_id,
                detail={"by": "the journal app: no marker"},
                kind="reconciled",
            )
            return False
        self._applied_by_marker(cs, batch, self._resolved(cs, batch, refs), record.probe, marker, refs)
        return True

    def _applied_by_marker(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]],
        probe: Any,
        marker: Any,
        refs: dict[str, list[Any]],
    ) -> None:
        """Journal a batch its marker shows applied (this run's lost answer, another runner, an
        earlier run). The ids: the marker's, else read back from Kintone as the reconciliation
        does (then written to the marker), else a lost-id placeholder per record."""
        assert self.remote is not None
        record = self._journaled(cs, batch)
        done, known = record.done_calls, list(record.done_results or [])
        results: list[Any] | None = None
        if marker.ids is None and probe is not None:
            try:
                kept, verdicts = self._verdicts(batch, requests, probe, done)
                if done + kept == len(batch.calls):
                    results = known + [v.result for v in verdicts]
            except _CannotTell:
                pass  # the marker decides that it applied; only its ids stay unknown
        if results is not None:
            created = _created(batch.calls, results)
        elif done and marker.ids is None:  # the first calls' ids are known; the rest's were lost
            created = _created(batch.calls, known + [_lost_result(c) for c in batch.calls[done:]])
        else:
            created = marker_refs(marker)
        self._journal_answer(
            cs,
            batch,
            "Kintone applied it (its marker is in the journal app)",
            f"`kmigrate resolve {cs.version} {batch.index} --applied`",
            lambda: self.journal.mark_applied(cs.version, batch.index, results, created, self.run_id),
        )
        if results is not None:
            self._note_ids(batch.calls, results)
            self.remote.write_found_ids(cs, marker, batch, created)
        self._gained(cs, batch, created, refs)
        for name, ids in created.items():
            if UNKNOWN_ID in ids:
                self._lost.setdefault(name, []).append((cs.version, batch.index))

    def _refused_past_marker(
        self, cs: ChangesetPlan, batch: Batch, requests: Sequence[Mapping[str, Any]], exc: KintoneError
    ) -> None:
        """Kintone refused a call after the marker. All-or-nothing, the marker went with it;
        under the "prefix" reading it stayed with the calls before the refused one, and says the
        batch applied. The refusal is journaled first (so whoever reads the marker next knows it
        is this send's, see ``records.kept_by_refusal``), then the marker is read and made
        ``partial:K`` where it stayed; if that cannot be done now, the next send does it first."""
        self._journal_answer(
            cs,
            batch,
            "Kintone refused it",
            f"`kmigrate resolve {cs.version} {batch.index} --not-applied`",
            lambda: self.journal.mark_failed(cs.version, batch.index, exc, self.run_id),
        )
        self.on_event(RunEvent("batch_failed", cs, batch))
        if exc.bulk_index is None:
            return  # the bulk was refused as a whole: nothing of it ran
        try:
            self._settle_partial(cs, batch, requests, self._journaled(cs, batch))
        except (TransportError, KintoneError, JournalError):
            pass  # the refusal is what this run reports; the next send reads the marker first

    def _settle_partial(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]],
        record: BatchRecord,
        refs: dict[str, list[Any]] | None = None,
    ) -> tuple[Marker | None, BatchRecord] | None:
        """Before a batch not applied is sent (again), or right after a refusal (no ``refs``):
        read its marker. (None, record): send it with a new marker. ``partial:K``: its first K
        calls applied (journaled here if this journal knew fewer), send the rest with that
        marker. The marker of this journal's own refused send: make it ``partial:K`` first.
        None: applied whole, journaled so and its ids added to ``refs``."""
        assert self.remote is not None
        found = self.remote.read(cs, batch)
        if found is None:
            return None, record
        kept = kept_by_refusal(record, found)
        if kept is not None:
            start = int(record.probe[SENT_MARKER].get("from", 0))
            results = list(record.done_results or [])[:start] + self._prefix_results(
                cs, batch, requests, record.probe, start, kept
            )
            prefix_hash = calls_hash(batch.calls[:kept])
            self.journal.keep_done(
                cs.version,
                batch.index,
                (kept, prefix_hash, results),
                run_id=self.run_id,
                detail={"by": "the journal app: its marker stayed with the calls before the refused one"},
            )
            found = self.remote.mark_partial(found, kept, prefix_hash, _compact(batch.calls[:kept], results))
            return found, self._journaled(cs, batch)
        if found.applied_calls is None:
            marker = self.remote.marker(cs, batch)  # checked: same content
            if record.state == FAILED or refs is None or marker is None:
                # Another runner completed it after this journal's refusal: the journal app's
                # word is journaled by the next start's sync (this run's is over).
                raise JournalError(
                    f"changeset {cs.id} batch {batch.index}: the journal app says it applied (run "
                    f"{marker.run if marker else found.run}) while this journal holds it as not applied",
                    hint="run `kmigrate apply` again: it takes the journal app's word first",
                )
            # Pending with a partial marker known (done_hash set): a copy of its last send, given
            # up as not applied, landed late (or a runner after a takeover completed it). Taken
            # as a batch left `sent` takes its marker's word: journaled with its ids, refs extended.
            probe = record.probe if record.probe is not None else marker.probe
            self.journal.mark_sent(cs.version, batch.index, batch.hash, self.run_id, probe)
            self._applied_by_marker(cs, batch, requests, probe, marker, refs)
            return None
        self._adopt_partial(cs, batch, found, record)
        return found, self._journaled(cs, batch)

    def _adopt_partial(self, cs: ChangesetPlan, batch: Batch, found: Marker, record: BatchRecord) -> None:
        """Journal what a ``partial:K`` marker says (K calls applied, their hash and ids), where
        this journal knew fewer."""
        kept = found.applied_calls or 0
        if found.hash != calls_hash(batch.calls[:kept]):
            raise JournalError(
                f"changeset {cs.id} batch {batch.index}: its first {kept} request(s) took effect in Kintone "
                "(the journal app's marker says so), and the changeset changed there since",
                location=Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}"),
                hint="put those operations back as they were; change only what comes after them",
            )
        if kept > record.done_calls:
            self.journal.keep_done(
                cs.version,
                batch.index,
                (kept, found.hash, list(found.prefix_results or _lost_results(batch.calls[:kept]))),
                run_id=self.run_id,
                detail={"by": "the journal app's marker", "marker": found.kind},
            )

    def _resolve_partial(self, cs: ChangesetPlan, batch: Batch, found: Marker, by: str) -> None:
        """A batch in doubt whose marker says ``partial:K``: not applied whole, back to pending
        with its first K calls journaled as applied."""
        kept = found.applied_calls or 0
        record = self._journaled(cs, batch)
        done = None
        if kept >= record.done_calls:  # (equal too: done_hash says a partial marker is known)
            if found.hash != calls_hash(batch.calls[:kept]):
                self._adopt_partial(cs, batch, found, record)  # raises: the files changed
            done = (kept, found.hash, list(found.prefix_results or _lost_results(batch.calls[:kept])))
        self.journal.resolve(
            cs.version,
            batch.index,
            False,
            run_id=self.run_id,
            detail={"by": by, "marker": found.kind},
            kind="reconciled",
            done=done,
        )

    def _prefix_results(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]],
        probe: Any,
        start: int,
        kept: int,
    ) -> list[Any]:
        """The results of calls ``start`` to ``kept`` of a batch, known applied: only the ids a
        ref keeps matter, read back from Kintone with the send's probe (nothing is read when no
        such call is among them)."""
        calls = batch.calls[start:kept]
        if not any(_keeps_ids(c) for c in calls):
            return [{} for _ in calls]
        try:
            found, verdicts = self._verdicts(batch, requests, probe, start, kept)
        except _CannotTell as cannot:
            raise self._ask(cs, batch, "was refused part-way and kept its first calls", cannot) from None
        if found != len(calls):
            raise self._ask(
                cs,
                batch,
                "was refused part-way and kept its first calls",
                _CannotTell([f"its first {kept} call(s) applied, but reading Kintone finds {start + found}"]),
            )
        return [v.result for v in verdicts[: len(calls)]]

    def _probe(
        self, cs: ChangesetPlan, batch: Batch, requests: Sequence[Mapping[str, Any]], done: int
    ) -> dict[str, Any] | None:
        """What to read before sending (journaled with `sent`). Kintone refusing the read (a
        token without view permission) is noted and the batch sent all the same; a read that
        fails otherwise stops here, before anything of the batch is sent."""
        if not self.reconcile:
            return None
        try:
            return reconcile.probe(self.client, requests, batch.guest_space_id, self._highest, done)
        except KintoneError as exc:
            if exc.status == 403:
                return {"version": reconcile.PROBE_VERSION, "unreadable": exc.message}
            failure = exc.message
        except TransportError as exc:
            failure = exc.message
        raise TransportError(
            f"changeset {cs.id} batch {batch.index}: reading Kintone before sending failed ({failure}); "
            "nothing of the batch was sent",
            sent_maybe=False,
            location=Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}"),
            hint="check the network, then run `kmigrate apply` again: it resumes at this batch",
        )

    def _applied(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        results: Sequence[Any],
        refs: dict[str, list[Any]],
        outcome: str,
    ) -> None:
        created = _created(batch.calls, results)
        self._journal_answer(
            cs,
            batch,
            outcome,
            f"`kmigrate resolve {cs.version} {batch.index} --applied` (never send it again)",
            # What it sent kept in the same commit (for `repair`'s diff): one commit, not two. Not
            # waited onto the disk: the next batch's `sent`, or the run's end, is a durable commit
            # that syncs it too; only an OS crash before that leaves the batch `sent`, in doubt,
            # and the next run settles it by reading Kintone (docs/journal.md, "Durability").
            lambda: self.journal.mark_applied(
                cs.version,
                batch.index,
                results,
                created,
                self.run_id,
                sent=batch.requests_json(),
                durable=False,
            ),
        )
        self._note_ids(batch.calls, results)
        self._gained(cs, batch, created, refs)

    def _gained(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        created: Mapping[str, Sequence[int]],
        refs: dict[str, list[Any]],
    ) -> None:
        """Add the ids ``batch`` created to the refs, in the order written. A batch that lands
        after a later one of its changeset (``--parallel``, or resuming a run that died with an
        earlier batch in doubt) puts its ids before theirs: the ref is read again from the
        journal, which orders them by batch."""
        later = self._applied_in.setdefault(cs.version, set())
        behind = any(i > batch.index for i in later)
        later.add(batch.index)
        if behind and created:
            fresh = self.journal.refs()
            for name in created:
                refs[name] = [_LOST if i == UNKNOWN_ID else i for i in fresh.get(name, [])]
            return
        for name, ids in created.items():
            refs.setdefault(name, []).extend(_LOST if i == UNKNOWN_ID else i for i in ids)

    def _note_ids(self, calls: Sequence[Call], results: Sequence[Any]) -> None:
        """Keep each app's highest id known, from the ids the batch created: the next batch that
        adds to it needs no read."""
        for call, result in zip(calls, results, strict=True):
            if call.method == "POST" and isinstance(result, Mapping) and result.get("ids"):
                app = int(call.payload.get("app", 0))
                self._highest[app] = max(self._highest.get(app, 0), *(int(i) for i in result["ids"]))

    # ---- what took effect: reading Kintone -------------------------------------------------

    def _verdicts(
        self,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]],
        probe: Any,
        start: int,
        stop: int | None = None,
    ) -> tuple[int, list[reconcile.Verdict]]:
        """How many calls from ``start`` (up to ``stop``) took effect, by reading Kintone, and
        the verdicts; ``_CannotTell`` when Kintone cannot be read or cannot tell."""
        if not self.reconcile:
            raise _CannotTell(["reconciliation is off for this run"])
        if isinstance(probe, Mapping) and probe.get("unreadable"):
            raise _CannotTell(
                [f"nothing could be read from Kintone before it was sent ({probe['unreadable']})"]
            )
        stop = len(requests) if stop is None else stop
        try:
            verdicts = reconcile.judge(
                self.client,
                requests[:stop],
                batch.guest_space_id,
                _cut(probe, stop),
                start,
                want_ids=[_keeps_ids(c) for c in batch.calls[:stop]],
            )
        except (KintoneError, TransportError) as exc:
            raise _CannotTell(
                [f"Kintone could not be read to find out: {exc.message}"], unreadable=True
            ) from exc
        kept = reconcile.decide(verdicts)
        if kept is None:
            raise _CannotTell(reconcile.unknowns(verdicts, start) or ["the verdicts contradict each other"])
        missing = [
            f"call {start + i + 1}: it applied, but the ids of the records it created could not be read back "
            f"({verdicts[i].reason})"
            for i in range(kept)
            if _keeps_ids(batch.calls[start + i]) and not _has_ids(verdicts[i].result)
        ]
        if missing:
            raise _CannotTell(missing)
        return kept, verdicts

    def _settle(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]],
        probe: Any,
        record: BatchRecord,
        refs: dict[str, list[Any]],
    ) -> bool:
        """Settle a `sent` batch by reading Kintone: True if it applied (journaled, refs extended),
        False if not (back to `pending`, its applied first calls journaled)."""
        done = record.done_calls
        kept, verdicts = self._verdicts(batch, requests, probe, done)
        found = [v.result for v in verdicts[:kept]]
        results = list(record.done_results or []) + found
        detail = {
            "by": "reading Kintone",
            "calls": [f"call {done + i + 1}: {v.state}: {v.reason}" for i, v in enumerate(verdicts)],
        }
        if done + kept == len(batch.calls):
            created = _created(batch.calls, results)
            self.journal.resolve(
                cs.version,
                batch.index,
                True,
                results=results,
                refs=created,
                run_id=self.run_id,
                detail=detail,
                kind="reconciled",
            )
            self._note_ids(batch.calls, results)
            self._gained(cs, batch, created, refs)
            return True
        prefix = (done + kept, calls_hash(batch.calls[: done + kept]), results) if kept else None
        self.journal.resolve(
            cs.version, batch.index, False, run_id=self.run_id, detail=detail, kind="reconciled", done=prefix
        )
        self._note_ids(batch.calls[: done + kept], results)
        return False

    def _settle_in_doubt(
        self, cs: ChangesetPlan, batch: Batch, record: BatchRecord, refs: dict[str, list[Any]]
    ) -> bool:
        """A batch left `sent` by an earlier run."""
        requests = self._resolved(cs, batch, refs)
        try:
            return self._settle(cs, batch, requests, record.probe, record, refs)
        except _CannotTell as exc:
            raise self._ask(
                cs, batch, "was sent by an earlier run and its answer never journaled", exc
            ) from None

    def _refused(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]],
        probe: Any,
        record: BatchRecord,
        exc: KintoneError,
    ) -> None:
        """Journal Kintone's refusal. The requests before the failing one may have stayed
        committed (one reading of a failed bulk): check them before anything is sent again."""
        done = record.done_calls
        prefix = None
        failing = exc.bulk_index
        if self.remote is not None:
            self._refused_past_marker(cs, batch, requests, exc)
            return
        if failing:  # 0 or None: nothing came before the failure
            try:
                kept, verdicts = self._verdicts(batch, requests, probe, done, done + failing)
            except _CannotTell as cannot:
                raise self._ask(cs, batch, f"was refused by Kintone ({exc.message})", cannot) from exc
            if kept:
                results = list(record.done_results or []) + [v.result for v in verdicts[:kept]]
                prefix = (done + kept, calls_hash(batch.calls[: done + kept]), results)
                self._note_ids(batch.calls[: done + kept], results)
        self._journal_answer(
            cs,
            batch,
            "Kintone refused it" + (f"; its first {prefix[0]} request(s) took effect" if prefix else ""),
            f"`kmigrate resolve {cs.version} {batch.index} --not-applied`",
            lambda: self.journal.mark_failed(cs.version, batch.index, exc, self.run_id, done=prefix),
        )
        self.on_event(RunEvent("batch_failed", cs, batch))

    def _ask(self, cs: ChangesetPlan, batch: Batch, what: str, cannot: _CannotTell) -> InDoubtError:
        command = f"kmigrate resolve {cs.version} {batch.index}"
        where = Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index}")
        reasons = "\n  ".join(cannot.reasons)
        if cannot.unreadable:
            return InDoubtError(
                f"changeset {cs.id} batch {batch.index} {what}, and Kintone could not be read now to find out "
                f"whether it took effect:\n  {reasons}",
                location=where,
                hint="run `kmigrate apply` again once Kintone answers: it reads Kintone and settles the batch",
            )
        keys = sorted({k for c in batch.calls if _keeps_ids(c) for k in _key_fields(c)})
        ids_hint = ""
        if any(_keeps_ids(c) for c in batch.calls):
            example = (
                f"--ids-key {keys[0]}" if keys else "--ids-key FIELD (a unique field) or --ids-query QUERY"
            )
            ids_hint = f" (it created records a ref keeps: add {example} so their ids are read back)"
        return InDoubtError(
            f"changeset {cs.id} batch {batch.index} {what}, and Kintone cannot tell whether it took effect:\n  "
            + reasons,
            location=where,
            hint=f"check those records in Kintone, then `{command} --applied`{ids_hint} or `{command} --not-applied`",
        )

    # ---- journaling and messages ------------------------------------------------------------

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
        by_hand = {(e.changeset, e.batch) for e in self.journal.events(kinds=["resolved"])}
        producers = "; ".join(
            f"ref {name!r}: {self._ids.get(v, 'V' + v)} batch {i} "
            + (
                "was resolved as applied by hand without them"
                if (v, i) in by_hand
                else "applied, but the ids it created could not be read back from Kintone"
            )
            for name in names
            for v, i in self._lost[name]
        )
        first = self._lost[names[0]][0]
        return JournalError(
            f"changeset {cs.id} batch {batch.index} needs ids that were never journaled ({producers}); "
            "nothing was sent",
            location=Location(file=cs.path, changeset=cs.id),
            hint=f"read them back from Kintone: `kmigrate resolve {first[0]} {first[1]} --applied --ids-key FIELD` "
            "(a unique field of those records) or `--ids-query QUERY`, then `kmigrate apply` again",
        )

    def _explain(
        self, cs: ChangesetPlan, batch: Batch, exc: KintoneError, *, sent_from: int = 0
    ) -> KintoneError:
        """The same error, located in the user's files, saying what stays committed. The bulk
        held the batch's calls from ``sent_from``; the journal now says how many took effect."""
        location = Location(file=cs.path, changeset=cs.id, detail=f"batch {batch.index} of {len(cs.batches)}")
        record = self.journal.batch(cs.version, batch.index)
        done = record.done_calls if record is not None else 0
        failing = None if exc.bulk_index is None else exc.bulk_index + sent_from
        if failing is not None and 0 <= failing < len(batch.calls):
            call = batch.calls[failing]
            position = _failing_position(exc)
            spot = call.locate(position) if position is not None else None
            operations = sorted({s.operation for s in call.segments})
            if spot is not None:
                location = self._where(cs, spot[0], spot[1], location)
            elif len(operations) == 1:
                location = self._where(cs, operations[0], None, location)
        # Batches run in order and a run stops at the first failure: every earlier one is applied.
        earlier = f"{batch.index} earlier batch(es) of {cs.id} and every earlier changeset stay applied"
        if self.parallel > 1:
            earlier += " (later batches in flight with it landed and are journaled: `kmigrate status`)"
        if done:
            kept = (
                f"the first {done} request(s) of this batch took effect all the same (journaled: they are not "
                f"sent again), the rest was not applied; {earlier}"
            )
        else:
            kept = f"this batch was rolled back whole; {earlier}"
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


def _cut(probe: Any, stop: int) -> Any:
    """The probe of the first ``stop`` calls."""
    if not isinstance(probe, Mapping) or not isinstance(probe.get("calls"), list):
        return probe
    return {**probe, "calls": probe["calls"][:stop]}


def _positional_ids(result: Any) -> list[int]:
    if not isinstance(result, Mapping):
        return []
    if "ids" in result:
        return [int(i) for i in result["ids"]]
    return [int(r["id"]) for r in result.get("records", [])]


def _compact(calls: Sequence[Call], results: Sequence[Any]) -> list[dict[str, Any]]:
    """What a ``partial:K`` marker keeps of its calls' results: the ids of a call whose records a
    ref keeps, in their positions (``ids_created`` reads them), nothing of the others."""
    return [
        {"ids": _positional_ids(result)} if _keeps_ids(call) else {}
        for call, result in zip(calls, results, strict=True)
    ]


def _lost_result(call: Call) -> dict[str, Any]:
    """A result holding a lost-id placeholder for each record of the call."""
    return {"ids": [UNKNOWN_ID] * sum(seg.count for seg in call.segments)} if _keeps_ids(call) else {}


def _lost_results(calls: Sequence[Call]) -> list[dict[str, Any]]:
    return [_lost_result(c) for c in calls]


def _has_ids(result: Any) -> bool:
    return isinstance(result, Mapping) and ("ids" in result or "records" in result)


def _key_fields(call: Call) -> list[str]:
    """The updateKey fields a call names (a unique field the user may read ids back by)."""
    records = call.payload.get("records")
    entries = records if isinstance(records, list) else [call.payload]
    return sorted(
        {str(e["updateKey"]["field"]) for e in entries if isinstance(e, Mapping) and "updateKey" in e}
    )


__all__ = [
    "MAX_SENDS",
    "RunEvent",
    "RunSummary",
    "Runner",
    "calls_hash",
    "ids_created",
    "lost_ids",
    "resolve_batch",
    "FAILED",
]
