"""``fieldrules.value_checker`` (the validator's per-field rules, compiled once) against
``fieldrules.normalize`` (the one home of the rules, which the sandbox applies): the same
verdict and the same stored value on any value, for any field definition. Derandomized
(tests/conftest.py): the same examples on every run."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kmigrate.appschema import FieldDef
from kmigrate.fieldrules import REFUSED, Problems, normalize, value_checker

OPTIONS = ("Bronze", "Silver", "Gold", "", "0")

_lengths = st.one_of(st.none(), st.integers(min_value=0, max_value=12))
_bounds = st.one_of(
    st.none(),
    st.integers(min_value=-(10**13), max_value=10**13).map(Decimal),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1000, max_value=1000),
)


def _defs(*types: str, **more: Any) -> st.SearchStrategy[FieldDef]:
    return st.builds(FieldDef, code=st.just("f"), type=st.sampled_from(types), label=st.just("F"), **more)


fields = st.one_of(
    _defs(
        "SINGLE_LINE_TEXT", "MULTI_LINE_TEXT", "RICH_TEXT", "LINK", min_length=_lengths, max_length=_lengths
    ),
    _defs("NUMBER", min_value=_bounds, max_value=_bounds),
    _defs(
        "DROP_DOWN",
        "RADIO_BUTTON",
        "CHECK_BOX",
        "MULTI_SELECT",
        options=st.lists(st.sampled_from(OPTIONS), max_size=4, unique=True).map(tuple),
    ),
    _defs("DATE", "TIME", "DATETIME", "USER_SELECT", "FILE"),
)

_digits = st.text(alphabet="0123456789", min_size=0, max_size=16)
_texts = st.one_of(
    st.text(max_size=14),
    _digits,
    st.builds(
        lambda sign, d, tail: sign + d + tail,
        st.sampled_from(["", "+", "-", " "]),
        _digits,
        st.sampled_from(["", ".5", "e3", " ", "\n", ".", "０"]),
    ),
    st.sampled_from(OPTIONS + ("bronze", "Gold ", "٣", "²", "１２")),
    st.builds(
        lambda y, m, d, sep: f"{y:04d}{sep}{m:02d}{sep}{d:02d}",
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.sampled_from(["-", "/"]),
    ),
    st.builds(lambda y, m, d: f"{y}-{m}-{d}", st.integers(0, 3000), st.integers(0, 13), st.integers(0, 32)),
    st.builds(
        lambda h, m, width: f"{h:0{width}d}:{m:0{width}d}",
        st.integers(0, 30),
        st.integers(0, 70),
        st.sampled_from([1, 2, 3]),
    ),
    st.sampled_from(["2024-07-01T09:30:00Z", "2024-07-01", "09:30:15", "24:00", "23:59", "2024-02-30"]),
)
values = st.one_of(
    _texts,
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**14), max_value=10**14),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.one_of(st.sampled_from(OPTIONS), st.integers(0, 3)), max_size=3),
    st.dictionaries(st.sampled_from(["code", "value", "fileKey"]), st.text(max_size=3), max_size=2),
)


def _normalized(f: FieldDef, value: Any) -> Any:
    problems = Problems()
    stored = normalize(f, {"value": value}, "record.f", problems)
    return REFUSED if problems else stored


def _same_as_normalize(f: FieldDef, value: Any) -> None:
    got, want = value_checker(f)(value), _normalized(f, value)
    assert (got is REFUSED) == (want is REFUSED), (f, value, got, want)
    if want is not REFUSED:
        assert got == want and type(got) is type(want), (f, value, got, want)


# Counts: every branch of kmigrate/fieldrules.py that the ten times larger counts these had
# reached is still reached by each property at these (checked with `coverage run --branch`, one
# property at a time, 2026-12-02); the examples pin the branches that came up only rarely.
@settings(max_examples=800)
@given(f=fields, value=values)
@example(f=FieldDef("f", "DATETIME", "F"), value="2024-07-01T09:30:00")  # no zone: UTC
@example(f=FieldDef("f", "DATETIME", "F"), value="2024-07-01T09:30:00+09:00")
@example(f=FieldDef("f", "DATETIME", "F"), value="2024-07-01Tnoon")  # not a time
@example(f=FieldDef("f", "DATETIME", "F"), value="2024-07-01")  # no T
@example(f=FieldDef("f", "DATETIME", "F"), value=5)
@example(f=FieldDef("f", "DATETIME", "F"), value="")
@example(f=FieldDef("f", "TIME", "F"), value="09:30")  # the plain fast path
@example(f=FieldDef("f", "TIME", "F"), value="24:00")
@example(f=FieldDef("f", "TIME", "F"), value="09:30:61")
@example(f=FieldDef("f", "TIME", "F"), value=None)
@example(f=FieldDef("f", "TIME", "F"), value="09:60")
@example(f=FieldDef("f", "USER_SELECT", "F"), value=[{"code": "u1"}, {"code": "u2", "name": "U 2"}])
def test_a_compiled_checker_gives_normalize_s_verdict_and_stored_value(f, value):
    _same_as_normalize(f, value)


# The values each fast path accepts, and their near misses, more often than at random.
_numbers = st.one_of(
    _digits,
    st.builds(lambda zeros, d: "0" * zeros + d, st.integers(0, 3), _digits),
    st.integers(min_value=-(10**13), max_value=10**13),
)
_times = st.builds(
    lambda h, m, width: f"{h:0{width}d}:{m:0{width}d}",
    st.integers(0, 30),
    st.integers(0, 70),
    st.sampled_from([1, 2]),
)


@settings(max_examples=400)
@given(f=fields.filter(lambda f: f.type == "NUMBER"), value=_numbers)
def test_a_number_checker_agrees_on_digits(f, value):
    _same_as_normalize(f, value)


@settings(max_examples=200)
@given(value=st.one_of(_numbers, _texts))
def test_an_unbounded_number_checker_agrees_on_digits(value):
    _same_as_normalize(FieldDef("n", "NUMBER", "N"), value)


@settings(max_examples=300)
@given(value=st.one_of(_times, _texts))
def test_a_time_checker_agrees_on_times(value):
    _same_as_normalize(FieldDef("at", "TIME", "At"), value)


@settings(max_examples=300)
@given(f=fields.filter(lambda f: f.type in ("DROP_DOWN", "RADIO_BUTTON", "DATE")), value=_texts)
def test_an_option_or_date_checker_agrees_on_texts(f, value):
    _same_as_normalize(f, value)


def test_the_common_values_are_accepted_as_normalize_stores_them():
    text = FieldDef("t", "SINGLE_LINE_TEXT", "T", max_length=3)
    number = FieldDef("n", "NUMBER", "N", min_value=Decimal(0), max_value=Decimal(100))
    drop = FieldDef("d", "DROP_DOWN", "D", options=("Retail", "Wholesale"))
    day, at = FieldDef("day", "DATE", "Day"), FieldDef("at", "TIME", "At")
    cases = [
        (text, "abc", "abc"),
        (text, "abcd", REFUSED),
        (text, 12, "12"),
        (number, "42", "42"),
        (number, "007", "7"),
        (number, "101", REFUSED),
        (number, "-1", REFUSED),
        (number, "1.50", "1.5"),
        (number, 7, "7"),
        (number, "12,000", REFUSED),
        (drop, "Retail", "Retail"),
        (drop, "", None),
        (drop, "retail", REFUSED),
        (day, "2024-07-01", "2024-07-01"),
        (day, "2024-7-1", "2024-07-01"),
        (day, "2024-02-30", REFUSED),
        (at, "09:30", "09:30"),
        (at, "9:30", "09:30"),
        (at, "24:00", REFUSED),
    ]
    for f, value, stored in cases:
        assert value_checker(f)(value) == stored, (f.code, value)
        assert _normalized(f, value) == stored, (f.code, value)
