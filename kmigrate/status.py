"""What ``kmigrate status`` shows, pure: the changeset files and the journal's records together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .changeset import LoadedChangeset
from .changeset_files import version_key
from .drift import find_drift
from .journal import BatchRecord, ChangesetRecord
from .plan import APPLIED, FAILED, PENDING, SENT, JournaledChangeset, Plan

IN_DOUBT, DRIFTED, MISSING = "in doubt", "drifted", "missing"


@dataclass(frozen=True)
class ChangesetStatus:
    version: str
    name: str
    path: Path | None
    state: str  # applied | partial | pending | in doubt | drifted | missing
    batches_applied: int = 0
    batches_total: int | None = None  # known once the changeset has been journaled
    last_applied: str | None = None
    note: str = ""


def changeset_statuses(
    changesets: Sequence[LoadedChangeset],
    journaled: Mapping[str, JournaledChangeset],
    records: Sequence[ChangesetRecord],
    batches: Sequence[BatchRecord],
    plan: Plan | None = None,
) -> list[ChangesetStatus]:
    """Per changeset, files and journal together, in version order: its state and what to do.
    With the ``plan``, drift is judged per batch (``drift.find_drift``)."""
    loaded = {c.version: c for c in changesets}
    by_version = {r.version: r for r in records}
    batches_of: dict[str, list[BatchRecord]] = {}
    for b in batches:
        batches_of.setdefault(b.changeset, []).append(b)
    drift = find_drift(changesets, journaled, plan)
    out = []
    for version in sorted(set(loaded) | set(by_version), key=version_key):
        cs, rec, bs = loaded.get(version), by_version.get(version), batches_of.get(version, [])
        if cs is not None:
            name, path = cs.name, cs.path
        else:
            assert rec is not None  # a version comes from the files or from the journal
            name, path = rec.name, Path(rec.path)
        if cs is None:
            shown, note = MISSING, "journaled, but its file is gone"
        elif any(b.state == SENT for b in bs):
            shown = IN_DOUBT
            note = "a batch was sent and its answer never journaled: `kmigrate apply` settles it by reading Kintone"
        elif version in drift:
            shown, note = DRIFTED, "changed since it was applied: `kmigrate repair` or restore the file"
        else:
            shown, note = (rec.state if rec else PENDING), _failure_note(bs)
        out.append(
            ChangesetStatus(
                version=version,
                name=name,
                path=path,
                state=shown,
                batches_applied=sum(1 for b in bs if b.state == APPLIED),
                batches_total=rec.batch_count if rec else None,
                last_applied=rec.last_applied if rec else None,
                note=note,
            )
        )
    return out


def _failure_note(batches: Sequence[BatchRecord]) -> str:
    """The journal keeps Kintone's refusal of a failed batch: shown where people look first."""
    failed = [b for b in batches if b.state == FAILED]
    if not failed:
        return ""
    error = failed[0].error or {}
    code = f"[{error['code']}] " if error.get("code") else ""
    reason = error.get("message", "see `kmigrate history`")
    return f"batch #{failed[0].index} failed: {code}{reason}; fix it and run `kmigrate apply`"
