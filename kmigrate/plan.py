"""The plan: what ``kmigrate plan`` prints and ``kmigrate apply`` runs, as frozen dataclasses.

A ``Plan`` holds one ``ChangesetPlan`` per changeset (in version order); each holds its
``Batch``es (one bulk request each), and each batch its ``Call``s (one inner request each).
A payload is the exact JSON that goes into the bulk request, except that an id not known until
an earlier batch has run is written ``{"$ref": NAME}`` (all of the ref's ids) or
``{"$ref": NAME, "index": i}`` (its i-th id, 0-based); the runner fills those in from the journal.

``Segment`` ties the records of a call back to the changeset's operations, so an error at
``records[57]`` of inner request 3 can be reported as "operation 2, record 12, line 40".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

# Batch and changeset states, as the journal records them and the plan shows them.
PENDING = "pending"
SENT = "sent"  # the request left; no answer journaled yet: in doubt
APPLIED = "applied"
FAILED = "failed"  # Kintone refused the bulk; by bulk atomicity nothing of it was applied
PARTIAL = "partial"  # a changeset with some batches applied and some not


def ref_marker(name: str, index: int | None = None) -> dict[str, Any]:
    """The placeholder for ids known only after the batch producing ``name`` has run."""
    return {"$ref": name} if index is None else {"$ref": name, "index": index}


def is_ref_marker(value: Any) -> bool:
    return isinstance(value, dict) and "$ref" in value and set(value) <= {"$ref", "index"}


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashes and checksums: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Segment:
    """``count`` records of operation ``operation`` (0-based), from its record ``start`` (0-based).

    ``ref`` is the name the operation gives the records it creates, if any: the ids Kintone
    returns for these records are stored under that name, in order.
    """

    operation: int
    start: int
    count: int
    ref: str | None = None


@dataclass(frozen=True)
class Call:
    """One inner request of a bulk request."""

    method: str  # POST | PUT | DELETE
    api: str  # e.g. "/k/v1/records.json" or "/k/guest/12/v1/records.json"
    payload: Mapping[str, Any]
    segments: tuple[Segment, ...] = ()

    def request(self) -> dict[str, Any]:
        return {"method": self.method, "api": self.api, "payload": self.payload}

    @property
    def record_count(self) -> int:
        return sum(s.count for s in self.segments)

    def locate(self, position: int) -> tuple[int, int] | None:
        """(operation, record) both 0-based, of the call's ``position``-th record."""
        for seg in self.segments:
            if position < seg.count:
                return seg.operation, seg.start + position
            position -= seg.count
        return None


def _refs_in(value: Any) -> Iterator[str]:
    if is_ref_marker(value):
        yield value["$ref"]
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _refs_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _refs_in(v)


@dataclass(frozen=True)
class Batch:
    """One bulk request: at most 20 calls, all in one guest space (or none), one transaction."""

    index: int  # 0-based within its changeset
    calls: tuple[Call, ...]
    guest_space_id: int | None = None
    state: str = PENDING

    def requests(self) -> list[dict[str, Any]]:
        return [c.request() for c in self.calls]

    @property
    def hash(self) -> str:
        """Identifies the batch's content (refs unresolved); the journal compares it on resume."""
        return hashlib.sha256(canonical_json(self.requests()).encode()).hexdigest()

    @property
    def record_count(self) -> int:
        return sum(c.record_count for c in self.calls)

    @property
    def consumes(self) -> frozenset[str]:
        return frozenset(r for c in self.calls for r in _refs_in(c.payload))

    @property
    def produces(self) -> frozenset[str]:
        return frozenset(s.ref for c in self.calls for s in c.segments if s.ref and c.method in ("POST", "PUT"))


@dataclass(frozen=True)
class OperationSummary:
    """One operation as a person reviewing the plan sees it."""

    index: int  # 0-based
    kind: str  # add | update | upsert | delete | status | assignees | request
    app: str  # as written (alias or id)
    app_id: int
    records: int
    line: int | None = None
    destructive: bool = False
    ref: str | None = None
    description: str = ""  # e.g. "action Submit", "key customer_code"


@dataclass(frozen=True)
class ChangesetPlan:
    version: str  # "0003": the identity, orders the changesets
    name: str  # "submit_spring_orders"
    path: Path
    source_checksum: str
    rendered_checksum: str
    description: str = ""
    state: str = PENDING  # pending | partial | applied
    operations: tuple[OperationSummary, ...] = ()
    batches: Sequence[Batch] = ()

    @property
    def id(self) -> str:
        return f"V{self.version}__{self.name}"

    @property
    def pending_batches(self) -> list[Batch]:
        return [b for b in self.batches if b.state != APPLIED]


@dataclass(frozen=True)
class Plan:
    environment: str
    changesets: tuple[ChangesetPlan, ...] = field(default_factory=tuple)

    @property
    def pending(self) -> list[ChangesetPlan]:
        return [c for c in self.changesets if c.state != APPLIED]

    @property
    def batch_count(self) -> int:
        return sum(len(c.pending_batches) for c in self.changesets)


@dataclass(frozen=True)
class JournaledChangeset:
    """What the journal knows of one changeset: the planner's only input from the journal."""

    version: str
    source_checksum: str
    rendered_checksum: str
    batch_states: Mapping[int, str] = field(default_factory=dict)  # batch index -> state
    batch_hashes: Mapping[int, str] = field(default_factory=dict)
