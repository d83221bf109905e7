"""Lookups: a field with Kintone's ``lookup`` copies fields from the related app's record whose
key field holds the value written. The definition's side (``LookupDef``, ``lookup_problem``) is
in definition.py; this is what a write does with it."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from .definition import AppDef
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
    app: AppDef,
    values: dict[str, Any],
    sent: set[str],
    apps: Mapping[int, AppDef],
    store: Store,
    may_view: Callable[[AppDef], bool],
) -> None:
    """For each lookup field the write sent: copy the mapped fields from the one related record
    its value names, overwriting what was sent for them; an empty value clears them."""
    for code, f in app.fields.items():
        lookup = f.lookup
        if lookup is None or code not in sent:
            continue
        value = values.get(code)
        if value in (None, ""):
            for mine, _ in lookup.mappings:
                values[mine] = default_value(app.fields[mine])
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
