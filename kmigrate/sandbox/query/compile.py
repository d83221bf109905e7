"""The syntax tree -> a ``Query``: closures over each record, so filtering many records never
reads the text again. Fields, operators and options are checked here against the app's fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from .errors import (
    QueryError,
    no_such_option,
    not_sortable,
    operator_not_allowed,
    syntax_error,
    table_equality,
    unknown_field,
)
from .fieldtypes import (
    ALLOWED_OPS,
    EQ,
    IN,
    IS,
    KIND_OF_TYPE,
    LIKE,
    OPTION_TYPES,
    SORTABLE_KINDS,
    SYSTEM_FIELDS,
    TIME_RE,
    TRAILING_DIGITS,
    Reader,
    read_number,
    read_text,
    readers,
)
from .functions import DATE_FUNCTIONS, date_function, no_args, unknown_function
from .narrow import Narrowing, narrowing
from .nodes import BoolOp, Comparison, Condition, Operator, OrderKey, Value
from .parser import parse

MAX_LIMIT = 500
MAX_OFFSET = 10_000
DEFAULT_LIMIT = 100  # what GET records.json returns when the query has no limit
SANDBOX_LOGIN_USER = "Administrator"  # API-token calls act as "Administrator" in Kintone

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
Test = Callable[[Any], bool]  # a test on one value, already read by the field's reader
SortKey = Callable[[Record], tuple[Any, ...]]
R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class _Field:
    code: str
    type: str
    kind: str
    table: str | None  # the SUBTABLE holding it, when the caller said so
    reader: Reader


class _Compiler:
    def __init__(
        self,
        fields: Mapping[str, str],
        subtables: Mapping[str, str],
        options: Mapping[str, Collection[str]],
        now: datetime,
        login_user: str,
    ) -> None:
        self.fields = fields
        self.subtables = subtables
        self.options = options
        self.now = now
        self.tz = now.tzinfo or UTC
        self.login_user = login_user
        self.readers = readers(self.tz)

    # -- fields

    def field(self, code: str) -> _Field:
        ftype = self.fields.get(code) or SYSTEM_FIELDS.get(code)
        if ftype is None:
            raise unknown_field(code)
        kind = KIND_OF_TYPE.get(ftype)
        reader = self.readers[kind] if kind else read_text
        return _Field(code, ftype, kind or "", self.subtables.get(code), reader)

    # -- conditions

    def compile(self, node: Condition) -> Predicate:
        if isinstance(node, Comparison):
            return self.compile_condition(node)
        if node.op == "or":
            return _any_of([self.compile(p) for p in node.parts])
        return self.compile_and(node)

    def compile_and(self, node: BoolOp) -> Predicate:
        # Kintone joins positive conditions on fields of one table within one `and`: they must
        # hold on the same row (observed on a real tenant). Group them per table.
        groups: dict[str, list[tuple[_Field, Test]]] = {}
        preds: list[Predicate] = []
        for part in node.parts:
            if isinstance(part, Comparison):
                f = self.field(part.field)
                if f.table and not _is_negative(part.op):
                    groups.setdefault(f.table, []).append((f, self.value_test(f, part)))
                    continue
            preds.append(self.compile(part))
        for table, tests in groups.items():
            if len(tests) == 1:
                f, test = tests[0]
                preds.append(_any_row(table, f, test))
            else:
                preds.append(_same_row(table, tests))
        return _all_of(preds)

    def compile_condition(self, cond: Comparison) -> Predicate:
        f = self.field(cond.field)
        if f.table and cond.op in EQ:
            raise table_equality(f.code, cond.op)
        test = self.value_test(f, cond)
        negative = _is_negative(cond.op)
        # On a table field a negative condition holds when the table has rows and none of them
        # matches the positive form (observed: a record with no rows is not returned).
        row_test = (
            self.value_test(f, Comparison(cond.field, _POSITIVE[cond.op], cond.values, cond.pos))
            if negative
            else test
        )
        if f.table:
            return _no_row(f.table, f, row_test) if negative else _any_row(f.table, f, row_test)
        code, read = f.code, f.reader

        def predicate(rec: Record) -> bool:
            cell = rec.get(code)
            if cell is None:
                # Not at the top level: the field may sit in a table the caller did not name.
                rows = _find_rows(rec, code)
                if rows is not None:
                    hit = any(row_test(read(_cell_value(row, code))) for row in rows)
                    return bool(rows) and not hit if negative else hit
                return test(read(None))
            return test(read(cell.get("value")))

        return predicate

    def value_test(self, f: _Field, cond: Comparison) -> Test:
        """The test on one read value (already passed through the field's reader)."""
        op = cond.op
        choices = self.options.get(f.code) if f.type in OPTION_TYPES else None
        if choices is not None and op in EQ | IN:
            # Observed: Kintone checks the option values before the operator.
            for value in cond.values:
                if value.kind != "function" and value.text != "" and value.text not in choices:
                    raise no_such_option(f.code, value.text)
        allowed = ALLOWED_OPS.get(f.type)
        if allowed is None or op not in allowed:
            raise operator_not_allowed(f.code, op)
        kind = f.kind
        if op in IS:
            empty: Test = _is_empty_list if kind == "files" else _is_blank
            return empty if op == "is empty" else _negate(empty)
        if op in LIKE:
            needle = self.like_text(cond.values[0], f)

            def like_a_name(names: list[str]) -> bool:
                return any(needle in name.lower() for name in names)

            def like_the_text(v: str) -> bool:
                return needle in v.lower()

            like: Test = like_a_name if kind == "files" else like_the_text
            return like if op == "like" else _negate(like)
        if op in IN:
            member = self.in_test(f, cond.values)
            return member if op == "in" else _negate(member)
        # = != < > <= >=
        if kind in ("number", "record_number"):
            return self.number_test(f, op, cond.values[0])
        if kind in ("date", "time", "datetime"):
            return self.span_test(f, op, cond.values[0])
        # text and STATUS: only = and != are allowed here
        s = self.plain_text(cond.values[0], f)
        if op == "=":
            return lambda v: v == s
        return lambda v: v != s

    # -- literals

    def plain_text(self, value: Value, f: _Field) -> str:
        if value.kind == "function":
            if value.text == "LOGINUSER" and f.kind in ("entities", "entity"):
                no_args(value)
                return self.login_user
            if value.text in DATE_FUNCTIONS or value.text == "LOGINUSER":
                raise syntax_error(f"{value.text}() cannot be compared with the field {f.code}")
            raise unknown_function(value)
        return value.text

    def like_text(self, value: Value, f: _Field) -> str:
        if value.kind == "function":
            raise syntax_error(f'"like" takes a string, not {value.text}()')
        return value.text.lower()

    def number(self, value: Value, f: _Field) -> Decimal | None:
        text = self.plain_text(value, f)
        if text == "":
            return None
        if f.kind == "record_number":
            m = TRAILING_DIGITS.search(text)
            if m and (m.start() == 0 or text[m.start() - 1] == "-"):
                return Decimal(m.group(1))
        try:
            d = Decimal(text)
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite():
            raise syntax_error(f'"{text}" is not a number, and {f.code} is a number field')
        return d

    def in_test(self, f: _Field, values: Sequence[Value]) -> Test:
        if f.kind in ("number", "record_number"):
            numbers = {self.number(v, f) for v in values}
            return numbers.__contains__  # None in the set means `in ("")`: the empty value
        texts = frozenset(self.plain_text(v, f) for v in values)
        if f.kind in ("strings", "entities"):
            wants_empty = "" in texts

            def any_member(v: list[str]) -> bool:
                if not v:
                    return wants_empty
                for x in v:
                    if x in texts:
                        return True
                return False

            return any_member
        return texts.__contains__

    def number_test(self, f: _Field, op: str, value: Value) -> Test:
        n = self.number(value, f)
        if n is None:
            if op == "=":
                return _is_none
            if op == "!=":
                return _is_not_none
            raise syntax_error(f'"{op}" needs a number, and "" was given for {f.code}')
        return _compare(op, n, n)

    def span_test(self, f: _Field, op: str, value: Value) -> Test:
        span = self.span(f, value)
        if span is None:
            if op == "=":
                return _is_none
            if op == "!=":
                return _is_not_none
            raise syntax_error(f'"{op}" needs a value, and "" was given for {f.code}')
        return _compare(op, *span)

    def span(self, f: _Field, value: Value) -> tuple[int, int] | None:
        """The literal as a half-open range [lo, hi) in the field's own unit.

        DATE counts days, DATETIME minutes since the epoch, TIME minutes since midnight. A
        datetime compared with a date covers that whole day, as in Kintone.
        """
        if value.kind == "function":
            if f.kind == "time" or value.text not in DATE_FUNCTIONS:
                if value.text in DATE_FUNCTIONS or value.text == "LOGINUSER":
                    raise syntax_error(f"{value.text}() cannot be compared with the field {f.code}")
                raise unknown_function(value)
            found = date_function(value, self.now.astimezone(self.tz))
            if isinstance(found, datetime):
                if f.kind == "date":
                    d = found.date()
                    return self.day_span(f, d, d + timedelta(days=1))
                m = int(found.timestamp()) // 60
                return m, m + 1
            return self.day_span(f, *found)
        text = value.text
        if text == "":
            return None
        if f.kind == "time":
            hm = TIME_RE.match(text)
            if not hm or int(hm.group(1)) > 23 or int(hm.group(2)) > 59:
                raise syntax_error(f'"{text}" is not a time (HH:MM) for {f.code}')
            t = int(hm.group(1)) * 60 + int(hm.group(2))
            return t, t + 1
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                d = date.fromisoformat(text)
            except ValueError:
                raise syntax_error(f'"{text}" is not a date') from None
            return self.day_span(f, d, d + timedelta(days=1))
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise syntax_error(f'"{text}" is not a date or a datetime for {f.code}') from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        if f.kind == "date":
            d = dt.astimezone(self.tz).date()
            return self.day_span(f, d, d + timedelta(days=1))
        m = int(dt.timestamp()) // 60
        return m, m + 1

    def day_span(self, f: _Field, start: date, end: date) -> tuple[int, int]:
        if f.kind == "date":
            return start.toordinal(), end.toordinal()
        # Days begin at midnight in the sandbox's time zone (Kintone uses the user's).
        lo = int(datetime(start.year, start.month, start.day, tzinfo=self.tz).timestamp()) // 60
        hi = int(datetime(end.year, end.month, end.day, tzinfo=self.tz).timestamp()) // 60
        return lo, hi

    # -- order by

    def sort_key(self, key: OrderKey) -> SortKey:
        f = self.field(key.field)
        if f.table or f.kind not in SORTABLE_KINDS:
            raise not_sortable(f.code)
        code, read = f.code, f.reader

        def sort_key(rec: Record) -> tuple[Any, ...]:
            cell = rec.get(code)
            v = read(cell.get("value") if cell is not None else None)
            # Empty values sort before every value ascending, after every value descending.
            # UNCERTAIN: this is MySQL's NULL order; Kintone's was not observed.
            return (0,) if v is None or v == "" else (1, v)

        return sort_key


_POSITIVE: dict[Operator, Operator] = {
    "not in": "in",
    "not like": "like",
    "is not empty": "is empty",
    "!=": "=",
}


def _is_negative(op: Operator) -> bool:
    return op in _POSITIVE


def _all_of(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda rec: a(rec) and b(rec)
    if len(preds) == 3:
        a, b, c = preds
        return lambda rec: a(rec) and b(rec) and c(rec)
    return lambda rec: all(p(rec) for p in preds)


def _any_of(preds: list[Predicate]) -> Predicate:
    if len(preds) == 2:
        a, b = preds
        return lambda rec: a(rec) or b(rec)
    if len(preds) == 3:
        a, b, c = preds
        return lambda rec: a(rec) or b(rec) or c(rec)
    return lambda rec: any(p(rec) for p in preds)


def _negate(test: Test) -> Test:
    return lambda v: not test(v)


def _is_none(v: Any) -> bool:
    return v is None


def _is_not_none(v: Any) -> bool:
    return v is not None


def _is_blank(v: str) -> bool:
    # Kintone's "empty": nothing but spaces, tabs and line breaks.
    return not v.strip()


def _is_empty_list(v: list[str]) -> bool:
    return not v


def _compare(op: str, lo: Any, hi: Any) -> Test:
    """Compare a read value with the range [lo, hi) (for numbers lo == hi == the number).

    An empty value is never <, >, <= or >= anything; it is != everything that is not empty.
    """
    if lo == hi:  # a number: an exact point
        if op == "=":
            return lambda v: v == lo
        if op == "!=":
            return lambda v: v != lo
        if op == "<":
            return lambda v: v is not None and v < lo
        if op == "<=":
            return lambda v: v is not None and v <= lo
        if op == ">":
            return lambda v: v is not None and v > lo
        return lambda v: v is not None and v >= lo
    if op == "=":
        return lambda v: v is not None and lo <= v < hi
    if op == "!=":
        return lambda v: v is None or not lo <= v < hi
    if op == "<":
        return lambda v: v is not None and v < lo
    if op == "<=":
        return lambda v: v is not None and v < hi
    if op == ">":
        return lambda v: v is not None and v >= hi
    return lambda v: v is not None and v >= lo


# --------------------------------------------------------------------------- table rows


def _rows_of(rec: Record, table: str) -> list[Mapping[str, Any]]:
    """The rows of a table, each row being {code: {type, value}}."""
    cell = rec.get(table)
    rows = cell.get("value") if cell is not None else None
    return [r.get("value") or {} for r in rows or ()]


def _find_rows(rec: Record, code: str) -> list[Mapping[str, Any]] | None:
    """The rows of the record's table that holds `code`, or None when no table does."""
    for cell in rec.values():
        if isinstance(cell, Mapping) and cell.get("type") == "SUBTABLE":
            rows = [r.get("value") or {} for r in cell.get("value") or ()]
            if any(code in row for row in rows):
                return rows
    return None


def _cell_value(row: Mapping[str, Any], code: str) -> Any:
    cell = row.get(code)
    return cell.get("value") if cell is not None else None


def _any_row(table: str, f: _Field, test: Test) -> Predicate:
    code, read = f.code, f.reader
    return lambda rec: any(test(read(_cell_value(row, code))) for row in _rows_of(rec, table))


def _no_row(table: str, f: _Field, positive: Test) -> Predicate:
    code, read = f.code, f.reader

    def predicate(rec: Record) -> bool:
        rows = _rows_of(rec, table)
        return bool(rows) and not any(positive(read(_cell_value(row, code))) for row in rows)

    return predicate


def _same_row(table: str, tests: list[tuple[_Field, Test]]) -> Predicate:
    def predicate(rec: Record) -> bool:
        for row in _rows_of(rec, table):
            if all(test(f.reader(_cell_value(row, f.code))) for f, test in tests):
                return True
        return False

    return predicate


# --------------------------------------------------------------------------- the query


def _match_all(rec: Record) -> bool:
    return True


def _id_key(rec: Record) -> Decimal:
    cell = rec.get("$id")
    n = read_number(cell.get("value") if cell is not None else None)
    return n if n is not None else Decimal(0)


@dataclass(frozen=True)
class Query:
    """A parsed query: a record predicate, an order and a window.

    ``limit`` and ``offset`` are None when the query does not give them (GET records.json then
    uses ``DEFAULT_LIMIT`` and 0; a cursor query must give neither).
    """

    text: str
    limit: int | None
    offset: int | None
    order_by: tuple[tuple[str, bool], ...]  # (field code, descending), as written
    has_condition: bool
    _predicate: Predicate = field(repr=False, compare=False)
    _sort_keys: tuple[tuple[SortKey, bool], ...] = field(repr=False, compare=False)
    # Which records an index may limit the reading to (``narrow``); the predicate still decides.
    narrowing: Narrowing = field(default=Narrowing(), repr=False, compare=False)

    def matches(self, record: Record) -> bool:
        return self._predicate(record)

    def filter(self, records: Iterable[R]) -> list[R]:
        predicate = self._predicate
        return [r for r in records if predicate(r)]

    def sort(self, records: Iterable[R]) -> list[R]:
        """The records in the query's order; `$id desc` without `order by`, as Kintone.

        Records equal on every key stay in `$id desc` order.
        """
        out = sorted(records, key=_id_key, reverse=True)
        for key, descending in reversed(self._sort_keys):
            out.sort(key=key, reverse=descending)  # stable, also with reverse=True
        return out

    def apply(self, records: Iterable[R], *, default_limit: int | None = DEFAULT_LIMIT) -> list[R]:
        """Filter, sort, then cut the offset/limit window, as GET records.json does."""
        ordered = self.sort(self.filter(records))
        start = self.offset or 0
        size = self.limit if self.limit is not None else default_limit
        return ordered[start:] if size is None else ordered[start : start + size]


def parse_query(
    text: Any,
    fields: Mapping[str, str],
    *,
    subtables: Mapping[str, str] | None = None,
    options: Mapping[str, Collection[str]] | None = None,
    now: datetime | None = None,
    login_user: str = SANDBOX_LOGIN_USER,
) -> Query:
    """Parse and compile a Kintone query against an app's fields.

    ``fields`` maps field code -> Kintone field type, fields inside tables included.
    ``subtables`` maps a table's inner field code -> the SUBTABLE's code; without it the table
    is found in each record, and the same-row rule for `and` is not applied.
    ``options`` maps a DROP_DOWN, RADIO_BUTTON, CHECK_BOX or MULTI_SELECT field's code -> its
    options (and the STATUS field's code -> the process's states): a value outside them is
    GAIA_IQ10, as in Kintone. Fields it does not name are not checked.
    ``now`` fixes the clock for TODAY(), NOW() and the other date functions; its time zone is
    the one days are counted in (default: the current time in UTC).
    """
    if not isinstance(text, str):
        raise syntax_error("the query must be a string")
    parsed = parse(text)
    limit, offset = parsed.limit, parsed.offset
    if limit is not None:
        if limit > MAX_LIMIT:
            raise QueryError("GAIA_QU01", f"limit must be {MAX_LIMIT} or less.")
        if limit < 1:
            # UNCERTAIN: the code for limit 0 or below was not observed; CB_VA01 is our pick.
            raise syntax_error(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if offset is not None:
        if offset > MAX_OFFSET:
            raise QueryError("GAIA_QU02", f"offset must be {MAX_OFFSET:,} or less.")
        if offset < 0:
            raise syntax_error(f"offset must be between 0 and {MAX_OFFSET:,}, not {offset}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    compiler = _Compiler(fields, subtables or {}, options or {}, now, login_user)
    condition = parsed.condition
    predicate = compiler.compile(condition) if condition is not None else _match_all
    sort_keys = tuple((compiler.sort_key(k), k.descending) for k in parsed.order)
    narrowed = narrowing(
        condition,
        parsed.order,
        lambda code: (compiler.field(code).type, compiler.field(code).table),
        lambda value, code: compiler.number(value, compiler.field(code)),
        lambda value, code: compiler.plain_text(value, compiler.field(code)),
    )
    return Query(
        text=text,
        limit=limit,
        offset=offset,
        order_by=tuple((k.field, k.descending) for k in parsed.order),
        has_condition=condition is not None,
        _predicate=predicate,
        _sort_keys=sort_keys,
        narrowing=narrowed,
    )
