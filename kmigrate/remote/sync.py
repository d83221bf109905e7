"""The local SQLite journal kept in step with the journal app.

``pull`` runs at the start of every command that reads state (apply, status, plan, history):
each marker the local journal does not hold as applied is journaled as applied (with the ids
the marker holds, or lost-id placeholders when its ids were never written), a local batch in
doubt is settled by its marker (there: applied; absent: not applied, so it is sent again, and
the marker's unique key keeps that safe), and a marker missing the ids the local journal has
gets them. ``publish`` adds markers for batches applied without one (a local baseline, or
batches applied before the environment had a journal app), so a fresh runner knows them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..journal import UNKNOWN_ID, Journal
from ..plan import APPLIED, SENT, Plan, canonical_json
from .app import JournalApp
from .records import Marker, Markers


@dataclass
class SyncReport:
    imported: list[tuple[str, int]] = field(default_factory=list)  # applied by another runner
    settled: list[tuple[str, int, bool]] = field(default_factory=list)  # in doubt -> applied?
    lost_ids: list[tuple[str, int]] = field(default_factory=list)  # imported without their ids
    ids_written: int = 0  # markers given the ids this journal had
    published: int = 0  # markers added for batches applied without one

    @property
    def changed(self) -> bool:
        return bool(self.imported or self.settled or self.ids_written or self.published)


def marker_refs(marker: Marker) -> dict[str, list[int]]:
    """The ids a marker's batch gave each ref; a placeholder per record when they were lost."""
    if marker.ids is not None:
        return marker.ids
    return {name: [UNKNOWN_ID] * count for name, count in marker.refs.items()}


def pull(
    journal: Journal,
    app: JournalApp,
    *,
    run_id: int | None = None,
    paths: Mapping[str, str] | None = None,
) -> SyncReport:
    """Bring ``journal`` up to date with the journal app (see the module's docstring)."""
    report = SyncReport()
    markers = {(m.version, m.index): m for m in app.read_markers()}
    local = {(b.changeset, b.index): b for b in journal.batches()}
    for key, marker in sorted(markers.items()):
        batch = local.get(key)
        if batch is not None and batch.state == APPLIED:
            if marker.ids is None and marker.refs:
                ids = journal.batch_refs(*key)
                if ids and not any(UNKNOWN_ID in v for v in ids.values()):
                    app.write_ids(marker.record_id, marker.guest_space_id, ids)
                    report.ids_written += 1
            continue
        refs = marker_refs(marker)
        journal.import_applied(
            version=marker.version,
            name=marker.name,
            path=(paths or {}).get(marker.version, f"V{marker.version}__{marker.name}.yaml"),
            source_checksum=marker.source_checksum,
            rendered_checksum=marker.rendered_checksum,
            batch_count=marker.batches,
            index=marker.index,
            batch_hash=marker.hash,
            refs=refs,
            kind="synced",
            detail={"run": marker.run, "was": batch.state if batch else None, "ids_lost": marker.ids is None},
            run_id=run_id,
        )
        if batch is not None and batch.state == SENT:
            report.settled.append((*key, True))
        else:
            report.imported.append(key)
        if marker.ids is None and marker.refs:
            report.lost_ids.append(key)
    for key, batch in sorted(local.items()):
        if batch.state == SENT and key not in markers:
            # No marker: the bulk did not apply (all-or-nothing). Sending it again is safe
            # even if it is still on its way: the marker's unique key refuses the later one.
            journal.resolve(*key, False, run_id=run_id, note="no marker in the journal app: not applied")
            report.settled.append((*key, False))
    return report


def publish(journal: Journal, app: JournalApp, markers: Markers, plan: Plan, run: str) -> int:
    """Add a marker for every batch the local journal holds as applied that has none in the
    journal app (read again here, under the lease); the number added."""
    applied = {(b.changeset, b.index) for b in journal.batches() if b.state == APPLIED}
    if not applied:
        return 0  # a fresh journal: nothing to read
    missing = applied - {(m.version, m.index) for m in app.read_markers()}
    if not missing:
        return 0
    records = []
    for cs in plan.changesets:
        if not any(v == cs.version for v, _ in missing):
            continue
        for batch in cs.batches:
            if (cs.version, batch.index) in missing:
                record = markers.record(cs, batch, run)
                ids = journal.batch_refs(cs.version, batch.index)
                if ids and not any(UNKNOWN_ID in v for v in ids.values()):
                    record["ids"] = {"value": canonical_json(ids)}
                records.append((batch.guest_space_id, record))
    return app.publish(records)
