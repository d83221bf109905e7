"""Process management: status actions (+2), assignee rules, assignees (+1), and their errors."""

from __future__ import annotations

import base64

from .conftest import Kintone, rec


def login(name: str) -> dict[str, str]:
    return {"X-Cybozu-Authorization": base64.b64encode(f"{name}:secret".encode()).decode()}


def status_of(
    k: Kintone, record_id: int, app: int = 1, guest: int | None = None
) -> tuple[str, list[str], str]:
    record = k.ok("GET", "record", {"app": app, "id": record_id}, guest=guest)["record"]
    return (
        record["Status"]["value"],
        [a["code"] for a in record["Assignee"]["value"]],
        record["$revision"]["value"],
    )


def test_action_moves_the_record_and_adds_two_to_the_revision(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    assert k.ok(
        "PUT", "record/status", {"app": 1, "id": 1, "action": "Submit", "assignee": "bob", "revision": 1}
    ) == {"revision": "3"}
    assert status_of(k, 1) == ("In review", ["bob"], "3")


def test_action_invalid_from_current_state_is_gaia_il03(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    k.error("PUT", "record/status", {"app": 1, "id": 1, "action": "Approve"}, status=400, code="GAIA_IL03")
    k.error(
        "PUT", "record/status", {"app": 1, "id": 1, "action": "Nonexistent"}, status=400, code="GAIA_IL03"
    )
    assert status_of(k, 1) == ("Draft", [], "1")


def test_one_of_several_candidates_needs_an_assignee(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    k.error("PUT", "record/status", {"app": 1, "id": 1, "action": "Submit"}, status=400, code="GAIA_SA01")
    body = k.error(
        "PUT",
        "record/status",
        {"app": 1, "id": 1, "action": "Submit", "assignee": "mallory"},
        status=400,
        code="CB_VA01",
    )
    assert "assignee" in body["errors"]


def test_only_an_assignee_may_act_and_any_type_takes_every_candidate(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    k.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Submit", "assignee": "alice"})
    k.error(
        "PUT", "record/status", {"app": 1, "id": 1, "action": "Approve"}, status=403, code="CB_NO02"
    )  # Administrator
    k.error(
        "PUT",
        "record/status",
        {"app": 1, "id": 1, "action": "Approve"},
        headers=login("bob"),
        status=403,
        code="CB_NO02",
    )
    assert k.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Approve"}, headers=login("alice")) == {
        "revision": "5"
    }
    status, assignees, _ = status_of(k, 1)
    assert (status, assignees) == ("Done", ["carol"])
    record = k.ok("GET", "record", {"app": 1, "id": 1})["record"]
    assert record["Updated_by"]["value"]["code"] == "alice"


def test_status_revision_conflict_and_missing_record(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    k.error(
        "PUT",
        "record/status",
        {"app": 1, "id": 1, "action": "Submit", "assignee": "bob", "revision": 2},
        status=409,
        code="GAIA_CO02",
    )
    k.error("PUT", "record/status", {"app": 1, "id": 8, "action": "Submit"}, status=404, code="GAIA_RE01")


def test_process_disabled_is_gaia_st02(k: Kintone):
    k.ok("POST", "record", {"app": 4, "record": rec(title="x")})
    k.error("PUT", "record/status", {"app": 4, "id": 1, "action": "Submit"}, status=400, code="GAIA_ST02")
    k.error("PUT", "record/assignees", {"app": 4, "id": 1, "assignees": []}, status=400, code="GAIA_ST02")


def test_update_statuses_is_atomic_and_limited(k: Kintone):
    k.ok("POST", "records", {"app": 1, "records": [rec(title="a"), rec(title="b")]})
    body = k.ok(
        "PUT",
        "records/status",
        {
            "app": 1,
            "records": [
                {"id": 1, "action": "Submit", "assignee": "bob"},
                {"id": 2, "action": "Submit", "assignee": "alice", "revision": 1},
            ],
        },
    )
    assert body == {"records": [{"id": "1", "revision": "3"}, {"id": "2", "revision": "3"}]}
    k.error(
        "PUT",
        "records/status",
        {"app": 1, "records": [{"id": 1, "action": "Reject"}, {"id": 2, "action": "Submit"}]},
        headers=login("bob"),
        status=400,
        code="GAIA_IL03",
    )
    assert status_of(k, 1)[0] == "In review"  # the first item was rolled back
    k.error(
        "PUT",
        "records/status",
        {"app": 1, "records": [{"id": 1, "action": "Reject"}] * 101},
        status=400,
        code="CB_VA01",
    )


def test_assignees_replace_the_list_and_add_one_to_the_revision(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    assert k.ok(
        "PUT", "record/assignees", {"app": 1, "id": 1, "assignees": ["alice", "bob"], "revision": 1}
    ) == {"revision": "2"}
    assert status_of(k, 1) == ("Draft", ["alice", "bob"], "2")
    k.error(
        "PUT",
        "record/assignees",
        {"app": 1, "id": 1, "assignees": ["x"], "revision": 1},
        status=409,
        code="GAIA_CO02",
    )
    k.error(
        "PUT",
        "record/assignees",
        {"app": 1, "id": 1, "assignees": [f"u{i}" for i in range(101)]},
        status=400,
        code="CB_VA01",
    )
    k.error("PUT", "record/assignees", {"app": 1, "id": 1, "assignees": "alice"}, status=400, code="CB_VA01")
    assert k.ok("PUT", "record/assignees", {"app": 1, "id": 1, "assignees": []}) == {"revision": "3"}


def test_status_settings_in_kintone_shape_are_read(k: Kintone):
    k.ok("POST", "record", {"app": 3, "record": rec(title="x")}, guest=7)
    k.ok("PUT", "record/status", {"app": 3, "id": 1, "action": "Close"}, guest=7)
    assert status_of(k, 1, app=3, guest=7) == ("Closed", ["dave"], "3")


def test_a_single_candidate_still_needs_the_assignee_parameter(definition):
    # Kintone: `assignee` is required whenever the next status picks one user from candidates,
    # however many there are; it is not filled in for the caller.
    from kmigrate.sandbox import Sandbox

    definition["apps"][0]["process"]["states"][1] = {
        "name": "In review",
        "assignee": {"type": "ONE", "entities": ["bob"]},
    }
    with Sandbox.from_definition(definition) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
        k.error("PUT", "record/status", {"app": 1, "id": 1, "action": "Submit"}, status=400, code="GAIA_SA01")
        assert status_of(k, 1) == ("Draft", [], "1")
        assert k.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Submit", "assignee": "bob"}) == {
            "revision": "3"
        }
        assert status_of(k, 1) == ("In review", ["bob"], "3")


def test_a_status_that_takes_one_assignee_refuses_several(k: Kintone):
    k.ok("POST", "record", {"app": 1, "record": rec(title="x")})
    k.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Submit", "assignee": "alice"})
    body = k.error(
        "PUT",
        "record/assignees",
        {"app": 1, "id": 1, "assignees": ["alice", "bob"]},
        headers=login("alice"),
        status=400,
        code="CB_VA01",
    )
    assert "assignees" in body["errors"]
    assert status_of(k, 1) == ("In review", ["alice"], "3")  # In review is ONE of alice, bob
    assert k.ok("PUT", "record/assignees", {"app": 1, "id": 1, "assignees": ["bob"]}) == {"revision": "4"}
    k.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Approve"}, headers=login("bob"))
    assert k.ok("PUT", "record/assignees", {"app": 1, "id": 1, "assignees": ["carol", "dave"]}) == {
        "revision": "7"
    }
    assert status_of(k, 1) == ("Done", ["carol", "dave"], "7")  # Done is ANY: several are fine
