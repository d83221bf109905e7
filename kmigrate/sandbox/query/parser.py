"""Tokens -> the syntax tree (``nodes``): recursive descent, `and` binding tighter than `or`.

    parse('status in ("Open") and amount >= 100 order by due asc limit 50') -> ParsedQuery

Only the syntax is checked here; whether the fields exist and take the operators is the
compiler's business.
"""

from __future__ import annotations

from .errors import QueryError, syntax_error
from .lexer import Token, TokenKind, tokenize
from .nodes import BoolOp, Comparison, Condition, Operator, OrderKey, ParsedQuery, Value

CLAUSE_WORDS = {"order", "limit", "offset"}
# The symbol operators, as the lexer reads them.
_SYMBOLS: dict[str, Operator] = {"=": "=", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<="}


def parse(text: str) -> ParsedQuery:
    return Parser(text).parse()


class Parser:
    """Recursive descent over the tokens. `and` binds tighter than `or`."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    # -- helpers

    def peek(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == TokenKind.NAME and tok.text.lower() in words

    def expect_word(self, word: str, after: str) -> Token:
        if not self.at_word(word):
            raise self.unexpected(f'"{word}" after {after}')
        return self.advance()

    def expect(self, kind: TokenKind, after: str) -> Token:
        if self.peek().kind != kind:
            name = kind.value
            punctuation = kind in (TokenKind.LPAREN, TokenKind.RPAREN, TokenKind.COMMA)
            raise self.unexpected(f'"{name}" after {after}' if punctuation else f"a {name} after {after}")
        return self.advance()

    def unexpected(self, wanted: str) -> QueryError:
        tok = self.peek()
        found = "the end of the query" if tok.kind == TokenKind.END else f'"{tok.text}"'
        return syntax_error(f"expected {wanted} but found {found} at character {tok.pos}")

    # -- grammar

    def parse(self) -> ParsedQuery:
        condition: Condition | None = None
        if self.peek().kind != TokenKind.END and not self.at_word(*CLAUSE_WORDS):
            condition = self.parse_or()
        order: tuple[OrderKey, ...] = ()
        if self.at_word("order"):
            self.advance()
            self.expect_word("by", '"order"')
            order = self.parse_order_keys()
        limit: int | None = None
        offset: int | None = None
        # Kintone writes `limit` before `offset`; either order is accepted, each at most once.
        while self.at_word("limit", "offset"):
            word = self.advance().text.lower()
            if (word == "limit" and limit is not None) or (word == "offset" and offset is not None):
                raise syntax_error(f'"{word}" is given twice')
            tok = self.expect(TokenKind.NUMBER, f'"{word}"')
            if "." in tok.text:
                raise syntax_error(f'"{word}" takes a whole number, not {tok.text}')
            if word == "limit":
                limit = int(tok.text)
            else:
                offset = int(tok.text)
        if self.peek().kind != TokenKind.END:
            tok = self.peek()
            raise syntax_error(f'unexpected "{tok.text}" at character {tok.pos}')
        return ParsedQuery(condition, order, limit, offset)

    def parse_or(self) -> Condition:
        parts = [self.parse_and()]
        while self.at_word("or"):
            self.advance()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def parse_and(self) -> Condition:
        parts = [self.parse_primary()]
        while self.at_word("and"):
            self.advance()
            parts.append(self.parse_primary())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def parse_primary(self) -> Condition:
        if self.peek().kind == TokenKind.LPAREN:
            self.advance()
            inner = self.parse_or()
            self.expect(TokenKind.RPAREN, "the condition in parentheses")
            return inner
        return self.parse_condition()

    def parse_condition(self) -> Comparison:
        tok = self.peek()
        if tok.kind != TokenKind.NAME or tok.text.lower() in {"and", "or", "order", "limit", "offset"}:
            raise self.unexpected("a field code")
        name = self.advance()
        code, pos = name.text, name.pos
        nxt = self.peek()
        if nxt.kind == TokenKind.OPERATOR:
            self.advance()
            return Comparison(code, _SYMBOLS[nxt.text], (self.parse_value(f'"{nxt.text}"'),), pos)
        word = nxt.text.lower() if nxt.kind == TokenKind.NAME else ""
        if word == "not":
            self.advance()
            if self.at_word("in"):
                self.advance()
                return Comparison(code, "not in", self.parse_value_list('"not in"'), pos)
            if self.at_word("like"):
                self.advance()
                return Comparison(code, "not like", (self.parse_value('"not like"'),), pos)
            raise self.unexpected('"in" or "like" after "not"')
        if word == "in":
            self.advance()
            return Comparison(code, "in", self.parse_value_list('"in"'), pos)
        if word == "like":
            self.advance()
            return Comparison(code, "like", (self.parse_value('"like"'),), pos)
        if word == "is":
            self.advance()
            negated = self.at_word("not")
            if negated:
                self.advance()
            self.expect_word("empty", '"is not"' if negated else '"is"')
            return Comparison(code, "is not empty" if negated else "is empty", (), pos)
        raise self.unexpected(f'an operator after the field code "{code}"')

    def parse_value_list(self, after: str) -> tuple[Value, ...]:
        self.expect(TokenKind.LPAREN, after)
        values = [self.parse_value(after)]
        while self.peek().kind == TokenKind.COMMA:
            self.advance()
            values.append(self.parse_value('","'))
        self.expect(TokenKind.RPAREN, "the list of values")
        return tuple(values)

    def parse_value(self, after: str) -> Value:
        tok = self.peek()
        if tok.kind == TokenKind.STRING:
            self.advance()
            return Value("string", tok.text)
        if tok.kind == TokenKind.NUMBER:
            self.advance()
            return Value("number", tok.text)
        if tok.kind == TokenKind.NAME and self.tokens[self.i + 1].kind == TokenKind.LPAREN:
            self.advance()
            self.advance()
            args: list[str] = []
            if self.peek().kind != TokenKind.RPAREN:
                args.append(self.parse_function_arg(tok.text))
                while self.peek().kind == TokenKind.COMMA:
                    self.advance()
                    args.append(self.parse_function_arg(tok.text))
            self.expect(TokenKind.RPAREN, f"the arguments of {tok.text}")
            return Value("function", tok.text.upper(), tuple(args))
        raise self.unexpected(f"a value after {after}")

    def parse_function_arg(self, function: str) -> str:
        tok = self.peek()
        if tok.kind in (TokenKind.NUMBER, TokenKind.NAME):
            self.advance()
            return tok.text.upper()
        raise self.unexpected(f"an argument of {function}()")

    def parse_order_keys(self) -> tuple[OrderKey, ...]:
        keys = []
        while True:
            tok = self.peek()
            if tok.kind != TokenKind.NAME or tok.text.lower() in CLAUSE_WORDS:
                raise self.unexpected('a field code after "order by"')
            self.advance()
            descending = False
            if self.at_word("asc", "desc"):
                descending = self.advance().text.lower() == "desc"
            keys.append(OrderKey(tok.text, descending))
            if self.peek().kind != TokenKind.COMMA:
                return tuple(keys)
            self.advance()
