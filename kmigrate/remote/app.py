"""``JournalApp``: the reads and writes kmigrate makes to the journal app, through a ``Client``.

Markers are *added* only inside the batch's own bulk request (see ``records.Markers``); this
module reads them, writes the ids a batch created into its marker, publishes markers for
batches known applied without one (a baseline, or batches applied before the environment had
a journal app), and reads and writes the lease record by revision compare-and-swap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import App
from ..errors import ConfigError, KintoneError
from ..kintone import MAX_RECORDS_PER_CALL
from ..plan import canonical_json
from .records import (
    FIELDS,
    KIND_BATCH,
    KIND_PARTIAL,
    LeaseRecord,
    Marker,
    Markers,
    lease_key,
    marker_key,
    partial_kind,
    query_text,
)

if TYPE_CHECKING:  # only handed in: nothing imports the HTTP client where nothing is sent
    from ..client import Client

# Kintone's answer to a write whose `revision` is not the record's latest (kintone-api.md §2.5).
REVISION_CONFLICT = "GAIA_CO02"


class JournalApp:
    def __init__(self, client: Client, markers: Markers):
        self.client = client
        self.markers = markers
        self.project = markers.project

    @property
    def home(self) -> App:
        """The app holding the lease: the one outside guest spaces, else the lowest space's."""
        apps = self.markers.apps
        if None in apps:
            return apps[None]
        return apps[min(k for k in apps if k is not None)]

    # ---- the app itself ------------------------------------------------------------------

    def check_fields(self) -> None:
        """Refuse (``ConfigError``, before any write) a journal app without the fields the
        protocol needs: Kintone drops values of unknown field codes silently, and a ``key``
        that is not unique would let a batch apply twice."""
        for app in self._apps():
            found = self.client.app_form_fields(app.id, app.guest_space_id)
            problems = [
                f"{code} is missing"
                if code not in found
                else f"{code} is a {found[code].get('type')}, not {spec['type']}"
                for code, spec in FIELDS.items()
                if code not in found or found[code].get("type") != spec["type"]
            ]
            if "key" in found and not found["key"].get("unique"):
                problems.append(
                    'key does not "prohibit duplicate values" (unique): a batch could apply twice'
                )
            if problems:
                raise ConfigError(
                    f"app {app.id} is not a kmigrate journal app: " + "; ".join(problems),
                    hint="name the app `kmigrate journal init` created, or give it the fields in docs/journal.md",
                )

    # ---- markers -------------------------------------------------------------------------

    def read_markers(self) -> list[Marker]:
        """Every marker of this project (whole, or ``partial:K``), in every journal app, by
        version and batch."""
        query = (
            f"project = {query_text(self.project)} and "
            f"(kind = {query_text(KIND_BATCH)} or kind like {query_text(KIND_PARTIAL + ':')})"
        )
        found: list[Marker] = []
        for app in self._apps():
            found.extend(
                Marker.from_record(r, app.guest_space_id)
                for r in self.client.get_records(app.id, query, None, app.guest_space_id)
            )
        return sorted(found, key=lambda m: (m.version, m.index))

    def read_marker(self, version: str, index: int, guest_space_id: int | None) -> Marker | None:
        """The marker of one batch, read from the journal app of the batch's space."""
        app = self.markers.app_for(guest_space_id)
        query = f"key = {query_text(marker_key(self.project, version, index))}"
        records = list(self.client.get_records(app.id, query, None, app.guest_space_id))
        return Marker.from_record(records[0], app.guest_space_id) if records else None

    def write_ids(self, record_id: int, guest_space_id: int | None, ids: Mapping[str, Sequence[int]]) -> None:
        """Record in a marker (the record ``record_id`` of the space's journal app) the ids its
        batch created, per ref in order."""
        app = self.markers.app_for(guest_space_id)
        self.client.request(
            "PUT",
            "record",
            body={
                "app": app.id,
                "id": record_id,
                "record": {"ids": {"value": canonical_json({k: list(v) for k, v in ids.items()})}},
            },
            guest_space_id=app.guest_space_id,
        )

    def set_partial(self, marker: Marker, calls: int, calls_hash: str, results: Sequence[Any]) -> int | None:
        """Say in ``marker`` (if it is still at the revision it was read at) that only the
        first ``calls`` calls of its batch applied: kind ``partial:K``, their hash, and what is
        known of their results. Its new revision, or None when another write came first."""
        app = self.markers.app_for(marker.guest_space_id)
        fields = {"kind": partial_kind(calls), "hash": calls_hash, "ids": canonical_json(list(results))}
        try:
            answer = self.client.request(
                "PUT",
                "record",
                body={
                    "app": app.id,
                    "id": marker.record_id,
                    "revision": marker.revision,
                    "record": {k: {"value": v} for k, v in fields.items()},
                },
                guest_space_id=app.guest_space_id,
            )
        except KintoneError as exc:
            if exc.code == REVISION_CONFLICT:
                return None
            raise
        return int(answer["revision"])

    def update_markers(self, updates: Sequence[tuple[Marker, Mapping[str, str]]]) -> bool:
        """Write ``fields`` into each marker, if it is still at the revision it was read at
        (``PUT records.json``, 100 a call, one space at a time); False when another write came
        first (Kintone's revision conflict: that call wrote nothing)."""
        by_space: dict[int | None, list[tuple[Marker, Mapping[str, str]]]] = {}
        for marker, fields in updates:
            by_space.setdefault(marker.guest_space_id, []).append((marker, fields))
        for space, rows in by_space.items():
            app = self.markers.app_for(space)
            for start in range(0, len(rows), MAX_RECORDS_PER_CALL):
                chunk = [
                    {
                        "id": marker.record_id,
                        "revision": marker.revision,
                        "record": {k: {"value": v} for k, v in fields.items()},
                    }
                    for marker, fields in rows[start : start + MAX_RECORDS_PER_CALL]
                ]
                try:
                    self.client.request(
                        "PUT",
                        "records",
                        body={"app": app.id, "records": chunk},
                        guest_space_id=app.guest_space_id,
                    )
                except KintoneError as exc:
                    if exc.code == REVISION_CONFLICT:
                        return False
                    raise
        return True

    def publish(self, records: Iterable[tuple[int | None, Mapping[str, Any]]]) -> int:
        """Add marker records (space, record) outside a bulk, 100 per call; the number added.

        Only for batches known applied: a key already there fails its whole call (unique), so
        callers leave out the markers they found."""
        by_space: dict[int | None, list[Mapping[str, Any]]] = {}
        for space, record in records:
            by_space.setdefault(space, []).append(record)
        added = 0
        for space, rows in by_space.items():
            app = self.markers.app_for(space)
            for start in range(0, len(rows), MAX_RECORDS_PER_CALL):
                chunk = rows[start : start + MAX_RECORDS_PER_CALL]
                self.client.request(
                    "POST",
                    "records",
                    body={"app": app.id, "records": chunk},
                    guest_space_id=app.guest_space_id,
                )
                added += len(chunk)
        return added

    # ---- the lease -----------------------------------------------------------------------

    def read_lease(self) -> LeaseRecord | None:
        app = self.home
        query = f"key = {query_text(lease_key(self.project))}"
        records = list(self.client.get_records(app.id, query, None, app.guest_space_id))
        return LeaseRecord.from_record(records[0]) if records else None

    def create_lease(self, fields: Mapping[str, Any]) -> tuple[int, int]:
        """Add the lease record: (record id, revision). A concurrent creator makes this fail
        on the unique key (a ``KintoneError``)."""
        app = self.home
        answer = self.client.request(
            "POST", "record", body={"app": app.id, "record": dict(fields)}, guest_space_id=app.guest_space_id
        )
        return int(answer["id"]), int(answer["revision"])

    def swap_lease(self, record_id: int, revision: int, fields: Mapping[str, Any]) -> int | None:
        """Write the lease if it is still at ``revision``; its new revision, or None when another
        runner wrote it first (Kintone's revision conflict)."""
        app = self.home
        try:
            answer = self.client.request(
                "PUT",
                "record",
                body={"app": app.id, "id": record_id, "revision": revision, "record": dict(fields)},
                guest_space_id=app.guest_space_id,
            )
        except KintoneError as exc:
            if exc.code == REVISION_CONFLICT:
                return None
            raise
        return int(answer["revision"])

    def _apps(self) -> list[App]:
        return [
            self.markers.apps[k] for k in sorted(self.markers.apps, key=lambda k: (k is not None, k or 0))
        ]
