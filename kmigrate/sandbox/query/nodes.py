"""The syntax tree of a query: what the parser builds and the compiler reads. Frozen, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

Operator: TypeAlias = Literal[
    "=",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "in",
    "not in",
    "like",
    "not like",
    "is empty",
    "is not empty",
]
ValueKind: TypeAlias = Literal["string", "number", "function"]


@dataclass(frozen=True, slots=True)
class Value:
    """A literal or a function call on the right of an operator."""

    kind: ValueKind
    text: str  # the string's value, the number as written, or the function's upper-case name
    args: tuple[str, ...] = ()  # function arguments as written, upper-cased


@dataclass(frozen=True, slots=True)
class Comparison:
    """``field op values``: one value for most operators, several for in / not in, none for is empty."""

    field: str
    op: Operator
    values: tuple[Value, ...]
    pos: int  # where the field code starts, 1-based


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: Literal["and", "or"]
    parts: tuple[Condition, ...]


Condition: TypeAlias = Comparison | BoolOp


@dataclass(frozen=True, slots=True)
class OrderKey:
    field: str
    descending: bool


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A whole query: the condition (None when there is none), order by, limit and offset as written."""

    condition: Condition | None
    order: tuple[OrderKey, ...]
    limit: int | None
    offset: int | None
