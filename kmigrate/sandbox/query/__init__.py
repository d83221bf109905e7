"""Kintone's record query language, for the embedded sandbox.

``parse_query(text, fields)`` (in ``compile``) tokenizes (``lexer``), parses into a typed syntax tree
(``parser``, ``nodes``) and compiles it to closures (``compile``), so filtering many records
never re-reads the text. Pure: no I/O, and the clock is read only when no ``now`` is given.

    status in ("Open") and (amount >= 100 or title like "urgent") order by due asc limit 50

Behaviour follows Kintone where it is documented or was observed on real tenants; where it is
not known the choice is named in a comment marked UNCERTAIN. Sources: the official "query
string" page (cybozu.dev/ja/kintone/docs/overview/query), error bodies captured from real
Kintone in kintone-nodejs-sdk fixtures and in SonicGarden/kintone-emulator's tests that run
against a real tenant (CB_VA01 syntax, GAIA_IQ11, GAIA_IQ03, GAIA_IQ07, GAIA_IQ10, GAIA_QU01,
GAIA_QU02, the same-row rule for subtable fields).

Error codes raised (all HTTP 400):

    CB_VA01    the query cannot be parsed ("Missing or invalid input.", errors.query.messages)
    GAIA_IQ11  a field code that the app does not have
    GAIA_IQ03  an operator the field's type does not support (e.g. ``=`` on DROP_DOWN)
    GAIA_IQ07  ``=`` or ``!=`` on a field inside a table (Kintone wants ``in``/``not in``)
    GAIA_IQ10  an option (or status) the field does not have, when ``options`` is given
    GAIA_QU01  limit above 500
    GAIA_QU02  offset above 10,000
"""

from __future__ import annotations

from .compile import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, SANDBOX_LOGIN_USER, Query, parse_query
from .errors import QueryError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "SANDBOX_LOGIN_USER",
    "Query",
    "QueryError",
    "parse_query",
]
