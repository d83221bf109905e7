"""Which bulks may be in flight together (``kmigrate apply --parallel N``). Pure.

Two batches are **independent** when sending them at once, in either order or interleaved,
leaves Kintone as sending them one after the other would, and the journal can still settle
each alone by reading Kintone (``kmigrate.reconcile``). ``conflict`` proves it, or says why
not, from each batch's ``Footprint``: what its calls (refs resolved) touch.

They are not independent (``conflict`` names the first reason) when:

- they belong to different changesets (a changeset's batches are the unit of order);
- either holds a call this module does not understand (a ``request`` operation, an id that is
  not a number: a ref not resolved yet);
- one consumes a ref the other produces (two that produce the same ref may go together: a
  ref's ids are kept by batch, in the order written, whatever order the batches land in);
- one writes an app that the other's app looks up (a lookup copies fields from the related
  app's record as it is when the write lands), an app looking itself up included; an app whose
  lookups are not known may look up any other app, so it goes alone against a batch writing
  another app;
- in one app: both write the same record id; one writes records by id and the other by
  ``updateKey`` (they may be the same record); both address the same key value; one addresses
  a key value that the other writes into that field (an add or an update creating or moving
  it);
- in one app, one may free a unique value (a delete; an update that writes a unique field, or
  any update when the app's unique fields are not known) while the other may take one (an
  add, or such an update): the taker could be refused where it was not one after the other;
- in one app, both write the same value into a field known to be unique (Kintone refuses one:
  which one must not change);
- in one app, both add records and no field written by every record of both tells them apart:
  reconciliation matches the records above an app's highest id to those sent, by content,
  skipping other writers', so the records of two adds in flight together must differ in some
  field (a unique code, a number) under every reading of a value it uses.

Values are compared loosely, so that two values Kintone could hold as equal (``1`` and
``1.0`` in a NUMBER field, two spellings of one instant) always count as the same: a
false "same" only costs parallelism, a false "different" would break the proof.

Unique fields come from the apps' definitions when known (``unique``: app id -> codes); when
they are not, two adds that write the same value into a field Kintone holds unique are still
let go together: one of them fails in either order, and the run stops at it as it would one
after the other (only which of the two is refused may differ).

Lookups come from the definitions too (``lookups``: app id -> the apps its lookup fields read).
Within one app whose definition is not known, a lookup of the app itself is not ruled out. The
unique rules (unknown there too) already keep an update or a delete from going with an add or
an update of that app; what may go together is adds with adds (a lookup key is unique in
Kintone: an add whose lookup names a record the other adds is refused in one order, and the run
stops at it, rather than copying other values) and status actions with anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import InputError
from ..kintone import MAX_PARALLEL, split_api

_BY_ID = ("update", "delete", "status", "assignees")


def _kind(request: Mapping[str, Any]) -> str:
    method = str(request.get("method", "")).upper()
    try:
        _, name = split_api(str(request.get("api", "")))
    except ValueError:
        return "other"
    payload = request.get("payload")
    upsert = isinstance(payload, Mapping) and bool(payload.get("upsert"))
    return {
        ("POST", "records"): "add",
        ("POST", "record"): "add",
        ("PUT", "records"): "upsert" if upsert else "update",
        ("PUT", "record"): "upsert" if upsert else "update",
        ("DELETE", "records"): "delete",
        ("PUT", "records/status"): "status",
        ("PUT", "record/status"): "status",
        ("PUT", "record/assignees"): "assignees",
    }.get((method, name), "other")


def value_keys(value: Any) -> frozenset[tuple[str, Any]] | None:
    """Every reading of a scalar value Kintone might compare it by (text, number, instant): two
    values that share a key may be held equal. ``None`` for a list or a mapping (not used to
    tell records apart, nor as a key)."""
    if isinstance(value, (list, tuple, Mapping)):
        return None
    text = "" if value is None else str(value).strip()
    keys: set[tuple[str, Any]] = {("text", text)}
    if text:
        try:
            keys.add(("number", str(Decimal(text).normalize())))
        except (InvalidOperation, ValueError):
            pass
        if text[0].isdigit():
            try:
                keys.add(("instant", datetime.fromisoformat(text)))
            except ValueError:
                pass
    return frozenset(keys)


@dataclass
class _App:
    """What a batch does to one app."""

    ids: set[int] = field(default_factory=set)  # records written by id
    keys: dict[str, set[tuple[str, Any]]] = field(default_factory=dict)  # updateKey field -> value keys
    added: list[Mapping[str, Any]] = field(default_factory=list)  # the records its adds send
    updated: list[Mapping[str, Any]] = field(default_factory=list)  # the records its updates/upserts send
    frees: bool = False  # may free a unique value
    takes: bool = False  # may take one
    _written: dict[str, frozenset[tuple[str, Any]] | None] = field(default_factory=dict)
    _told: dict[str, frozenset[tuple[str, Any]] | None] = field(default_factory=dict)

    def written(self, code: str) -> frozenset[tuple[str, Any]] | None:
        """The keys of every value its adds and updates write into ``code`` (``None``: some is
        not a scalar)."""
        if code not in self._written:
            self._written[code] = _union(_cell(r, code, absent=True) for r in (*self.added, *self.updated))
        return self._written[code]

    def telling(self, code: str) -> frozenset[tuple[str, Any]] | None:
        """The keys of ``code``'s values when every record its adds send writes it as a scalar,
        else ``None`` (the field cannot tell its records from another batch's)."""
        if code not in self._told:
            self._told[code] = _union(_cell(r, code, absent=False) for r in self.added)
        return self._told[code]


def _cell(record: Mapping[str, Any], code: str, *, absent: bool) -> frozenset[tuple[str, Any]] | None:
    cell = record.get(code)
    if cell is None:
        return frozenset() if absent else None
    if not isinstance(cell, Mapping) or "value" not in cell:
        return None
    return value_keys(cell["value"])


def _union(parts: Iterable[frozenset[tuple[str, Any]] | None]) -> frozenset[tuple[str, Any]] | None:
    out: set[tuple[str, Any]] = set()
    for part in parts:
        if part is None:
            return None
        out |= part
    return frozenset(out)


@dataclass
class Footprint:
    """What one batch touches, for ``conflict``. Built by ``footprint``."""

    changeset: str
    produces: frozenset[str] = frozenset()
    consumes: frozenset[str] = frozenset()
    apps: dict[int, _App] = field(default_factory=dict)
    opaque: str | None = None  # why the batch cannot be proved independent of anything
    unique: Mapping[int, frozenset[str]] | None = None
    lookups: Mapping[int, frozenset[int]] | None = None


def footprint(
    changeset: str,
    requests: Sequence[Mapping[str, Any]],
    *,
    produces: Iterable[str] = (),
    consumes: Iterable[str] = (),
    unique: Mapping[int, frozenset[str]] | None = None,
    lookups: Mapping[int, frozenset[int]] | None = None,
) -> Footprint:
    """The footprint of a batch of ``changeset`` whose inner requests (refs resolved) are
    ``requests``; ``unique`` gives the apps' unique field codes where they are known, ``lookups``
    the apps each app's lookups read (an app missing: not known)."""
    out = Footprint(changeset, frozenset(produces), frozenset(consumes), unique=unique, lookups=lookups)
    for index, request in enumerate(requests):
        why = _note(out, request)
        if why is not None:
            out.opaque = f"request {index}: {why}"
            break
    return out


def _note(out: Footprint, request: Mapping[str, Any]) -> str | None:
    kind = _kind(request)
    payload = request.get("payload")
    if kind == "other" or not isinstance(payload, Mapping):
        return f"{request.get('method')} {request.get('api')} is not a kind whose effects are known"
    try:
        app_id = int(payload.get("app"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "its app is not a number"
    app = out.apps.setdefault(app_id, _App())
    known = out.unique.get(app_id) if out.unique is not None else None
    if kind == "add":
        records = payload.get("records") if "records" in payload else [payload.get("record")]
        if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
            return "its records are not a list of records"
        app.added.extend(records)
        app.takes = app.takes or known is None or any(any(code in known for code in r) for r in records)
        return None
    if kind == "delete":
        ids = payload.get("ids")
        if not isinstance(ids, list):
            return "its ids are not a list"
        app.frees = True
        return _ids(app, ids)
    entries = payload.get("records") if "records" in payload else [payload]
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        return "its records are not a list"
    for entry in entries:
        key = entry.get("updateKey")
        if kind in ("update", "upsert") and isinstance(key, Mapping):
            keys = value_keys(key.get("value"))
            if keys is None or not isinstance(key.get("field"), str):
                return "an updateKey that is not a field and a scalar value"
            app.keys.setdefault(str(key["field"]), set()).update(keys)
        elif kind == "upsert":
            return "an upsert without an updateKey"
        else:
            why = _ids(app, [entry.get("id")])
            if why is not None:
                return why
        if kind in ("update", "upsert"):
            record = entry.get("record")
            if not isinstance(record, Mapping):
                return "an update without its record"
            app.updated.append(record)
            writes = known is None or any(code in known for code in record)
            app.frees = app.frees or writes
            app.takes = app.takes or writes or kind == "upsert"
    return None


def _ids(app: _App, ids: Sequence[Any]) -> str | None:
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return "a record id that is not known yet"
        try:
            app.ids.add(int(value))
        except ValueError:
            return f"record id {value!r} is not a number"
    return None


def conflict(a: Footprint, b: Footprint) -> str | None:
    """Why batches ``a`` and ``b`` may not be in flight together; ``None``: they are independent."""
    if a.changeset != b.changeset:
        return "they belong to different changesets"
    for one in (a, b):
        if one.opaque is not None:
            return one.opaque
    refs = (a.produces & b.consumes) | (b.produces & a.consumes)
    if refs:
        return f"ref {sorted(refs)[0]!r} is produced by one and consumed by the other"
    why = _lookup_conflict(a, b)
    if why is not None:
        return why
    for app_id in sorted(a.apps.keys() & b.apps.keys()):
        why = _app_conflict(a.apps[app_id], b.apps[app_id], _unique_of(a, b, app_id))
        if why is not None:
            return f"app {app_id}: {why}"
    return None


def independent(a: Footprint, b: Footprint) -> bool:
    return conflict(a, b) is None


def _lookup_conflict(a: Footprint, b: Footprint) -> str | None:
    """One writes an app whose lookups read an app the other writes (unknown lookups: any
    other app): the copied values would depend on which lands first."""
    for one, other in ((a, b), (b, a)):
        for app_id in sorted(one.apps):
            sources = _lookups_of(a, b, app_id)
            if sources is None:
                elsewhere = sorted(other.apps.keys() - {app_id})
                if elsewhere:
                    return (
                        f"app {app_id}: its lookups are not known, and it may look up app {elsewhere[0]}, "
                        "which the other writes"
                    )
                continue
            read = sorted(sources & other.apps.keys())
            if read:
                return f"app {app_id} looks up app {read[0]}, which the other writes"
    return None


def _lookups_of(a: Footprint, b: Footprint, app_id: int) -> frozenset[int] | None:
    for one in (a, b):
        if one.lookups is not None and app_id in one.lookups:
            return one.lookups[app_id]
    return None


def _unique_of(a: Footprint, b: Footprint, app_id: int) -> frozenset[str] | None:
    for one in (a, b):
        if one.unique is not None and app_id in one.unique:
            return one.unique[app_id]
    return None


def _app_conflict(x: _App, y: _App, unique: frozenset[str] | None) -> str | None:
    same = x.ids & y.ids
    if same:
        return f"both write record {min(same)}"
    if (x.ids and y.keys) or (x.keys and y.ids):
        return "one writes records by id, the other by key: they may be the same records"
    for one, other in ((x, y), (y, x)):
        for code, keys in one.keys.items():
            if code in other.keys and keys & other.keys[code]:
                return f"both address records by {code} with the same value"
            written = other.written(code)
            if written is None or keys & written:
                return f"one addresses records by {code} with a value the other writes into it"
    if (x.frees and y.takes) or (y.frees and x.takes):
        return "one may free a unique value the other may take"
    for code in sorted(unique or ()):
        mine, theirs = x.written(code), y.written(code)
        if mine is None or theirs is None or mine & theirs:
            return f"both write the same value into unique field {code}"
    if x.added and y.added and not _told_apart(x, y, unique or frozenset()):
        return "both add records and no field tells them apart"
    return None


def _told_apart(x: _App, y: _App, unique: frozenset[str]) -> bool:
    """Some field written by every record both add holds values that never meet."""
    common = set(x.added[0]) & set(y.added[0])
    for code in sorted(common, key=lambda c: (c not in unique, c)):
        mine = x.telling(code)
        if mine is None:
            continue
        theirs = y.telling(code)
        if theirs is not None and not mine & theirs:
            return True
    return False


def check_parallel(parallel: int) -> int:
    """``--parallel N`` (or ``parallel`` in kmigrate.toml): 1 to ``MAX_PARALLEL``."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise InputError(
            f"--parallel {parallel!r}: bulks in flight at once are 1 to {MAX_PARALLEL}",
            hint=f"Kintone allows 100 concurrent requests per domain, shared with every other client of it; "
            f"kmigrate stays well under, at {MAX_PARALLEL} at most",
        )
    return parallel


__all__ = [
    "MAX_PARALLEL",
    "check_parallel",
    "Footprint",
    "conflict",
    "footprint",
    "independent",
    "value_keys",
]
