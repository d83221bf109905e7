"""Who may call what, and how: API tokens and their permissions, password auth, guest paths,
method override, parameters in the query string, and Kintone-shaped answers to bad requests."""

from __future__ import annotations

import base64

import pytest

from kmigrate.sandbox import Sandbox

from .conftest import Kintone, rec

FULL = {"X-Cybozu-API-Token": "full-token"}


def test_app_with_tokens_wants_credentials(k: Kintone):
    k.error("GET", "records", {"app": 2}, status=401, code="CB_AU01")
    k.error(
        "GET",
        "records",
        {"app": 2},
        headers={"X-Cybozu-API-Token": "someone-elses"},
        status=403,
        code="GAIA_AP15",
    )
    assert k.ok("GET", "records", {"app": 2}, headers=FULL)["records"] == []


def test_token_permissions(k: Kintone):
    view, adder = {"X-Cybozu-API-Token": "view-token"}, {"X-Cybozu-API-Token": "add-token"}
    k.error(
        "POST", "record", {"app": 2, "record": rec(code="C1")}, headers=view, status=403, code="GAIA_NO01"
    )
    assert k.ok("POST", "record", {"app": 2, "record": rec(code="C1")}, headers=adder)["id"] == "1"
    k.error("PUT", "record", {"app": 2, "id": 1, "record": {}}, headers=adder, status=403, code="GAIA_NO01")
    k.error("DELETE", "records", {"app": 2, "ids": [1]}, headers=adder, status=403, code="GAIA_NO01")
    # upsert needs add and edit
    k.error(
        "PUT",
        "records",
        {"app": 2, "upsert": True, "records": [{"id": 1, "record": {}}]},
        headers=adder,
        status=403,
        code="GAIA_NO01",
    )
    assert k.ok("GET", "record", {"app": 2, "id": 1}, headers=view)["record"]["tier"]["value"] == "Silver"
    assert k.ok("DELETE", "records", {"app": 2, "ids": [1]}, headers=FULL) == {}


PROCESS_APP = {
    "apps": [
        {
            "id": 1,
            "name": "Tasks",
            "fields": {"title": "SINGLE_LINE_TEXT"},
            "api_tokens": [
                {"token": "viewer", "permissions": ["view"]},
                {"token": "editor", "permissions": ["view", "add", "edit", "delete"]},
                {"token": "manager", "permissions": ["view", "manage"]},
            ],
            "process": {
                "states": ["Open", "Done"],
                "actions": [{"name": "Finish", "from": "Open", "to": "Done"}],
            },
        }
    ]
}


def token(name: str) -> dict[str, str]:
    return {"X-Cybozu-API-Token": name}


def test_status_actions_need_view_and_assignee_changes_need_app_management():
    """Kintone's reference: update status takes a token with view; update assignees, app management."""
    with Sandbox.from_definition(PROCESS_APP) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        k.ok("POST", "record", {"app": 1, "record": rec(title="t")}, headers=token("editor"))
        assert (
            k.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Finish"}, headers=token("viewer"))[
                "revision"
            ]
            == "3"
        )
        body = {"app": 1, "id": 1, "assignees": ["alice"]}
        err = k.error("PUT", "record/assignees", body, headers=token("editor"), status=403, code="GAIA_NO01")
        assert "lacks the manage permission" in err["message"]
        assert k.ok("PUT", "record/assignees", body, headers=token("manager"))["revision"] == "4"


def test_several_tokens_comma_separated_or_repeated(sandbox: Sandbox, k: Kintone):
    assert (
        k.ok(
            "POST",
            "record",
            {"app": 2, "record": rec(code="C1")},
            headers={"X-Cybozu-API-Token": "view-token, add-token"},
        )["id"]
        == "1"
    )
    with sandbox.client() as client:
        response = client.post(
            "/k/v1/record.json",
            json={"app": 2, "record": rec(code="C2")},
            headers=[("X-Cybozu-API-Token", "view-token"), ("X-Cybozu-API-Token", "add-token")],
        )
    assert response.status_code == 200, response.text


def test_at_most_nine_tokens(k: Kintone):
    nine = ",".join(["full-token"] + [f"t{i}" for i in range(8)])
    assert k.ok("GET", "records", {"app": 2}, headers={"X-Cybozu-API-Token": nine})["records"] == []
    k.error(
        "GET", "records", {"app": 2}, headers={"X-Cybozu-API-Token": nine + ",t9"}, status=400, code="CB_VA01"
    )


def test_password_auth_names_the_user_and_wins_over_tokens(k: Kintone):
    headers = {
        "X-Cybozu-Authorization": base64.b64encode(b"alice:pw").decode(),
        "X-Cybozu-API-Token": "view-token",
    }
    k.ok("POST", "record", {"app": 2, "record": rec(code="C1")}, headers=headers)
    record = k.ok("GET", "record", {"app": 2, "id": 1}, headers=headers)["record"]
    assert record["Created_by"]["value"]["code"] == "alice" and record["Record_no"]["value"] == "1"
    k.error(
        "GET",
        "records",
        {"app": 2},
        headers={"X-Cybozu-Authorization": "not base64!"},
        status=401,
        code="CB_WA01",
    )


def test_apps_without_tokens_take_any_request(k: Kintone):
    assert (
        k.ok(
            "POST", "record", {"app": 4, "record": rec(title="x")}, headers={"X-Cybozu-API-Token": "whatever"}
        )["id"]
        == "1"
    )


def test_guest_space_paths(k: Kintone):
    assert k.ok("POST", "record", {"app": 3, "record": rec(title="x")}, guest=7)["id"] == "1"
    k.error("GET", "record", {"app": 3, "id": 1}, status=400, code="GAIA_IL23")
    k.error("GET", "record", {"app": 3, "id": 1}, guest=8, status=403, code="CB_NO02")
    k.error("GET", "records", {"app": 4}, guest=7, status=403, code="CB_NO02")
    assert k.ok("GET", "app", {"id": 3}, guest=7)["spaceId"] == "7"


def test_method_override_and_query_string_parameters(k: Kintone):
    k.ok("POST", "records", {"app": 1, "records": [rec(title="a"), rec(title="b")]})
    response = k.client.post(
        "/k/v1/records.json",
        json={"app": 1, "query": 'title = "b"'},
        headers={"X-HTTP-Method-Override": "GET"},
    )
    assert [r["title"]["value"] for r in response.json()["records"]] == ["b"]
    response = k.client.post(
        "/k/v1/records.json", json={"app": 1, "ids": [1]}, headers={"X-HTTP-Method-Override": "DELETE"}
    )
    assert response.json() == {}
    response = k.client.post("/k/v1/records.json", json={"app": 1}, headers={"X-HTTP-Method-Override": "get"})
    assert response.status_code == 400 and response.json()["code"] == "CB_VA01"  # case-sensitive
    # a GET body, as Kintone's clients send it
    assert k.ok("GET", "record", {"app": "1", "id": "2"})["record"]["title"]["value"] == "b"


JSON = {"Content-Type": "application/json; charset=utf-8"}


@pytest.mark.parametrize(
    "method, path, kwargs, status, code",
    [
        ("POST", "/k/v1/records.json", {"content": b"{not json", "headers": JSON}, 400, "CB_IJ01"),
        ("POST", "/k/v1/records.json", {"content": b"[1, 2]", "headers": JSON}, 400, "CB_IJ01"),
        ("POST", "/k/v1/records.json", {"json": {"app": "one", "records": []}}, 400, "CB_VA01"),
        ("POST", "/k/v1/records.json", {"json": {"app": 1, "records": "nope"}}, 400, "CB_VA01"),
        ("POST", "/k/v1/records.json", {"json": {"app": True, "records": []}}, 400, "CB_VA01"),
        ("GET", "/k/v1/records.json", {"params": {"app": "1", "totalCount": "maybe"}}, 400, "CB_VA01"),
        ("GET", "/k/v1/records.json", {}, 400, "CB_VA01"),
        (
            "POST",
            "/k/v1/record.json",
            {"json": {"app": 1, "record": ["not", "an", "object"]}},
            400,
            "CB_VA01",
        ),
        (
            "POST",
            "/k/v1/record.json",
            {"json": {"app": 1, "record": {"title": "not wrapped"}}},
            400,
            "CB_VA01",
        ),
        ("PUT", "/k/v1/records.json", {"json": {"app": 1, "records": [5]}}, 400, "CB_VA01"),
        ("GET", "/k/v1/nothing.json", {}, 404, "CB_NF01"),
        ("GET", "/index.html", {}, 404, "CB_NF01"),
        ("PATCH", "/k/v1/records.json", {}, 405, "CB_ME01"),
        ("GET", "/k/v1/bulkRequest.json", {}, 405, "CB_ME01"),
    ],
)
def test_bad_requests_get_kintone_shaped_errors(sandbox: Sandbox, method, path, kwargs, status, code):
    with sandbox.client() as client:
        response = client.request(method, path, **kwargs)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), body
    assert set(body) <= {"code", "id", "message", "errors"} and body["id"] and body["message"]


def test_a_bug_still_answers_in_kintone_shape(sandbox: Sandbox, monkeypatch):
    def broken(call):
        raise RuntimeError("boom")

    monkeypatch.setitem(sandbox.api.routes, ("GET", "records"), (broken, False))
    with sandbox.client() as client:
        response = client.get("/k/v1/records.json", params={"app": 1})
    assert (
        response.status_code == 500
        and response.json()["code"] == "CB_UN01"
        and "boom" in response.json()["message"]
    )


def test_request_count_counts_http_requests(sandbox: Sandbox, k: Kintone):
    assert sandbox.request_count == 0
    k.post(
        "bulkRequest",
        {
            "requests": [{"method": "POST", "api": "/k/v1/record.json", "payload": {"app": 4, "record": {}}}]
            * 3
        },
    )
    k.get("records", {"app": 4})
    assert sandbox.request_count == 2


@pytest.mark.parametrize(
    "headers", [{"Content-Type": "text/plain"}, {}, {"Content-Type": "application/x-www-form-urlencoded"}]
)
def test_a_json_body_sent_as_anything_but_application_json_is_not_read(k: Kintone, headers: dict[str, str]):
    body = b'{"app": 1, "record": {"title": {"value": "t"}}}'
    response = k.client.post("/k/v1/record.json", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == {"app": {"messages": ["Required field."]}}
    # The query string still counts, as in Kintone.
    response = k.client.request("GET", "/k/v1/records.json?app=1", content=b'{"app": 99}', headers=headers)
    assert response.status_code == 200 and response.json()["records"] == []
    assert k.client.post("/k/v1/record.json", content=body, headers=JSON).status_code == 200
