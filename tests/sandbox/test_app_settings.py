"""app.json, app/form/fields.json and app/status.json in Kintone's shapes."""

from __future__ import annotations

from .conftest import Kintone


def test_app(k: Kintone):
    body = k.ok("GET", "app", params={"id": 1})
    assert (body["appId"], body["name"], body["code"], body["spaceId"]) == ("1", "Orders", "ORD", None)
    k.error("GET", "app", params={"id": 9}, status=404, code="GAIA_AP01")


def test_fields_in_kintone_properties_shape_with_system_fields(k: Kintone):
    props = k.ok("GET", "app/form/fields", {"app": 1})["properties"]
    assert props["title"] == {
        "type": "SINGLE_LINE_TEXT",
        "code": "title",
        "label": "title",
        "noLabel": False,
        "required": True,
        "unique": False,
        "defaultValue": "",
        "minLength": "",
        "maxLength": "20",
    }
    assert props["priority"]["options"] == {
        "High": {"label": "High", "index": "0"},
        "Low": {"label": "Low", "index": "1"},
    }
    assert props["amount"]["minValue"] == "0" and props["amount"]["maxValue"] == "1000"
    assert set(props["items"]["fields"]) == {"name", "qty"}
    assert {
        props[c]["type"]
        for c in ("Record_number", "Created_by", "Created_datetime", "Updated_by", "Updated_datetime")
    } == {"RECORD_NUMBER", "CREATOR", "CREATED_TIME", "MODIFIER", "UPDATED_TIME"}
    assert props["Status"] == {"type": "STATUS", "code": "Status", "label": "Status", "enabled": True}
    assert "$id" not in props


def test_fields_round_trip_through_the_kintone_shape(k: Kintone):
    """A fields.json export can be dropped into a sandbox file and reads back the same."""
    from kmigrate.sandbox import Sandbox

    props = k.ok("GET", "app/form/fields", {"app": 1})["properties"]
    with Sandbox.from_definition(
        {"apps": [{"id": 1, "name": "Copy", "code": "ORD", "properties": props}]}
    ) as copy:
        with copy.client() as client:
            again = client.get("/k/v1/app/form/fields.json", params={"app": 1}).json()["properties"]
    props["Status"]["enabled"] = props["Assignee"]["enabled"] = False  # the copy has no process
    assert again == props


def test_status_settings(k: Kintone):
    body = k.ok("GET", "app/status", {"app": 1})
    assert body["enable"] is True
    assert list(body["states"]) == ["Draft", "In review", "Done"]
    assert body["states"]["In review"]["assignee"] == {
        "type": "ONE",
        "entities": [
            {"entity": {"type": "USER", "code": "alice"}, "includeSubs": False},
            {"entity": {"type": "USER", "code": "bob"}, "includeSubs": False},
        ],
    }
    assert body["actions"][0] == {"name": "Submit", "from": "Draft", "to": "In review", "filterCond": ""}
    plain = k.ok("GET", "app/status", {"app": 4})
    assert (plain["enable"], plain["states"], plain["actions"]) == (False, None, None)
