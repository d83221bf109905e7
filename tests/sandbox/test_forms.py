"""app/form/layout.json and app/views.json (kmigrate.sandbox.forms): from the sandbox file, or defaults."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kmigrate.errors import SandboxDefinitionError
from kmigrate.sandbox import Sandbox

from .conftest import DEFINITION, Kintone, check


def test_the_default_layout_has_a_row_per_field_and_a_subtable_row_per_table(k: Kintone):
    body = k.ok("GET", "app/form/layout", params={"app": 1})
    assert body["revision"] == "1"
    rows = body["layout"]
    assert rows[0] == {
        "type": "ROW",
        "fields": [{"type": "SINGLE_LINE_TEXT", "code": "title", "size": {"width": "193"}}],
    }
    assert [r.get("code") or r["fields"][0]["code"] for r in rows] == [
        "title",
        "order_no",
        "priority",
        "amount",
        "tags",
        "due",
        "at",
        "when",
        "owner",
        "notes",
        "items",
    ]
    assert rows[-1] == {
        "type": "SUBTABLE",
        "code": "items",
        "fields": [
            {"type": "SINGLE_LINE_TEXT", "code": "name", "size": {"width": "193"}},
            {"type": "NUMBER", "code": "qty", "size": {"width": "193"}},
        ],
    }


def test_the_default_view_lists_every_top_level_field_newest_first(k: Kintone):
    body = k.ok("GET", "app/views", params={"app": 2}, headers={"X-Cybozu-API-Token": "view-token"})
    assert body == {
        "views": {
            "All records": {
                "type": "LIST",
                "name": "All records",
                "id": "1",
                "index": "0",
                "fields": ["code", "name", "tier", "points"],
                "filterCond": "",
                "sort": "Record_no desc",
            }
        },
        "revision": "1",
    }


LAYOUT = [
    {"type": "ROW", "fields": [{"type": "LABEL", "label": "Who"}, {"type": "SINGLE_LINE_TEXT", "code": "t"}]},
    {"type": "GROUP", "code": "g", "layout": [{"type": "ROW", "fields": [{"type": "NUMBER", "code": "n"}]}]},
]


def app_with(**extra: Any) -> dict[str, Any]:
    return {
        "apps": [
            {
                "id": 1,
                "name": "Laid out",
                "fields": {"t": "SINGLE_LINE_TEXT", "n": "NUMBER", "g": {"type": "GROUP"}},
                **extra,
            }
        ]
    }


def test_layout_and_views_come_from_the_sandbox_file_as_kintone_writes_them():
    views = {
        "Open": {"type": "LIST", "fields": ["t"], "filterCond": "n > 1", "sort": "n asc"},
        "Cal": {"type": "CALENDAR", "date": "n", "title": "t"},
    }
    with Sandbox.from_definition(app_with(layout=LAYOUT, views=views)) as sandbox, sandbox.client() as client:
        layout = client.get("/k/v1/app/form/layout.json", params={"app": 1})
        check(layout, "/k/v1/app/form/layout.json", "GET")
        assert layout.json()["layout"] == LAYOUT
        got = client.get("/k/v1/app/views.json", params={"app": 1})
        check(got, "/k/v1/app/views.json", "GET")
        assert got.json()["views"] == {
            "Open": {
                "type": "LIST",
                "name": "Open",
                "id": "1",
                "index": "0",
                "fields": ["t"],
                "filterCond": "n > 1",
                "sort": "n asc",
            },
            "Cal": {"type": "CALENDAR", "name": "Cal", "id": "2", "index": "1", "date": "n", "title": "t"},
        }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"layout": {"type": "ROW"}}, "`layout` must be the `layout` list"),
        ({"layout": [{"type": "COLUMN"}]}, "row 1 must be a mapping with type ROW, SUBTABLE or GROUP"),
        ({"layout": [{"type": "ROW", "fields": [{"type": "NUMBER", "code": "x"}]}]}, "row 1 places 'x'"),
        ({"layout": [{"type": "GROUP", "code": "nope"}]}, "row 1 names 'nope'"),
        (
            {
                "layout": [
                    {"type": "GROUP", "code": "g", "layout": [{"type": "ROW", "fields": [{"code": "t"}]}]}
                ]
            },
            "row 1 of group 'g' has a field without `type`",
        ),
        ({"views": ["All"]}, "`views` must be the `views` mapping"),
        ({"views": {"A": {"type": "GANTT"}}}, "views: 'A': type must be LIST, CALENDAR or CUSTOM"),
    ],
)
def test_a_bad_layout_or_view_in_the_file_is_refused_naming_the_app(extra, message):
    with pytest.raises(SandboxDefinitionError) as caught:
        Sandbox.from_definition(app_with(**extra))
    assert message in str(caught.value) and "app 1 (Laid out)" in str(caught.value)


def test_layout_and_views_need_the_view_permission():
    with Sandbox.from_definition(copy.deepcopy(DEFINITION)) as sandbox, sandbox.client() as client:
        for api in ("app/form/layout", "app/views"):
            ok = client.get(
                f"/k/v1/{api}.json", params={"app": 2}, headers={"X-Cybozu-API-Token": "view-token"}
            )
            assert ok.status_code == 200
            refused = client.get(f"/k/v1/{api}.json", params={"app": 2})
            assert (refused.status_code, refused.json()["code"]) == (401, "CB_AU01")
