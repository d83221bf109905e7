"""The packer, pure: items (one per record) into calls, calls into bulk requests.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..kintone import MAX_BULK_REQUESTS, MAX_RECORDS_PER_CALL
from ..plan import Call, EncodedPayload, Segment, records_request_json, ref_marker
from .refs import RefRegistry

MAX_CALLS_PER_BULK = MAX_BULK_REQUESTS

Uses = tuple[tuple[str, int | None], ...]  # (ref, index or None for all of it) of the ids an item needs
Bulk = tuple[tuple[Call, ...], "int | None"]  # the calls of one bulk request and its guest space


@dataclass(frozen=True)
class Limits:
    """Kintone's limits; smaller ones only let tests reach every boundary with small inputs."""

    calls_per_bulk: int = MAX_CALLS_PER_BULK
    records_per_call: int = MAX_RECORDS_PER_CALL
    # Above this many records a changeset's batches are read back from the spool rather than
    # held (``BatchSequence``): 100,000 records' payloads would take hundreds of MB.
    eager_records: int = 10_000


class CallBuilder:
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
        segments = tuple(Segment(o, s, c, r) for o, s, c, r in self.segments)
        if self.kind == "records" and not self.upsert and any(type(i) is str for i in self.items):
            # Records made as their JSON (a CSV file's text rows): the call is kept as it is sent.
            part = records_request_json(self.method, self.api, self.app, self.items)
            return Call(self.method, self.api, EncodedPayload(part, self.app), segments, frozenset(self.uses))
        payload: dict[str, Any] = {"app": self.app}
        if self.kind == "ids":
            payload["ids"] = whole_ids(self.items, ref_sizes)
            if self.revisions is not None:
                payload["revisions"] = self.revisions
        else:
            if self.upsert:
                payload["upsert"] = True
            payload["records"] = whole_status(self.items, ref_sizes) if self.kind == "status" else self.items
        return Call(self.method, self.api, payload, segments, frozenset(self.uses))


def whole_ids(ids: list[Any], ref_sizes: Mapping[str, int]) -> Any:
    """``[{"$ref": X, "index": 0}, ... all of X in order]`` -> ``{"$ref": X}``; anything else as is."""
    first = ids[0]
    if isinstance(first, dict) and first.get("index") == 0 and len(ids) == ref_sizes.get(first["$ref"]):
        name = first["$ref"]
        if all(isinstance(m, dict) and m["$ref"] == name and m["index"] == i for i, m in enumerate(ids)):
            return ref_marker(name)
    return ids


def whole_status(records: list[dict[str, Any]], ref_sizes: Mapping[str, int]) -> Any:
    """Status records for every id of one ref, all alike -> ``{"$ref": X, "each": {...}}``."""
    ids = [r["id"] for r in records]
    whole = whole_ids(ids, ref_sizes)
    if isinstance(whole, dict):
        each = {k: v for k, v in records[0].items() if k != "id"}
        if all({k: v for k, v in r.items() if k != "id"} == each for r in records):
            return {"$ref": whole["$ref"], "each": each}
    return records


@dataclass(frozen=True)
class CallSpec:
    """What the items of one operation share: the call they go into, and where they come from."""

    key: tuple[Any, ...]  # items merge into one call only under the same key: (kind, app[, key field])
    method: str
    api: str
    app: int
    shape: str  # records | ids | status: how the payload lists the items
    guest: int | None
    operation: int  # 0-based, in the changeset
    ref: str | None = None  # the ref whose records the items create
    upsert: bool = False

    def new_call(self) -> CallBuilder:
        return CallBuilder(self.key, self.method, self.api, self.app, self.shape, self.upsert)


class Packer:
    """Greedy packing of one changeset's items into calls and bulks (see the module docstring).

    Closed bulks collect in ``done`` until the compiler ``take``s them, so a 100,000-record
    operation is packed holding one bulk at a time.
    """

    def __init__(self, limits: Limits, refs: RefRegistry):
        self.limits = limits
        self.refs = refs
        self.done: list[Bulk] = []
        self.calls: list[Call] = []
        self.guest: int | None = None
        self.produced: dict[str, list[int]] = {}  # ref -> [lo, hi) of its records created in this bulk
        self.call: CallBuilder | None = None

    def take(self) -> list[Bulk]:
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
        self, spec: CallSpec, payload: Any, dedupe: Any, uses: Uses, record: int, revision: int | None = None
    ) -> None:
        """One record into the current call, or into a new call of ``spec``.

        ``dedupe`` is what must not repeat in one call (a record id, an updateKey value), or None;
        ``record`` is the item's 0-based position in its operation.
        """
        if uses and self._blocked(uses):
            self._close_bulk()
        call = self.call
        if (
            call is None
            or call.key != spec.key
            or len(call.items) >= self.limits.records_per_call
            or (dedupe is not None and dedupe in call.seen)
        ):
            call = self.start_call(spec)
        if dedupe is not None:
            call.seen.add(dedupe)
        if call.kind == "ids":
            if revision is not None and call.revisions is None:
                call.revisions = [-1] * len(call.items)  # -1: Kintone skips the check
            if call.revisions is not None:
                call.revisions.append(-1 if revision is None else revision)
        ref = spec.ref
        call.add(payload, spec.operation, record, ref)
        call.uses.update(name for name, _ in uses)
        if ref is not None:
            span = self.produced.get(ref)
            if span is None:
                self.produced[ref] = [record, record + 1]
            else:
                span[1] = record + 1

    def single(self, call: Call, guest: int | None, uses: Uses) -> None:
        """A call that merges with nothing (assignees, request)."""
        self._close_call()
        if uses and self._blocked(uses):
            self._close_bulk()
        self._room_for_call(guest)
        self.calls.append(call)

    def start_call(self, spec: CallSpec) -> CallBuilder:
        """A new current call of ``spec`` (in a new bulk if this one is full or of another space)."""
        self._close_call()
        self._room_for_call(spec.guest)
        self.call = spec.new_call()
        return self.call

    def finish(self) -> list[Bulk]:
        self._close_bulk()
        return self.take()
