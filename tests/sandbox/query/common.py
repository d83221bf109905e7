"""What the query tests share: an app's fields, a fixed clock, records in Kintone's read shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kmigrate.sandbox.query import Query, QueryError, parse_query

FIELDS = {
    "title": "SINGLE_LINE_TEXT",
    "url": "LINK",
    "memo": "MULTI_LINE_TEXT",
    "body": "RICH_TEXT",
    "amount": "NUMBER",
    "total": "CALC",
    "no": "RECORD_NUMBER",
    "due": "DATE",
    "at": "DATETIME",
    "start": "TIME",
    "created": "CREATED_TIME",
    "priority": "DROP_DOWN",
    "size": "RADIO_BUTTON",
    "tags": "CHECK_BOX",
    "colors": "MULTI_SELECT",
    "owners": "USER_SELECT",
    "creator": "CREATOR",
    "state": "STATUS",
    "assignee": "STATUS_ASSIGNEE",
    "files": "FILE",
    "items": "SUBTABLE",
    "name": "SINGLE_LINE_TEXT",
    "qty": "NUMBER",
}
TABLES = {"name": "items", "qty": "items"}
# A fixed clock: Wednesday 2024-05-15 10:30 UTC.
NOW = datetime(2024, 5, 15, 10, 30, tzinfo=UTC)


def q(text: str, **kwargs: Any) -> Query:
    kwargs.setdefault("subtables", TABLES)
    kwargs.setdefault("now", NOW)
    return parse_query(text, FIELDS, **kwargs)


def rec(rid: int, **values: Any) -> dict:
    """A record in Kintone's read shape, with the given values and $id."""
    record = {
        "$id": {"type": "__ID__", "value": str(rid)},
        "$revision": {"type": "__REVISION__", "value": "1"},
    }
    for code, value in values.items():
        if code == "items":
            value = [
                {"id": str(i + 1), "value": {k: {"type": FIELDS[k], "value": v} for k, v in row.items()}}
                for i, row in enumerate(value)
            ]
        record[code] = {"type": FIELDS[code], "value": value}
    return record


def ids(query: Query, records: list[dict]) -> list[int]:
    return [int(r["$id"]["value"]) for r in records if query.matches(r)]


def user(code: str) -> dict:
    return {"code": code, "name": code.title()}


def error_of(text: str, fields: dict[str, str] = FIELDS, **kwargs: Any) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse_query(text, fields, subtables=TABLES, now=NOW, **kwargs)
    assert caught.value.status == 400
    return caught.value


OPTIONS = {"priority": ["High", "Low"], "size": ["S", "M"], "tags": ["a", "b"], "state": ["Open", "Done"]}
