"""``kmigrate sandbox pull``: a replica of real apps' definitions, in the sandbox file's shape.

Reads each app's name (``GET app.json``), fields (``GET app/form/fields.json``) and process
(``GET app/status.json``) and writes them as the sandbox file holds apps: Kintone's own shapes
(``properties`` and the status body), so the sandbox runs every changeset against what
production has. Reads only; never credentials: an app already in the target file keeps its own
``api_tokens`` (the sandbox's, not production's), a new one gets none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .appschema import READ_ONLY_TYPES, SYSTEM_TYPES
from .client import Client
from .config import App

# Read-shape types a client cannot write back: left out of a sampled record.
_NOT_WRITTEN = frozenset(SYSTEM_TYPES) | READ_ONLY_TYPES | {"FILE", "__ID__", "__REVISION__"}


@dataclass(frozen=True)
class PulledApp:
    source: App  # where it was read
    target_id: int  # its id in the file written
    definition: dict[str, Any]  # the sandbox file's app entry
    records: list[dict[str, Any]]  # a sample in the write shape (empty unless asked)


def pull_app(client: Client, app: App, target_id: int, records: int = 0) -> PulledApp:
    """One app's definition (and the first ``records`` records) as the sandbox file holds it."""
    info = client.request("GET", "app", params={"id": app.id}, guest_space_id=app.guest_space_id)
    properties = client.app_form_fields(app.id, app.guest_space_id)
    status = client.request("GET", "app/status", params={"app": app.id}, guest_space_id=app.guest_space_id)
    entry: dict[str, Any] = {"id": target_id, "name": info.get("name") or f"App {app.id}"}
    if info.get("code"):
        entry["code"] = info["code"]
    if info.get("description"):
        entry["description"] = info["description"]
    entry["properties"] = properties
    if status.get("enable") or status.get("states"):
        entry["process"] = {k: status[k] for k in ("enable", "states", "actions") if k in status}
    sample: list[dict[str, Any]] = []
    if records > 0:
        for record in client.get_records(app.id, guest_space_id=app.guest_space_id):
            sample.append(writable(record))
            if len(sample) >= records:
                break
    return PulledApp(app, target_id, entry, sample)


def writable(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record in Kintone's read shape -> what a POST records.json takes (no system fields,
    no files; table rows without their ids)."""
    out: dict[str, Any] = {}
    for code, cell in record.items():
        if not isinstance(cell, Mapping) or cell.get("type") in _NOT_WRITTEN:
            continue
        value = cell.get("value")
        if cell.get("type") == "SUBTABLE" and isinstance(value, list):
            value = [{"value": writable(row.get("value") or {})} for row in value if isinstance(row, Mapping)]
        out[code] = {"value": value}
    return out


def merged(existing: Mapping[str, Any] | None, pulled: Sequence[PulledApp]) -> dict[str, Any]:
    """The target file's content with the pulled apps in place of those with the same id; other
    apps, and a replaced app's own ``api_tokens``, are kept."""
    apps = list((existing or {}).get("apps") or [])
    by_id = {a.get("id"): i for i, a in enumerate(apps) if isinstance(a, Mapping)}
    for app in pulled:
        entry = dict(app.definition)
        if app.target_id in by_id:
            old = apps[by_id[app.target_id]]
            for kept in ("api_tokens", "guest_space_id"):
                if kept in old:
                    entry[kept] = old[kept]
            apps[by_id[app.target_id]] = entry
        else:
            by_id[app.target_id] = len(apps)
            apps.append(entry)
    return {**(existing or {}), "apps": apps}
