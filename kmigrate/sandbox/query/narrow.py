"""What an index can narrow a query to before its predicate runs: ``$id`` bounds and sets, the
values a text field must equal, and whether the order is by ``$id``.

The sandbox's store answers these from its primary key (``$id``) and its unique values (a
"prohibit duplicate values" field), as Kintone answers a lookup by id or key without reading the
app; every record it reads is still tested by the compiled predicate and the order is still the
query's, so an index only decides which records are read, never which are returned. Each hint
is therefore a superset: only conjuncts of the top-level ``and`` are used, and anything not
understood here narrows nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .nodes import BoolOp, Comparison, Condition, OrderKey, Value

# SQLite's INTEGER range: a bound beyond it is clamped (no stored id lies outside it).
ID_MIN = -(2**63)
ID_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Narrowing:
    """``id_low``..``id_high`` (inclusive) and ``ids`` (None: any) bound the ``$id`` of every
    record the query can select; ``keys``: (field code, values) where the field's value must be
    one of the values (each non-empty); ``id_order``: the records come in ``$id`` order
    (True: descending, False: ascending, None: some other order)."""

    id_low: int = ID_MIN
    id_high: int = ID_MAX
    ids: frozenset[int] | None = None
    keys: tuple[tuple[str, frozenset[str]], ...] = ()
    id_order: bool | None = True

    @property
    def empty(self) -> bool:
        """No record can match (``$id`` bounds that cross, or an empty set of ids)."""
        return self.id_low > self.id_high or (self.ids is not None and not self.ids)

    def allowed_ids(self) -> list[int] | None:
        """The ids within bounds, sorted, when a set of ids is known; else None."""
        if self.ids is None:
            return None
        return sorted(i for i in self.ids if self.id_low <= i <= self.id_high)


# What the compiler tells about a field (its type, the SUBTABLE holding it) and a literal.
FieldInfo = Callable[[str], tuple[str, str | None]]
NumberOf = Callable[[Value, str], Decimal | None]
TextOf = Callable[[Value, str], str]

_TEXT_KEYS = frozenset({"SINGLE_LINE_TEXT", "LINK"})  # `=`/`in` compare the very string stored


def narrowing(
    condition: Condition | None,
    order: tuple[OrderKey, ...],
    field_info: FieldInfo,
    number: NumberOf,
    text: TextOf,
) -> Narrowing:
    """The narrowing of a compiled (so already checked) query."""
    low, high, ids = ID_MIN, ID_MAX, None
    keys: dict[str, frozenset[str]] = {}
    for part in _conjuncts(condition):
        ftype, table = field_info(part.field)
        if table is not None:
            continue
        if ftype == "__ID__" and part.field == "$id":
            found = _id_values(part, number)
            if found is not None:
                ids = found if ids is None else ids & found
            lo, hi = _id_bounds(part, number)
            low, high = max(low, lo), min(high, hi)
        elif ftype in _TEXT_KEYS and part.op in ("=", "in"):
            values = frozenset(text(v, part.field) for v in part.values)
            if "" in values:
                continue  # the empty value is in no index
            keys[part.field] = values & keys[part.field] if part.field in keys else values
    if not order:
        id_order: bool | None = True  # Kintone's default: `$id desc`
    elif order[0].field == "$id" and field_info("$id")[0] == "__ID__":
        id_order = order[0].descending  # ids are unique: later keys never break a tie
    else:
        id_order = None
    return Narrowing(low, high, ids, tuple(sorted(keys.items())), id_order)


def _conjuncts(condition: Condition | None) -> Iterator[Comparison]:
    """The comparisons every selected record must satisfy: the top-level ``and``'s, flattened."""
    if condition is None:
        return
    if isinstance(condition, Comparison):
        yield condition
    elif isinstance(condition, BoolOp) and condition.op == "and":
        for part in condition.parts:
            yield from _conjuncts(part)


def _id_values(part: Comparison, number: NumberOf) -> frozenset[int] | None:
    if part.op not in ("=", "in"):
        return None
    return frozenset(_integers(number(v, "$id") for v in part.values))


def _integers(numbers: Iterable[Decimal | None]) -> Iterator[int]:
    # `$id in ("")` (None) and `$id = 2.5` select nothing: no id is empty or fractional.
    for n in numbers:
        if n is not None and ID_MIN <= n <= ID_MAX and n == n.to_integral_value():
            yield int(n)


def _id_bounds(part: Comparison, number: NumberOf) -> tuple[int, int]:
    if part.op not in (">", ">=", "<", "<="):
        return ID_MIN, ID_MAX
    n = number(part.values[0], "$id")
    if n is None:  # refused by the compiler already; narrow nothing
        return ID_MIN, ID_MAX
    if n > ID_MAX:
        return (ID_MAX + 1, ID_MAX) if part.op in (">", ">=") else (ID_MIN, ID_MAX)
    if n < ID_MIN:
        return (ID_MIN, ID_MAX) if part.op in (">", ">=") else (ID_MIN, ID_MIN - 1)
    floor, ceil = int(n.to_integral_value(ROUND_FLOOR)), int(n.to_integral_value(ROUND_CEILING))
    if part.op == ">":
        return floor + 1, ID_MAX
    if part.op == ">=":
        return ceil, ID_MAX
    if part.op == "<":
        return ID_MIN, ceil - 1
    return ID_MIN, floor
