"""bulkRequest.json: at most 20 of the 8 allowed APIs, run in order, all or nothing."""

from __future__ import annotations

from .conftest import Kintone, rec


def req(method: str, api: str, payload: dict, guest: int | None = None) -> dict:
    prefix = f"/k/guest/{guest}/v1" if guest else "/k/v1"
    return {"method": method, "api": f"{prefix}/{api}.json", "payload": payload}


def count(k: Kintone, app: int = 1, guest: int | None = None) -> int:
    return int(k.ok("GET", "records", {"app": app, "totalCount": True}, guest=guest)["totalCount"])


def test_success_returns_each_inner_answer_and_later_requests_see_earlier_writes(k: Kintone):
    body = k.ok(
        "POST",
        "bulkRequest",
        {
            "requests": [
                req("POST", "record", {"app": 1, "record": rec(title="a", order_no="K")}),
                req("POST", "records", {"app": 1, "records": [rec(title="b"), rec(title="c")]}),
                req("PUT", "record", {"app": 1, "id": 1, "revision": 1, "record": rec(title="a2")}),
                req("PUT", "records", {"app": 1, "records": [{"id": 1, "revision": 2, "record": {}}]}),
                req(
                    "PUT",
                    "records",
                    {
                        "app": 1,
                        "upsert": True,
                        "records": [{"updateKey": {"field": "order_no", "value": "K"}, "record": {}}],
                    },
                ),
                req("PUT", "record/status", {"app": 1, "id": 2, "action": "Submit", "assignee": "bob"}),
                req(
                    "PUT",
                    "records/status",
                    {"app": 1, "records": [{"id": 3, "action": "Submit", "assignee": "bob"}]},
                ),
                req("PUT", "record/assignees", {"app": 1, "id": 3, "assignees": []}),
                req("DELETE", "records", {"app": 1, "ids": [2]}),
            ]
        },
    )
    assert body["results"] == [
        {"id": "1", "revision": "1"},
        {"ids": ["2", "3"], "revisions": ["1", "1"]},
        {"revision": "2"},
        {"records": [{"id": "1", "revision": "3"}]},
        {"records": [{"id": "1", "revision": "4", "operation": "UPDATE"}]},
        {"revision": "3"},
        {"records": [{"id": "3", "revision": "3"}]},
        {"revision": "4"},
        {},
    ]
    assert count(k) == 2


def test_a_failing_fifth_request_leaves_no_trace_of_the_first_four(k: Kintone, sandbox):
    k.ok("POST", "record", {"app": 1, "record": rec(title="existing")})
    before = sandbox.records(1)
    response = k.post(
        "bulkRequest",
        {
            "requests": [
                req("POST", "records", {"app": 1, "records": [rec(title=f"n{i}") for i in range(100)]}),
                req("PUT", "record", {"app": 1, "id": 1, "record": rec(title="changed")}),
                req("PUT", "record/status", {"app": 1, "id": 1, "action": "Submit", "assignee": "bob"}),
                req("POST", "record", {"app": 4, "record": rec(title="other app")}),
                req(
                    "PUT", "record", {"app": 1, "id": 1, "revision": 1, "record": {}}
                ),  # stale: it is 4 by now
                req("POST", "record", {"app": 1, "record": rec(title="never run")}),
            ]
        },
    )
    assert response.status_code == 409  # the failing inner request's status
    results = response.json()["results"]
    assert len(results) == 6 and results[4]["code"] == "GAIA_CO02"
    assert [r for i, r in enumerate(results) if i != 4] == [{}] * 5
    assert sandbox.records(1) == before
    assert count(k, app=4) == 0
    assert k.ok("POST", "record", {"app": 1, "record": rec(title="next")})["id"] == "2"  # no ids were used up


def test_inner_validation_error_keeps_its_keys_and_status(k: Kintone):
    response = k.post(
        "bulkRequest",
        {
            "requests": [
                req("POST", "records", {"app": 1, "records": [rec(title="ok")]}),
                req("POST", "records", {"app": 1, "records": [rec(title="ok"), rec(title="")]}),
            ]
        },
    )
    assert response.status_code == 400
    slot = response.json()["results"][1]
    assert slot["code"] == "CB_VA01" and "records[1].title.value" in slot["errors"]
    assert count(k) == 0


def test_at_most_20_requests_and_only_the_eight_apis(k: Kintone):
    one = req("POST", "record", {"app": 1, "record": rec(title="x")})
    body = k.error("POST", "bulkRequest", {"requests": [one] * 21}, status=400, code="CB_VA01")
    assert "results" not in body
    assert k.ok("POST", "bulkRequest", {"requests": [one] * 20})["results"][19] == {
        "id": "20",
        "revision": "1",
    }
    for bad in (
        req("GET", "records", {"app": 1}),
        req("POST", "records/cursor", {"app": 1}),
        req("GET", "app", {"id": 1}),
        {"method": "POST", "api": "/k/v1/record", "payload": {}},
        {"method": "POST", "api": "/k/v1/record.json"},
    ):
        k.error("POST", "bulkRequest", {"requests": [one, bad]}, status=400, code="CB_VA01")
    k.error("POST", "bulkRequest", {"requests": []}, status=400, code="CB_VA01")
    k.error("POST", "bulkRequest", {}, status=400, code="CB_VA01")
    assert count(k) == 20


def test_guest_bulk_needs_guest_prefix_on_inner_apis(k: Kintone):
    good = req("POST", "record", {"app": 3, "record": rec(title="g")}, guest=7)
    assert k.ok("POST", "bulkRequest", {"requests": [good]}, guest=7)["results"] == [
        {"id": "1", "revision": "1"}
    ]
    response = k.post(
        "bulkRequest", {"requests": [good, req("POST", "record", {"app": 3, "record": {}})]}, guest=7
    )
    assert response.status_code == 400 and response.json()["results"][1]["code"] == "GAIA_IL23"
    response = k.post(
        "bulkRequest", {"requests": [good, req("POST", "record", {"app": 4, "record": {}})]}, guest=7
    )
    assert response.status_code == 403 and response.json()["results"][1]["code"] == "CB_NO02"
    response = k.post("bulkRequest", {"requests": [req("POST", "record", {"app": 4, "record": {}}), good]})
    assert response.status_code == 403 and response.json()["results"][1]["code"] == "CB_NO02"
    assert count(k, app=3, guest=7) == 1 and count(k, app=4) == 0


def test_bulk_checks_tokens_per_inner_request(k: Kintone):
    headers = {"X-Cybozu-API-Token": "add-token"}
    response = k.post(
        "bulkRequest",
        {
            "requests": [
                req("POST", "record", {"app": 2, "record": rec(code="C1")}),
                req("PUT", "record", {"app": 2, "id": 1, "record": rec(name="n")}),
            ]
        },
        headers=headers,
    )
    assert response.status_code == 403 and response.json()["results"][1]["code"] == "GAIA_NO01"
    assert k.ok("GET", "records", {"app": 2, "totalCount": True}, headers=headers)["totalCount"] == "0"
