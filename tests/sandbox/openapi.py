"""Validate sandbox answers against Kintone's official OpenAPI description (tests/openapi/).

``validate_response(path, method, body)`` picks the 200 response schema of the path (a guest
path is looked up as its ``/k/guest/{guestSpaceId}/v1/`` twin), resolves ``$ref``s inside the
spec and validates with jsonschema. Two deliberate allowances, both because real Kintone
answers that way while the spec says otherwise: ``integer`` (the spec's ``format: long``)
also matches a numeric string (Kintone sends every id, revision and count as a string, and
``""`` for an unset bound), and ``null`` matches ``string``/``integer`` (an empty DATE or
DROP_DOWN value, ``totalCount`` when not asked for), and matches any type whose description says Kintone
returns ``null`` (app/status.json's ``states`` and ``actions``). And ``oneOf`` is checked as ``anyOf``: the spec's
alternatives for PUT records.json (plain / upsert) overlap, so every answer matches both and a
strict ``oneOf`` would reject them all.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.yaml"
_SPEC_URI = "urn:kintone-openapi"
_GUEST = re.compile(r"^/k/guest/\d+/v1/")


@functools.cache
def spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def _is_long(checker: Any, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d*", value) is not None)


def _is_string(checker: Any, value: Any) -> bool:
    return value is None or isinstance(value, str)


_plain_type = jsonschema.Draft202012Validator.VALIDATORS["type"]


def _type(validator: Any, types: Any, instance: Any, schema: dict[str, Any]) -> Any:
    if instance is None and "`null` is returned" in schema.get("description", ""):
        return
    yield from _plain_type(validator, types, instance, schema)


_KintoneValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_long).redefine(
        "string", _is_string
    ),
    validators={"oneOf": jsonschema.Draft202012Validator.VALIDATORS["anyOf"], "type": _type},
)


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(
        _SPEC_URI, Resource.from_contents(spec(), default_specification=DRAFT202012)
    )


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_schema_ref(path: str, method: str, status: str = "200") -> str:
    path = _GUEST.sub("/k/guest/{guestSpaceId}/v1/", path)
    operation = spec()["paths"][path][method.lower()]  # KeyError: no such path/method in the spec
    operation["responses"][status]["content"]["application/json"]["schema"]
    return f"{_SPEC_URI}#/" + _pointer(
        "paths", path, method.lower(), "responses", status, "content", "application/json", "schema"
    )


def validate_response(path: str, method: str, body: Any, status: str = "200") -> None:
    """Raise ``jsonschema.ValidationError`` if ``body`` does not fit the spec's response."""
    validator = _KintoneValidator({"$ref": response_schema_ref(path, method, status)}, registry=_registry())
    validator.validate(body)
