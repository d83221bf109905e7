"""Pydantic's validation errors of an operation made into messages a changeset's author reads.

Pydantic names union branches in its paths (``function-after[...]``, ``list[...]``) and reports
every branch that failed; ``operation_problems`` drops the branch names, keeps the deepest
explanation (or one "expected A or B"), and says which record and key each problem is at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .changeset import KINDS, AddOp, AssigneesOp, DeleteOp, RequestOp, StatusOp, UpdateOp, UpsertOp

# The keys each kind of operation takes, for "unknown key" messages.
BODY_FIELDS: dict[str, list[str]] = {
    kind: [name for name in model.model_fields if name != "source"]
    for kind, model in (
        ("add", AddOp),
        ("update", UpdateOp),
        ("upsert", UpsertOp),
        ("delete", DeleteOp),
        ("status", StatusOp),
        ("assignees", AssigneesOp),
        ("request", RequestOp),
    )
}


@dataclass(frozen=True)
class Problem:
    """One message, and where in the operation it belongs."""

    message: str
    path: tuple[Any, ...]  # inside the operation: (KIND, "records", 2, "title")
    record: int | None  # 1-based, when the problem is in one record
    key: bool = False  # point at the key itself (an unknown key), not its value


def operation_problems(exc: ValidationError) -> list[Problem]:
    """Each distinct problem of one operation's validation, in pydantic's order."""
    problems: list[Problem] = []
    seen: set[tuple[tuple[Any, ...], str]] = set()
    for err in simplify(exc.errors()):
        loc = tuple(err["loc"])
        record = None
        if len(loc) >= 3 and loc[1] == "records" and isinstance(loc[2], int):
            record = loc[2] + 1
        where = ".".join(str(p) for p in loc[1:]) if len(loc) > 1 else ""
        if err["type"] == "extra_forbidden":
            model = BODY_FIELDS.get(loc[0], []) if loc else []
            known = f"; known keys: {', '.join(model)}" if len(loc) == 2 and model else ""
            message = (
                f"unknown key `{loc[-1]}`" + (f" in {loc[0]}" if len(loc) == 2 else f" at `{where}`") + known
            )
            problem = Problem(message, loc, record, key=True)
        else:
            msg = err["msg"].removeprefix("Value error, ")
            message = f"`{where}`: {msg}" if where else msg
            if (
                err["type"] not in ("value_error", "assertion_error")
                and "input" in err
                and not isinstance(err["input"], (dict, list))
            ):
                message += f" (got {err['input']!r})"
            # A problem with the whole body (a model check) is shown at the operation's line.
            problem = Problem(message, loc if len(loc) > 1 else (), record)
        if (loc, problem.message) not in seen:
            seen.add((loc, problem.message))
            problems.append(problem)
    return problems


_UNION_TAG = re.compile(
    r"^(list\[|dict\[|union\[|function-|tagged-union|int$|str$|float$|bool$|[A-Z]\w*$|constrained-)"
)


_EXPECTED = {
    "list_type": "a list",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "text",
    "bool_type": "true/false",
    "float_type": "a number",
    "literal_error": None,
}


def simplify(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors made readable: no union-branch names in the paths; where a union failed
    in several branches, the deepest explanation, or one "expected A or B" for type mismatches."""
    out = []
    for err in errors:
        branch = [p for p in err["loc"] if isinstance(p, str) and _UNION_TAG.match(p) and p not in KINDS]
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p) and p not in KINDS)
        )
        out.append({**err, "loc": loc, "branch": branch})
    kept: list[dict[str, Any]] = []
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in out:
        is_type = err["type"] in _EXPECTED and err["type"] != "literal_error"
        deeper = any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"] for o in out
        )
        if is_type and deeper:
            continue
        if is_type:
            words = _EXPECTED[err["type"]]
            if err["type"] in ("model_type", "dict_type") and any("RefIds" in b for b in err["branch"]):
                words = "{ref: NAME}"
            first = merged.get(err["loc"])
            if first is not None:
                if words not in first["expected"]:
                    first["expected"].append(words)
                continue
            err = {**err, "expected": [words]}
            merged[err["loc"]] = err
        kept.append(err)
    for err in kept:
        if "expected" in err and len(err["expected"]) > 1:
            err["msg"] = f"expected {' or '.join(err['expected'])}"
    return kept


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        int: "a number",
        float: "a number",
        bool: "true/false",
    }.get(type(value), type(value).__name__)
