"""The query lexer: kmigrate.sandbox.query.lexer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmigrate.sandbox.query import QueryError
from kmigrate.sandbox.query.lexer import Token, TokenKind, tokenize

K = TokenKind


def kinds(text: str) -> list[TokenKind]:
    return [t.kind for t in tokenize(text)]


def test_every_kind_of_token_with_its_text_and_position():
    assert tokenize('amount >= -1.5 and tags in ("a", "b")') == [
        Token(K.NAME, "amount", 1),
        Token(K.OPERATOR, ">=", 8),
        Token(K.NUMBER, "-1.5", 11),
        Token(K.NAME, "and", 16),
        Token(K.NAME, "tags", 20),
        Token(K.NAME, "in", 25),
        Token(K.LPAREN, "(", 28),
        Token(K.STRING, "a", 29),
        Token(K.COMMA, ",", 32),
        Token(K.STRING, "b", 34),
        Token(K.RPAREN, ")", 37),
        Token(K.END, "", 38),
    ]


@pytest.mark.parametrize("op", ["=", "!=", ">", "<", ">=", "<="])
def test_operators_need_no_spaces(op):
    assert [(t.kind, t.text) for t in tokenize(f"a{op}1")] == [
        (K.NAME, "a"),
        (K.OPERATOR, op),
        (K.NUMBER, "1"),
        (K.END, ""),
    ]


def test_strings_are_unescaped_and_keep_their_start_position():
    (token, end) = tokenize(r'"say \"hi\" \\ now"')
    assert token == Token(K.STRING, r'say "hi" \ now', 1)
    assert end.kind is K.END


def test_an_empty_text_is_just_the_end():
    assert tokenize("  \n ") == [Token(K.END, "", 5)]


def test_function_calls_and_field_codes_with_unicode_are_names():
    assert kinds("顧客名 = TODAY()") == [K.NAME, K.OPERATOR, K.NAME, K.LPAREN, K.RPAREN, K.END]


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('title = "open', "the string starting at character 9 is not closed"),
        ('title = "a\tb"', "a control character inside the string at character 11"),
        ("title = 'a'", 'strings take double quotes ("...") at character 9'),
        ("a ! b", "unexpected '!' at character 3"),
    ],
)
def test_bad_text_is_cb_va01_saying_where(text, detail):
    with pytest.raises(QueryError) as caught:
        tokenize(text)
    assert caught.value.code == "CB_VA01"
    assert caught.value.errors == {"query": {"messages": [f"The query is invalid: {detail}"]}}


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\n"), max_size=20))
def test_any_string_literal_comes_back_unescaped(s):
    quoted = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert tokenize(quoted) == [Token(K.STRING, s, 1), Token(K.END, "", len(quoted) + 1)]
