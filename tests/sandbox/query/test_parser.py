"""The query parser: kmigrate.sandbox.query.parser -> the typed tree of kmigrate.sandbox.query.nodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmigrate.sandbox.query import QueryError
from kmigrate.sandbox.query.nodes import BoolOp, Comparison, OrderKey, ParsedQuery, Value
from kmigrate.sandbox.query.parser import parse


def S(text: str) -> Value:
    return Value("string", text)


def N(text: str) -> Value:
    return Value("number", text)


def test_an_empty_query_has_no_condition_order_or_window():
    assert parse("") == ParsedQuery(None, (), None, None)


def test_and_binds_tighter_than_or_and_parentheses_regroup():
    a, b, c = (
        Comparison("a", "=", (N("1"),), 1),
        Comparison("b", "=", (N("2"),), 10),
        Comparison("c", "=", (N("3"),), 20),
    )
    assert parse("a = 1 or b = 2 and c = 3").condition == BoolOp("or", (a, BoolOp("and", (b, c))))
    regrouped = parse("(a = 1 or b = 2) and c = 3").condition
    assert regrouped == BoolOp(
        "and",
        (
            BoolOp("or", (Comparison("a", "=", (N("1"),), 2), Comparison("b", "=", (N("2"),), 11))),
            Comparison("c", "=", (N("3"),), 22),
        ),
    )


@pytest.mark.parametrize(
    ("text", "op", "values"),
    [
        ('t in ("x", 2)', "in", (S("x"), N("2"))),
        ('t not in ("x")', "not in", (S("x"),)),
        ('t like "x"', "like", (S("x"),)),
        ('t NOT LIKE "x"', "not like", (S("x"),)),
        ("t is empty", "is empty", ()),
        ("t is not empty", "is not empty", ()),
        ("t != 5", "!=", (N("5"),)),
        ("t > FROM_TODAY(-3, days)", ">", (Value("function", "FROM_TODAY", ("-3", "DAYS")),)),
        ("t in (LOGINUSER())", "in", (Value("function", "LOGINUSER"),)),
    ],
)
def test_each_operator_becomes_one_comparison(text, op, values):
    assert parse(text).condition == Comparison("t", op, values, 1)


def test_order_by_limit_and_offset():
    parsed = parse("order by a desc, b, c asc limit 5 offset 10")
    assert parsed.order == (OrderKey("a", True), OrderKey("b", False), OrderKey("c", False))
    assert (parsed.limit, parsed.offset) == (5, 10)
    assert (parse("offset 3 limit 2").limit, parse("offset 3 limit 2").offset) == (2, 3)


@pytest.mark.parametrize(
    "text",
    [
        "title ===",
        "title =",
        'title == "a"',
        'title "a"',
        "= 1",
        '(title = "a"',
        'title = "a")',
        'title = "a" and',
        'title = "a" or or title = "b"',
        'title = "unclosed',
        'title = "a\tb"',
        "title = 'a'",
        "amount in 1",
        "amount in ()",
        "amount in (1,)",
        "amount not 1",
        "memo is",
        "memo is not full",
        "order amount",
        "order by",
        "order by amount, ",
        "limit",
        'limit "10"',
        "limit 1.5",
        "limit 10 limit 10",
        "offset 1 offset 2",
        "limit 10 order by amount",
        'title = "a" junk',
        "amount > 1 !",
    ],
)
def test_syntax_errors_are_cb_va01_with_a_query_message(text):
    with pytest.raises(QueryError) as caught:
        parse(text)
    err = caught.value
    assert (err.code, err.message, err.status) == ("CB_VA01", "Missing or invalid input.", 400)
    assert err.errors is not None and list(err.errors) == ["query"]
    (detail,) = err.errors["query"]["messages"]
    assert detail.startswith("The query is invalid: ")
    assert err.to_body() == {"code": "CB_VA01", "message": "Missing or invalid input.", "errors": err.errors}


def detail_of(text: str) -> str:
    with pytest.raises(QueryError) as caught:
        parse(text)
    assert caught.value.errors is not None
    return caught.value.errors["query"]["messages"][0]


def test_syntax_errors_say_where():
    assert detail_of('title = "a" and amount in 1') == (
        'The query is invalid: expected "(" after "in" but found "1" at character 27'
    )
    assert detail_of("a = 1 and") == (
        "The query is invalid: expected a field code but found the end of the query at character 10"
    )
    assert "not closed" in detail_of('title = "abc')


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_cb_va01(text):
    try:
        parsed = parse(text)
    except QueryError as err:
        assert err.code == "CB_VA01"
    else:
        assert isinstance(parsed, ParsedQuery)
