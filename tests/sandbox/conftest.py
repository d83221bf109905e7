"""Fixtures for the sandbox tests: a sandbox with three apps and a client that checks every
answer: 200s against the official OpenAPI schema, errors against Kintone's error shape."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

from .openapi import validate_response

DEFINITION: dict[str, Any] = {
    "apps": [
        {  # the shorthand
            "id": 1,
            "name": "Orders",
            "code": "ORD",
            "fields": {
                "title": {"type": "SINGLE_LINE_TEXT", "required": True, "maxLength": 20},
                "order_no": {"type": "SINGLE_LINE_TEXT", "unique": True},
                "priority": {"type": "DROP_DOWN", "options": ["High", "Low"]},
                "amount": {"type": "NUMBER", "minValue": 0, "maxValue": 1000},
                "tags": {"type": "CHECK_BOX", "options": ["a", "b", "c"]},
                "due": "DATE",
                "at": "TIME",
                "when": "DATETIME",
                "owner": "USER_SELECT",
                "notes": {"type": "MULTI_LINE_TEXT", "defaultValue": "none yet"},
                "items": {
                    "type": "SUBTABLE",
                    "fields": {"name": {"type": "SINGLE_LINE_TEXT", "required": True}, "qty": "NUMBER"},
                },
            },
            "process": {
                "enable": True,
                "states": [
                    "Draft",
                    {"name": "In review", "assignee": {"type": "ONE", "entities": ["alice", "bob"]}},
                    {"name": "Done", "assignee": {"type": "ANY", "entities": ["carol"]}},
                ],
                "actions": [
                    {"name": "Submit", "from": "Draft", "to": "In review"},
                    {"name": "Approve", "from": "In review", "to": "Done"},
                    {"name": "Reject", "from": "In review", "to": "Draft"},
                ],
            },
        },
        {  # Kintone's own shapes (fields.json properties), with API tokens
            "id": 2,
            "name": "Customers",
            "api_tokens": [
                "full-token",
                {"token": "view-token", "permissions": ["view"]},
                {"token": "add-token", "permissions": ["view", "add"]},
            ],
            "properties": {
                "code": {
                    "type": "SINGLE_LINE_TEXT",
                    "code": "code",
                    "label": "Code",
                    "required": "true",
                    "unique": "true",
                },
                "name": {"type": "SINGLE_LINE_TEXT", "code": "name", "label": "Name"},
                "tier": {
                    "type": "RADIO_BUTTON",
                    "code": "tier",
                    "label": "Tier",
                    "options": {
                        "Gold": {"label": "Gold", "index": "0"},
                        "Silver": {"label": "Silver", "index": "1"},
                    },
                    "defaultValue": "Silver",
                },
                "points": {"type": "NUMBER", "code": "points", "label": "Points", "unique": True},
                "Record_no": {"type": "RECORD_NUMBER", "code": "Record_no", "label": "Record no"},
            },
        },
        {  # a guest-space app with process management in app/status.json's shape
            "id": 3,
            "name": "Guest tasks",
            "guest_space_id": 7,
            "fields": {"title": "SINGLE_LINE_TEXT"},
            "process": {
                "enable": True,
                "states": {
                    "Open": {"name": "Open", "index": "0", "assignee": {"type": "ONE", "entities": []}},
                    "Closed": {
                        "name": "Closed",
                        "index": "1",
                        "assignee": {
                            "type": "ALL",
                            "entities": [{"entity": {"type": "USER", "code": "dave"}, "includeSubs": False}],
                        },
                    },
                },
                "actions": [{"name": "Close", "from": "Open", "to": "Closed", "filterCond": ""}],
            },
        },
        {"id": 4, "name": "Plain", "fields": {"title": "SINGLE_LINE_TEXT"}},
    ]
}


class Kintone:
    """A thin caller: ``k.post("records", {...})`` -> the response, checked as described above."""

    def __init__(self, client: httpx.Client):
        self.client = client

    def call(
        self,
        method: str,
        api: str,
        body: Any = None,
        *,
        params: Any = None,
        guest: int | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        path = f"/k/guest/{guest}/v1/{api}.json" if guest else f"/k/v1/{api}.json"
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if raw is not None:
            kwargs["content"] = raw
        elif body is not None:
            kwargs["json"] = body
        response = self.client.request(method, path, **kwargs)
        check(response, path, method)
        return response

    def get(self, api: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.call("GET", api, body, **kw)

    def post(self, api: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.call("POST", api, body, **kw)

    def put(self, api: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.call("PUT", api, body, **kw)

    def delete(self, api: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.call("DELETE", api, body, **kw)

    def ok(self, method: str, api: str, body: Any = None, **kw: Any) -> Any:
        response = self.call(method, api, body, **kw)
        assert response.status_code == 200, response.text
        return response.json()

    def error(
        self, method: str, api: str, body: Any = None, *, status: int, code: str, **kw: Any
    ) -> dict[str, Any]:
        response = self.call(method, api, body, **kw)
        data = response.json()
        assert (response.status_code, data.get("code")) == (status, code), response.text
        return data


def check(response: httpx.Response, path: str, method: str) -> None:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    if response.status_code == 200:
        validate_response(path, method, body)
    elif "results" in body:  # a failed bulk request
        failed = [r for r in body["results"] if r]
        assert len(failed) == 1 and {"code", "id", "message"} <= set(failed[0]), body
    else:
        assert {"code", "id", "message"} <= set(body) and isinstance(body["message"], str), body


@pytest.fixture
def definition() -> dict[str, Any]:
    return copy.deepcopy(DEFINITION)


@pytest.fixture
def sandbox(definition: dict[str, Any]) -> Iterator[Sandbox]:
    sb = Sandbox.from_definition(definition)
    yield sb
    sb.close()


@pytest.fixture
def k(sandbox: Sandbox) -> Iterator[Kintone]:
    with httpx.Client(base_url=SANDBOX_BASE_URL, transport=sandbox.transport()) as client:
        yield Kintone(client)


def rec(**values: Any) -> dict[str, Any]:
    """Kintone's write shape from keyword arguments."""
    return {code: {"value": value} for code, value in values.items()}
