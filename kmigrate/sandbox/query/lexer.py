"""Query text -> tokens. Strings are unescaped here; everything else keeps its text as written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import syntax_error


class TokenKind(Enum):
    """What a token is; the value is how messages name it."""

    STRING = "string"
    NUMBER = "number"
    NAME = "name"  # a field code, a keyword (and, order, in, ...) or a function name
    OPERATOR = "operator"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    END = "end of query"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # the value: unescaped for strings, as written otherwise
    pos: int  # 1-based character position, for messages


_PUNCTUATION = {"(": TokenKind.LPAREN, ")": TokenKind.RPAREN, ",": TokenKind.COMMA}
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_NAME_RE = re.compile(r'[^\s()=!<>,"\']+')
_OPERATOR_RE = re.compile(r"!=|>=|<=|=|>|<")
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with one ``END`` token; ``QueryError`` (CB_VA01) on bad text."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    j += 1
                elif text[j] in "\t\r\n":
                    # Observed on real Kintone: a raw tab inside a string literal is CB_VA01.
                    raise syntax_error(f"a control character inside the string at character {j + 1}")
                j += 1
            if j >= n:
                raise syntax_error(f"the string starting at character {i + 1} is not closed")
            tokens.append(Token(TokenKind.STRING, _ESCAPE_RE.sub(r"\1", text[i + 1 : j]), i + 1))
            i = j + 1
            continue
        if ch == "'":
            # UNCERTAIN: the documentation only shows double quotes; single quotes are refused.
            raise syntax_error(f'strings take double quotes ("...") at character {i + 1}')
        if ch in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[ch], ch, i + 1))
            i += 1
            continue
        for kind, pattern in (
            (TokenKind.OPERATOR, _OPERATOR_RE),
            (TokenKind.NUMBER, _NUMBER_RE),
            (TokenKind.NAME, _NAME_RE),
        ):
            m = pattern.match(text, i)
            if m:
                tokens.append(Token(kind, m.group(), i + 1))
                i = m.end()
                break
        else:
            raise syntax_error(f"unexpected {ch!r} at character {i + 1}")
    tokens.append(Token(TokenKind.END, "", n + 1))
    return tokens
