"""The directory a sandbox file may declare: user, group and organization codes are checked."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kmigrate.errors import SandboxDefinitionError
from kmigrate.sandbox import Sandbox

from .conftest import Kintone, rec


def login(user: str) -> dict[str, str]:
    return {"X-Cybozu-Authorization": base64.b64encode(f"{user}:pw".encode()).decode()}


def definition(**directory: Any) -> dict[str, Any]:
    return {
        "directory": directory
        or {
            "users": ["alice", {"code": "bob", "name": "Bob Smith"}],
            "groups": [{"code": "sales", "name": "Sales"}],
            "organizations": ["hq"],
        },
        "apps": [
            {
                "id": 1,
                "name": "Tasks",
                "fields": {
                    "owner": "USER_SELECT",
                    "team": "GROUP_SELECT",
                    "dept": "ORGANIZATION_SELECT",
                    "steps": {
                        "type": "SUBTABLE",
                        "fields": {"who": "USER_SELECT", "note": "SINGLE_LINE_TEXT"},
                    },
                },
                "process": {
                    "states": [
                        "Open",
                        {"name": "Review", "assignee": {"type": "ONE", "entities": ["alice", "bob"]}},
                    ],
                    "actions": [{"name": "Send", "from": "Open", "to": "Review"}],
                },
            }
        ],
    }


@pytest.fixture
def dk():
    with Sandbox.from_definition(definition()) as sandbox, sandbox.client() as client:
        yield Kintone(client)


def test_known_codes_are_taken_with_the_directorys_names(dk: Kintone):
    record = rec(owner=[{"code": "bob"}], team=[{"code": "sales"}], dept=[{"code": "hq"}])
    dk.ok("POST", "record", {"app": 1, "record": record}, headers=login("alice"))
    got = dk.ok("GET", "record", {"app": 1, "id": 1})["record"]
    assert got["owner"]["value"] == [{"code": "bob", "name": "Bob Smith"}]
    assert got["team"]["value"] == [{"code": "sales", "name": "Sales"}]
    assert got["Created_by"]["value"]["code"] == "alice"


def test_unknown_codes_are_cb_va01_per_field(dk: Kintone):
    record = rec(owner=[{"code": "zoe"}], team=[{"code": "hq"}], dept=[{"code": "sales"}])
    err = dk.error("POST", "record", {"app": 1, "record": record}, status=400, code="CB_VA01")
    assert err["errors"] == {
        "record.owner.values.value": {"messages": ['"zoe" is not a user of the directory.']},
        "record.team.values.value": {"messages": ['"hq" is not a group of the directory.']},
        "record.dept.values.value": {"messages": ['"sales" is not an organization of the directory.']},
    }
    err = dk.error(
        "POST",
        "record",
        {"app": 1, "record": {"Created_by": {"value": {"code": "zoe"}}}},
        status=400,
        code="CB_VA01",
    )
    assert list(err["errors"]) == ["record.Created_by.value"]


def test_logins_and_assignees_must_be_users(dk: Kintone):
    dk.error("GET", "records", {"app": 1}, headers=login("mallory"), status=401, code="CB_WA01")
    dk.ok("POST", "record", {"app": 1, "record": {}})
    dk.error(
        "PUT",
        "record/status",
        {"app": 1, "id": 1, "action": "Send", "assignee": "zoe"},
        status=400,
        code="CB_VA01",
    )
    dk.ok("PUT", "record/status", {"app": 1, "id": 1, "action": "Send", "assignee": "bob"})
    dk.error("PUT", "record/assignees", {"app": 1, "id": 1, "assignees": ["zoe"]}, status=400, code="CB_VA01")


def test_without_a_directory_anything_goes():
    free = definition()
    del free["directory"]
    with Sandbox.from_definition(free) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        k.ok("POST", "record", {"app": 1, "record": rec(owner=[{"code": "zoe"}])}, headers=login("mallory"))
        assert k.ok("GET", "record", {"app": 1, "id": 1})["record"]["owner"]["value"] == [
            {"code": "zoe", "name": "zoe"}
        ]


def test_a_bad_directory_or_an_assignee_outside_it_is_refused():
    with pytest.raises(SandboxDefinitionError, match="directory users: give a code"):
        Sandbox.from_definition(definition(users=[7]))
    with pytest.raises(SandboxDefinitionError, match="`directory` takes"):
        Sandbox.from_definition(definition(people=["a"]))
    with pytest.raises(SandboxDefinitionError, match="assignee\\(s\\) bob are not users of the directory"):
        Sandbox.from_definition(definition(users=["alice"]))


def test_entity_columns_in_tables_are_checked_too(dk: Kintone):
    row = {"value": {"who": {"value": [{"code": "bob"}]}}}
    dk.ok("POST", "record", {"app": 1, "record": rec(steps=[row])})
    (stored,) = dk.ok("GET", "record", {"app": 1, "id": 1})["record"]["steps"]["value"]
    assert stored["value"]["who"]["value"] == [{"code": "bob", "name": "Bob Smith"}]
    bad = [row, {"value": {"who": {"value": [{"code": "zoe"}]}}}]
    err = dk.error("POST", "record", {"app": 1, "record": rec(steps=bad)}, status=400, code="CB_VA01")
    assert list(err["errors"]) == ["record.steps.value[1].value.who.values.value"]
    # A row sent back by id without the column keeps its users.
    dk.ok(
        "PUT",
        "record",
        {"app": 1, "id": 1, "record": rec(steps=[{"id": stored["id"], "value": {"note": {"value": "n"}}}])},
    )
    (kept,) = dk.ok("GET", "record", {"app": 1, "id": 1})["record"]["steps"]["value"]
    assert kept["value"]["who"]["value"] == [{"code": "bob", "name": "Bob Smith"}]
