"""Kintone's rules for one field's value: what a write takes, and what Kintone keeps of it.

One home for them: the embedded sandbox applies them to every write (``sandbox/fields.py``,
``sandbox/api.py``), and the validator (``appcheck``) applies the very same ones to every
record a changeset writes before anything is sent. Values come in the write shape
(``{"value": ...}``) and leave in the stored read shape (every scalar a string; DATE/TIME/
DROP_DOWN ``None`` when empty). Problems are collected in ``Problems`` under Kintone's keys
(``records[3].title.value``), so one CB_VA01 can report every bad value of a call at once, as
Kintone does. The process rules (which action runs from which state, who must be named as
assignee) live here too. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Final, Protocol

from .appschema import ActionDef, FieldDef, ProcessDef, StateDef


class HasFields(Protocol):
    """An app as the rules need it: its user fields by code (the sandbox's ``AppDef``, the
    validator's ``AppSchema``)."""

    @property
    def fields(self) -> Mapping[str, FieldDef]: ...


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
    if t in _TEXT_TYPES:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.add(f"{key}.value", "Enter a string.")
            return None
        text = value if isinstance(value, str) else number_text(value)
        if f.max_length is not None and len(text) > f.max_length:
            problems.add(f"{key}.value", f"Enter no more than {f.max_length} characters.")
        elif f.min_length is not None and len(text) < f.min_length:  # empty too (OBSERVED-3P)
            problems.add(f"{key}.value", f"Enter at least {f.min_length} characters.")
        return text
    if t == "NUMBER":
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            text = value.strip().translate(_FULL_WIDTH_DIGITS) if in_table else value.strip()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            text = number_text(value)
        else:
            text = ""  # not a number at all
        if not (_NUMBER_IN_TABLE if in_table else _NUMBER).match(text):
            if in_table:
                return ""  # Kintone silently stores "" for non-numeric text inside a table
            # Kintone keys this one error in bracket form: record[amount].value (OBSERVED-3P).
            head, dot, code = key.rpartition(".")
            problems.add(f"{head}[{code}].value" if dot else f"{key}.value", "Only numbers are allowed.")
            return None
        number = Decimal(text)
        # Bounds are checked before rounding, the digit count after (OBSERVED-3P).
        if f.min_value is not None and number < f.min_value:
            problems.add(f"{key}.value", f"The value must be {number_text(f.min_value)} or more.")
        elif f.max_value is not None and number > f.max_value:
            problems.add(f"{key}.value", f"The value must be {number_text(f.max_value)} or less.")
        stored = _stored_number(number)
        if stored is None:
            problems.add(f"{key}.value", "The number of digits exceeds the maximum allowed.")
        return stored
    if t in ("DROP_DOWN", "RADIO_BUTTON"):
        if value is None or value == "":
            return None if t == "DROP_DOWN" else ""
        if not isinstance(value, str) or value not in f.options:
            problems.add(f"{key}.value", f"The value must be one of the options: {', '.join(f.options)}.")
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
            problems.add(f"{key}.value", "Enter a date in the format YYYY-MM-DD.")
            return None
    if t == "TIME":
        if value is None or value == "":
            return None
        m = _TIME.match(value) if isinstance(value, str) else None
        if m is None or int(m[1]) > 23 or int(m[2]) > 59 or (m[3] and int(m[3]) > 59):
            problems.add(f"{key}.value", "Enter a time in the format HH:MM.")
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
            problems.add(f"{key}.value", "Enter a date and time in the format YYYY-MM-DDTHH:MM:SSZ.")
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
            problems.add(f"{key}.value", 'Enter an array of {"fileKey": ...} objects.')
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
            problems.add(f"{key}.value", "Enter an array of rows.")
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


# ---- one field's rules compiled once (the validator's hot path) -----------------------------

REFUSED: Final = object()  # what a ``value_checker`` returns where ``normalize`` reports a problem
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PLAIN_TIME = re.compile(r"[0-9]{2}:[0-9]{2}")
_PLAIN_NUMBER_BOUND = 10**_INTEGER_DIGITS  # an integer below it in magnitude is stored as written


def value_checker(f: FieldDef) -> Callable[[Any], Any]:
    """``normalize``'s verdict on one top-level value of ``f``, for a validator that checks many.

    The returned function takes the bare value (what ``{"value": ...}`` holds) and gives what
    ``normalize`` stores, or ``REFUSED`` where it reports a problem. The common values (a text,
    plain ASCII digits, a listed option, an ISO date, HH:MM) are accepted in a test or two,
    decided once from the field's definition; anything else goes through ``normalize`` itself,
    so the rules keep one home and every verdict is ``normalize``'s.
    """

    def generic(value: Any) -> Any:
        problems = Problems()
        stored = normalize(f, {"value": value}, "value", problems)
        return REFUSED if problems else stored

    t = f.type
    if t in _TEXT_TYPES:
        low, high = f.min_length, f.max_length
        if low is None and high is None:

            def text(value: Any) -> Any:
                return value if type(value) is str else generic(value)

            return text

        def bounded_text(value: Any) -> Any:
            if (
                type(value) is str
                and (high is None or len(value) <= high)
                and (low is None or len(value) >= low)
            ):
                return value
            return generic(value)

        return bounded_text
    if t == "NUMBER":
        least, most = f.min_value, f.max_value
        bounded = least is not None or most is not None

        def number(value: Any) -> Any:
            # An integer of at most 12 digits, written plainly: Kintone keeps it as it is
            # (without leading zeros); anything else (a sign, a point, an exponent) is normalize's.
            kind = type(value)
            if kind is str and value.isascii() and value.isdigit() and len(value) <= _INTEGER_DIGITS:
                whole = int(value) if bounded or value[0] == "0" else None
            elif kind is int and -_PLAIN_NUMBER_BOUND < value < _PLAIN_NUMBER_BOUND:
                whole = value
            else:
                return generic(value)
            if whole is None:
                return value
            if (least is not None and whole < least) or (most is not None and whole > most):
                return generic(value)
            return str(whole)

        return number
    if t in ("DROP_DOWN", "RADIO_BUTTON"):
        options = frozenset(f.options)

        def option(value: Any) -> Any:
            return value if type(value) is str and value and value in options else generic(value)

        return option
    if t == "DATE":

        def iso_date(value: Any) -> Any:
            if type(value) is str and len(value) == 10 and _ISO_DATE.fullmatch(value):
                try:
                    date.fromisoformat(value)
                except ValueError:
                    return generic(value)
                return value
            return generic(value)

        return iso_date
    if t == "TIME":

        def plain_time(value: Any) -> Any:
            if (
                type(value) is str
                and len(value) == 5
                and _PLAIN_TIME.fullmatch(value)
                and value[:2] <= "23"
                and value[3:] <= "59"
            ):
                return value
            return generic(value)

        return plain_time
    return generic


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
    app: HasFields, values: dict[str, Any], prefix: str, problems: Problems, only: set[str] | None = None
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


def number_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


# ---- keys and process management ------------------------------------------------------------

# Kintone's updateKey: a text or number field with "Prohibit duplicate values" on.
UPDATE_KEY_TYPES = ("SINGLE_LINE_TEXT", "NUMBER")


def update_key_problem(code: str, f: FieldDef | None) -> str | None:
    """Why ``code`` cannot be an update/upsert key of the app (None: it can)."""
    if f is not None and f.unique and f.type in UPDATE_KEY_TYPES:
        return None
    return (
        f"The field {code!r} cannot be used as updateKey: it must be a text or "
        'number field with "Prohibit duplicate values" on.'
    )


def actions_from(process: ProcessDef, state: str, action: str) -> list[ActionDef]:
    """The actions named ``action`` that a record in ``state`` can take (Kintone runs one)."""
    return [a for a in process.actions if a.name == action and a.from_ == state]


def assignee_problem(target: StateDef, assignee: str | None) -> str | None:
    """An action into ``target``: Kintone requires ``assignee`` whenever the next status picks
    one user from candidates, even a single one (official update-status page; GAIA_SA01
    observed on real tenants), and it must be one of them."""
    candidates = list(target.assignees)
    if target.assignee_type != "ONE" or not candidates:
        return None
    if assignee is None:
        return f"Specify the assignee: the status {target.name!r} takes one of {', '.join(candidates)}."
    if assignee not in candidates:
        return (
            f"{assignee!r} is not an assignee candidate of the status "
            f"{target.name!r} (candidates: {', '.join(candidates)})."
        )
    return None


def assignees_problem(state: StateDef, assignees: Collection[str]) -> str | None:
    """More than one assignee for a status that takes one is an error (official
    update-assignees page). Judged only where candidates are named: a ONE status without them
    may stand for field or group entities."""
    if state.assignee_type == "ONE" and state.assignees and len(assignees) > 1:
        return f"The status {state.name!r} takes one assignee; {len(assignees)} were given."
    return None
