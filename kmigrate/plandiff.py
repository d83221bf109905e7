"""``kmigrate plan --diff``: the records a plan's updates, upserts, deletes and status changes
will touch, read from Kintone, shown as *before -> after* per field (Terraform's plan after a
refresh).

``operation_samples`` (pure) walks a plan's pending batches once and gives, per operation, what
it sends: the records (with refs resolved from the journal where they can be), so the reviewer's
markdown and the diff share one reading of the payloads. ``diff_plan`` reads the current
records through a ``Client`` (reads only: GET records.json, 100 ids or keys per request).

A record named by a ref this plan has not made yet (an earlier batch creates it) cannot be
read: it is counted as "made earlier in this plan". Records a key or id matches nothing are
counted: an update or delete of them would fail, an upsert adds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .plan import Batch, ChangesetPlan, Plan, is_ref_marker, resolve_refs

if TYPE_CHECKING:
    from .client import Client

DIFF_KINDS = ("update", "upsert", "delete", "status")
_IDS_PER_READ = 100


@dataclass
class OperationSample:
    """What one operation sends: every record (or id) as in the payload, refs resolved where
    the journal knows them; ``unguarded``: records updated by id with no revision."""

    changeset: str
    index: int
    kind: str
    app_id: int
    guest_space_id: int | None
    items: list[Any] = field(default_factory=list)
    unguarded: int = 0


def _items_of(call_payload: Mapping[str, Any], count: int) -> list[Any]:
    for key in ("records", "ids"):
        value = call_payload.get(key)
        if isinstance(value, list):
            return list(value)
        if is_ref_marker(value):  # every id of a ref this plan makes: one marker per record
            return [value] * count
    return [dict(call_payload)]


def operation_samples(
    cs: ChangesetPlan, refs: Mapping[str, Sequence[Any]] | None = None
) -> dict[int, OperationSample]:
    """Per operation index of ``cs``: what its pending batches send (see ``OperationSample``)."""
    ops = {op.index: op for op in cs.operations}
    out: dict[int, OperationSample] = {}
    batches: Sequence[Batch] = cs.pending_batches
    for batch in batches:
        for call in batch.calls:
            payload = _resolve(call.payload, refs or {})
            items = _items_of(payload, call.record_count)
            for seg in call.segments or ():
                op = ops.get(seg.operation)
                if op is None:
                    continue
                sample = out.setdefault(
                    seg.operation,
                    OperationSample(cs.id, seg.operation, op.kind, op.app_id, op.guest_space_id),
                )
                taken = items[: seg.count] if len(call.segments) == 1 else _slice(call, seg, items)
                sample.items.extend(taken)
                if op.kind == "update":
                    sample.unguarded += sum(
                        1
                        for r in taken
                        if isinstance(r, Mapping) and "updateKey" not in r and "revision" not in r
                    )
    return out


def _slice(call: Any, seg: Any, items: list[Any]) -> list[Any]:
    position = 0
    for s in call.segments:
        if s is seg:
            return items[position : position + s.count]
        position += s.count
    return []


def _resolve(payload: Mapping[str, Any], refs: Mapping[str, Sequence[Any]]) -> Any:
    """Refs the journal knows, resolved; the others left as markers (made by this plan)."""

    def walk(value: Any) -> Any:
        if is_ref_marker(value):
            name = value["$ref"]
            if name in refs and ("index" not in value or value["index"] < len(refs[name])):
                return resolve_refs(value, refs)
            return value
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(payload)


# ---- reading Kintone ---------------------------------------------------------------------------


@dataclass
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass
class RecordDiff:
    label: str  # "id 12" or "sku = SKU-003"
    changes: list[FieldChange] = field(default_factory=list)
    unchanged: int = 0


@dataclass
class OperationDiff:
    changeset: str
    index: int
    kind: str
    app_id: int
    records: list[RecordDiff] = field(default_factory=list)
    not_found: int = 0  # matched nothing in Kintone
    made_by_plan: int = 0  # named by a ref this plan creates first: cannot be read yet


def _value(field_value: Any) -> Any:
    return field_value.get("value") if isinstance(field_value, Mapping) else field_value


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _query_in(field_code: str, values: Sequence[Any]) -> str:
    quoted = ", ".join(json.dumps(str(v), ensure_ascii=False) for v in values)
    return f"{field_code} in ({quoted})"


def _read(
    client: Client, sample: OperationSample, field_code: str, values: list[Any]
) -> dict[str, dict[str, Any]]:
    """Records whose ``field_code`` is one of ``values``, by that value as text."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(values), _IDS_PER_READ):
        chunk = values[start : start + _IDS_PER_READ]
        for record in client.get_records(
            sample.app_id, query=_query_in(field_code, chunk), guest_space_id=sample.guest_space_id
        ):
            found[str(_value(record.get(field_code)))] = record
    return found


def diff_operation(client: Client, sample: OperationSample) -> OperationDiff:
    out = OperationDiff(sample.changeset, sample.index, sample.kind, sample.app_id)
    by_id: list[tuple[int, Any]] = []  # (id, what is sent)
    by_key: dict[str, list[tuple[str, Any]]] = {}
    for item in sample.items:
        if is_ref_marker(item) or (isinstance(item, Mapping) and is_ref_marker(item.get("id"))):
            out.made_by_plan += 1
        elif isinstance(item, int):
            by_id.append((item, None))
        elif isinstance(item, Mapping) and "updateKey" in item:
            key = item["updateKey"]
            by_key.setdefault(key["field"], []).append((str(key["value"]), item))
        elif isinstance(item, Mapping) and isinstance(item.get("id"), int):
            by_id.append((item["id"], item))
    if by_id:
        found = _read(client, sample, "$id", [i for i, _ in by_id])
        for record_id, sent in by_id:
            _compare(out, f"id {record_id}", found.get(str(record_id)), sent)
    for field_code, pairs in by_key.items():
        found = _read(client, sample, field_code, [v for v, _ in pairs])
        for value, sent in pairs:
            _compare(out, f"{field_code} = {value}", found.get(value), sent)
    return out


def _compare(out: OperationDiff, label: str, current: dict[str, Any] | None, sent: Any) -> None:
    if current is None:
        out.not_found += 1
        return
    diff = RecordDiff(label)
    if out.kind == "delete":
        diff.changes = [
            FieldChange(code, _value(v), None)
            for code, v in current.items()
            if not code.startswith("$") and code not in _SYSTEM and _value(v) not in (None, "", [])
        ]
    elif out.kind == "status":
        before = _value(current.get("Status") or current.get("ステータス"))
        action = sent.get("action") if isinstance(sent, Mapping) else None
        diff.changes = [FieldChange("Status", before, f"(action {action})")]
    else:
        fields = sent.get("record", {}) if isinstance(sent, Mapping) else {}
        for code, new in fields.items():
            old, after = _value(current.get(code)), _value(new)
            if old == after:
                diff.unchanged += 1
            else:
                diff.changes.append(FieldChange(code, old, after))
    out.records.append(diff)


_SYSTEM = {"Record_number", "Created_by", "Created_datetime", "Updated_by", "Updated_datetime", "Assignee"}


def diff_plan(client: Client, plan: Plan, refs: Mapping[str, Sequence[Any]]) -> list[OperationDiff]:
    """Every pending update/upsert/delete/status operation of ``plan``, read and compared."""
    diffs = []
    for cs in plan.pending:
        for _index, sample in sorted(operation_samples(cs, refs).items()):
            if sample.kind in DIFF_KINDS:
                diffs.append(diff_operation(client, sample))
    return diffs


# ---- rendering --------------------------------------------------------------------------------


def _counts(d: OperationDiff) -> str:
    parts = [f"{len(d.records)} record(s) read"]
    if d.not_found:
        verb = "will be added" if d.kind == "upsert" else "match nothing (the request would fail)"
        parts.append(f"{d.not_found} {verb}")
    if d.made_by_plan:
        parts.append(f"{d.made_by_plan} made earlier in this plan (not read)")
    return ", ".join(parts)


def iter_diff_text(diffs: list[OperationDiff]) -> Iterator[str]:
    yield "\nBefore -> after (read from Kintone now):\n"
    if not diffs:
        yield "  no update, upsert, delete or status change to read\n"
    for d in diffs:
        yield f"\n{d.changeset} operation {d.index + 1} ({d.kind}, app {d.app_id}): {_counts(d)}\n"
        for r in d.records:
            if not r.changes:
                yield f"  {r.label}: no change ({r.unchanged} field(s) already so)\n"
                continue
            yield f"  {r.label}:\n"
            for c in r.changes:
                after = "(deleted)" if d.kind == "delete" else _shown(c.after)
                yield f"    {c.field}: {_shown(c.before)} -> {after}\n"


def iter_diff_markdown(diffs: list[OperationDiff]) -> Iterator[str]:
    yield "\n#### Before -> after (read from Kintone)\n\n"
    if not diffs:
        yield "No update, upsert, delete or status change to read.\n"
    for d in diffs:
        yield f"**`{d.changeset}` operation {d.index + 1}** ({d.kind}, app {d.app_id}): {_counts(d)}\n\n"
        rows = [(r.label, c) for r in d.records for c in r.changes]
        if rows:
            yield "| Record | Field | Before | After |\n| --- | --- | --- | --- |\n"
            for label, c in rows:
                after = "*(deleted)*" if d.kind == "delete" else _md(_shown(c.after))
                yield f"| {_md(label)} | `{_md(c.field)}` | {_md(_shown(c.before))} | {after} |\n"
            yield "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
