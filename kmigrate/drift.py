"""Drift and the other pre-flight verdicts: what ``apply`` refuses before sending. Pure.

Drift is per batch: a batch Kintone applied (or may have: ``sent``) whose planned content
changed since. A batch never applied (pending, or refused by Kintone) may change freely: that
is how a refused row is fixed in the data and the run resumed. A changeset whose checksums
changed only in such batches is not drift; ``apply`` journals its new checksums when it runs.

One home for the verdicts of ``apply``, ``validate``, ``plan --check`` and ``status``
(``preflight``: drift, then batches in doubt, then order), and for what ``repair`` shows
(``drift_report``: the operations or records of the affected batches, old and new).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .changeset import LoadedChangeset
from .changeset_files import version_key
from .errors import DriftError, KmigrateError, OrderError
from .plan import APPLIED, SENT, ChangesetPlan, JournaledChangeset, Plan, canonical_json

# Batch states whose content Kintone holds (or may hold): changing them is drift.
_HELD = (APPLIED, SENT)


def started(journaled: JournaledChangeset) -> bool:
    """Has any batch of the changeset been applied (or sent, so perhaps applied)?"""
    return any(s in _HELD for s in journaled.batch_states.values())


def changed_batches(journaled: JournaledChangeset, planned: ChangesetPlan) -> list[int]:
    """The applied (or sent) batches whose planned content differs from what was journaled, or
    that are no longer planned at all."""
    hashes = planned.batch_hashes
    return [
        index
        for index, state in sorted(journaled.batch_states.items())
        if state in _HELD and (index >= len(hashes) or hashes[index] != journaled.batch_hashes.get(index))
    ]


def _compiled(planned: ChangesetPlan) -> bool:
    """Were the changeset's batches compiled for this plan (an applied changeset is not, unless
    it may send attachments: ``kmigrate.planner``)? Reading an uncompiled one's hashes would."""
    return isinstance(planned.batches, (tuple, list)) or getattr(planned.batches, "hashes", None) is not None


def find_drift(
    changesets: Sequence[LoadedChangeset],
    state: Mapping[str, JournaledChangeset],
    plan: Plan | None = None,
) -> dict[str, str]:
    """Version -> what changed, for each started changeset that drifted or went missing.

    With the ``plan``, a changeset whose checksums changed drifts only if one of its applied
    batches changed; without it (no plan could be made), any change to a started changeset
    counts.
    """
    loaded = {c.version: c for c in changesets}
    planned = {c.version: c for c in plan.changesets} if plan is not None else {}
    problems: dict[str, str] = {}
    for version, journaled in sorted(state.items()):
        if not started(journaled):
            continue
        cs = loaded.get(version)
        if cs is None:
            problems[version] = f"V{version}: applied, but its file is gone from the changesets folder"
            continue
        changed = []
        if cs.source_checksum != journaled.source_checksum:
            changed.append("its source")
        if cs.rendered_checksum != journaled.rendered_checksum:
            changed.append("what it renders to (variables, templates or data files)")
        if not changed:
            if version not in planned or not _compiled(planned[version]):
                continue
            # Same files, yet a batch differs: what only the batch hashes cover, its attachments.
            if not changed_batches(journaled, planned[version]):
                continue
            changed.append("an attachment it sends")
        batches: list[int] | None = None
        if version in planned:
            batches = changed_batches(journaled, planned[version])
            if not batches:
                continue  # only batches Kintone never applied changed: free to change
        which = (
            f" in applied batch{'es' if len(batches) > 1 else ''} {', '.join(map(str, batches))}"
            if batches
            else ""
        )
        problems[version] = (
            f"{cs.id} ({cs.path.name}): {' and '.join(changed)} changed{which} since it was applied"
        )
    return problems


def drifted(
    changesets: Sequence[LoadedChangeset],
    state: Mapping[str, JournaledChangeset],
    plan: Plan | None = None,
) -> list[LoadedChangeset]:
    """The changesets ``repair`` can accept: drifted, with a file to take the new content from."""
    drift = find_drift(changesets, state, plan)
    return [c for c in changesets if c.version in drift]


DRIFT_HINT = (
    "an applied changeset is history: put the old content back and write a new changeset for the change, "
    "or accept the new content with `kmigrate repair` (logged; Kintone keeps the old values)"
)


def preflight(
    changesets: Sequence[LoadedChangeset],
    state: Mapping[str, JournaledChangeset],
    plan: Plan | None = None,
    *,
    out_of_order: bool = False,
) -> list[KmigrateError]:
    """Every reason ``apply`` would refuse to start, in the order it checks them: drift, then
    changesets older than an applied one. Empty: it would start. (A batch in doubt is no reason:
    apply settles it by reading Kintone, see ``reconcile``.)"""
    problems: list[KmigrateError] = []
    drift = find_drift(changesets, state, plan)
    if drift:
        loaded = {c.version for c in changesets}
        gone = [v for v, j in state.items() if started(j) and v not in loaded]
        hint = DRIFT_HINT
        if gone:  # repair accepts new content; it cannot accept a file that is not there
            hint += (
                f"; a deleted changeset must be restored ({', '.join('V' + v for v in sorted(gone))}): "
                "to undo its records, write a new changeset"
            )
        problems.append(
            DriftError("applied changesets changed:\n  " + "\n  ".join(drift.values()), hint=hint)
        )
    applied = [v for v, j in state.items() if started(j)]
    if applied and not out_of_order:
        newest = max(applied, key=version_key)
        older = [
            c for c in changesets if c.version not in applied and version_key(c.version) < version_key(newest)
        ]
        if older:
            names = ", ".join(c.id for c in older)
            problems.append(
                OrderError(
                    f"{names} {'is' if len(older) == 1 else 'are'} older than V{newest}, which is already applied",
                    hint="give it a version after the newest applied one (`kmigrate new`), "
                    "or pass --out-of-order if applying it late is right",
                )
            )
    return problems


# ---- what repair shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class BatchChange:
    """One applied batch whose content changed: what was journaled as sent, and what is planned."""

    version: str
    index: int
    diff: str  # a unified diff of the batch's requests (old -> new); "" when the old text is unknown


def drift_report(
    journaled: JournaledChangeset,
    planned: ChangesetPlan,
    sent_requests: Mapping[int, object] | None = None,
) -> list[BatchChange]:
    """For each applied batch that changed: a diff of its requests (old from ``sent_requests``,
    batch index -> the requests as journaled, when the journal kept them)."""
    out = []
    by_index = {b.index: b for b in planned.batches} if changed_batches(journaled, planned) else {}
    for index in changed_batches(journaled, planned):
        batch = by_index.get(index)
        new = _lines(batch.requests()) if batch is not None else ["(no longer planned)"]
        old_requests = (sent_requests or {}).get(index)
        old = _lines(old_requests) if old_requests is not None else None
        diff = (
            "\n".join(
                difflib.unified_diff(
                    old, new, f"V{journaled.version} batch {index} (applied)", "now", lineterm=""
                )
            )
            if old is not None
            else "\n".join(new)
        )
        out.append(BatchChange(journaled.version, index, diff))
    return out


def _lines(requests: object) -> list[str]:
    """Requests as stable, diffable lines: one JSON line per record or call."""
    lines: list[str] = []
    for request in requests if isinstance(requests, list) else [requests]:
        if isinstance(request, Mapping) and isinstance(request.get("payload"), Mapping):
            payload = request["payload"]
            head = {k: v for k, v in payload.items() if k not in ("records", "ids")}
            lines.append(f"{request.get('method')} {request.get('api')} {canonical_json(head)}")
            for item in payload.get("records") or payload.get("ids") or []:
                lines.append("  " + canonical_json(item))
        else:
            lines.append(canonical_json(request))
    return lines


def accepted_hashes(planned: ChangesetPlan, journaled: JournaledChangeset) -> dict[int, str]:
    """The batch hashes ``repair`` journals for a drifted changeset: the new plan's, for the
    batches the journal holds."""
    return {b.index: b.hash for b in planned.batches if b.index in journaled.batch_hashes}
