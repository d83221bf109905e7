"""The plan: what ``kmigrate plan`` prints and ``kmigrate apply`` runs, as frozen dataclasses.

A ``Plan`` holds one ``ChangesetPlan`` per changeset (in version order); each holds its
``Batch``es (one bulk request each), and each batch its ``Call``s (one inner request each).
A payload is the exact JSON that goes into the bulk request, except that an id not known until
an earlier batch has run is written as a *ref marker*, which the runner fills in from the
journal with ``resolve_refs`` just before sending. A ref's ids are the ids Kintone returned for
the records its producing ``add`` or ``upsert`` created, in the order written, across batches.
There are three markers (and nothing else in a payload is a mapping with a ``"$ref"`` key):

``{"$ref": NAME, "index": i}``
    one id: the i-th (0-based) of NAME. Stands where one id stands (``id``, ``ids[k]``).
``{"$ref": NAME}``
    every id of NAME, as a list. Stands where a list of ids stands (``ids``).
``{"$ref": NAME, "each": {...}}``
    one status record per id of NAME: ``[{"id": id, **each} ...]``. Stands for the ``records``
    list of ``PUT /k/v1/records/status.json``.

The planner writes the two whole-ref forms only when the call holds exactly every id of the
ref (so a resolved call never exceeds 100 records: the count of a ref is known when planning);
otherwise each id gets its own indexed marker.

``ChangesetPlan.batches`` is a tuple for ordinary changesets; for a big one (more than
``planner.Limits.eager_records`` records) it is a ``planner.BatchSequence``: a re-iterable
sequence with a known ``len()`` that reads its batches back from a compressed spool, one at a
time, so 100,000 records never sit in memory as payloads all at once. Iterate it (the runner
and the renderers do); indexing reads up to the batch asked for. A payload may be an
``EncodedPayload``: the JSON of its request, decoded only when something looks inside.

``Segment`` ties the records of a call back to the changeset's operations, so an error at
``records[57]`` of inner request 3 can be reported as "operation 2, record 12, line 40".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

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
    return isinstance(value, Mapping) and "$ref" in value and set(value) <= {"$ref", "index", "each"}


def resolve_refs(payload: Any, refs: Mapping[str, Sequence[Any]]) -> Any:
    """``payload`` with every ref marker replaced by the ids in ``refs`` (name -> ids in order).

    Pure: returns a new structure and leaves ``payload`` untouched. A name missing from
    ``refs``, or an index beyond its ids, is a ``JournalError``: the journal should hold every
    id an earlier batch created.
    """
    if is_ref_marker(payload):
        name = payload["$ref"]
        ids = refs.get(name)
        if ids is None:
            raise _missing_ref(f"no ids are journaled for ref {name!r}")
        if "index" in payload:
            index = payload["index"]
            if not 0 <= index < len(ids):
                raise _missing_ref(f"ref {name!r} has {len(ids)} ids journaled; id #{index} is needed")
            return ids[index]
        if "each" in payload:
            each = resolve_refs(payload["each"], refs)
            return [{"id": i, **each} for i in ids]
        return list(ids)
    if isinstance(payload, Mapping):
        return {k: resolve_refs(v, refs) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [resolve_refs(v, refs) for v in payload]
    return payload


def _missing_ref(message: str) -> Exception:
    from .errors import JournalError

    return JournalError(
        message,
        hint="the batch that created these records is not journaled as applied; run `kmigrate status`",
    )


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashes and checksums: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=plain)


# How canonical_json writes a text (ensure_ascii=False): json's own encoder, in C.
_text_json: Callable[[str], str] = json.encoder.encode_basestring


def text_records_json(codes: Sequence[str], columns: Sequence[Sequence[str]]) -> list[str]:
    """Each row's record ``{code: {"value": text}}`` as ``canonical_json`` writes it, made a
    column at a time (``columns``: per code, every row's text) with no dict per record: the
    fields in sorted order, each text encoded as json encodes it."""
    order = sorted(range(len(codes)), key=codes.__getitem__)
    template = "{" + ",".join(_text_json(codes[i]).replace("%", "%%") + ':{"value":%s}' for i in order) + "}"
    return list(map(template.__mod__, zip(*(list(map(_text_json, columns[i])) for i in order), strict=True)))


def records_request_json(method: str, api: str, app: int, records: Sequence[Any]) -> bytes:
    """``canonical_json`` of the request ``{method, api, payload: {app, records}}``, UTF-8, where
    a record given as a ``str`` is its canonical JSON already (``text_records_json``)."""
    body = ",".join(r if type(r) is str else canonical_json(r) for r in records)
    head = f'{{"api":{_text_json(api)},"method":{_text_json(method)},"payload":{{"app":{canonical_json(app)}'
    return f'{head},"records":[{body}]}}}}'.encode()


def plain(value: Any) -> Any:
    """``json.dumps``'s ``default``: an ``EncodedPayload`` is written as what it holds."""
    if isinstance(value, EncodedPayload):
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class EncodedPayload(Mapping[str, Any]):
    """A call's payload kept as the canonical JSON of its whole request (``part``: what its
    batch's hash is computed on and what is sent), read back only when something looks inside.

    A CSV file's text rows are made straight into this JSON (``text_records_json``), and a big
    changeset's spool keeps only it; sending a call needs only the bytes and its app (``app``,
    answered without decoding), so its records are never made as dicts on the way to the wire.
    Anything else (a probe of an update, reconciliation, ``plan --format json``) reads the
    payload and gets it decoded once. ``app``: the app id the payload names (None: not an id,
    read from the JSON)."""

    __slots__ = ("part", "app", "_value")

    def __init__(self, part: bytes, app: int | None):
        self.part = part
        self.app = app
        self._value: dict[str, Any] | None = None

    @property
    def value(self) -> dict[str, Any]:
        if self._value is None:
            self._value = json.loads(self.part)["payload"]
        return self._value

    def __getitem__(self, key: str) -> Any:
        if key == "app" and self.app is not None:
            return self.app
        return self.value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __bool__(self) -> bool:  # ``payload or {}``: a payload always names its app
        return True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedPayload) and self.part == other.part:
            return True
        return isinstance(other, Mapping) and self.value == dict(other)

    __hash__ = None  # type: ignore[assignment]  # a mapping, as the dict it stands for

    def __repr__(self) -> str:
        return f"EncodedPayload({self.value!r})"


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
    # The refs whose ids the payload needs, as the planner knows them; None: not known, so
    # the payload is searched. Lets the runner skip walking 100 records that need nothing.
    refs: frozenset[str] | None = None

    def request(self) -> dict[str, Any]:
        return {"method": self.method, "api": self.api, "payload": self.payload}

    def encoded(self) -> bytes:
        """``canonical_json(self.request())``, UTF-8: kept, not made again, for an encoded payload."""
        payload = self.payload
        return payload.part if type(payload) is EncodedPayload else canonical_json(self.request()).encode()

    @property
    def consumes(self) -> frozenset[str]:
        return self.refs if self.refs is not None else frozenset(_refs_in(self.payload))

    def resolved(self, refs: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        """The inner request as sent: every ref marker replaced by its ids."""
        return resolve_refs(self.request(), refs) if self.consumes else self.request()

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


def ref_uses(value: Any) -> Iterator[tuple[str, int | None]]:
    """(name, index) of every marker in ``value``; index ``None`` for the whole-ref forms."""
    if is_ref_marker(value):
        yield value["$ref"], value.get("index")
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from ref_uses(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from ref_uses(v)


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

    @cached_property  # a big batch's JSON is costly; its content never changes
    def parts(self) -> tuple[bytes, ...]:
        """Each call's request (refs unresolved) in canonical JSON, UTF-8: encoded once, for
        the hash, the body sent (a call with no ref to resolve is sent as these very bytes:
        ``client.encode_bulk``) and what the journal keeps of an applied batch."""
        return tuple(c.encoded() for c in self.calls)

    def requests_json(self) -> bytes:
        """``canonical_json(self.requests())``, UTF-8, joined from ``parts`` (a list's canonical
        JSON is its items' joined by commas)."""
        return b"[" + b",".join(self.parts) + b"]"

    @cached_property
    def hash(self) -> str:
        """Identifies the batch's content (refs unresolved); the journal compares it on resume.
        The SHA-256 of ``canonical_json(self.requests())``: the definition journals hold."""
        return hashlib.sha256(self.requests_json()).hexdigest()

    def sendable_parts(self) -> tuple[bytes | None, ...]:
        """Per call, its ``parts`` entry where that is what is sent (it consumes no ref), else None."""
        return tuple(None if c.consumes else p for c, p in zip(self.calls, self.parts, strict=True))

    @property
    def record_count(self) -> int:
        return sum(c.record_count for c in self.calls)

    @property
    def consumes(self) -> frozenset[str]:
        return frozenset(r for c in self.calls for r in c.consumes)

    @property
    def produces(self) -> frozenset[str]:
        return frozenset(
            s.ref for c in self.calls for s in c.segments if s.ref and c.method in ("POST", "PUT")
        )


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
    overwrites: bool = False  # update/upsert: existing field values are replaced
    guest_space_id: int | None = None


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
    def batch_hashes(self) -> list[str]:
        """Each batch's hash in index order, without compiling a lazy changeset again."""
        known = getattr(self.batches, "hashes", None)
        return list(known) if known is not None else [b.hash for b in self.batches]

    @property
    def pending_batches(self) -> Sequence[Batch]:
        """The batches not yet applied, in order (lazy when ``batches`` is)."""
        pending = getattr(self.batches, "pending", None)
        if pending is not None:
            return pending()
        return [b for b in self.batches if b.state != APPLIED]


@dataclass(frozen=True)
class Plan:
    environment: str
    changesets: tuple[ChangesetPlan, ...] = field(default_factory=tuple)
    root: Path | None = None  # the project root: changeset paths are shown relative to it
    # With a journal app (kmigrate.remote.records.Markers): builds request [0] of every bulk,
    # the marker, so the plan shows what apply sends. Batch.hash covers the batch's own calls.
    markers: Any = None
    # Some batch holds file markers (``kmigrate.attachments``): the runner looks for them only then.
    attachments: bool = False

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
    # The journal's own word for the changeset; it alone knows that a changeset with nothing
    # to send (an empty data file) was applied. None: judge by the batches.
    state: str | None = None

    @property
    def fully_applied(self) -> bool:
        if self.state is not None:
            return self.state == APPLIED
        return bool(self.batch_states) and all(s == APPLIED for s in self.batch_states.values())
