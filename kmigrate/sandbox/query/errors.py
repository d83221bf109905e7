"""The errors a query can raise: Kintone's codes, messages and HTTP status."""

from __future__ import annotations

from typing import Any


class QueryError(Exception):
    """A query Kintone would refuse, with the code, message and status Kintone answers with.

    ``errors`` is Kintone's ``errors`` object when the answer carries one (only CB_VA01 does).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.errors = errors

    def to_body(self) -> dict[str, Any]:
        """Kintone's error body without the per-request ``id`` (the server adds that)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.errors:
            details = [m for entry in self.errors.values() for m in entry.get("messages", [])]
            if details:
                text += " " + " ".join(details)
        return text


def syntax_error(detail: str) -> QueryError:
    # Real Kintone says only "クエリ記法が間違っています。" / "unsupported query format"; the detail
    # after the colon is ours, to tell the user where the query went wrong.
    return QueryError(
        "CB_VA01",
        "Missing or invalid input.",
        errors={"query": {"messages": [f"The query is invalid: {detail}"]}},
    )


def unknown_field(code: str) -> QueryError:
    return QueryError("GAIA_IQ11", f"Specified field ({code}) not found.")


def operator_not_allowed(code: str, op: str) -> QueryError:
    # Kintone's Japanese text: "<code>フィールドのフィールドタイプには演算子<op>を使用できません。"
    return QueryError(
        "GAIA_IQ03", f"The operator {_op_label(op)} cannot be used with the field type of {code}."
    )


def no_such_option(code: str, value: str) -> QueryError:
    # Kintone's Japanese text: "フィールド「<code>」の項目に「<value>」は存在しません。"
    return QueryError("GAIA_IQ10", f'The field {code} has no option "{value}".')


def not_sortable(code: str) -> QueryError:
    # UNCERTAIN: the code real Kintone gives for an unsortable field in `order by` was not found;
    # GAIA_IQ03 (the operator/type mismatch family) is our pick.
    return QueryError("GAIA_IQ03", f"The field {code} cannot be used in order by.")


def table_equality(code: str, op: str) -> QueryError:
    return QueryError(
        "GAIA_IQ07",
        f"Cannot read records. For a field in a table, the operator {op} cannot be used with "
        f"the field type of {code}; use in or not in instead.",
    )


def _op_label(op: str) -> str:
    return {"is empty": "is", "is not empty": "is not"}.get(op, op)
