"""How each Kintone field type is queried: the operators it takes, how its stored value is read.

A *kind* groups the types whose values compare alike; each kind has a reader that turns a
stored value (Kintone's read shape) into something comparable, ``None`` meaning empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

CMP = frozenset({"=", "!=", ">", "<", ">=", "<="})
IN = frozenset({"in", "not in"})
LIKE = frozenset({"like", "not like"})
IS = frozenset({"is empty", "is not empty"})
EQ = frozenset({"=", "!="})

# Which operators each field type takes, after the official per-type table (checked on a real
# tenant for: `=` on MULTI_LINE_TEXT, `>` on SINGLE_LINE_TEXT and `=` on choice fields -> IQ03).
ALLOWED_OPS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("NUMBER", "CALC", "RECORD_NUMBER", "__ID__", "__REVISION__"), CMP | IN),
    **dict.fromkeys(("SINGLE_LINE_TEXT", "LINK"), EQ | IN | LIKE),
    "MULTI_LINE_TEXT": LIKE | IS,
    "RICH_TEXT": LIKE,
    "FILE": LIKE | IS,
    **dict.fromkeys(("DATE", "TIME", "DATETIME", "CREATED_TIME", "UPDATED_TIME"), CMP),
    **dict.fromkeys(("DROP_DOWN", "RADIO_BUTTON", "CHECK_BOX", "MULTI_SELECT", "CATEGORY"), IN),
    **dict.fromkeys(
        ("USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT", "STATUS_ASSIGNEE", "CREATOR", "MODIFIER"),
        IN,
    ),
    "STATUS": EQ | IN,
}

# How a stored value is read for comparison: one "kind" per field type.
KIND_OF_TYPE = {
    **dict.fromkeys(("SINGLE_LINE_TEXT", "LINK", "MULTI_LINE_TEXT", "RICH_TEXT"), "text"),
    **dict.fromkeys(("NUMBER", "CALC", "__ID__", "__REVISION__"), "number"),
    "RECORD_NUMBER": "record_number",
    "DATE": "date",
    "TIME": "time",
    **dict.fromkeys(("DATETIME", "CREATED_TIME", "UPDATED_TIME"), "datetime"),
    **dict.fromkeys(("DROP_DOWN", "RADIO_BUTTON", "STATUS"), "choice"),
    **dict.fromkeys(("CHECK_BOX", "MULTI_SELECT", "CATEGORY"), "strings"),
    **dict.fromkeys(("USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT", "STATUS_ASSIGNEE"), "entities"),
    **dict.fromkeys(("CREATOR", "MODIFIER"), "entity"),
    "FILE": "files",
}

# Fields whose values must be among their options (STATUS: among the process's states).
OPTION_TYPES = {"DROP_DOWN", "RADIO_BUTTON", "CHECK_BOX", "MULTI_SELECT", "STATUS"}

SORTABLE_KINDS = {"text", "number", "record_number", "date", "time", "datetime", "choice", "entity"}

SYSTEM_FIELDS = {"$id": "__ID__", "$revision": "__REVISION__"}


# --------------------------------------------------------------------------- reading values
# Each reader turns a stored Kintone value into something comparable; None means empty.


def read_text(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


def read_number(v: Any) -> Decimal | None:
    if v is None or v == "":
        return None
    try:
        d = Decimal(v) if isinstance(v, str) else Decimal(str(v))
    except InvalidOperation:
        return None  # e.g. a CALC field formatted as a date: not a number to compare
    return d if d.is_finite() else None


TRAILING_DIGITS = re.compile(r"(\d+)$")


def read_record_number(v: Any) -> Decimal | None:
    # A record number may carry the app code: "ORDERS-12" is record 12.
    if v is None:
        return None
    m = TRAILING_DIGITS.search(str(v))
    return Decimal(m.group(1)) if m else None


def read_date(v: Any) -> int | None:
    if not v:
        return None
    try:
        return date.fromisoformat(v[:10]).toordinal()
    except (TypeError, ValueError):
        return None


TIME_RE = re.compile(r"(\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?$")


def read_time(v: Any) -> int | None:
    if not v or not isinstance(v, str):
        return None
    m = TIME_RE.match(v)
    return int(m.group(1)) * 60 + int(m.group(2)) if m else None


def datetime_reader(tz: tzinfo) -> Callable[[Any], int | None]:
    def read_datetime(v: Any) -> int | None:
        # Minutes since the epoch: Kintone keeps datetimes to the minute.
        if not v or not isinstance(v, str):
            return None
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return int(dt.timestamp()) // 60

    return read_datetime


def read_choice(v: Any) -> str:
    return "" if v is None else str(v)


def read_strings(v: Any) -> list[str]:
    if not v:
        return []
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


def read_entities(v: Any) -> list[str]:
    if not v:
        return []
    items = v if isinstance(v, list) else [v]
    return [str(e.get("code", "")) if isinstance(e, Mapping) else str(e) for e in items]


def read_entity(v: Any) -> str:
    if isinstance(v, Mapping):
        return str(v.get("code") or "")
    return "" if v is None else str(v)


def read_files(v: Any) -> list[str]:
    if not v or not isinstance(v, list):
        return []
    return [str(f.get("name", "")) if isinstance(f, Mapping) else str(f) for f in v]


Reader = Callable[[Any], Any]


def readers(tz: tzinfo) -> Mapping[str, Reader]:
    """Kind -> reader; datetimes without an offset are read in ``tz``."""
    return {
        "text": read_text,
        "number": read_number,
        "record_number": read_record_number,
        "date": read_date,
        "time": read_time,
        "datetime": datetime_reader(tz),
        "choice": read_choice,
        "strings": read_strings,
        "entities": read_entities,
        "entity": read_entity,
        "files": read_files,
    }
