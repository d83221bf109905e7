"""record.json and records.json: reads, writes, validation, revisions, updateKey, upsert, limits."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmigrate.sandbox import Sandbox
from kmigrate.sandbox.query import parse_query

from .conftest import Kintone, rec


def add(k: Kintone, n: int, app: int = 1, **extra) -> list[str]:
    body = k.ok("POST", "records", {"app": app, "records": [rec(title=f"t{i}", **extra) for i in range(n)]})
    return body["ids"]


# -- single record -------------------------------------------------------------------------


def test_add_record_then_get_it_in_kintone_read_shape(k: Kintone):
    body = k.ok(
        "POST",
        "record",
        {
            "app": 1,
            "record": rec(
                title="Spring order",
                order_no="O-1",
                priority="High",
                amount=12.5,
                tags=["a", "c"],
                due="2026-3-1",
                at="9:05",
                when="2026-03-01T10:30:45+09:00",
                owner=[{"code": "alice"}],
                items=[{"value": rec(name="bolt", qty="3")}],
                unknown_field="ignored",
            ),
        },
    )
    assert body == {"id": "1", "revision": "1"}
    record = k.ok("GET", "record", params={"app": 1, "id": 1})["record"]
    values = {code: cell["value"] for code, cell in record.items()}
    assert values["title"] == "Spring order"
    assert values["amount"] == "12.5"
    assert values["tags"] == ["a", "c"]
    assert values["due"] == "2026-03-01"  # partial dates are padded
    assert values["at"] == "09:05"
    assert values["when"] == "2026-03-01T01:30:00Z"  # to UTC, seconds dropped
    assert values["owner"] == [{"code": "alice", "name": "alice"}]
    assert values["notes"] == "none yet"  # the default value
    assert values["items"][0]["value"]["qty"] == {"type": "NUMBER", "value": "3"}
    assert values["Record_number"] == "ORD-1"  # the app code prefixes the record number
    assert values["$id"] == "1" and values["$revision"] == "1"
    assert values["Status"] == "Draft" and values["Assignee"] == []
    assert values["Created_by"] == {"code": "Administrator", "name": "Administrator"}
    assert "unknown_field" not in record
    assert record["$id"]["type"] == "__ID__" and record["$revision"]["type"] == "__REVISION__"


def test_status_fields_only_when_process_management_is_on(k: Kintone):
    k.ok("POST", "record", {"app": 4, "record": rec(title="x")})
    record = k.ok("GET", "record", {"app": 4, "id": 1})["record"]
    assert "Status" not in record and "Assignee" not in record
    assert record["Record_number"]["value"] == "1"


def test_get_missing_record_is_gaia_re01(k: Kintone):
    body = k.error("GET", "record", params={"app": 1, "id": 42}, status=404, code="GAIA_RE01")
    assert "42" in body["message"]


def test_unknown_app_is_gaia_ap01(k: Kintone):
    k.error("GET", "records", params={"app": 99}, status=404, code="GAIA_AP01")
    k.error("POST", "record", {"app": 99, "record": {}}, status=404, code="GAIA_AP01")


def test_update_record_bumps_revision_and_checks_it(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="a")})
    assert k.ok("PUT", "record", {"app": 1, "id": 1, "record": rec(title="b")}) == {"revision": "2"}
    assert k.ok("PUT", "record", {"app": 1, "id": 1, "revision": 2, "record": rec(amount=5)}) == {
        "revision": "3"
    }
    body = k.error(
        "PUT",
        "record",
        {"app": 1, "id": 1, "revision": 2, "record": rec(title="c")},
        status=409,
        code="GAIA_CO02",
    )
    assert "revision" in body["message"]
    assert k.ok("PUT", "record", {"app": 1, "id": 1, "revision": -1, "record": rec(title="d")}) == {
        "revision": "4"
    }
    record = k.ok("GET", "record", {"app": 1, "id": 1})["record"]
    assert (
        record["title"]["value"] == "d" and record["amount"]["value"] == "5"
    )  # fields not sent keep their value


def test_update_record_by_update_key(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="a", order_no="O-7")})
    body = k.ok(
        "PUT",
        "record",
        {"app": 1, "updateKey": {"field": "order_no", "value": "O-7"}, "record": rec(title="z")},
    )
    assert body == {"revision": "2"}
    assert k.ok("GET", "record", {"app": 1, "id": 1})["record"]["title"]["value"] == "z"


def test_update_key_miss_is_gaia_re20_and_bad_key_field_is_cb_va01(k: Kintone):
    k.error(
        "PUT",
        "record",
        {"app": 1, "updateKey": {"field": "order_no", "value": "nope"}, "record": {}},
        status=400,
        code="GAIA_RE20",
    )
    body = k.error(
        "PUT",
        "record",
        {"app": 1, "updateKey": {"field": "title", "value": "x"}, "record": {}},
        status=400,
        code="CB_VA01",
    )
    assert "updateKey.field" in body["errors"]
    k.error(
        "PUT",
        "record",
        {"app": 1, "id": 1, "updateKey": {"field": "order_no", "value": "x"}},
        status=400,
        code="CB_VA01",
    )
    k.error("PUT", "record", {"app": 1, "record": {}}, status=400, code="CB_VA01")


def test_update_missing_record_is_gaia_re01(k: Kintone):
    k.error("PUT", "record", {"app": 1, "id": 5, "record": rec(title="x")}, status=404, code="GAIA_RE01")


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, key",
    [
        ({"title": ""}, "record.title.value"),
        ({"title": "x" * 21}, "record.title.value"),
        ({"title": "x", "priority": "Medium"}, "record.priority.value"),
        ({"title": "x", "amount": "12abc"}, "record[amount].value"),  # Kintone's bracket form for this one
        ({"title": "x", "amount": ".5"}, "record[amount].value"),
        ({"title": "x", "amount": True}, "record[amount].value"),
        ({"title": "x", "amount": "1e13"}, "record.amount.value"),
        ({"title": "x", "amount": "-1"}, "record.amount.value"),
        ({"title": "x", "amount": 1001}, "record.amount.value"),
        ({"title": "x", "tags": ["a", "z"]}, "record.tags.values"),
        ({"title": "x", "tags": "a"}, "record.tags.values"),
        ({"title": "x", "due": "2026-02-30"}, "record.due.value"),
        ({"title": "x", "due": "tomorrow"}, "record.due.value"),
        ({"title": "x", "at": "25:00"}, "record.at.value"),
        ({"title": "x", "when": "2026-03-01"}, "record.when.value"),
        ({"title": "x", "owner": ["alice"]}, "record.owner.values.value"),
        ({"title": ["a list"]}, "record.title.value"),
        (
            {"title": "x", "items": [{"value": {"name": {"value": ""}}}]},
            "record.items.value[0].value.name.value",
        ),
    ],
)
def test_invalid_values_are_cb_va01_with_kintone_keys(k: Kintone, values, key):
    body = k.error("POST", "record", {"app": 1, "record": rec(**values)}, status=400, code="CB_VA01")
    assert key in body["errors"], body
    assert k.ok("GET", "records", {"app": 1, "totalCount": True})["totalCount"] == "0"


def test_missing_required_field_and_omitted_record(k: Kintone):
    body = k.error("POST", "record", {"app": 1}, status=400, code="CB_VA01")
    assert body["errors"] == {"record.title.value": {"messages": ["Required."]}}


def test_number_inside_a_table_is_silently_blanked(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x", items=[{"value": rec(name="n", qty="lots")}])})
    row = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["items"]["value"][0]
    assert row["value"]["qty"]["value"] == ""


def test_read_only_fields_are_ignored_on_write(k: Kintone):
    k.ok(
        "POST",
        "record",
        {
            "app": 1,
            "record": {
                **rec(title="x"),
                "Status": {"value": "Done"},
                "$id": {"value": "77"},
                "Record_number": {"value": "9"},
            },
        },
    )
    record = k.ok("GET", "record", {"app": 1, "id": 1})["record"]
    assert (record["Status"]["value"], record["$id"]["value"]) == ("Draft", "1")


def test_creator_and_created_time_can_be_set_on_create(k: Kintone):
    k.ok(
        "POST",
        "record",
        {
            "app": 1,
            "record": {
                **rec(title="x"),
                "Created_by": {"value": {"code": "eve"}},
                "Created_datetime": {"value": "2020-01-02T03:04:05Z"},
            },
        },
    )
    record = k.ok("GET", "record", {"app": 1, "id": 1})["record"]
    assert record["Created_by"]["value"]["code"] == "eve"
    assert record["Created_datetime"]["value"] == "2020-01-02T03:04:00Z"


def test_unique_values_within_a_call_and_against_stored_records(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="a", order_no="O-1")})
    body = k.error(
        "POST",
        "records",
        {
            "app": 1,
            "records": [
                rec(title="b", order_no="O-2"),
                rec(title="c", order_no="O-2"),
                rec(title="d", order_no="O-1"),
            ],
        },
        status=400,
        code="CB_VA01",
    )
    assert set(body["errors"]) == {"records[1].order_no.value", "records[2].order_no.value"}
    # updating a record to its own value is fine; to another's is not
    k.ok("PUT", "record", {"app": 1, "id": 1, "record": rec(order_no="O-1")})
    k.ok("POST", "record", {"app": 1, "record": rec(title="e", order_no="O-3")})
    k.error("PUT", "record", {"app": 1, "id": 2, "record": rec(order_no="O-1")}, status=400, code="CB_VA01")
    # a deleted record's value is free again
    k.ok("DELETE", "records", {"app": 1, "ids": [1]})
    k.ok("PUT", "record", {"app": 1, "id": 2, "record": rec(order_no="O-1")})


def test_subtable_rows_keep_ids_and_unsent_columns(k: Kintone):
    k.ok(
        "POST",
        "record",
        {
            "app": 1,
            "record": rec(
                title="x", items=[{"value": rec(name="a", qty=1)}, {"value": rec(name="b", qty=2)}]
            ),
        },
    )
    rows = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["items"]["value"]
    first, second = rows[0]["id"], rows[1]["id"]
    k.ok(
        "PUT",
        "record",
        {
            "app": 1,
            "id": 1,
            "record": {
                "items": {
                    "value": [{"id": second, "value": rec(qty=5)}, {"id": "99999", "value": rec(name="c")}]
                }
            },
        },
    )
    rows = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["items"]["value"]
    assert (
        rows[0]["id"] == second
        and rows[0]["value"]["name"]["value"] == "b"
        and rows[0]["value"]["qty"]["value"] == "5"
    )
    assert rows[1]["id"] not in (first, second, "99999") and rows[1]["value"]["name"]["value"] == "c"
    assert len(rows) == 2  # the row not sent is gone


# -- many records --------------------------------------------------------------------------


def test_add_records_in_order_and_atomically(k: Kintone):
    assert add(k, 3) == ["1", "2", "3"]
    body = k.error(
        "POST",
        "records",
        {"app": 1, "records": [rec(title="ok"), rec(title=""), rec(title="ok")]},
        status=400,
        code="CB_VA01",
    )
    assert list(body["errors"]) == ["records[1].title.value"]
    assert k.ok("GET", "records", {"app": 1, "totalCount": True})["totalCount"] == "3"
    assert add(k, 1) == ["4"]  # a failed call used up no ids


def test_write_limits_are_100_records(k: Kintone):
    body = k.error(
        "POST", "records", {"app": 1, "records": [rec(title="x")] * 101}, status=400, code="CB_VA01"
    )
    assert "records" in body["errors"]
    add(k, 100)
    k.error(
        "PUT",
        "records",
        {"app": 1, "records": [{"id": i, "record": {}} for i in range(1, 102)]},
        status=400,
        code="CB_VA01",
    )
    k.error("DELETE", "records", {"app": 1, "ids": list(range(1, 102))}, status=400, code="CB_VA01")
    k.error("DELETE", "records", {"app": 1, "ids": []}, status=400, code="CB_VA01")
    k.error("POST", "records", {"app": 1, "records": []}, status=400, code="CB_VA01")


def test_update_records_is_atomic(k: Kintone):
    add(k, 2)
    k.error(
        "PUT",
        "records",
        {
            "app": 1,
            "records": [{"id": 1, "record": rec(title="new")}, {"id": 2, "revision": 7, "record": {}}],
        },
        status=409,
        code="GAIA_CO02",
    )
    k.error(
        "PUT",
        "records",
        {"app": 1, "records": [{"id": 1, "record": rec(title="new")}, {"id": 9, "record": {}}]},
        status=404,
        code="GAIA_RE01",
    )
    body = k.error(
        "PUT",
        "records",
        {"app": 1, "records": [{"id": 1, "record": rec(title="new")}, {"id": 2, "record": rec(title="")}]},
        status=400,
        code="CB_VA01",
    )
    assert "records[1].record.title.value" in body["errors"]
    assert k.ok("GET", "record", {"app": 1, "id": 1})["record"]["title"]["value"] == "t0"
    body = k.ok(
        "PUT",
        "records",
        {
            "app": 1,
            "records": [{"id": 1, "revision": "1", "record": rec(title="n1")}, {"id": "2", "record": {}}],
        },
    )
    assert body == {"records": [{"id": "1", "revision": "2"}, {"id": "2", "revision": "2"}]}


def test_repeated_ids_in_one_call_are_gaia_re09(k: Kintone):
    add(k, 2)
    k.error(
        "PUT",
        "records",
        {"app": 1, "records": [{"id": 1, "record": {}}, {"id": 1, "record": {}}]},
        status=400,
        code="GAIA_RE09",
    )
    k.error("DELETE", "records", {"app": 1, "ids": [2, 2]}, status=400, code="GAIA_RE09")
    k.error(
        "PUT",
        "records/status",
        {
            "app": 1,
            "records": [
                {"id": 1, "action": "Submit", "assignee": "alice"},
                {"id": 1, "action": "Submit", "assignee": "alice"},
            ],
        },
        status=400,
        code="GAIA_RE09",
    )
    assert k.ok("GET", "record", {"app": 1, "id": 1})["record"]["$revision"]["value"] == "1"


def test_upsert_inserts_and_updates(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="a", order_no="O-1")})
    body = k.ok(
        "PUT",
        "records",
        {
            "app": 1,
            "upsert": True,
            "records": [
                {"updateKey": {"field": "order_no", "value": "O-1"}, "record": rec(title="a2")},
                {"updateKey": {"field": "order_no", "value": "O-2"}, "record": rec(title="b")},
                {"id": 50, "record": rec(title="c")},
            ],
        },
    )
    assert body == {
        "records": [
            {"id": "1", "revision": "2", "operation": "UPDATE"},
            {"id": "2", "revision": "1", "operation": "INSERT"},
            {"id": "3", "revision": "1", "operation": "INSERT"},
        ]
    }  # a given id is not kept
    assert k.ok("GET", "record", {"app": 1, "id": 2})["record"]["order_no"]["value"] == "O-2"
    # an upserted insert is validated like an add
    k.error(
        "PUT",
        "records",
        {
            "app": 1,
            "upsert": True,
            "records": [{"updateKey": {"field": "order_no", "value": "O-9"}, "record": {}}],
        },
        status=400,
        code="CB_VA01",
    )


def test_update_records_by_update_key_miss_without_upsert(k: Kintone):
    k.error(
        "PUT",
        "records",
        {"app": 1, "records": [{"updateKey": {"field": "order_no", "value": "x"}, "record": {}}]},
        status=400,
        code="GAIA_RE20",
    )


def test_number_update_key(k: Kintone):
    token = {"X-Cybozu-API-Token": "full-token"}
    k.ok("POST", "record", {"app": 2, "record": rec(code="C1", points=10)}, headers=token)
    body = k.ok(
        "PUT",
        "record",
        {"app": 2, "updateKey": {"field": "points", "value": 10}, "record": rec(name="n")},
        headers=token,
    )
    assert body == {"revision": "2"}


def test_delete_records_with_revisions(k: Kintone):
    add(k, 3)
    k.ok("PUT", "record", {"app": 1, "id": 2, "record": {}})
    k.error("DELETE", "records", {"app": 1, "ids": [1, 2], "revisions": [1, 1]}, status=409, code="GAIA_CO02")
    k.error("DELETE", "records", {"app": 1, "ids": [1, 2], "revisions": [1]}, status=400, code="CB_VA01")
    k.error("DELETE", "records", {"app": 1, "ids": [1, 7]}, status=404, code="GAIA_RE01")
    assert k.ok("GET", "records", {"app": 1, "totalCount": True})["totalCount"] == "3"
    assert k.ok("DELETE", "records", {"app": 1, "ids": [1, 2], "revisions": [1, 2]}) == {}
    assert k.ok("DELETE", "records", params={"app": 1, "ids[0]": 3}) == {}  # ids in the query string
    assert k.ok("GET", "records", {"app": 1, "totalCount": True})["totalCount"] == "0"


# -- reading many --------------------------------------------------------------------------


def test_get_records_query_fields_total_count_and_order(k: Kintone):
    k.ok("POST", "records", {"app": 1, "records": [rec(title=f"t{i}", amount=i) for i in range(5)]})
    body = k.ok(
        "GET",
        "records",
        {
            "app": 1,
            "query": "amount >= 2 order by amount asc limit 2 offset 1",
            "fields": ["$id", "amount"],
            "totalCount": True,
        },
    )
    assert body["totalCount"] == "3"
    assert [r["amount"]["value"] for r in body["records"]] == ["3", "4"]
    assert set(body["records"][0]) == {"$id", "amount"}
    body = k.ok("GET", "records", params={"app": "1", "fields[0]": "title"})  # query-string form
    assert [r["title"]["value"] for r in body["records"]] == [
        "t4",
        "t3",
        "t2",
        "t1",
        "t0",
    ]  # $id desc by default
    assert body["totalCount"] is None


def test_query_errors_are_kintone_shaped(k: Kintone):
    k.error("GET", "records", {"app": 1, "query": "nosuchfield = 1"}, status=400, code="GAIA_IQ11")
    k.error("GET", "records", {"app": 1, "query": "title = "}, status=400, code="CB_VA01")
    k.error("GET", "records", {"app": 1, "query": 123}, status=400, code="CB_VA01")


def test_the_query_is_checked_before_total_count(k: Kintone):
    body = {"app": 1, "query": "nosuchfield = 1", "totalCount": "maybe"}
    k.error("GET", "records", body, status=400, code="GAIA_IQ11")
    err = k.error("GET", "records", {**body, "query": ""}, status=400, code="CB_VA01")
    assert "totalCount" in err["errors"], err


def test_a_choice_or_status_the_app_does_not_have_is_gaia_iq10_on_every_query(k: Kintone):
    k.post("record", {"app": 1, "record": rec(title="a", priority="High", tags=["a"])})
    for query in ('priority in ("Urgent")', 'tags not in ("z")', 'Status = "Archived"'):
        for method, api, body in (
            ("GET", "records", {"app": 1, "query": query}),
            ("POST", "records/cursor", {"app": 1, "query": query}),
        ):
            err = k.error(method, api, body, status=400, code="GAIA_IQ10")
            assert err["message"].startswith(f"The field {query.split()[0]} has no option"), err
    for query, count in (('priority in ("High", "")', 1), ('tags in ("b")', 0), ('Status = "Draft"', 1)):
        assert len(k.ok("GET", "records", {"app": 1, "query": query})["records"]) == count, query


def test_read_limits(k: Kintone):
    k.error("GET", "records", {"app": 1, "query": "limit 501"}, status=400, code="GAIA_QU01")
    k.error("GET", "records", {"app": 1, "query": "offset 10001"}, status=400, code="GAIA_QU02")
    assert k.ok("GET", "records", {"app": 1, "query": "limit 500 offset 10000"})["records"] == []


def test_default_limit_is_100(k: Kintone):
    add(k, 100)
    add(k, 5)
    assert len(k.ok("GET", "records", {"app": 1})["records"]) == 100


def test_records_helper_and_reset(sandbox: Sandbox, k: Kintone):
    add(k, 2)
    assert [r["$id"]["value"] for r in sandbox.records(1)] == ["1", "2"]
    sandbox.reset()
    assert sandbox.records(1) == []
    assert add(k, 1) == ["1"]  # ids start again


def test_required_keys_follow_the_value_shape_and_a_refused_value_is_not_also_missing(definition):
    # Kintone keys an empty required list field `.values` and an empty required user field
    # `.values.value`, like its other errors for those types.
    definition["apps"][3]["fields"] = {
        "tags": {"type": "CHECK_BOX", "options": ["a"], "required": True},
        "kinds": {"type": "MULTI_SELECT", "options": ["a"], "required": True},
        "owner": {"type": "USER_SELECT", "required": True},
        "lines": {"type": "SUBTABLE", "fields": {"who": {"type": "USER_SELECT", "required": True}}},
    }
    with Sandbox.from_definition(definition) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        body = k.error(
            "POST", "record", {"app": 4, "record": rec(lines=[{"value": {}}])}, status=400, code="CB_VA01"
        )
        assert set(body["errors"]) == {
            "record.tags.values",
            "record.kinds.values",
            "record.owner.values.value",
            "record.lines.value[0].value.who.values.value",
        }
        body = k.error(
            "POST",
            "record",
            {"app": 4, "record": rec(tags=["z"], kinds=["a"], owner=[{"code": "al"}], lines=[])},
            status=400,
            code="CB_VA01",
        )
        assert body["errors"] == {
            "record.tags.values": {"messages": ["The value must be one of the options: a."]}
        }


def test_numbers_are_stored_as_kintone_keeps_them(definition):
    # Kintone rounds to the app's precision (4 places, half-even) and keeps plain notation.
    definition["apps"][0]["fields"]["amount"] = "NUMBER"
    definition["apps"][0]["fields"]["order_no"] = {"type": "NUMBER", "unique": True}
    written = ["1.5e1", "1.50", "+5", "007", "-0", "0.00015", " 42 ", 2.5, "-3.14159265", "999999999999"]
    with Sandbox.from_definition(definition) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        k.ok("POST", "records", {"app": 1, "records": [rec(title="t", amount=v) for v in written]})
        stored = [
            r["amount"]["value"] for r in sorted(sandbox.records(1), key=lambda r: int(r["$id"]["value"]))
        ]
        assert stored == ["15", "1.5", "5", "7", "0", "0.0002", "42", "2.5", "-3.1416", "999999999999"]
        body = k.error(
            "POST",
            "records",
            {
                "app": 1,
                "records": [
                    rec(title="t", amount="1000000000000"),
                    rec(title="t", amount="999999999999.99995"),
                ],
            },
            status=400,
            code="CB_VA01",
        )
        assert set(body["errors"]) == {
            "records[0].amount.value",
            "records[1].amount.value",
        }  # 13 integer digits
        k.ok("POST", "record", {"app": 1, "record": rec(title="t", order_no="12")})
        body = k.error(
            "POST",
            "record",
            {"app": 1, "record": rec(title="t", order_no="12.0")},
            status=400,
            code="CB_VA01",
        )
        assert "record.order_no.value" in body["errors"]  # the same number, so not unique
        body = k.error(
            "PUT",
            "records",
            {"app": 1, "records": [{"id": 1, "record": rec(amount="x")}]},
            status=400,
            code="CB_VA01",
        )
        assert set(body["errors"]) == {"records[0].record[amount].value"}
        k.ok(
            "POST",
            "record",
            {
                "app": 1,
                "record": rec(
                    title="t",
                    items=[{"value": rec(name="n", qty=".5")}, {"value": rec(name="n", qty="１２")}],
                ),
            },
        )
        rows = sandbox.records(1)[-1]["items"]["value"]
        assert [row["value"]["qty"]["value"] for row in rows] == ["0.5", "12"]  # a table column takes both


def test_a_minimum_length_applies_to_an_empty_or_omitted_text(definition):
    # Kintone checks minLength on an empty value too, and on create for a field not sent.
    definition["apps"][3]["fields"] = {
        "title": "SINGLE_LINE_TEXT",
        "code": {"type": "SINGLE_LINE_TEXT", "minLength": 3},
    }
    with Sandbox.from_definition(definition) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        for record in (rec(title="x"), rec(code=""), rec(code="ab")):
            body = k.error("POST", "record", {"app": 4, "record": record}, status=400, code="CB_VA01")
            assert set(body["errors"]) == {"record.code.value"}
        k.ok("POST", "record", {"app": 4, "record": rec(code="abc")})
        assert k.ok("PUT", "record", {"app": 4, "id": 1, "record": rec(title="y")}) == {
            "revision": "2"
        }  # not sent: kept
        k.error("PUT", "record", {"app": 4, "id": 1, "record": rec(code="")}, status=400, code="CB_VA01")


# -- reads through the indexes (the primary key, the unique index) ---------------------------

_INDEXED = {
    "apps": [
        {
            "id": 1,
            "name": "Keyed",
            "fields": {
                "code": {"type": "SINGLE_LINE_TEXT", "unique": True},
                "name": "SINGLE_LINE_TEXT",
                "n": "NUMBER",
            },
        }
    ]
}
_CODES = ["a", "b", "c", "d"]
_WRITES = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"), st.sampled_from([*_CODES, ""]), st.sampled_from(["x", "y"]), st.integers(0, 3)
        ),
        st.tuples(st.just("rekey"), st.sampled_from(_CODES), st.sampled_from([*_CODES, ""])),
        st.tuples(st.just("set"), st.integers(1, 8), st.sampled_from([*_CODES, ""])),
        st.tuples(st.just("delete"), st.integers(1, 8)),
        st.tuples(st.just("upsert"), st.sampled_from(_CODES), st.sampled_from(["x", "y"])),
    ),
    max_size=10,
)
_LEAVES = st.one_of(
    st.tuples(
        st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "in"]), st.sampled_from(["0", "2", "3.5", "5", "9"])
    ).map(lambda t: f"$id {t[0]} ({t[1]})" if t[0] == "in" else f"$id {t[0]} {t[1]}"),
    st.lists(st.sampled_from(['"a"', '"b"', '"e"', '""']), min_size=1, max_size=2).map(
        lambda vs: f"code in ({', '.join(vs)})"
    ),
    st.sampled_from(
        ['code = "c"', 'code != "a"', 'name = "x"', "n > 1", 'code like "b"', "$id in (1, 3, 8)"]
    ),
)
_QUERY_CONDITIONS = st.recursive(
    _LEAVES,
    lambda inner: st.tuples(st.lists(inner, min_size=2, max_size=3), st.sampled_from([" and ", " or "])).map(
        lambda t: "(" + t[1].join(t[0]) + ")"
    ),
    max_leaves=4,
)
_ORDERS = st.sampled_from(
    ["", "order by $id asc", "order by $id desc", "order by n asc", "order by name desc, $id asc"]
)
_WINDOWS = st.tuples(st.sampled_from([None, 1, 2, 5]), st.sampled_from([None, 0, 1, 3]))


def _write(client: httpx.Client, step: tuple) -> None:
    kind, *args = step
    if kind == "add":
        code, name, n = args
        client.post("/k/v1/record.json", json={"app": 1, "record": rec(code=code, name=name, n=n)})
    elif kind == "rekey":
        key, new = args
        body = {"app": 1, "updateKey": {"field": "code", "value": key}, "record": rec(code=new)}
        client.put("/k/v1/record.json", json=body)
    elif kind == "set":
        client.put("/k/v1/record.json", json={"app": 1, "id": args[0], "record": rec(code=args[1])})
    elif kind == "delete":
        client.request("DELETE", "/k/v1/records.json", json={"app": 1, "ids": [args[0]]})
    else:
        key, name = args
        item = {"updateKey": {"field": "code", "value": key}, "record": rec(name=name)}
        client.put("/k/v1/records.json", json={"app": 1, "upsert": True, "records": [item]})


@settings(max_examples=60, deadline=None)
@given(
    _WRITES, st.lists(st.tuples(_QUERY_CONDITIONS, _ORDERS, _WINDOWS, st.booleans()), min_size=1, max_size=4)
)
def test_indexed_reads_answer_as_reading_every_record(writes: list[tuple], queries: list[tuple]):
    """GET records (which reads what the indexes allow) against the whole app read, filtered,
    sorted and windowed by the same query (what the sandbox did before it had indexes)."""
    with Sandbox.from_definition(_INDEXED) as sandbox, sandbox.client() as client:
        # Codes a and b taken, c and d free to be given by a write (the unique index must follow).
        seed = [
            rec(code=code, name="xy"[i % 2], n=i % 4) for i, code in enumerate(["a", "b", "", "", "", ""])
        ]
        assert client.post("/k/v1/records.json", json={"app": 1, "records": seed}).status_code == 200
        for step in writes:
            _write(client, step)
        app = sandbox.apps[1]
        every = sandbox.records(1)
        for condition, order, (limit, offset), total in queries:
            text = " ".join(
                part
                for part in (
                    condition,
                    order,
                    f"limit {limit}" if limit is not None else "",
                    f"offset {offset}" if offset is not None else "",
                )
                if part
            )
            body = client.get(
                "/k/v1/records.json", params={"app": 1, "query": text, "totalCount": str(total).lower()}
            ).json()
            query = parse_query(text, app.field_types(), options=app.query_options())
            selected = query.sort(query.filter(every))
            start, size = offset or 0, limit if limit is not None else 100
            assert body["records"] == selected[start : start + size], text
            assert body["totalCount"] == (str(len(selected)) if total else None), text
            cursor = client.post(
                "/k/v1/records/cursor.json", json={"app": 1, "query": f"{condition} {order}"}
            )
            assert cursor.json()["totalCount"] == str(len(query.filter(every))), condition


def test_the_probes_queries_never_read_the_whole_app(monkeypatch):
    with Sandbox.from_definition(_INDEXED) as sandbox, sandbox.client() as client:
        records = [rec(code=f"C{i}", n=i) for i in range(30)]
        assert client.post("/k/v1/records.json", json={"app": 1, "records": records}).status_code == 200

        def whole_app(app: int) -> None:
            raise AssertionError(f"app {app} read whole")

        monkeypatch.setattr(sandbox.api.store, "all", whole_app)
        for query, found in (
            ("order by $id desc limit 1", ["30"]),  # an app's highest id
            ("($id in (3, 7)) and $id > 0 order by $id asc limit 500", ["3", "7"]),  # a probe by id
            ('(code in ("C4", "C9", "no")) and $id > 0 order by $id asc limit 500', ["5", "10"]),  # by key
            ("$id > 27 order by $id asc limit 500", ["28", "29", "30"]),  # above a probe's highest id
            ('name = "" and $id > 0 order by $id asc limit 2', ["1", "2"]),  # a page stops the reading
        ):
            params = {"app": 1, "query": query, "fields": ["$id"]}
            body = client.request("GET", "/k/v1/records.json", json=params).json()
            assert [r["$id"]["value"] for r in body["records"]] == found, query
