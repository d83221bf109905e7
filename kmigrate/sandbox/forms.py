"""``GET app/form/layout.json`` and ``GET app/views.json``: what the sandbox file says, or defaults.

The default layout puts each field on a row of its own in the file's order, each table as a
SUBTABLE row, each group as an empty GROUP row after them. The default views are one list
view, "All records", showing every top-level field, newest first. Kintone's own defaults for a
new app depend on how it was made; these are the sandbox's choice (docs/sandbox.md).
"""

from __future__ import annotations

from typing import Any

from .definition import AppDef, FieldDef

DEFAULT_WIDTH = "193"  # Kintone's width in pixels for a new field, sent as a string


def _cell(f: FieldDef) -> dict[str, Any]:
    return {"type": f.type, "code": f.code, "size": {"width": DEFAULT_WIDTH}}


def form_layout(app: AppDef) -> list[dict[str, Any]]:
    if app.form_layout is not None:
        return [dict(row) for row in app.form_layout]
    rows: list[dict[str, Any]] = []
    for f in app.fields.values():
        if f.type == "SUBTABLE":
            rows.append(
                {"type": "SUBTABLE", "code": f.code, "fields": [_cell(sub) for sub in f.fields.values()]}
            )
        else:
            rows.append({"type": "ROW", "fields": [_cell(f)]})
    for f in app.layout.values():
        if f.type == "GROUP":
            rows.append({"type": "GROUP", "code": f.code, "layout": []})
        else:  # REFERENCE_TABLE sits on a row like a field
            rows.append({"type": "ROW", "fields": [_cell(f)]})
    return rows


def views(app: AppDef) -> dict[str, dict[str, Any]]:
    if app.views is not None:
        return {name: dict(view) for name, view in app.views.items()}
    return {
        "All records": {
            "type": "LIST",
            "name": "All records",
            "id": "1",
            "index": "0",
            "fields": [c for c, f in app.fields.items() if f.type != "SUBTABLE"],
            "filterCond": "",
            "sort": f"{app.system_code('RECORD_NUMBER')} desc",
        }
    }
