"""Field values in the sandbox: defaults, table merges, and the read shapes of records and forms.

The rules for a written value (``normalize``, ``check_required``, ``Problems``) live in
``kmigrate.fieldrules``, shared with the validator, and are re-exported here. Values are stored
exactly as Kintone returns them (every scalar a string; DATE/TIME/DROP_DOWN ``null`` when
empty), so reading a record is a dictionary lookup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..fieldrules import (  # noqa: F401 - re-exported for the sandbox's modules
    ENTITY_TYPES,
    Problems,
    check_required,
    empty_value,
    is_empty,
    normalize,
    number_text,
)
from .definition import AppDef, FieldDef


def now_utc() -> str:
    """Kintone keeps times to the minute: ``2026-01-31T09:15:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00Z")


def default_value(f: FieldDef) -> Any:
    if f.default_now:
        now = datetime.now(UTC)
        if f.type == "DATE":
            return now.strftime("%Y-%m-%d")
        if f.type == "TIME":
            return now.strftime("%H:%M")
        if f.type == "DATETIME":
            return now.strftime("%Y-%m-%dT%H:%M:00Z")
    if f.default is None:
        return empty_value(f.type)
    if isinstance(f.default, list):
        return [dict(v) if isinstance(v, dict) else v for v in f.default]
    return f.default


def merge_table(
    f: FieldDef, sent: list[dict[str, Any]], old: list[dict[str, Any]] | None, new_row_id: Any
) -> list[dict[str, Any]]:
    """Kintone's table update: a row whose id matches keeps the columns not sent; any other row
    is new (default values, a new id); rows not sent are gone."""
    old_by_id = {row["id"]: row for row in old or []}
    merged = []
    for row in sent:
        previous = old_by_id.get(row["id"]) if row["id"] is not None else None
        if previous is not None:
            cells = {code: dict(cell) for code, cell in previous["value"].items()}
            row_id = previous["id"]
        else:
            cells = {code: {"type": sub.type, "value": default_value(sub)} for code, sub in f.fields.items()}
            row_id = str(new_row_id())
        for code, value in row["value"].items():
            cells[code] = {"type": f.fields[code].type, "value": value}
        for code, sub in f.fields.items():  # a column added to the file since the row was stored
            cells.setdefault(code, {"type": sub.type, "value": default_value(sub)})
        merged.append({"id": row_id, "value": cells})
    return merged


# -- reading --------------------------------------------------------------------------------


def render_record(
    app: AppDef, record_id: int, revision: int, data: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """A stored record -> Kintone's read shape, with the system fields; fields are those the
    sandbox file defines now (a value stored for a field since removed is not shown)."""
    values = data["values"]
    out: dict[str, dict[str, Any]] = {}
    for code, f in app.fields.items():
        value = values.get(code, _MISSING)
        if value is _MISSING:
            value = empty_value(f.type)
        elif f.type == "SUBTABLE" and value:
            value = merge_table(f, [{"id": r["id"], "value": {}} for r in value], value, lambda: 0)
        out[code] = {"type": f.type, "value": value}
    system = app.system
    number = str(record_id) if not app.code else f"{app.code}-{record_id}"
    out[system["RECORD_NUMBER"].code] = {"type": "RECORD_NUMBER", "value": number}
    out[system["CREATOR"].code] = {
        "type": "CREATOR",
        "value": {"code": data["creator"], "name": data["creator"]},
    }
    out[system["CREATED_TIME"].code] = {"type": "CREATED_TIME", "value": data["created"]}
    out[system["MODIFIER"].code] = {
        "type": "MODIFIER",
        "value": {"code": data["modifier"], "name": data["modifier"]},
    }
    out[system["UPDATED_TIME"].code] = {"type": "UPDATED_TIME", "value": data["updated"]}
    process = app.enabled_process
    if process is not None:
        out[system["STATUS"].code] = {
            "type": "STATUS",
            "value": data.get("status") or process.initial.name,
        }
        out[system["STATUS_ASSIGNEE"].code] = {
            "type": "STATUS_ASSIGNEE",
            "value": [{"code": a, "name": a} for a in data.get("assignees") or []],
        }
    out["$revision"] = {"type": "__REVISION__", "value": str(revision)}
    out["$id"] = {"type": "__ID__", "value": str(record_id)}
    return out


_MISSING = object()


def field_properties(app: AppDef) -> dict[str, dict[str, Any]]:
    """``GET app/form/fields.json``'s ``properties``, system fields included."""
    props: dict[str, dict[str, Any]] = {}
    for f in app.fields.values():
        props[f.code] = _property(f)
    for f in app.layout.values():
        props[f.code] = {"type": f.type, "code": f.code, "label": f.label, "noLabel": False, **dict(f.extra)}
    for system_type, f in app.system.items():
        prop: dict[str, Any] = {"type": system_type, "code": f.code, "label": f.label}
        if system_type in ("STATUS", "STATUS_ASSIGNEE"):
            prop["enabled"] = app.process_enabled
        elif system_type == "CATEGORY":
            prop["enabled"] = False
        else:
            prop["noLabel"] = False
        props[f.code] = prop
    return props


def _property(f: FieldDef) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "type": f.type,
        "code": f.code,
        "label": f.label,
        "noLabel": bool(f.extra.get("noLabel", False)),
    }
    if f.type == "SUBTABLE":
        prop["fields"] = {code: _property(sub) for code, sub in f.fields.items()}
        return prop
    prop["required"] = f.required
    if f.type in ("SINGLE_LINE_TEXT", "NUMBER", "LINK", "DATE", "TIME", "DATETIME"):
        prop["unique"] = f.unique
    if f.options:
        prop["options"] = {label: {"label": label, "index": str(i)} for i, label in enumerate(f.options)}
    if f.type in ("CHECK_BOX", "MULTI_SELECT"):
        prop["defaultValue"] = list(f.default or [])
    elif f.type in ENTITY_TYPES:
        prop["defaultValue"] = [{"code": v["code"], "type": "USER"} for v in f.default or []]
    elif f.type not in ("FILE", "CALC"):
        prop["defaultValue"] = f.default if isinstance(f.default, str) else ""
    if f.type in ("DATE", "TIME", "DATETIME"):
        prop["defaultNowValue"] = f.default_now
    if f.type == "NUMBER":
        prop["minValue"] = number_text(f.min_value) if f.min_value is not None else ""
        prop["maxValue"] = number_text(f.max_value) if f.max_value is not None else ""
    if f.type in ("SINGLE_LINE_TEXT", "LINK"):
        prop["minLength"] = str(f.min_length) if f.min_length is not None else ""
        prop["maxLength"] = str(f.max_length) if f.max_length is not None else ""
    for k, v in f.extra.items():
        prop.setdefault(k, v)
    return prop
