"""Lookups: a field with Kintone's ``lookup`` copies fields from the related app's record whose
key field holds the value written. The definition's side (``LookupDef``, ``lookup_problem``) is
in definition.py; this is what a write does with it."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from .definition import AppDef, FieldDef
from .fields import default_value, render_record
from .store import Store, StoredRecord


class LookupNotFound(Exception):
    """No single record of the related app holds the key (or the caller may not read that app)."""

    def __init__(self, field: str, value: Any, related_app: int, matches: int):
        super().__init__(f"{field}: {value!r} not found in app {related_app}")
        self.field = field
        self.value = value
        self.related_app = related_app
        self.matches = matches


def fill_lookups(
    fields: Mapping[str, FieldDef],
    values: dict[str, Any],
    sent: set[str],
    apps: Mapping[int, AppDef],
    store: Store,
    may_view: Callable[[AppDef], bool],
) -> None:
    """For each lookup field the write sent: copy the mapped fields from the one related record
    its value names, overwriting what was sent for them; an empty value clears them. ``fields``
    are an app's fields (or a table's columns, ``values`` then being one row's)."""
    for code, f in fields.items():
        lookup = f.lookup
        if lookup is None or code not in sent:
            continue
        value = values.get(code)
        if value in (None, ""):
            for mine, _ in lookup.mappings:
                values[mine] = default_value(fields[mine])
            continue
        related = apps.get(lookup.related_app)
        found: list[StoredRecord] = []
        if related is not None and may_view(related):
            found = _matches(store, related, lookup.key_field, value)
        if related is None or len(found) != 1:
            raise LookupNotFound(code, value, lookup.related_app, len(found))
        source = render_record(related, found[0].id, found[0].revision, found[0].data)
        for mine, theirs in lookup.mappings:
            values[mine] = copy.deepcopy(source[theirs]["value"])


def fill_table_lookups(
    table: FieldDef,
    rows: list[dict[str, Any]],
    old: list[dict[str, Any]] | None,
    apps: Mapping[int, AppDef],
    store: Store,
    may_view: Callable[[AppDef], bool],
) -> None:
    """Lookup columns of a table: each row's lookups sent in this call fill that row's columns
    (a cell kept from the stored row, by identity, was not sent)."""
    if not any(sub.lookup is not None for sub in table.fields.values()):
        return
    old_rows = {row["id"]: row["value"] for row in old or []}
    for row in rows:
        before = old_rows.get(row["id"], {})
        cells = row["value"]
        values = {code: cell["value"] for code, cell in cells.items()}
        sent = {
            code for code, cell in cells.items() if cell["value"] is not before.get(code, {}).get("value")
        }
        fill_lookups(table.fields, values, sent, apps, store, may_view)
        for code, value in values.items():
            cells[code]["value"] = value


def _matches(store: Store, related: AppDef, key: str, value: Any) -> list[StoredRecord]:
    """The related records whose key holds ``value``: by record number, a unique field's index, else a scan."""
    if key == related.system_code("RECORD_NUMBER"):
        digits = re.search(r"(\d+)$", str(value))
        rec = store.get(related.id, int(digits.group(1))) if digits else None
        return [rec] if rec is not None else []
    key_field = related.fields.get(key)
    if key_field is not None and key_field.unique:
        owner = store.unique_owner(related.id, key, str(value))
        rec = store.get(related.id, owner) if owner is not None else None
        return [rec] if rec is not None else []
    return [r for r in store.all(related.id) if r.data["values"].get(key) == value]
