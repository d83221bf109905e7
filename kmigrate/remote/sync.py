"""The local SQLite journal kept in step with the journal app.

``pull`` runs at the start of every command that reads state (apply, status, plan, history):
each marker the local journal does not hold as applied is journaled as applied (with the ids
the marker holds, or lost-id placeholders when its ids were never written), a marker missing
the ids the local journal has gets them. A local batch in doubt is left to ``apply``: the
runner settles it by its marker (there: applied, its ids read back from Kintone with the
probe journaled beside it; absent: not applied, so it is sent again, and the marker's unique
key keeps that safe). ``publish`` adds markers for batches applied without one (a local baseline, or
batches applied before the environment had a journal app), so a fresh runner knows them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..changeset_files import version_key
from ..errors import ConfigError, JournalError
from ..journal import UNKNOWN_ID, Journal
from ..plan import APPLIED, SENT, ChangesetPlan, Plan, canonical_json
from .app import JournalApp
from .records import KIND_BATCH, Marker, Markers, kept_by_refusal, marker_key


@dataclass
class SyncReport:
    imported: list[tuple[str, int]] = field(default_factory=list)  # applied by another runner
    partial: list[tuple[str, int]] = field(default_factory=list)  # applied in part (partial:K markers)
    lost_ids: list[tuple[str, int]] = field(default_factory=list)  # imported without their ids
    ids_written: int = 0  # markers given the ids this journal had
    published: int = 0  # markers added for batches applied without one
    present: frozenset[tuple[str, int]] = frozenset()  # (version, batch) of every marker read
    repairs: list[str] = field(default_factory=list)  # changesets repaired elsewhere (markers' word)

    @property
    def changed(self) -> bool:
        return bool(self.imported or self.partial or self.ids_written or self.published)


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
    repaired: dict[str, dict[int, str]] = {}  # batch hashes a `repair` elsewhere put in the markers
    markers = {(m.version, m.index): m for m in app.read_markers()}
    report.present = frozenset(markers)
    local = {(b.changeset, b.index): b for b in journal.batches()}
    for key, marker in sorted(markers.items(), key=lambda item: _order(item[0])):
        batch = local.get(key)
        if batch is not None and batch.state == SENT:
            continue  # in doubt here: `apply` settles it by this marker, reading back its ids
        if batch is not None and kept_by_refusal(batch, marker) is not None:
            continue  # this journal's own send, refused part-way: the marker claims too much (runner)
        if marker.applied_calls is not None:  # partial:K: its first K calls applied
            if batch is None or (batch.state != APPLIED and batch.done_calls < marker.applied_calls):
                journal.import_partial(
                    **_where_from(marker, paths),
                    done=(marker.applied_calls, marker.hash, marker.prefix_results),
                    detail={"run": marker.run, "marker": marker.kind},
                    run_id=run_id,
                )
                report.partial.append(key)
            continue
        if batch is not None and batch.state == APPLIED:
            if marker.applied_calls is None and marker.hash != batch.hash:
                repaired.setdefault(marker.version, {})[marker.index] = marker.hash
            if marker.ids is None and marker.refs:
                ids = journal.batch_refs(*key)
                if ids and not any(UNKNOWN_ID in v for v in ids.values()):
                    app.write_ids(marker.record_id, marker.guest_space_id, ids)
                    report.ids_written += 1
            continue
        refs = marker_refs(marker)
        journal.import_applied(
            **_where_from(marker, paths),
            batch_hash=marker.hash,
            refs=refs,
            kind="synced",
            detail={"run": marker.run, "was": batch.state if batch else None, "ids_lost": marker.ids is None},
            run_id=run_id,
        )
        report.imported.append(key)
        if marker.ids is None and marker.refs:
            report.lost_ids.append(key)
    _take_repairs(journal, markers, repaired, run_id, report)
    return report


def _where_from(marker: Marker, paths: Mapping[str, str] | None) -> dict[str, Any]:
    """The changeset and batch a marker names, as the journal's imports take them."""
    return {
        "version": marker.version,
        "name": marker.name,
        "path": (paths or {}).get(marker.version, f"V{marker.version}__{marker.name}.yaml"),
        "source_checksum": marker.source_checksum,
        "rendered_checksum": marker.rendered_checksum,
        "batch_count": marker.batches,
        "index": marker.index,
    }


def _take_repairs(
    journal: Journal,
    markers: Mapping[tuple[str, int], Marker],
    repaired: Mapping[str, Mapping[int, str]],
    run_id: int | None,
    report: SyncReport,
) -> None:
    """The journal app is the shared word: where `kmigrate repair` (on any machine) accepted new
    content, the markers of the applied batches say so, and the local journal takes it
    (checksums and hashes, logged as ``synced``), so drift is judged alike everywhere."""
    local = {c.version: c for c in journal.changesets()}
    for version, row in local.items():
        mine = [m for (v, _), m in markers.items() if v == version and m.applied_calls is None]
        sums = {(m.source_checksum, m.rendered_checksum) for m in mine}
        hashes = repaired.get(version, {})
        # A changeset's own checksums only once it is applied whole: while it runs, later batches
        # are sent with the files' newer checksums (a refused record fixed), the earlier markers not.
        differs = (
            row.state == APPLIED
            and len(sums) == 1
            and next(iter(sums)) != (row.source_checksum, row.rendered_checksum)
        )
        if not hashes and not differs:
            continue
        source, rendered = (
            next(iter(sums)) if len(sums) == 1 else (row.source_checksum, row.rendered_checksum)
        )
        journal.repair(version, source, rendered, dict(hashes), run_id=run_id, kind="synced")
        report.repairs.append(version)


def push_repairs(journal: Journal, app: JournalApp, versions: Sequence[str]) -> int:
    """After `kmigrate repair`: the markers of those changesets' applied batches take the local
    journal's checksums and hashes (revision-checked; a marker written meanwhile is read again,
    once), so a fresh runner sees no drift. The number of markers written."""
    wanted = set(versions)
    changesets = {c.version: c for c in journal.changesets() if c.version in wanted}
    applied = {
        (b.changeset, b.index): b for b in journal.batches() if b.state == APPLIED and b.changeset in wanted
    }
    for _attempt in (1, 2):
        updates = []
        for marker in app.read_markers():
            batch = applied.get((marker.version, marker.index))
            if batch is None or marker.applied_calls is not None:
                continue
            row = changesets[marker.version]
            fields = {
                "hash": batch.hash,
                "source_checksum": row.source_checksum,
                "rendered_checksum": row.rendered_checksum,
            }
            if (marker.hash, marker.source_checksum, marker.rendered_checksum) != tuple(fields.values()):
                updates.append((marker, fields))
        if not updates or app.update_markers(updates):
            return len(updates)
    raise JournalError(
        "the journal app's markers were written by another runner while `repair` updated them",
        hint="run `kmigrate repair` again: the local journal is repaired, it brings the markers in line",
    )


def publish(
    journal: Journal,
    app: JournalApp,
    markers: Markers,
    plan: Plan,
    run: str,
    present: frozenset[tuple[str, int]] | None = None,
) -> int:
    """Add a marker for every batch the local journal holds as applied that has none in the
    journal app (``present``: the markers ``pull`` read under this lease; else read here); the
    number added.

    The markers say what the local journal says: its batch count, hashes, checksums and ids,
    not the plan's (batches applied before the environment had a journal app were cut for 20
    calls, the plan now cuts them for 19). The plan only tells each batch's guest space."""
    local = {(b.changeset, b.index): b for b in journal.batches() if b.state == APPLIED}
    if not local:
        return 0  # a fresh journal: nothing to read
    if present is None:
        present = frozenset((m.version, m.index) for m in app.read_markers())
    missing = sorted(set(local) - present, key=_order)
    if not missing:
        return 0
    planned = {cs.version: cs for cs in plan.changesets}
    changesets = {c.version: c for c in journal.changesets()}
    records = []
    for version, index in missing:
        cs, row, batch = planned.get(version), changesets[version], local[(version, index)]
        ids = journal.batch_refs(version, index)
        fields = {
            "key": marker_key(markers.project, version, index),
            "kind": KIND_BATCH,
            "project": markers.project,
            "version": version,
            "name": row.name,
            "batch": str(index),
            "batches": str(row.batch_count),
            "hash": batch.hash,
            "source_checksum": row.source_checksum,
            "rendered_checksum": row.rendered_checksum,
            "run": run,
            "refs": canonical_json({k: len(v) for k, v in ids.items()}),
            "ids": "" if any(UNKNOWN_ID in v for v in ids.values()) else canonical_json(ids),
        }
        space = (
            next(iter(markers.apps)) if len(markers.apps) == 1 else _space_of(cs, version, index, batch.hash)
        )
        records.append((space, {k: {"value": v} for k, v in fields.items()}))
    return app.publish(records)


def _space_of(cs: ChangesetPlan | None, version: str, index: int, batch_hash: str) -> int | None:
    """The guest space a journaled batch went to, where the environment has journal apps in
    several: the changeset's one space, else the planned batch's when it is the same batch; a
    ``ConfigError`` when that cannot be told."""
    if cs is None:
        raise ConfigError(
            f"V{version} batch {index}: applied, but its file is gone: its marker's space cannot be told",
            hint="restore the changeset's file, then run again",
        )
    spaces = {op.guest_space_id for op in cs.operations}
    if len(spaces) == 1:  # (an applied changeset's plan may know no operations: then its batches)
        return spaces.pop()
    for batch in cs.batches:
        if batch.index == index and batch.hash == batch_hash:
            return batch.guest_space_id
    raise ConfigError(
        f"{cs.id} batch {index} was applied before this environment had a journal app, and the changeset "
        "spans several guest spaces: which space's journal app gets its marker cannot be told",
        hint="run `kmigrate journal baseline` for it from a fresh folder, or ask on the issue tracker",
    )


def _order(key: tuple[str, int]) -> tuple[object, int]:
    return version_key(key[0]), key[1]
