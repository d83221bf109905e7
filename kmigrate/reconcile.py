"""Reconciliation: whether a bulk request whose answer was lost took effect, read back from Kintone.

Before a batch is sent the runner reads a little (``probe``) and journals it with ``sent``; when
the answer is lost (or the process dies, or a refused bulk may have kept its first requests),
``judge`` reads Kintone again and gives one ``Verdict`` per inner request (call):

- **add** (``POST records``/``record``): the app's highest ``$id`` before the batch; after, the
  records above it are matched to the records sent, by content and in order (records of
  another writer in between are skipped). All found: applied, with their ids (so later refs
  work); the first not found: not applied.
- **update** (``PUT records``/``record``, by id or ``updateKey``): the first record's revision
  before; unchanged: not applied; changed and holding the values sent: applied.
- **upsert**: as update when the key existed; else whether a record with the key exists now.
- **delete**: the first id is gone: applied; still there: not applied.
- **status**: the first record's status and revision; revision unchanged: not applied; status
  changed: applied.
- **assignees**: revision unchanged: not applied; assignees as sent: applied.

Anything else (another writer changed the probed record, a ``request`` Kintone gives no trace
of) is ``unknown`` with the reason, naming the app and record. ``decide`` turns the verdicts
into the number of leading calls applied: a bulk is all-or-nothing in Kintone's reference, so
one certain verdict decides the rest; verdicts that only a kept prefix explains (applied, then
not applied) are taken as that prefix.

Reads only; the runner journals the answer. Each read is a plain GET, retried by the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .kintone import split_api

if TYPE_CHECKING:  # only handed in: nothing imports the HTTP client where nothing is sent
    from .client import Client

APPLIED = "applied"
NOT_APPLIED = "not applied"
UNKNOWN = "unknown"

PROBE_VERSION = 1

# Field types whose value Kintone computes or rewrites, so a sent value cannot be compared.
_UNCOMPARABLE = frozenset(
    {
        "FILE",
        "CALC",
        "RECORD_NUMBER",
        "CREATED_TIME",
        "UPDATED_TIME",
        "CREATOR",
        "MODIFIER",
        "__ID__",
        "__REVISION__",
        "STATUS",
        "STATUS_ASSIGNEE",
        "CATEGORY",
    }
)
_ENTITY_LISTS = frozenset({"USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT"})
_SETS = frozenset({"CHECK_BOX", "MULTI_SELECT"})


@dataclass(frozen=True)
class Verdict:
    """What Kintone says of one call: ``state`` is applied, not applied or unknown; ``result``
    stands for Kintone's answer to the call when applied (``{"ids": [...]}`` for an add)."""

    state: str
    reason: str
    result: dict[str, Any] | None = None


# ---- what a call is -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One record a call touches: by ``id``, or by ``key`` = (field, value)."""

    id: int | None = None
    key: tuple[str, str] | None = None


def kind_of(request: Mapping[str, Any]) -> str:
    """add | update | upsert | delete | status | assignees | other, of one inner request."""
    method = str(request.get("method", "")).upper()
    _, name = split_api(str(request.get("api", "")))
    payload = request.get("payload") or {}
    if method == "POST" and name in ("records", "record"):
        return "add"
    if method == "PUT" and name in ("records", "record"):
        return "upsert" if payload.get("upsert") else "update"
    if method == "DELETE" and name == "records":
        return "delete"
    if method == "PUT" and name in ("records/status", "record/status"):
        return "status"
    if method == "PUT" and name == "record/assignees":
        return "assignees"
    return "other"


def _entries(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-record entries of an update/upsert/status call (single-record APIs: the payload)."""
    payload = request.get("payload") or {}
    records = payload.get("records")
    return list(records) if isinstance(records, list) else [payload]


def _target(entry: Mapping[str, Any]) -> _Target | None:
    if entry.get("id") is not None:
        return _Target(id=int(entry["id"]))
    key = entry.get("updateKey")
    if isinstance(key, Mapping) and key.get("field"):
        return _Target(key=(str(key["field"]), str(key.get("value"))))
    return None


def _added(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    payload = request.get("payload") or {}
    if isinstance(payload.get("records"), list):
        return list(payload["records"])
    return [payload.get("record") or {}]


def _app(request: Mapping[str, Any]) -> int:
    return int((request.get("payload") or {}).get("app") or 0)


# ---- comparing what was sent with what Kintone holds --------------------------------------------


def holds(sent: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """``record`` (as Kintone returns it) holds every value of ``sent`` (as kmigrate sends it)
    that can be compared; fields the read did not return are not compared."""
    for code, cell in sent.items():
        field = record.get(code)
        if not isinstance(field, Mapping) or not isinstance(cell, Mapping) or "value" not in cell:
            continue
        if not _same(cell["value"], field.get("type"), field.get("value")):
            return False
    return True


def _same(sent: Any, kind: Any, value: Any) -> bool:
    if kind in _UNCOMPARABLE:
        return True
    if kind == "SUBTABLE":
        if not isinstance(sent, list) or not isinstance(value, list) or len(sent) != len(value):
            return False
        return all(
            holds((row or {}).get("value") or {}, (have or {}).get("value") or {})
            for row, have in zip(sent, value, strict=True)
        )
    if kind in _SETS:
        return sorted(map(str, sent or [])) == sorted(map(str, value or []))
    if kind in _ENTITY_LISTS:
        return sorted(_codes(sent)) == sorted(_codes(value))
    if kind == "NUMBER":
        return _number(sent) == _number(value)
    if kind == "DATETIME":
        return _moment(sent) == _moment(value)
    return _text(sent) == _text(value)


def _codes(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [str(v.get("code")) if isinstance(v, Mapping) else str(v) for v in value]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> Decimal | str:
    text = _text(value).strip()
    try:
        return Decimal(text).normalize() if text else ""
    except InvalidOperation:
        return text


def _moment(value: Any) -> datetime | str:
    text = _text(value).strip()
    try:
        return datetime.fromisoformat(text) if text else ""
    except ValueError:
        return text


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- reading --------------------------------------------------------------------------------


class _Reads:
    """The records a batch's probe or verdict needs, read once per app (by id and by key)."""

    def __init__(self, client: Client, guest: int | None):
        self.client = client
        self.guest = guest
        self.by_id: dict[int, dict[int, dict[str, Any]]] = {}
        self.by_key: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}

    def load(self, wanted: Iterable[tuple[int, _Target]]) -> None:
        ids: dict[int, set[int]] = {}
        keys: dict[tuple[int, str], set[str]] = {}
        for app, target in wanted:
            if target.id is not None:
                ids.setdefault(app, set()).add(target.id)
            elif target.key is not None:
                keys.setdefault((app, target.key[0]), set()).add(target.key[1])
        for app, found in ids.items():
            table = self.by_id.setdefault(app, {})
            for chunk in _chunks(sorted(found), 100):
                query = f"$id in ({', '.join(map(str, chunk))})"
                for record in self.client.get_records(app, query, guest_space_id=self.guest):
                    table[int(record["$id"]["value"])] = record
        for (app, field), values in keys.items():
            table_by_key = self.by_key.setdefault((app, field), {})
            for chunk in _chunks(sorted(values), 100):
                query = f"{field} in ({', '.join(_quote(v) for v in chunk)})"
                for record in self.client.get_records(app, query, guest_space_id=self.guest):
                    table_by_key[_text((record.get(field) or {}).get("value"))] = record

    def get(self, app: int, target: _Target) -> dict[str, Any] | None:
        if target.id is not None:
            return self.by_id.get(app, {}).get(target.id)
        assert target.key is not None
        return self.by_key.get((app, target.key[0]), {}).get(target.key[1])


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _revision(record: Mapping[str, Any]) -> int:
    return int(record["$revision"]["value"])


def _typed(record: Mapping[str, Any], kind: str) -> Any:
    return next(
        (v.get("value") for v in record.values() if isinstance(v, Mapping) and v.get("type") == kind), None
    )


def highest_id(client: Client, app: int, guest: int | None) -> int:
    """The app's highest record id now (0 for an empty app)."""
    return client.max_record_id(app, guest_space_id=guest)


# ---- before sending: the probe ----------------------------------------------------------------


def probe(
    client: Client,
    requests: Sequence[Mapping[str, Any]],
    guest: int | None,
    highest: Mapping[int, int],
    start: int = 0,
) -> dict[str, Any]:
    """What to journal with ``sent``: per call from ``start``, the state ``judge`` compares
    with. ``highest`` gives the apps' highest ids already known this run (else one GET each)."""
    reads = _Reads(client, guest)
    firsts: dict[int, _Target] = {}
    # Adds and deletes cost no read here (an app's highest id is read once a run); a call that
    # needs one is read only as the first or last of the batch: a bulk that applied did so to its
    # last call, one that did not left its first untouched, under either reading of a failure.
    ends = {start, len(requests) - 1}
    for index, request in enumerate(requests):
        if index not in ends or kind_of(request) not in ("update", "upsert", "status", "assignees"):
            continue
        target = _target(_entries(request)[0])
        if target is not None:
            firsts[index] = target
    reads.load((_app(requests[i]), t) for i, t in firsts.items())
    after: dict[int, int] = {}
    calls: list[dict[str, Any] | None] = []
    for index, request in enumerate(requests):
        if index < start:
            calls.append(None)
            continue
        kind, app = kind_of(request), _app(request)
        entry: dict[str, Any] = {"kind": kind, "app": app}
        if kind == "add":
            if app not in after:
                after[app] = highest[app] if app in highest else highest_id(client, app, guest)
            entry["after"] = after[app]
        elif index in firsts:
            target = firsts[index]
            entry["target"] = {"id": target.id} if target.id is not None else {"key": list(target.key or ())}
            record = reads.get(app, target)
            if record is None:
                entry["exists"] = False
            else:
                entry.update(exists=True, id=int(record["$id"]["value"]), revision=_revision(record))
                if kind == "status":
                    entry["status"] = _typed(record, "STATUS")
                elif kind == "assignees":
                    entry["assignees"] = sorted(_codes(_typed(record, "STATUS_ASSIGNEE")))
        elif kind == "delete":
            ids = (request.get("payload") or {}).get("ids") or []
            entry["id"] = int(ids[0]) if ids else None
        calls.append(entry)
    return {"version": PROBE_VERSION, "calls": calls}


# ---- after: the verdicts ----------------------------------------------------------------------


def judge(
    client: Client,
    requests: Sequence[Mapping[str, Any]],
    guest: int | None,
    probed: Mapping[str, Any] | None,
    start: int = 0,
    *,
    want_ids: Sequence[bool] = (),
) -> list[Verdict]:
    """One verdict per call from ``start`` (earlier calls are known applied). ``want_ids[i]``:
    call i creates or names records a ref keeps, so an applied verdict must bring their ids."""
    entries: list[Any] = list((probed or {}).get("calls") or [])
    if (probed or {}).get("version") != PROBE_VERSION or len(entries) != len(requests):
        why = "nothing was read from Kintone before it was sent (a journal of an older kmigrate)"
        return [Verdict(UNKNOWN, why) for _ in requests[start:]]
    reads = _Reads(client, guest)
    wanted: list[tuple[int, _Target]] = []
    for index in range(start, len(requests)):
        entry, request = entries[index] or {}, requests[index]
        kind = entry.get("kind")
        if kind in ("update", "upsert", "status", "assignees") and entry.get("target"):
            wanted.append((entry["app"], _target_of(entry)))
        if kind == "delete" and entry.get("id") is not None:
            wanted.append((entry["app"], _Target(id=entry["id"])))
        if kind in ("update", "upsert") and index < len(want_ids) and want_ids[index]:
            wanted.extend((entry["app"], t) for t in map(_target, _entries(request)) if t is not None)
    reads.load(wanted)
    adds = _judge_adds(client, requests, guest, entries, start)
    out = []
    for index in range(start, len(requests)):
        entry, request = entries[index] or {}, requests[index]
        kind = entry.get("kind")
        ids = index < len(want_ids) and want_ids[index]
        if kind == "add":
            out.append(adds[index])
        elif kind in ("update", "upsert"):
            out.append(_judge_update(reads, request, entry, ids))
        elif kind == "delete":
            out.append(_judge_delete(reads, entry))
        elif kind == "status":
            out.append(_judge_status(reads, entry))
        elif kind == "assignees":
            out.append(_judge_assignees(reads, request, entry))
        else:
            api = request.get("api")
            out.append(
                Verdict(UNKNOWN, f"{request.get('method')} {api} leaves no trace kmigrate can read back")
            )
    return out


def _target_of(entry: Mapping[str, Any]) -> _Target:
    target = entry["target"]
    if target.get("id") is not None:
        return _Target(id=int(target["id"]))
    field, value = target["key"]
    return _Target(key=(str(field), str(value)))


def _where(entry: Mapping[str, Any], target: _Target | None = None) -> str:
    target = target or _target_of(entry)
    if target.id is not None:
        return f"app {entry['app']} record {target.id}"
    assert target.key is not None
    return f"app {entry['app']} record {target.key[0]} = {target.key[1]!r}"


def _judge_update(reads: _Reads, request: Mapping[str, Any], entry: Mapping[str, Any], ids: bool) -> Verdict:
    if not entry.get("target"):
        # Not read before sending (neither first nor last of its batch): the others decide.
        unread = Verdict(UNKNOWN, f"its records were not read before sending (app {entry.get('app')})")
        if not ids:
            return unread
        named = _updated(reads, request, entry["app"], unread.reason, True)
        return Verdict(UNKNOWN, unread.reason, named.result)
    app, target, first = entry["app"], _target_of(entry), _entries(request)[0]
    where = _where(entry)
    now = reads.get(app, target)
    if not entry.get("exists"):
        if entry["kind"] != "upsert":
            return Verdict(UNKNOWN, f"{where} did not exist before the batch was sent")
        if now is None:
            return Verdict(NOT_APPLIED, f"{where} (upserted) still does not exist")
        if not holds(first.get("record") or {}, now):
            return Verdict(UNKNOWN, f"{where} exists now but does not hold the values sent: another writer?")
        return _updated(reads, request, app, f"{where} was created by the upsert", ids)
    if now is None:
        return Verdict(UNKNOWN, f"{where} is gone: it was deleted since the batch was sent")
    before, after = entry["revision"], _revision(now)
    if after == before:
        return Verdict(NOT_APPLIED, f"{where} still has revision {before}")
    if not holds(first.get("record") or {}, now):
        return Verdict(
            UNKNOWN,
            f"{where} changed (revision {before} -> {after}) but does not hold the values sent: another writer?",
        )
    return _updated(
        reads, request, app, f"{where} went from revision {before} to {after} with the values sent", ids
    )


def _updated(reads: _Reads, request: Mapping[str, Any], app: int, reason: str, ids: bool) -> Verdict:
    if not ids:
        return Verdict(APPLIED, reason, {"reconciled": True})
    found = []
    for entry in _entries(request):
        target = _target(entry)
        record = reads.get(app, target) if target is not None else None
        if record is None:
            return Verdict(UNKNOWN, f"{reason}, but a record it names cannot be read back for its id")
        found.append({"id": record["$id"]["value"]})
    return Verdict(APPLIED, reason, {"records": found})


def _judge_delete(reads: _Reads, entry: Mapping[str, Any]) -> Verdict:
    if entry.get("id") is None:
        return Verdict(UNKNOWN, f"the delete names no id (app {entry.get('app')})")
    where = f"app {entry['app']} record {entry['id']}"
    if reads.get(entry["app"], _Target(id=entry["id"])) is None:
        return Verdict(APPLIED, f"{where} is gone")
    return Verdict(NOT_APPLIED, f"{where} still exists")


def _reread(reads: _Reads, entry: Mapping[str, Any]) -> Verdict | tuple[str, dict[str, Any], int]:
    """The probed record of a status or assignees call as it is now, with its revision before;
    or the verdict when that already tells (not read, gone, revision unchanged)."""
    if not entry.get("target"):
        return Verdict(UNKNOWN, f"its record was not read before sending (app {entry.get('app')})")
    if not entry.get("exists"):
        return Verdict(UNKNOWN, f"its record could not be read before sending (app {entry.get('app')})")
    where = _where(entry)
    now = reads.get(entry["app"], _target_of(entry))
    if now is None:
        return Verdict(UNKNOWN, f"{where} is gone: it was deleted since the batch was sent")
    if _revision(now) == entry["revision"]:
        return Verdict(NOT_APPLIED, f"{where} still has revision {entry['revision']}")
    return where, now, entry["revision"]


def _judge_status(reads: _Reads, entry: Mapping[str, Any]) -> Verdict:
    found = _reread(reads, entry)
    if isinstance(found, Verdict):
        return found
    where, now, before = found
    status, was = _typed(now, "STATUS"), entry.get("status")
    if status != was:
        return Verdict(APPLIED, f"{where} went from status {was!r} to {status!r}", {"reconciled": True})
    return Verdict(
        UNKNOWN, f"{where} changed (revision {before} -> {_revision(now)}) but its status is still {status!r}"
    )


def _judge_assignees(reads: _Reads, request: Mapping[str, Any], entry: Mapping[str, Any]) -> Verdict:
    found = _reread(reads, entry)
    if isinstance(found, Verdict):
        return found
    where, now, before = found
    sent = sorted(map(str, (request.get("payload") or {}).get("assignees") or []))
    have = sorted(_codes(_typed(now, "STATUS_ASSIGNEE")))
    if have == sent:
        return Verdict(
            APPLIED, f"{where} has the assignees sent ({', '.join(sent) or 'none'})", {"reconciled": True}
        )
    return Verdict(
        UNKNOWN,
        f"{where} changed (revision {before} -> {_revision(now)}) but its assignees are {have}, not {sent}",
    )


def _judge_adds(
    client: Client,
    requests: Sequence[Mapping[str, Any]],
    guest: int | None,
    entries: Sequence[Any],
    start: int,
) -> dict[int, Verdict]:
    """Per add call: the records sent found above the app's highest id before, in order."""
    by_app: dict[int, list[int]] = {}
    for index in range(start, len(requests)):
        entry = entries[index] or {}
        if entry.get("kind") == "add":
            by_app.setdefault(entry["app"], []).append(index)
    out: dict[int, Verdict] = {}
    for app, calls in by_app.items():
        after = min(int(entries[i]["after"]) for i in calls)
        sent = [(i, record) for i in calls for record in _added(requests[i])]
        read = client.get_records(
            app, f"$id > {after}", _codes_sent(r for _, r in sent), guest_space_id=guest
        )
        matched, seen = match_in_order([r for _, r in sent], read)
        found: dict[int, list[int]] = {i: [] for i in calls}
        for (i, _), record_id in zip(sent, matched, strict=False):
            found[i].append(record_id)
        for i in calls:
            count, got = len(_added(requests[i])), len(found[i])
            where = f"app {app}: of the {count} record(s) call {i + 1} adds"
            if got == count:
                result = {"ids": [str(x) for x in found[i]]}
                out[i] = Verdict(
                    APPLIED, f"{where}, all were found above id {after} (ids {_span(found[i])})", result
                )
            elif got == 0:
                out[i] = Verdict(
                    NOT_APPLIED,
                    f"{where}, none is among the {seen} record(s) above id {after}"
                    if seen
                    else f"app {app} has no record above id {after}",
                )
            else:
                out[i] = Verdict(
                    UNKNOWN,
                    f"{where}, only {got} were found above id {after} (ids {_span(found[i])}): "
                    "records were changed or deleted since, or another writer added the same content",
                )
    return out


def _codes_sent(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({code for record in records for code in record} | {"$id"})


def match_in_order(
    sent: Sequence[Mapping[str, Any]], read: Iterable[Mapping[str, Any]]
) -> tuple[list[int], int]:
    """The ids of the records read (in ``$id`` order) that hold the records sent, in order,
    skipping records that hold none (another writer's); stops at the first record not found.
    Returns (ids of the leading records found, records read)."""
    ids: list[int] = []
    seen = 0
    for record in read:
        if len(ids) == len(sent):
            break
        seen += 1
        if holds(sent[len(ids)], record):
            ids.append(int(record["$id"]["value"]))
    return ids, seen


# ---- ids named by a person (`kmigrate resolve --applied --ids-key/--ids-query`) ----------------


def read_ids(
    client: Client,
    requests: Sequence[Mapping[str, Any]],
    guest: int | None,
    keeps: Sequence[bool],
    *,
    key: str | None = None,
    query: str | None = None,
) -> list[dict[str, Any]]:
    """Stand-ins for the lost answers of an applied batch's calls, with the ids of the records
    they created where ``keeps[i]`` says a ref keeps them: an add's records are found by ``key``
    (a unique field: one record per value sent) or among those ``query`` selects (matched by
    content, in order); an update or upsert's by their own id or ``updateKey``. A ``ValueError``
    says what could not be found; nothing is journaled then."""
    results: list[dict[str, Any]] = []
    taken: dict[int, int] = {}  # app -> the highest id matched so far, so two calls never share one
    for index, (request, keep) in enumerate(zip(requests, keeps, strict=True)):
        kind = kind_of(request)
        if not keep:
            results.append({"resolved": True})
        elif kind == "add":
            app, sent = _app(request), _added(request)
            where = f"call {index + 1} (app {app}, {len(sent)} record(s))"
            if key is not None:
                ids = _ids_by_key(client, app, guest, key, sent, where)
            elif query is not None:
                read = client.get_records(
                    app, f"({query}) and $id > {taken.get(app, 0)}", _codes_sent(sent), guest_space_id=guest
                )
                ids, seen = match_in_order(sent, read)
                if len(ids) != len(sent):
                    raise ValueError(
                        f"{where}: the query selects {seen} record(s) of which {len(ids)} hold the records "
                        "sent, in order; it must select them all"
                    )
            else:
                raise ValueError(
                    f"{where} created records a ref keeps: say how to find them (a key or a query)"
                )
            if ids:
                taken[app] = max(ids)
            results.append({"ids": [str(i) for i in ids]})
        elif kind in ("update", "upsert"):
            reads = _Reads(client, guest)
            targets = [_target(e) for e in _entries(request)]
            reads.load((_app(request), t) for t in targets if t is not None)
            found = [reads.get(_app(request), t) if t is not None else None for t in targets]
            if any(r is None for r in found):
                raise ValueError(f"call {index + 1}: a record it names is not in app {_app(request)}")
            results.append({"records": [{"id": r["$id"]["value"]} for r in found if r is not None]})
        else:
            results.append({"resolved": True})
    return results


def _ids_by_key(
    client: Client, app: int, guest: int | None, key: str, sent: Sequence[Mapping[str, Any]], where: str
) -> list[int]:
    values = [_text((record.get(key) or {}).get("value")) for record in sent]
    if any(not v for v in values):
        raise ValueError(f"{where}: a record sent has no value for {key}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: {key} repeats among the records sent, so it cannot name one record each")
    by_value: dict[str, list[int]] = {}
    for chunk in _chunks(values, 100):
        query = f"{key} in ({', '.join(_quote(v) for v in chunk)})"
        for record in client.get_records(app, query, [key, "$id"], guest_space_id=guest):
            by_value.setdefault(_text((record.get(key) or {}).get("value")), []).append(
                int(record["$id"]["value"])
            )
    missing = [v for v in values if len(by_value.get(v, [])) == 0]
    several = [v for v in values if len(by_value.get(v, [])) > 1]
    if missing:
        raise ValueError(f"{where}: no record has {key} = {', '.join(map(repr, missing[:5]))}")
    if several:
        raise ValueError(f"{where}: several records have {key} = {', '.join(map(repr, several[:5]))}")
    return [by_value[v][0] for v in values]


def _span(ids: Sequence[int]) -> str:
    if not ids:
        return "none"
    return f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else str(ids[0])


def decide(verdicts: Sequence[Verdict]) -> int | None:
    """How many leading calls took effect (``len``: all, 0: none), or None when Kintone cannot
    tell. One certain verdict decides for the whole bulk (all-or-nothing); if some calls applied
    and later ones certainly did not, the bulk kept a prefix (the seed's reading of a failed
    bulk), and the unknown calls must not fall between the two."""
    applied = [i for i, v in enumerate(verdicts) if v.state == APPLIED]
    not_applied = [i for i, v in enumerate(verdicts) if v.state == NOT_APPLIED]
    if not applied and not not_applied:
        return None
    if not not_applied:
        return len(verdicts)
    if not applied:
        return 0
    last, first = max(applied), min(not_applied)
    if last > first:
        return None  # not applied, then applied: no reading of a bulk explains it
    unknown_between = [i for i, v in enumerate(verdicts) if v.state == UNKNOWN and last < i < first]
    return None if unknown_between else last + 1


def unknowns(verdicts: Sequence[Verdict], start: int = 0) -> list[str]:
    """The reasons Kintone could not tell, one per call, for the message that asks a person."""
    return [f"call {start + i + 1}: {v.reason}" for i, v in enumerate(verdicts) if v.state == UNKNOWN]


__all__ = [
    "match_in_order",
    "read_ids",
    "APPLIED",
    "NOT_APPLIED",
    "UNKNOWN",
    "Verdict",
    "decide",
    "holds",
    "judge",
    "kind_of",
    "probe",
    "unknowns",
]
