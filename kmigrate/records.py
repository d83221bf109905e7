"""The rules for one record of an add, update or upsert, inline or from a data file.

One home for them: the loader reports every problem of every record (with its line), the
planner refuses the first one of a changeset it was handed directly. A record is a mapping of
field codes to values; ``id`` and ``revision`` are kmigrate's keys, not field codes: an update
finds its record by ``id`` (or by the operation's ``key`` field), an upsert by ``key``, and
``revision`` turns on Kintone's optimistic locking (-1 skips it).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .changeset import RefIds
from .changeset_files import display_path
from .validation_messages import kind_of

RECORD_KEYS = ("id", "revision")  # a record's keys that are not field codes
# Kintone's own codes for a record's id and revision: never written as fields either.
RESERVED_RECORD_KEYS = RECORD_KEYS + ("$id", "$revision")

# App id -> field code -> the column codes of its subtable (empty for any other field).
KnownFields = Mapping[int, Mapping[str, frozenset[str]]]
UNKNOWN_FIELD_HINT = "fix the field code, or add the field to the app in the sandbox file"


def record_problems(kind: str, key: str | None, record: Any) -> list[str]:
    """Everything wrong with one record of an ``kind`` operation with ``key:`` (or None)."""
    if not isinstance(record, dict):
        return [not_a_mapping(record)]
    problems = []
    if kind == "add":
        for reserved in RESERVED_RECORD_KEYS:
            if reserved in record:
                problems.append(f"`{reserved}` cannot be set when adding records: Kintone assigns it")
    problems.extend(selection_problems(kind, key, record))
    for code, value in record.items():
        if not isinstance(code, str) or not code:
            problems.append(f"field code {code!r} must be text")
        elif type(value) is not str and code not in RECORD_KEYS and _has_bool(value):  # CSV cells: text
            problems.append(f"field `{code}` holds true/false; Kintone values are text or numbers: quote it")
    return problems


def text_records_pass(kind: str, key: str | None, codes: Collection[str]) -> bool:
    """Whether ``record_problems`` finds nothing in every record of a ``kind`` operation whose
    codes are among ``codes`` and whose values are all text (a CSV file whose columns are all
    text fields: decided once from its header, not per row). Only an add's: an update's or an
    upsert's records are found by their values."""
    return (
        kind == "add"
        and key is None
        and all(isinstance(code, str) and code for code in codes)
        and not set(codes) & set(RESERVED_RECORD_KEYS)
    )


def not_a_mapping(record: Any) -> str:
    return f"a record is a mapping of field codes to values, not {kind_of(record)}"


def selection_problems(kind: str, key: str | None, record: dict[str, Any]) -> list[str]:
    """What stops the planner from compiling a record: how it is found (``id`` or ``key``) and
    its ``revision``."""
    problems = []
    if kind == "update":
        if key is not None:
            if "id" in record:
                problems.append(
                    f"a record of an update by `key: {key}` must not also have `id`: give one or the other"
                )
            if key not in record:
                problems.append(
                    f"the record has no `{key}`: an update by `key: {key}` finds each record by that field"
                )
        elif "id" not in record:
            problems.append("the record has no `id`: give `id:` per record, or `key: FIELD` on the operation")
        else:
            problems.extend(id_problems(record["id"]))
    elif kind == "upsert":
        if "id" in record:
            problems.append(f"an upsert finds records by `key: {key}`, not by `id`")
        if key not in record:
            problems.append(f"the record has no `{key}`: an upsert finds or creates each record by its `key`")
    if key is not None and key in record and not key_text(record[key]):
        value = _unwrapped(record[key])
        problems.append(f"the key field `{key}` must hold a text or number value, not {kind_of(value)}")
    revision = record.get("revision")
    if revision is not None and (
        not isinstance(revision, int) or isinstance(revision, bool) or revision < -1
    ):
        problems.append(f"`revision` must be a whole number (or -1 to skip the check), not {revision!r}")
    return problems


def id_problems(value: Any) -> list[str]:
    """What is wrong with one record's ``id``: a positive id, or ``{ref: NAME, index: I}``."""
    if isinstance(value, bool):
        return [f"`id` must be a record id or {{ref: NAME, index: I}}, not {value!r}"]
    if isinstance(value, int):
        return [] if value > 0 else [f"`id` must be positive, not {value}"]
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return []
    if isinstance(value, RefIds):
        return [] if value.index is not None else ["`id: {ref: ...}` of one record needs an `index`"]
    if isinstance(value, dict) and "ref" in value:
        try:
            ref = RefIds.model_validate(value)
        except ValidationError:
            return [f"`id` {value!r} is not a valid ref: write {{ref: NAME, index: I}}"]
        if ref.index is None:
            return ["`id: {ref: NAME}` names many records; one record needs {ref: NAME, index: I}"]
        return []
    return [f"`id` must be a record id or {{ref: NAME, index: I}}, not {value!r}"]


def ref_index_problem(name: str, index: int, size: int) -> str | None:
    """``{ref: NAME, index: I}`` must name one of the ``size`` records of the ref."""
    if 0 <= index < size:
        return None
    return (
        f"ref {name!r} index {index} is out of range: it names {size} record{'s' if size != 1 else ''} "
        "(indexes start at 0)"
    )


def normalise_record(record: Any) -> None:
    """An ``id`` as the planner reads it: ``{ref: NAME, index: I}`` -> ``RefIds``, ``"12"`` -> 12."""
    if isinstance(record, dict):
        rid = record.get("id")
        if isinstance(rid, dict) and "ref" in rid:
            try:
                record["id"] = RefIds.model_validate(rid)
            except ValidationError:
                pass
        elif isinstance(rid, str) and rid.isdigit():
            record["id"] = int(rid)


def key_text(value: Any) -> str | None:
    """A key field's value as Kintone's ``updateKey`` takes it (text, a NUMBER key's digits too);
    None when it is no text or number (or empty)."""
    value = _unwrapped(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value or None
    return None


def _unwrapped(value: Any) -> Any:
    """A value written in Kintone's form (``{value: X}``) -> X."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "type"}:
        return value["value"]
    return value


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return False


# ---- field codes the app does not have --------------------------------------------------------


def unknown_fields(
    fields: Mapping[str, frozenset[str]], record: Any, reported: set[str]
) -> Iterator[tuple[tuple[Any, ...], str, Collection[str], str | None]]:
    """(path in the record, code, the codes it should be one of, its subtable) for each field code
    ``fields`` (one app's) does not have; ``reported`` keeps each code to one report."""
    if not isinstance(record, dict):
        return
    for code, value in record.items():
        if code in RESERVED_RECORD_KEYS or not isinstance(code, str):
            continue
        if code not in fields:
            if code not in reported:
                reported.add(code)
                yield (code,), code, fields, None
            continue
        columns = fields[code]
        rows = _unwrapped(value) if isinstance(value, dict) else value
        if not columns or not isinstance(rows, list):
            continue
        for row_index, row in enumerate(rows):
            cells = row.get("value") if isinstance(row, dict) and isinstance(row.get("value"), dict) else row
            if not isinstance(cells, dict):
                continue
            for sub in cells:
                name = f"{code}.{sub}"
                if sub not in columns and name not in reported:
                    reported.add(name)
                    yield (code, row_index, sub), sub, columns, code


def unknown_field_message(
    code: str, known: Collection[str], app_id: int, sandbox_file: Path | None, table: str | None = None
) -> str:
    where = f"subtable `{table}`" if table else f"app {app_id}"
    close = difflib.get_close_matches(code, list(known), n=1)
    guess = f"; did you mean `{close[0]}`?" if close else ""
    sandbox = display_path(sandbox_file) if sandbox_file else "the sandbox file"
    return (
        f"field `{code}` is not a field of {where} in {sandbox}: Kintone ignores unknown field codes, "
        f"so this value would be lost{guess}"
    )
