"""The planner, pure: loaded changesets (+ the journal's state) -> a ``Plan`` of bulk requests.

The packing rule (docs/planning.md says it for users):

* Changesets in version order; within one, operations in written order, records in written
  order. A batch (one bulk request) never spans two changesets.
* Every operation compiles to *items*, one per record (an add's record, an update's record,
  a deleted id, a status change), each belonging to a kind of call: the plural APIs
  ``POST``/``PUT``/``DELETE /k/v1/records.json`` and ``PUT /k/v1/records/status.json``.
  ``assignees`` and ``request`` are single calls of their own.
* Items go greedily into the current call while they share its kind, app (and, for updates
  and upserts, the mode and key field), the call holds fewer than 100 records, and the item's
  record id (or updateKey value) is not in the call yet (Kintone rejects a repeated id:
  GAIA_RE09). Otherwise a new call starts.
* Calls go greedily into the current bulk while it holds fewer than 20 calls and is of the
  same guest space (or none). A new bulk also starts before an item that needs the id of a
  record created in the current bulk: that id is known only once the bulk has run.

Each bulk therefore covers the longest prefix of the remaining items that one bulk can hold.
Every constraint above holds for any part of a feasible bulk as well (a sub-run of a feasible
bulk is feasible), and for such constraints "take the longest feasible prefix" gives the
fewest bulks: the count is the floor for the written order (tests/test_planner.py checks this
against an exhaustive minimum). For N records added to one app it is ceil(N / 2000).

Ref ids are written as markers (see ``kmigrate.plan``); a ref's size is known here (the
count of records its producer writes), so a consumer that would exceed 100 records once
resolved is split here, never at run time.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .changeset import (
    AddOp,
    AssigneesOp,
    DeleteOp,
    LoadedChangeset,
    RefIds,
    RequestOp,
    StatusOp,
    StatusRecord,
    UpdateOp,
    UpsertOp,
    to_kintone_record,
)
from .config import App, Environment
from .errors import ChangesetError, ConfigError, Location
from .kintone import MAX_BULK_REQUESTS, MAX_RECORDS_PER_CALL, api_path
from .plan import (
    APPLIED,
    PARTIAL,
    PENDING,
    SENT,
    Batch,
    Call,
    ChangesetPlan,
    JournaledChangeset,
    OperationSummary,
    Plan,
    Segment,
)

MAX_CALLS_PER_BULK = MAX_BULK_REQUESTS
RESERVED_RECORD_KEYS = ("id", "revision")  # per record of update/upsert: not field codes


@dataclass(frozen=True)
class Limits:
    """Kintone's limits; smaller ones only let tests reach every boundary with small inputs."""

    calls_per_bulk: int = MAX_CALLS_PER_BULK
    records_per_call: int = MAX_RECORDS_PER_CALL
    # Above this many records a changeset's batches are compiled again when read rather than
    # held (``BatchSequence``): 100,000 records' payloads would take hundreds of MB.
    eager_records: int = 10_000


def build_plan(
    changesets: Sequence[LoadedChangeset],
    env: Environment,
    journal: Mapping[str, JournaledChangeset] | None = None,
    *,
    limits: Limits = Limits(),
) -> Plan:
    """Compile ``changesets`` for ``env``; ``journal`` (version -> what it knows) sets states.

    Pass every changeset, applied ones included: a later changeset may use their refs, whose
    sizes come from their operations. Raises ``ChangesetError`` for what only planning can
    see (unknown aliases, refs to nothing or used before they exist, repeated ref names,
    malformed record ids or keys).
    """
    ordered = sorted(changesets, key=lambda c: _version_key(c.version))
    seen: dict[str, LoadedChangeset] = {}
    for cs in ordered:
        if cs.version in seen:
            raise ChangesetError(
                f"version {cs.version} is used twice: {seen[cs.version].path} and {cs.path}",
                location=Location(file=cs.path),
                hint="give one of them a new version number",
            )
        seen[cs.version] = cs
    refs = _RefRegistry()
    plans = tuple(_plan_changeset(cs, env, refs, (journal or {}).get(cs.version), limits) for cs in ordered)
    return Plan(environment=env.name, changesets=plans, root=env.root)


def _version_key(version: str) -> tuple[Any, ...]:
    # "0010" after "0009" and "2" before "10"; digit runs compare as numbers.
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


# ---- refs -----------------------------------------------------------------------------------


class _RefRegistry:
    """Every ref seen so far: name -> record count, and where it was defined."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.defined_at: dict[str, str] = {}
        self.open: str | None = None  # the ref whose producer is being compiled

    def snapshot(self) -> _RefRegistry:
        copy = _RefRegistry()
        copy.count, copy.defined_at = dict(self.count), dict(self.defined_at)
        return copy

    def replay(self) -> _RefRegistry:
        """A copy for compiling a changeset again: its checks passed the first time."""
        copy = self.snapshot()
        copy.replaying = True
        return copy

    replaying = False

    def define(self, name: str, where: str, loc: Location) -> None:
        if self.replaying:
            self.open = name
            return
        if name in self.defined_at:
            raise ChangesetError(
                f"ref {name!r} is already defined by {self.defined_at[name]}",
                location=loc,
                hint="give each add/upsert `ref:` a name of its own",
            )
        self.defined_at[name] = where
        self.count[name] = 0
        self.open = name

    def size(self, name: str, loc: Location) -> int:
        if name == self.open:
            raise ChangesetError(f"ref {name!r} is used by the operation that creates it", location=loc)
        if name not in self.count:
            raise ChangesetError(
                f"ref {name!r} is not created by any earlier operation",
                location=loc,
                hint="a ref must be named by an add or upsert (`ref: NAME`) before it is used, "
                "in this or an earlier changeset",
            )
        return self.count[name]


# ---- the packer -----------------------------------------------------------------------------


class _CallBuilder:
    __slots__ = (
        "key",
        "method",
        "api",
        "app",
        "kind",
        "items",
        "revisions",
        "seen",
        "segments",
        "upsert",
        "uses",
    )

    def __init__(
        self, key: tuple[Any, ...], method: str, api: str, app: int, kind: str, upsert: bool = False
    ):
        self.key = key
        self.method = method
        self.api = api
        self.app = app
        self.kind = kind  # records | ids | status
        self.upsert = upsert
        self.items: list[Any] = []
        self.revisions: list[int] | None = None  # delete only
        self.seen: set[Any] = set()
        self.segments: list[list[Any]] = []  # [operation, start, count, ref]
        self.uses: set[str] = set()  # refs the payload needs

    def add(self, item: Any, op: int, record: int, ref: str | None) -> None:
        self.items.append(item)
        last = self.segments[-1] if self.segments else None
        if last is not None and last[0] == op and last[1] + last[2] == record:
            last[2] += 1
        else:
            self.segments.append([op, record, 1, ref])

    def build(self, ref_sizes: Mapping[str, int]) -> Call:
        payload: dict[str, Any] = {"app": self.app}
        if self.kind == "ids":
            payload["ids"] = _whole_ids(self.items, ref_sizes)
            if self.revisions is not None:
                payload["revisions"] = self.revisions
        else:
            if self.upsert:
                payload["upsert"] = True
            payload["records"] = _whole_status(self.items, ref_sizes) if self.kind == "status" else self.items
        segments = tuple(Segment(o, s, c, r) for o, s, c, r in self.segments)
        return Call(self.method, self.api, payload, segments, frozenset(self.uses))


def _whole_ids(ids: list[Any], ref_sizes: Mapping[str, int]) -> Any:
    """``[{"$ref": X, "index": 0}, ... all of X in order]`` -> ``{"$ref": X}``; anything else as is."""
    first = ids[0]
    if isinstance(first, dict) and first.get("index") == 0 and len(ids) == ref_sizes.get(first["$ref"]):
        name = first["$ref"]
        if all(isinstance(m, dict) and m["$ref"] == name and m["index"] == i for i, m in enumerate(ids)):
            return {"$ref": name}
    return ids


def _whole_status(records: list[dict[str, Any]], ref_sizes: Mapping[str, int]) -> Any:
    """Status records for every id of one ref, all alike -> ``{"$ref": X, "each": {...}}``."""
    ids = [r["id"] for r in records]
    whole = _whole_ids(ids, ref_sizes)
    if isinstance(whole, dict):
        each = {k: v for k, v in records[0].items() if k != "id"}
        if all({k: v for k, v in r.items() if k != "id"} == each for r in records):
            return {"$ref": whole["$ref"], "each": each}
    return records


_Bulk = tuple[tuple[Call, ...], "int | None"]  # the calls of one bulk request and its guest space
_Compiled = Generator[_Bulk, None, tuple[int, str]]  # yields full bulks; returns (records, description)


class _Packer:
    """Greedy packing of one changeset's items into calls and bulks (see the module docstring).

    Closed bulks collect in ``done`` until the compiler ``take``s them, so a 100,000-record
    operation is packed holding one bulk at a time.
    """

    def __init__(self, limits: Limits, refs: _RefRegistry):
        self.limits = limits
        self.refs = refs
        self.done: list[_Bulk] = []
        self.calls: list[Call] = []
        self.guest: int | None = None
        self.produced: dict[str, list[int]] = {}  # ref -> [lo, hi) of its records created in this bulk
        self.call: _CallBuilder | None = None

    def take(self) -> list[_Bulk]:
        done = list(self.done)
        self.done.clear()  # the same list: compilers test it after every record
        return done

    # -- bulks
    def _close_call(self) -> None:
        if self.call is not None:
            self.calls.append(self.call.build(self.refs.count))
            self.call = None

    def _close_bulk(self) -> None:
        self._close_call()
        if self.calls:
            self.done.append((tuple(self.calls), self.guest))
        self.calls = []
        self.produced = {}

    def _room_for_call(self, guest: int | None) -> None:
        """Before a new call: a new bulk if this one is full or of another guest space."""
        if self.calls and (len(self.calls) >= self.limits.calls_per_bulk or guest != self.guest):
            self._close_bulk()
        self.guest = guest

    def _blocked(self, uses: Iterable[tuple[str, int | None]]) -> bool:
        """Does any used id belong to a record created in the current bulk?"""
        for name, index in uses:
            span = self.produced.get(name)
            if span is not None and (index is None or span[0] <= index < span[1]):
                return True
        return False

    # -- items
    def item(
        self,
        key: tuple[Any, ...],
        guest: int | None,
        new_call: Any,
        item: Any,
        dedupe: Any,
        uses: tuple[tuple[str, int | None], ...],
        op: int,
        record: int,
        ref: str | None,
        revision: int | None = None,
    ) -> None:
        """One record into the current call, or into a new call (``new_call()`` makes it)."""
        if uses and self._blocked(uses):
            self._close_bulk()
        call = self.call
        if (
            call is None
            or call.key != key
            or len(call.items) >= self.limits.records_per_call
            or (dedupe is not None and dedupe in call.seen)
        ):
            self._close_call()
            self._room_for_call(guest)
            call = self.call = new_call()
        if dedupe is not None:
            call.seen.add(dedupe)
        if call.kind == "ids":
            if revision is not None and call.revisions is None:
                call.revisions = [-1] * len(call.items)  # -1: Kintone skips the check
            if call.revisions is not None:
                call.revisions.append(-1 if revision is None else revision)
        call.add(item, op, record, ref)
        call.uses.update(name for name, _ in uses)
        if ref is not None:
            span = self.produced.get(ref)
            if span is None:
                self.produced[ref] = [record, record + 1]
            else:
                span[1] = record + 1

    def single(self, call: Call, guest: int | None, uses: tuple[tuple[str, int | None], ...]) -> None:
        """A call that merges with nothing (assignees, request)."""
        self._close_call()
        if uses and self._blocked(uses):
            self._close_bulk()
        self._room_for_call(guest)
        self.calls.append(call)

    def finish(self) -> list[_Bulk]:
        self._close_bulk()
        return self.take()


# ---- one changeset --------------------------------------------------------------------------


def _compile(
    cs: LoadedChangeset,
    env: Environment,
    refs: _RefRegistry,
    limits: Limits,
    summaries: list[OperationSummary],
) -> Iterator[_Bulk]:
    """The changeset's bulks in order, streamed; appends one summary per operation."""
    packer = _Packer(limits, refs)
    for index, operation in enumerate(cs.operations):
        compiler = _OpCompiler(cs, index, operation.kind, operation.body, env, refs, packer)
        summaries.append((yield from compiler.run()))
        refs.open = None
    yield from packer.finish()


def _plan_changeset(
    cs: LoadedChangeset,
    env: Environment,
    refs: _RefRegistry,
    journaled: JournaledChangeset | None,
    limits: Limits,
) -> ChangesetPlan:
    states = dict(journaled.batch_states) if journaled is not None else {}
    if (
        journaled is not None
        and journaled.fully_applied
        and (journaled.source_checksum, journaled.rendered_checksum)
        == (cs.source_checksum, cs.rendered_checksum)
    ):
        return _applied_changeset(cs, env, refs, states, limits)
    summaries: list[OperationSummary] = []
    kept: list[Batch] | None = []
    hashes: list[str] = []  # per batch, from this first pass: what a later pass must reproduce
    records = 0
    for index, bulk in enumerate(_compile(cs, env, refs, limits, summaries)):
        batch = _batch(index, bulk, states)
        hashes.append(batch.hash)
        if kept is not None:
            records += batch.record_count
            kept.append(batch)
            if records > limits.eager_records:
                kept = None  # too big to hold: BatchSequence compiles again on demand
    count = len(hashes)
    if kept is not None:
        batches: Sequence[Batch] = tuple(kept)
    else:
        final_refs = refs.snapshot()  # every ref this changeset may use, at its final size

        def recompile() -> Iterator[Batch]:
            # A data file edited since planning would change what is sent: refuse rather than
            # send a batch that differs from the plan that was reviewed.
            again: list[OperationSummary] = []
            n = 0
            for n, bulk in enumerate(_compile(cs, env, final_refs.replay(), limits, again), 1):
                batch = _batch(n - 1, bulk, states)
                if n > count or batch.hash != hashes[n - 1]:
                    raise _changed(cs)
                yield batch
            if again != summaries or n != count:
                raise _changed(cs)

        batches = BatchSequence(recompile, count, states, hashes=hashes)
    return ChangesetPlan(
        version=cs.version,
        name=cs.name,
        path=cs.path,
        source_checksum=cs.source_checksum,
        rendered_checksum=cs.rendered_checksum,
        description=cs.description,
        state=_changeset_state([states.get(i, PENDING) for i in range(count)]),
        operations=tuple(summaries),
        batches=batches,
    )


def _applied_changeset(
    cs: LoadedChangeset,
    env: Environment,
    refs: _RefRegistry,
    states: Mapping[int, str],
    limits: Limits,
) -> ChangesetPlan:
    """A changeset the journal holds as applied, unchanged: nothing to compile, nothing to send.

    Only its refs matter to later changesets, and their sizes are its record counts. Its
    batches are compiled again only if someone reads them (``plan --format json``), so a
    no-op re-run over a long history costs no planning.
    """
    for index, operation in enumerate(cs.operations):
        body = operation.body
        if isinstance(body, (AddOp, UpsertOp)) and body.ref:
            refs.define(body.ref, f"{cs.id} operation {index + 1}", cs.location(index))
            refs.count[body.ref] = body.record_count or 0  # a loaded data file is counted
            refs.open = None  # defined and complete: later operations may use it
    final_refs = refs.snapshot()

    def recompile() -> Iterator[Batch]:
        for index, bulk in enumerate(_compile(cs, env, final_refs.replay(), limits, [])):
            yield _batch(index, bulk, states)

    return ChangesetPlan(
        version=cs.version,
        name=cs.name,
        path=cs.path,
        source_checksum=cs.source_checksum,
        rendered_checksum=cs.rendered_checksum,
        description=cs.description,
        state=APPLIED,
        operations=(),
        batches=BatchSequence(recompile, len(states), states),
    )


def _changed(cs: LoadedChangeset) -> ChangesetError:
    return ChangesetError(
        "its records changed since it was planned (was a data file edited meanwhile?)",
        location=Location(file=cs.path, changeset=cs.id),
        hint="plan again",
    )


def _batch(index: int, bulk: _Bulk, states: Mapping[int, str]) -> Batch:
    calls, guest = bulk
    return Batch(index=index, calls=calls, guest_space_id=guest, state=states.get(index, PENDING))


class BatchSequence(Sequence[Batch]):
    """A changeset's batches, compiled again from its operations each time they are read.

    For changesets too big to hold every payload at once (``Limits.eager_records``). The
    length and each batch's state are known without compiling; iterating streams the data
    files once and holds one bulk at a time; ``seq[i]`` compiles up to batch i (linear time:
    iterate rather than index in a loop). Each pass checks that the records are still those
    that were planned.
    """

    def __init__(
        self,
        compile_batches: Any,
        count: int,
        states: Mapping[int, str],
        indexes: Sequence[int] | None = None,
        hashes: Sequence[str] | None = None,
    ):
        self._compile = compile_batches
        self._count = count
        self._states = states
        self._indexes = range(count) if indexes is None else indexes
        self._hashes = hashes

    @property
    def hashes(self) -> list[str] | None:
        """Each batch's hash as planned, without compiling again (None: not known)."""
        return None if self._hashes is None else [self._hashes[i] for i in self._indexes]

    def __len__(self) -> int:
        return len(self._indexes)

    def __iter__(self) -> Iterator[Batch]:
        wanted = set(self._indexes)
        last = max(self._indexes, default=-1)
        for i, batch in enumerate(self._compile()):
            if i in wanted:
                yield batch
            if i >= last:
                return

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return BatchSequence(self._compile, self._count, self._states, self._indexes[index], self._hashes)
        target = self._indexes[index]
        for batch in self.where(lambda i: i == target):
            return batch
        raise IndexError(index)

    @property
    def states(self) -> list[str]:
        return [self._states.get(i, PENDING) for i in self._indexes]

    def where(self, keep: Any) -> BatchSequence:
        """The batches whose index passes ``keep``, still lazy."""
        return BatchSequence(
            self._compile, self._count, self._states, [i for i in self._indexes if keep(i)], self._hashes
        )

    def pending(self) -> BatchSequence:
        return self.where(lambda i: self._states.get(i, PENDING) != APPLIED)


def _changeset_state(states: Sequence[str]) -> str:
    if states and all(s == APPLIED for s in states):
        return APPLIED
    # A batch still `sent` may have been applied: the changeset is not simply pending.
    if any(s in (APPLIED, SENT) for s in states):
        return PARTIAL
    return PENDING


class _OpCompiler:
    """Compiles one operation into the packer, and summarises it for the person reviewing."""

    def __init__(
        self,
        cs: LoadedChangeset,
        index: int,
        kind: str,
        body: Any,
        env: Environment,
        refs: _RefRegistry,
        packer: _Packer,
    ):
        self.cs, self.index, self.kind, self.body = cs, index, kind, body
        self.refs, self.packer = refs, packer
        self.line = cs.operation_lines[index] if index < len(cs.operation_lines) else None
        app_written = body.app if not isinstance(body, RequestOp) else body.payload.get("app")
        self.app_written = app_written
        self.app = self._resolve_app(env, app_written)

    # -- errors
    def loc(
        self, record: int | None = None, data_line: int | None = None, data_file: str | None = None
    ) -> Location:
        if data_file is not None:  # known while streaming: no need to read the data file again
            return Location(
                file=data_file,
                line=data_line,
                changeset=self.cs.id,
                operation=self.index + 1,
                record=None if record is None else record + 1,
                detail=self.kind,
            )
        where = self.cs.location(self.index, record)
        if where.line is None and record is not None:  # the record's own line is unknown: its operation's
            where = replace(where, line=self.cs.location(self.index).line)
        return where

    def error(
        self, message: str, record: int | None = None, hint: str | None = None, **where: Any
    ) -> ChangesetError:
        return ChangesetError(message, location=self.loc(record, **where), hint=hint)

    def _resolve_app(self, env: Environment, written: Any) -> App:
        if isinstance(written, bool) or not isinstance(written, (int, str)):
            raise self.error(f"`app` must be an alias or a numeric app id, not {written!r}")
        try:
            return env.app(written)
        except ConfigError as exc:
            raise ChangesetError(exc.message, location=self.loc(), hint=exc.hint) from None

    # -- ids and refs
    def _ref_size(self, name: str, record: int | None) -> int:
        return self.refs.size(name, self.loc(record))

    def one_id(
        self, value: Any, record: int | None, what: str = "id"
    ) -> tuple[Any, tuple[tuple[str, int | None], ...]]:
        """A single record id as written -> (id or indexed marker, the ref ids it uses)."""
        if isinstance(value, RefIds):
            value = {"ref": value.ref} if value.index is None else {"ref": value.ref, "index": value.index}
        if isinstance(value, dict) and "ref" in value and set(value) <= {"ref", "index"}:
            name, index = value["ref"], value.get("index")
            if (
                not isinstance(name, str)
                or not name
                or (index is not None and (isinstance(index, bool) or not isinstance(index, int)))
            ):
                raise self.error(
                    f"`{what}: {value}` is not a ref; write {{ref: NAME}} or {{ref: NAME, index: N}}", record
                )
            size = self._ref_size(name, record)
            if index is None:
                if size != 1:
                    raise self.error(
                        f"`{what}: {{ref: {name}}}` stands for one record, but ref {name!r} has {size}",
                        record,
                        hint=f"write {{ref: {name}, index: N}} for the N-th (0-based) record of the ref",
                    )
                index = 0
            if not 0 <= index < size:
                raise self.error(
                    f"ref {name!r} has {size} records; index {index} is out of range (0-based)", record
                )
            return {"$ref": name, "index": index}, ((name, index),)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(
                f"`{what}` must be a positive record id or {{ref: NAME, index: N}}, not {value!r}", record
            )
        return value, ()

    def id_list(self, ids: Any) -> Iterator[tuple[Any, tuple[tuple[str, int | None], ...]]]:
        """A list of ids as written (or one whole ref) -> ids and indexed markers, one per record."""
        elements = [ids] if isinstance(ids, RefIds) else list(ids)
        for element in elements:
            if isinstance(element, RefIds) and element.index is None:
                for i in range(self._ref_size(element.ref, None)):
                    yield {"$ref": element.ref, "index": i}, ((element.ref, i),)
            else:
                yield self.one_id(element, None)

    # -- records
    def records(self) -> Iterator[tuple[int, dict[str, Any], int | None]]:
        """(record index, fields, line in the data file) in order, streaming ``records_from``."""
        body = self.body
        if body.records is not None:
            for i, rec in enumerate(body.records):
                yield i, rec, None
        elif body.source is not None:
            for i, (line, rec) in enumerate(body.source):
                yield i, rec, line
        else:
            raise self.error("records_from was not read: plan changesets the loader has loaded")

    def where(self, data_line: int | None) -> dict[str, Any]:
        """The keywords of ``error`` that place a record of a data file."""
        if data_line is None:
            return {}
        return {
            "data_file": str(getattr(self.body.source, "path", self.body.records_from)),
            "data_line": data_line,
        }

    def _check_record(self, rec: Any, i: int, data_line: int | None) -> None:
        if not isinstance(rec, dict):
            raise self.error(
                f"a record must be a mapping of field codes to values, not {type(rec).__name__}",
                i,
                **self.where(data_line),
            )

    # -- the kinds
    def run(self) -> Generator[_Bulk, None, OperationSummary]:
        """Feeds the packer, yielding the bulks that fill up; returns the operation's summary."""
        count, description = yield from getattr(self, f"_{self.kind}")()
        body = self.body
        return OperationSummary(
            index=self.index,
            kind=self.kind,
            app=str(self.app_written),
            app_id=self.app.id,
            records=count,
            line=self.line,
            destructive=self.kind == "delete" or (self.kind == "request" and body.method == "DELETE"),
            ref=getattr(body, "ref", None),
            description=description,
            overwrites=self.kind in ("update", "upsert")
            or (self.kind == "request" and body.method == "PUT" and body.api in ("record", "records")),
            guest_space_id=self.app.guest_space_id,
        )

    def _add(self) -> _Compiled:
        body: AddOp = self.body
        guest, app, ref = self.app.guest_space_id, self.app.id, body.ref
        if ref is not None:
            self.refs.define(ref, f"{self.cs.id} operation {self.index + 1}", self.loc())
        key = ("add", app)
        api = api_path("records", guest)

        def new_call() -> _CallBuilder:
            return _CallBuilder(key, "POST", api, app, "records")

        # The hot loop of a big import: the packer's rules for items that use no ref and never
        # repeat, inlined (a new call only when the call is full or of another kind).
        packer, op = self.packer, self.index
        limit = packer.limits.records_per_call
        call = packer.call
        segment: list[Any] | None = None
        span: list[int] | None = None
        n = -1
        for n, rec, data_line in self.records():
            if type(rec) is not dict:
                self._check_record(rec, n, data_line)
            if call is None or call.key != key or len(call.items) >= limit:
                packer._close_call()
                packer._room_for_call(guest)
                call = packer.call = new_call()
                segment = span = None
                if packer.done:
                    yield from packer.take()
            if segment is None:
                segment = [op, n, 0, ref]
                call.segments.append(segment)
            call.items.append(_record(rec))
            segment[2] += 1
            if ref is not None:
                if span is None:
                    span = packer.produced.setdefault(ref, [n, n])
                span[1] = n + 1
        if ref is not None:
            self.refs.count[ref] = n + 1
        return n + 1, f"creates ref {ref}" if ref else ""

    def _keyed(self, upsert: bool) -> _Compiled:
        body: UpdateOp | UpsertOp = self.body
        guest, app = self.app.guest_space_id, self.app.id
        field = body.key
        ref = getattr(body, "ref", None)
        if ref is not None:
            self.refs.define(ref, f"{self.cs.id} operation {self.index + 1}", self.loc())
        key = ("upsert" if upsert else "update", app, field)
        api = api_path("records", guest)

        def new_call() -> _CallBuilder:
            return _CallBuilder(key, "PUT", api, app, "records", upsert=upsert)

        packer, op = self.packer, self.index
        item, done = packer.item, packer.done
        n = -1
        for n, rec, data_line in self.records():
            self._check_record(rec, n, data_line)
            w = self.where(data_line)
            fields = dict(rec)
            out: dict[str, Any] = {}
            uses: tuple[tuple[str, int | None], ...] = ()
            if field is None:
                if "id" not in fields:
                    raise self.error("an update record needs `id` (or give the operation a `key:`)", n, **w)
                out["id"], uses = self.one_id(fields.pop("id"), n)
                dedupe: Any = ("id", _id_key(out["id"]))
            else:
                if "id" in fields:
                    raise self.error(
                        f"a record has both `id` and the key field `{field}`; "
                        f"the operation's `key:` selects by {field}",
                        n,
                        **w,
                    )
                if field not in fields:
                    raise self.error(f"the record has no value for the key field `{field}`", n, **w)
                value = _key_value(fields.pop(field))
                if value is None:
                    raise self.error(f"the key field `{field}` needs a text or number value", n, **w)
                out["updateKey"] = {"field": field, "value": value}
                dedupe = value
            if "revision" in fields:
                revision = fields.pop("revision")
                if isinstance(revision, bool) or not isinstance(revision, int):
                    raise self.error(f"`revision` must be a whole number, not {revision!r}", n, **w)
                out["revision"] = revision
            out["record"] = _record(fields)
            item(key, guest, new_call, out, dedupe, uses, op, n, ref)
            if ref is not None:
                self.refs.count[ref] = n + 1
            if done:
                yield from packer.take()
        count = n + 1
        mode = f"upsert by {field}" if upsert else (f"by key {field}" if field else "by id")
        return count, mode + (f", creates ref {ref}" if ref else "")

    def _update(self) -> _Compiled:
        return (yield from self._keyed(upsert=False))

    def _upsert(self) -> _Compiled:
        return (yield from self._keyed(upsert=True))

    def _delete(self) -> _Compiled:
        body: DeleteOp = self.body
        guest, app = self.app.guest_space_id, self.app.id
        key = ("delete", app)
        api = api_path("records", guest)

        def new_call() -> _CallBuilder:
            return _CallBuilder(key, "DELETE", api, app, "ids")

        revisions = body.revisions
        if revisions is not None and any(isinstance(e, RefIds) and e.index is None for e in body.ids):
            raise self.error(
                "`revisions` pairs with ids one to one; a whole {ref: NAME} inside `ids` cannot carry them",
                hint="write the ref's ids with index: N, or drop `revisions`",
            )
        packer, op = self.packer, self.index
        item, done = packer.item, packer.done
        n = -1
        for n, (value, uses) in enumerate(self.id_list(body.ids)):
            rev = revisions[n] if revisions is not None else None
            item(key, guest, new_call, value, ("id", _id_key(value)), uses, op, n, None, rev)
            if done:
                yield from packer.take()
        return n + 1, "deletes records"

    def _status(self) -> _Compiled:
        body: StatusOp = self.body
        guest, app = self.app.guest_space_id, self.app.id
        key = ("status", app)
        api = api_path("records/status", guest)

        def new_call() -> _CallBuilder:
            return _CallBuilder(key, "PUT", api, app, "status")

        def entries() -> Iterator[tuple[Any, tuple[Any, ...], str | None, str | None, int | None]]:
            written = body.records if isinstance(body.records, list) else []
            per_record = [r for r in written if isinstance(r, StatusRecord)]
            if per_record and len(per_record) == len(written):
                for n, r in enumerate(per_record):
                    value, uses = self.one_id(r.id, n)
                    yield value, uses, r.action or body.action, r.assignee or body.assignee, r.revision
            else:
                for value, uses in self.id_list(body.records):
                    yield value, uses, body.action, body.assignee, None

        packer, op = self.packer, self.index
        item, done = packer.item, packer.done
        n = -1
        actions: list[str | None] = []
        for n, (value, uses, action, assignee, revision) in enumerate(entries()):
            out: dict[str, Any] = {"id": value, "action": action}
            if assignee is not None:
                out["assignee"] = assignee
            if revision is not None:
                out["revision"] = revision
            if action not in actions:
                actions.append(action)
            item(key, guest, new_call, out, ("id", _id_key(value)), uses, op, n, None)
            if done:
                yield from packer.take()
        return n + 1, "action " + ", ".join(str(a) for a in actions)

    def _assignees(self) -> _Compiled:
        body: AssigneesOp = self.body
        guest = self.app.guest_space_id
        value, uses = self.one_id(body.id, None)
        payload: dict[str, Any] = {"app": self.app.id, "id": value, "assignees": list(body.assignees)}
        if body.revision is not None:
            payload["revision"] = body.revision
        call = Call(
            "PUT",
            api_path("record/assignees", guest),
            payload,
            (Segment(self.index, 0, 1),),
            frozenset(n for n, _ in uses),
        )
        self.packer.single(call, guest, uses)
        yield from self.packer.take()
        return 1, "assignees " + (", ".join(body.assignees) or "(none)")

    def _request(self) -> _Compiled:
        body: RequestOp = self.body
        guest = self.app.guest_space_id
        uses: list[tuple[str, int | None]] = []
        payload = self._request_value(dict(body.payload), uses)
        payload["app"] = self.app.id
        count = 1
        for listed in ("records", "ids"):
            value = payload.get(listed)
            if isinstance(value, list):
                count = len(value)
            elif isinstance(value, dict) and "$ref" in value:
                count = self.refs.count.get(value["$ref"], 1)
        if count > self.packer.limits.records_per_call:
            raise self.error(
                f"the request carries {count} records; one call takes at most {self.packer.limits.records_per_call}",
                hint="split it into several requests, or use add/update/delete/status, which split for you",
            )
        call = Call(
            body.method,
            api_path(body.api, guest),
            payload,
            (Segment(self.index, 0, count),),
            frozenset(n for n, _ in uses),
        )
        self.packer.single(call, guest, tuple(uses))
        yield from self.packer.take()
        return count, f"{body.method} {body.api}"

    def _request_value(self, value: Any, uses: list[tuple[str, int | None]]) -> Any:
        """The payload as written, with `{ref: NAME}` / `{ref: NAME, index: N}` turned into markers."""
        if isinstance(value, dict):
            if "$ref" in value:
                raise self.error("`$ref` is reserved for kmigrate's ref markers; write {ref: NAME} instead")
            if "ref" in value and set(value) <= {"ref", "index"} and isinstance(value["ref"], str):
                name, index = value["ref"], value.get("index")
                self._ref_size(name, None)  # known, and created earlier
                if index is None:
                    uses.append((name, None))
                    return {"$ref": name}
                marker, used = self.one_id(value, None)
                uses.extend(used)
                return marker
            return {k: self._request_value(v, uses) for k, v in value.items()}
        if isinstance(value, list):
            return [self._request_value(v, uses) for v in value]
        return value


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    """``to_kintone_record``, with the common case (every value a scalar, as from CSV) inlined."""
    for value in fields.values():
        if type(value) not in _SCALARS:
            return to_kintone_record(fields)
    return {code: {"value": value} for code, value in fields.items()}


def _id_key(value: Any) -> Any:
    return (value["$ref"], value["index"]) if isinstance(value, dict) else value


def _key_value(value: Any) -> str | None:
    """An updateKey value: Kintone takes it as text (a NUMBER key's digits too)."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "type"}:
        value = value["value"]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return None


__all__ = ["build_plan", "Limits", "MAX_CALLS_PER_BULK", "MAX_RECORDS_PER_CALL"]
