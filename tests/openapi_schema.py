"""Validate what a client *sends* against the vendored official OpenAPI description.

    from tests.openapi_schema import validate_request, validate_bulk_requests
    validate_bulk_requests(body)

Built on tests/sandbox/openapi.py (which loads the spec once and checks the sandbox's
*answers*, with Kintone's numeric strings allowed); requests are checked with the plain
Draft 2020-12 rules, since the client chooses what it sends.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

import jsonschema

from .sandbox.openapi import _SPEC_URI as _BASE
from .sandbox.openapi import (
    _registry,
    spec,  # noqa: F401  (re-exported for tests that read the spec)
)

# The payload schema of each API allowed inside a bulk request (method, api name).
BULK_PAYLOAD_SCHEMAS = {
    ("POST", "record"): "BulkRequestPostRecordPostForm",
    ("PUT", "record"): "BulkRequestPostRecordPutForm",
    ("PUT", "record/status"): "BulkRequestPostRecordStatusPutForm",
    ("PUT", "record/assignees"): "BulkRequestPostRecordAssigneesPutForm",
    ("DELETE", "records"): "BulkRequestPostRecordsDeleteForm",
    ("POST", "records"): "BulkRequestPostRecordsPostForm",
    ("PUT", "records"): "BulkRequestPostRecordsPutForm",
    ("PUT", "records/status"): "BulkRequestPostRecordsStatusPutForm",
}


def _pointer(*parts: str) -> str:
    return "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="~") for p in parts)


@functools.cache
def _validator(pointer: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"{_BASE}#/{pointer}"}, registry=_registry())


def _check(pointer: str, instance: Any) -> None:
    errors = sorted(_validator(pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:10]]
        raise AssertionError(f"not valid against {pointer}:\n  " + "\n  ".join(lines))


def validate_request(path: str, method: str, body: Any) -> None:
    """``body`` conforms to the JSON request body schema of ``method path``."""
    _check(
        _pointer("paths", path, method.lower(), "requestBody", "content", "application/json", "schema"), body
    )


def validate_schema(name: str, instance: Any) -> None:
    """``instance`` conforms to ``#/components/schemas/NAME``."""
    _check(_pointer("components", "schemas", name), instance)


def validate_bulk_requests(body: dict[str, Any]) -> None:
    """A bulk request body: the envelope, then each payload against its own API's schema (the
    envelope's ``anyOf`` alone would accept a payload meant for another API)."""
    validate_request("/k/v1/bulkRequest.json", "post", body)
    for index, request in enumerate(body["requests"]):
        api = request["api"]
        parts = api.strip("/").split("/")
        name = "/".join(parts[4:] if parts[1] == "guest" else parts[2:]).removesuffix(".json")
        schema = BULK_PAYLOAD_SCHEMAS.get((request["method"], name))
        assert schema is not None, (
            f"request {index}: {request['method']} {api} is not allowed in a bulk request"
        )
        validate_schema(schema, request["payload"])
