"""What an API call is and how it fails: ``Call`` and ``Auth``, ``ApiError`` with Kintone's error
body, and the readers that turn a call's parameters into values or a ``CB_VA01``."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kintone import MAX_CONCURRENT_REQUESTS

MAX_IN_FLIGHT = MAX_CONCURRENT_REQUESTS  # requests the wsgi app handles at once, as Kintone does


def new_error_id() -> str:
    return secrets.token_urlsafe(15)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, errors: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = dict(errors) if errors else None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "id": new_error_id(), "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def invalid(problems: Mapping[str, Any]) -> ApiError:
    return ApiError(400, "CB_VA01", "Missing or invalid input.", problems)


def invalid_param(key: str, message: str) -> ApiError:
    return invalid({key: {"messages": [message]}})


def not_found(record_id: int) -> ApiError:
    return ApiError(404, "GAIA_RE01", f"The specified record (ID: {record_id}) is not found.")


@dataclass(frozen=True)
class Auth:
    """Who calls: a login name (``Administrator`` for API tokens and for anonymous calls)."""

    user: str = "Administrator"
    tokens: tuple[str, ...] = ()
    password: bool = False


@dataclass
class Call:
    method: str
    name: str  # the path between v1/ and .json, e.g. "records/status"
    guest: int | None
    params: dict[str, Any]
    auth: Auth = field(default_factory=Auth)


# -- parameter readers ---------------------------------------------------------------------


def optional_int_param(value: Any, key: str, *, minimum: int | None = 1) -> int | None:
    if value is None or value == "":
        return None
    return int_param(value, key, minimum=minimum)


def int_param(value: Any, key: str, *, minimum: int | None = 1) -> int:
    if value is None or value == "":
        raise invalid_param(key, "Required field.")
    if isinstance(value, bool):
        raise invalid_param(key, "Enter an integer value.")
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise invalid_param(key, "Enter an integer value.")
    if minimum is not None and value < minimum:
        raise invalid_param(key, f"Enter {minimum} or more.")
    return value


def revision_param(value: Any, key: str) -> int | None:
    """An expected revision; absent or -1 means "do not check"."""
    rev = optional_int_param(value, key, minimum=-1)
    return None if rev in (None, -1) else rev


def bool_param(value: Any, key: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid_param(key, "Enter true or false.")


def list_param(value: Any, key: str, *, required: bool = True) -> list[Any]:
    if value is None:
        if required:
            raise invalid_param(key, "Required field.")
        return []
    if not isinstance(value, list):
        raise invalid_param(key, "Enter an array.")
    return value


def optional_str_param(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    return str_param(value, key)


def str_param(value: Any, key: str) -> str:
    if value is None or value == "":
        raise invalid_param(key, "Required field.")
    if not isinstance(value, str):
        raise invalid_param(key, "Enter a string.")
    return value
