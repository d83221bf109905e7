"""The OpenAPI check itself must be able to fail, or the schema tests prove nothing."""

from __future__ import annotations

import jsonschema
import pytest

from .openapi import validate_response


@pytest.mark.parametrize(
    "path, method, body",
    [
        ("/k/v1/records.json", "post", {"ids": [{"id": 1}], "revisions": ["1"]}),
        ("/k/v1/records.json", "post", {"ids": ["one"]}),
        ("/k/v1/record.json", "get", {"record": {"title": {"type": "NOT_A_TYPE", "value": "x"}}}),
        ("/k/v1/records/cursor.json", "get", {"records": [], "next": "yes"}),
        ("/k/v1/bulkRequest.json", "post", {"results": {}}),
        ("/k/guest/7/v1/app/status.json", "get", {"enable": "true"}),
    ],
)
def test_wrong_shapes_are_rejected(path, method, body):
    with pytest.raises(jsonschema.ValidationError):
        validate_response(path, method, body)


def test_kintone_string_numbers_and_nulls_are_accepted():
    validate_response(
        "/k/v1/records.json", "get", {"records": [{"d": {"type": "DATE", "value": None}}], "totalCount": None}
    )
    validate_response("/k/v1/record.json", "post", {"id": "12", "revision": "3"})


def test_unknown_path_is_an_error():
    with pytest.raises(KeyError):
        validate_response("/k/v1/nothing.json", "get", {})
