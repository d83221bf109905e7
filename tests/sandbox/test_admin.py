"""The app-admin APIs (kmigrate.sandbox.admin): create an app, add fields, deploy, poll."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from kmigrate.errors import SandboxDefinitionError
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

from .conftest import DEFINITION, Kintone, rec

PASSWORD = {"X-Cybozu-Authorization": base64.b64encode(b"alice:secret").decode()}
# The fields `kmigrate journal init` asks for: a unique key, text, a number and a time.
JOURNAL_FIELDS: dict[str, Any] = {
    "batch": {
        "type": "SINGLE_LINE_TEXT",
        "code": "batch",
        "label": "Batch",
        "unique": True,
        "required": True,
    },
    "hash": {"type": "SINGLE_LINE_TEXT", "code": "hash", "label": "Hash"},
    "ids": {"type": "MULTI_LINE_TEXT", "code": "ids", "label": "Ids"},
    "calls": {"type": "NUMBER", "code": "calls", "label": "Calls"},
    "applied_at": {"type": "DATETIME", "code": "applied_at", "label": "Applied at"},
}


def create(k: Kintone, name: str = "Journal", **kw: Any) -> int:
    body = k.ok("POST", "preview/app", {"name": name}, headers=PASSWORD, **kw)
    assert body["revision"] == "1"
    return int(body["app"])


def create_and_deploy(k: Kintone, fields: dict[str, Any] = JOURNAL_FIELDS) -> int:
    app = create(k)
    assert k.ok("POST", "preview/app/form/fields", {"app": app, "properties": fields}, headers=PASSWORD) == {
        "revision": "2"
    }
    assert k.ok("POST", "preview/app/deploy", {"apps": [{"app": app, "revision": 2}]}, headers=PASSWORD) == {}
    return app


def test_create_add_fields_deploy_then_use_the_app(k: Kintone):
    app = create(k)
    assert app == 5  # after the file's apps 1-4
    # Pre-live only: the live APIs do not know it yet.
    k.error("GET", "app", params={"id": app}, headers=PASSWORD, status=404, code="GAIA_AP01")
    k.ok("POST", "preview/app/form/fields", {"app": app, "properties": JOURNAL_FIELDS}, headers=PASSWORD)
    preview = k.ok("GET", "preview/app/form/fields", params={"app": app}, headers=PASSWORD)
    assert preview["revision"] == "2" and preview["properties"]["batch"]["unique"] is True
    k.ok("POST", "preview/app/deploy", {"apps": [{"app": app}]}, headers=PASSWORD)
    # The first status read answers PROCESSING (a polling loop runs once), then SUCCESS.
    statuses = [
        k.ok("GET", "preview/app/deploy", params={"apps[0]": app}, headers=PASSWORD)["apps"] for _ in range(3)
    ]
    assert statuses == [
        [{"app": str(app), "status": "PROCESSING"}],
        [{"app": str(app), "status": "SUCCESS"}],
        [{"app": str(app), "status": "SUCCESS"}],
    ]
    info = k.ok("GET", "app", params={"id": app}, headers=PASSWORD)
    assert (info["appId"], info["name"], info["creator"]["code"], info["spaceId"]) == (
        str(app),
        "Journal",
        "alice",
        None,
    )
    props = k.ok("GET", "app/form/fields", params={"app": app})["properties"]
    assert {c: props[c]["type"] for c in JOURNAL_FIELDS} == {c: f["type"] for c, f in JOURNAL_FIELDS.items()}
    assert props["Record_number"]["type"] == "RECORD_NUMBER"
    # Records obey the new fields: the unique key refuses a second marker for the same batch.
    k.ok("POST", "record", {"app": app, "record": rec(batch="p/1/0", calls="3")})
    err = k.error("POST", "record", {"app": app, "record": rec(batch="p/1/0")}, status=400, code="CB_VA01")
    assert err["errors"] == {
        "record.batch.value": {"messages": ["This value already exists in another record."]}
    }
    k.error("POST", "record", {"app": app, "record": rec(calls="1")}, status=400, code="CB_VA01")


def test_the_admin_apis_take_password_auth_only(k: Kintone):
    for method, api, body in (
        ("POST", "preview/app", {"name": "x"}),
        ("POST", "preview/app/form/fields", {"app": 1, "properties": JOURNAL_FIELDS}),
        ("POST", "preview/app/deploy", {"apps": [{"app": 1}]}),
        ("GET", "preview/app/deploy", {"apps": [1]}),
    ):
        err = k.error(
            method, api, body, headers={"X-Cybozu-API-Token": "full-token"}, status=403, code="GAIA_NO01"
        )
        assert err["message"] == "Using this API token, you cannot run the specified API."
        k.error(method, api, body, status=401, code="CB_AU01")


def test_revisions_are_checked_and_counted(k: Kintone):
    app = create(k)
    fields = {"a": {"type": "SINGLE_LINE_TEXT", "code": "a", "label": "A"}}
    k.error(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": fields, "revision": 7},
        headers=PASSWORD,
        status=409,
        code="GAIA_CO02",
    )
    k.ok(
        "POST", "preview/app/form/fields", {"app": app, "properties": fields, "revision": 1}, headers=PASSWORD
    )
    more = {"b": {"type": "NUMBER", "code": "b", "label": "B"}}
    assert k.ok(
        "POST", "preview/app/form/fields", {"app": app, "properties": more, "revision": -1}, headers=PASSWORD
    ) == {"revision": "3"}
    k.error(
        "POST",
        "preview/app/deploy",
        {"apps": [{"app": app, "revision": 2}]},
        headers=PASSWORD,
        status=409,
        code="GAIA_CO02",
    )


def test_bad_fields_are_cb_va01_and_change_nothing(k: Kintone):
    app = create(k)
    k.ok(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"a": {"type": "NUMBER"}}},
        headers=PASSWORD,
    )
    dup = k.error(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"a": {"type": "NUMBER"}}},
        headers=PASSWORD,
        status=400,
        code="CB_VA01",
    )
    assert dup["errors"] == {"properties[a].code": {"messages": ["The field code is already in use."]}}
    system = k.error(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"Record_number": {"type": "NUMBER"}}},
        headers=PASSWORD,
        status=400,
        code="CB_VA01",
    )
    assert list(system["errors"]) == ["properties[Record_number].code"]
    bad = k.error(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"p": {"type": "DROP_DOWN"}}},
        headers=PASSWORD,
        status=400,
        code="CB_VA01",
    )
    assert "needs `options`" in bad["errors"]["properties"]["messages"][0]
    k.error("POST", "preview/app/form/fields", {"app": app}, headers=PASSWORD, status=400, code="CB_VA01")
    preview = k.ok("GET", "preview/app/form/fields", params={"app": app}, headers=PASSWORD)
    assert preview["revision"] == "2" and "p" not in preview["properties"]


def test_file_apps_are_not_changed_and_unknown_apps_are_not_found(k: Kintone):
    k.error(
        "POST",
        "preview/app/form/fields",
        {"app": 1, "properties": {"x": {"type": "NUMBER"}}},
        headers=PASSWORD,
        status=403,
        code="CB_NO02",
    )
    assert k.ok("POST", "preview/app/deploy", {"apps": [{"app": 1}]}, headers=PASSWORD) == {}
    assert k.ok("GET", "preview/app/deploy", params={"apps[0]": 1}, headers=PASSWORD)["apps"] == [
        {"app": "1", "status": "SUCCESS"}
    ]
    k.error(
        "POST",
        "preview/app/form/fields",
        {"app": 99, "properties": {"x": {"type": "NUMBER"}}},
        headers=PASSWORD,
        status=404,
        code="GAIA_AP01",
    )
    k.error(
        "GET", "preview/app/deploy", params={"apps[0]": 99}, headers=PASSWORD, status=404, code="GAIA_AP01"
    )
    k.error("POST", "preview/app", {"name": "x" * 65}, headers=PASSWORD, status=400, code="CB_VA01")
    k.error("POST", "preview/app", {}, headers=PASSWORD, status=400, code="CB_VA01")


def test_revert_drops_the_pre_live_changes(k: Kintone):
    app = create_and_deploy(k)
    k.ok(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"extra": {"type": "NUMBER"}}},
        headers=PASSWORD,
    )
    k.ok("POST", "preview/app/deploy", {"apps": [{"app": app}], "revert": True}, headers=PASSWORD)
    preview = k.ok("GET", "preview/app/form/fields", params={"app": app}, headers=PASSWORD)["properties"]
    assert "extra" not in preview and "batch" in preview
    assert "extra" not in k.ok("GET", "app/form/fields", params={"app": app})["properties"]


def test_an_app_created_in_a_guest_space_lives_there(k: Kintone):
    app = create(k, guest=7)
    k.ok(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"t": {"type": "SINGLE_LINE_TEXT"}}},
        headers=PASSWORD,
        guest=7,
    )
    k.ok("POST", "preview/app/deploy", {"apps": [{"app": app}]}, headers=PASSWORD, guest=7)
    assert k.ok("GET", "app", params={"id": app}, guest=7, headers=PASSWORD)["spaceId"] == "7"
    k.error("GET", "app", params={"id": app}, headers=PASSWORD, status=400, code="GAIA_IL23")
    k.error(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": {"u": {"type": "NUMBER"}}},
        headers=PASSWORD,
        status=400,
        code="GAIA_IL23",
    )


def client_for(sandbox: Sandbox) -> Kintone:
    return Kintone(httpx.Client(base_url=SANDBOX_BASE_URL, transport=sandbox.transport()))


def test_created_apps_persist_in_the_store_beside_the_files_apps(tmp_path: Path):
    store = tmp_path / "sandbox.sqlite3"
    with Sandbox.from_definition(DEFINITION, store=store) as first:
        k = client_for(first)
        app = create_and_deploy(k)
        k.ok("POST", "record", {"app": app, "record": rec(batch="b1")})
        first.reset()  # drops records, keeps the created app
        assert first.records(app) == []
        k.ok("POST", "record", {"app": app, "record": rec(batch="b1")})
    with Sandbox.from_definition(DEFINITION, store=store) as again:
        k = client_for(again)
        assert k.ok("GET", "app", params={"id": app}, headers=PASSWORD)["name"] == "Journal"
        assert [r["batch"]["value"] for r in again.records(app)] == ["b1"]
        # Uniqueness was rebuilt from the stored records.
        k.error("POST", "record", {"app": app, "record": rec(batch="b1")}, status=400, code="CB_VA01")
        assert k.ok("GET", "app", params={"id": 1})["name"] == "Orders"
        assert create(k, "Second") == app + 1


def test_a_file_that_later_declares_a_created_apps_id_is_refused(tmp_path: Path):
    store = tmp_path / "sandbox.sqlite3"
    with Sandbox.from_definition(DEFINITION, store=store) as first:
        app = create(client_for(first))
    grown = {"apps": [*DEFINITION["apps"], {"id": app, "name": "New", "fields": {"t": "SINGLE_LINE_TEXT"}}]}
    with pytest.raises(SandboxDefinitionError, match=f"app id {app} is declared in the sandbox file"):
        Sandbox.from_definition(grown, store=store)


def test_a_created_apps_lookup_is_checked_against_the_sandboxs_apps(k: Kintone):
    app = create(k)
    looked_up = {
        "customer": {
            "type": "SINGLE_LINE_TEXT",
            "lookup": {
                "relatedApp": {"app": "2"},
                "relatedKeyField": "code",
                "fieldMappings": [{"field": "customer_name", "relatedField": "name"}],
            },
        },
        "customer_name": {"type": "SINGLE_LINE_TEXT"},
    }
    bad = {
        **looked_up,
        "customer": {
            **looked_up["customer"],
            "lookup": {**looked_up["customer"]["lookup"], "relatedKeyField": "nope"},
        },
    }
    err = k.error(
        "POST",
        "preview/app/form/fields",
        {"app": app, "properties": bad},
        headers=PASSWORD,
        status=400,
        code="CB_VA01",
    )
    assert "has no key field 'nope'" in err["errors"]["properties"]["messages"][0]
    k.ok("POST", "preview/app/form/fields", {"app": app, "properties": looked_up}, headers=PASSWORD)
    k.ok("POST", "preview/app/deploy", {"apps": [{"app": app}]}, headers=PASSWORD)
    token = {"X-Cybozu-API-Token": "full-token"}
    k.ok("POST", "record", {"app": 2, "record": rec(code="C1", name="Acme")}, headers=token)
    k.ok("POST", "record", {"app": app, "record": rec(customer="C1")}, headers=PASSWORD)
    assert k.ok("GET", "record", {"app": app, "id": 1})["record"]["customer_name"]["value"] == "Acme"
