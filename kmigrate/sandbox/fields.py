"""Field values: a client's write shape -> the stored read shape, with Kintone's validation.

Values are stored exactly as Kintone returns them (every scalar a string; DATE/TIME/DROP_DOWN
``null`` when empty), so reading a record is a dictionary lookup. Validation problems are
collected in ``Problems`` under Kintone's keys (``records[3].title.value``) so one CB_VA01
can report every bad value of a call at once, as Kintone does.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from .definition import AppDef, FieldDef

_LIST_TYPES = frozenset(
    {"CHECK_BOX", "MULTI_SELECT", "USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT", "FILE", "SUBTABLE"}
)
_NULL_TYPES = frozenset({"DATE", "TIME", "DROP_DOWN"})
ENTITY_TYPES = frozenset({"USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT"})
_TEXT_TYPES = frozenset({"SINGLE_LINE_TEXT", "MULTI_LINE_TEXT", "RICH_TEXT", "LINK"})

# NUMBER as Kintone takes it on write (OBSERVED-3P): an integer part is required at the top
# level (".5" is refused), a table column also takes ".5" and full-width digits.
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?$")
_NUMBER_IN_TABLE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
# A new app's number precision in Kintone: 16 digits, 4 of them after the point, half-even.
_DECIMAL_PLACES = Decimal(1).scaleb(-4)
_INTEGER_DIGITS = 12
_DATE = re.compile(r"^(\d{4})-(\d{1,2})(?:-(\d{1,2}))?$")
_TIME = re.compile(r"^(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?$")


class Problems(dict):
    """Kintone's ``errors`` object: key -> {"messages": [...]}."""

    def add(self, key: str, message: str) -> None:
        self.setdefault(key, {"messages": []})["messages"].append(message)


def empty_value(ftype: str) -> Any:
    if ftype in _LIST_TYPES:
        return []
    if ftype in _NULL_TYPES:
        return None
    return ""


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


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


def normalize(f: FieldDef, raw: Any, key: str, problems: Problems, *, in_table: bool = False) -> Any:
    """One field's ``{"value": ...}`` from a request -> its stored value (or None after a problem).

    ``key`` is Kintone's error key without the trailing ``.value``, e.g. ``records[3].title``.
    SUBTABLE rows come back as ``[{"id": str|None, "value": {code: stored}}]`` holding only the
    columns sent; ``merge_table`` completes them.
    """
    if not isinstance(raw, dict):
        problems.add(f"{key}.value", 'Enter the value in the form {"value": ...}.')
        return None
    value = raw.get("value")
    t = f.type
    vkey = f"{key}.value"
    if t in _TEXT_TYPES:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.add(vkey, "Enter a string.")
            return None
        text = value if isinstance(value, str) else _number_text(value)
        if f.max_length is not None and len(text) > f.max_length:
            problems.add(vkey, f"Enter no more than {f.max_length} characters.")
        elif f.min_length is not None and len(text) < f.min_length:  # empty too (OBSERVED-3P)
            problems.add(vkey, f"Enter at least {f.min_length} characters.")
        return text
    if t == "NUMBER":
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            text = value.strip().translate(_FULL_WIDTH_DIGITS) if in_table else value.strip()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            text = _number_text(value)
        else:
            text = ""  # not a number at all
        if not (_NUMBER_IN_TABLE if in_table else _NUMBER).match(text):
            if in_table:
                return ""  # Kintone silently stores "" for non-numeric text inside a table
            # Kintone keys this one error in bracket form: record[amount].value (OBSERVED-3P).
            head, dot, code = key.rpartition(".")
            problems.add(f"{head}[{code}].value" if dot else vkey, "Only numbers are allowed.")
            return None
        number = Decimal(text)
        # Bounds are checked before rounding, the digit count after (OBSERVED-3P).
        if f.min_value is not None and number < f.min_value:
            problems.add(vkey, f"The value must be {_number_text(f.min_value)} or more.")
        elif f.max_value is not None and number > f.max_value:
            problems.add(vkey, f"The value must be {_number_text(f.max_value)} or less.")
        stored = _stored_number(number)
        if stored is None:
            problems.add(vkey, "The number of digits exceeds the maximum allowed.")
        return stored
    if t in ("DROP_DOWN", "RADIO_BUTTON"):
        if value is None or value == "":
            return None if t == "DROP_DOWN" else ""
        if not isinstance(value, str) or value not in f.options:
            problems.add(vkey, f"The value must be one of the options: {', '.join(f.options)}.")
            return None
        return value
    if t in ("CHECK_BOX", "MULTI_SELECT"):
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.add(f"{key}.values", "Enter an array of option labels.")
            return None
        bad = [v for v in value if v not in f.options]
        if bad:
            problems.add(f"{key}.values", f"The value must be one of the options: {', '.join(f.options)}.")
            return None
        return list(dict.fromkeys(value))
    if t == "DATE":
        if value is None or value == "":
            return None
        m = _DATE.match(value) if isinstance(value, str) else None
        try:
            if m is None:
                raise ValueError
            # Kintone pads partial dates: 2015-7 -> 2015-07-01
            return date(int(m[1]), int(m[2]), int(m[3] or 1)).isoformat()
        except ValueError:
            problems.add(vkey, "Enter a date in the format YYYY-MM-DD.")
            return None
    if t == "TIME":
        if value is None or value == "":
            return None
        m = _TIME.match(value) if isinstance(value, str) else None
        if m is None or int(m[1]) > 23 or int(m[2]) > 59 or (m[3] and int(m[3]) > 59):
            problems.add(vkey, "Enter a time in the format HH:MM.")
            return None
        return f"{int(m[1]):02d}:{int(m[2]):02d}"
    if t == "DATETIME":
        if value is None or value == "":
            return ""
        try:
            if not isinstance(value, str) or "T" not in value:
                raise ValueError
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            problems.add(vkey, "Enter a date and time in the format YYYY-MM-DDTHH:MM:SSZ.")
            return None
        if moment.tzinfo is None:  # the sandbox's users all live in UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z")
    if t in ENTITY_TYPES:
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(v, dict) and isinstance(v.get("code"), str) and v["code"] for v in value
        ):
            problems.add(f"{key}.values.value", 'Enter an array of {"code": ...} objects.')
            return None
        return [{"code": v["code"], "name": v.get("name") or v["code"]} for v in value]
    if t == "FILE":
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) and v.get("fileKey") for v in value):
            problems.add(vkey, 'Enter an array of {"fileKey": ...} objects.')
            return None
        # The sandbox keeps no files: it remembers the key and echoes it as the file's name.
        return [
            {
                "contentType": v.get("contentType", "application/octet-stream"),
                "fileKey": str(v["fileKey"]),
                "name": str(v.get("name") or v["fileKey"]),
                "size": str(v.get("size", "0")),
            }
            for v in value
        ]
    if t == "SUBTABLE":
        if value is None:
            return []
        if not isinstance(value, list):
            problems.add(vkey, "Enter an array of rows.")
            return None
        rows = []
        for i, row in enumerate(value):
            if not isinstance(row, dict) or not isinstance(row.get("value", {}), dict):
                problems.add(f"{key}.value[{i}].value", 'Enter a row as {"id"?: ..., "value": {...}}.')
                continue
            cells: dict[str, Any] = {}
            for code, cell in (row.get("value") or {}).items():
                sub = f.fields.get(code)
                if sub is None or sub.type == "CALC":
                    continue
                cells[code] = normalize(sub, cell, f"{key}.value[{i}].value.{code}", problems, in_table=True)
            row_id = row.get("id")
            rows.append({"id": str(row_id) if row_id not in (None, "") else None, "value": cells})
        return rows
    return None  # read-only types never reach here


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


# Kintone keys an empty required field by its value's shape (OBSERVED-3P, kintone-api.md §6).
_REQUIRED_SUFFIX = {
    "CHECK_BOX": ".values",
    "MULTI_SELECT": ".values",
    "FILE": ".values",
    "USER_SELECT": ".values.value",
    "ORGANIZATION_SELECT": ".values.value",
    "GROUP_SELECT": ".values.value",
}


def check_required(
    app: AppDef, values: dict[str, Any], prefix: str, problems: Problems, only: set[str] | None = None
) -> None:
    """Required fields (and required table columns) of the codes in ``only`` (None: all).
    A field whose value was already refused is not also reported as missing."""
    for code, f in app.fields.items():
        if only is not None and code not in only:
            continue
        value = values.get(code)
        if f.required and is_empty(value) and not _refused(problems, f"{prefix}.{code}", f"{prefix}[{code}]"):
            problems.add(f"{prefix}.{code}{_REQUIRED_SUFFIX.get(f.type, '.value')}", "Required.")
        if f.type == "SUBTABLE" and isinstance(value, list):
            for i, row in enumerate(value):
                for sub_code, sub in f.fields.items():
                    cell = f"{prefix}.{code}.value[{i}].value.{sub_code}"
                    if (
                        sub.required
                        and is_empty(row["value"].get(sub_code, {}).get("value"))
                        and not _refused(problems, cell)
                    ):
                        problems.add(f"{cell}{_REQUIRED_SUFFIX.get(sub.type, '.value')}", "Required.")


def _refused(problems: Problems, *keys: str) -> bool:
    return bool(problems) and any(k == key or k.startswith(key + ".") for k in problems for key in keys)


def _stored_number(number: Decimal) -> str | None:
    """What Kintone keeps of a NUMBER: rounded to the app's precision, in plain notation without
    trailing zeros ("1.5e1" -> "15", "1.50" -> "1.5", "+5" -> "5"); None when it has too many digits."""
    if number.is_zero():
        return "0"
    if number.adjusted() >= _INTEGER_DIGITS:
        return None
    with localcontext() as ctx:
        ctx.prec = 64
        rounded = number.quantize(_DECIMAL_PLACES, rounding=ROUND_HALF_EVEN)
        if rounded.is_zero():
            return "0"
        if rounded.adjusted() >= _INTEGER_DIGITS:
            return None
        return format(rounded.normalize(), "f")


def _number_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


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
        prop["minValue"] = _number_text(f.min_value) if f.min_value is not None else ""
        prop["maxValue"] = _number_text(f.max_value) if f.max_value is not None else ""
    if f.type in ("SINGLE_LINE_TEXT", "LINK"):
        prop["minLength"] = str(f.min_length) if f.min_length is not None else ""
        prop["maxLength"] = str(f.max_length) if f.max_length is not None else ""
    for k, v in f.extra.items():
        prop.setdefault(k, v)
    return prop
