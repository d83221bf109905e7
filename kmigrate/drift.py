"""Drift: an applied changeset whose files changed since (or went missing). Pure.

One check for the three commands that need it: ``apply`` refuses to run over drift
(``runner.check_preconditions``), ``status`` shows it, and ``repair`` accepts the new content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .changeset import LoadedChangeset
from .plan import APPLIED, SENT, ChangesetPlan, JournaledChangeset


def started(journaled: JournaledChangeset) -> bool:
    """Has any batch of the changeset been applied (or sent, so perhaps applied)?"""
    return any(s in (APPLIED, SENT) for s in journaled.batch_states.values())


def find_drift(
    changesets: Sequence[LoadedChangeset], state: Mapping[str, JournaledChangeset]
) -> dict[str, str]:
    """Version -> what changed, for each applied (or partly applied) changeset whose files
    changed or went missing."""
    loaded = {c.version: c for c in changesets}
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
        if changed:
            problems[version] = (
                f"{cs.id} ({cs.path.name}): {' and '.join(changed)} changed since it was applied"
            )
    return problems


def drifted(
    changesets: Sequence[LoadedChangeset], state: Mapping[str, JournaledChangeset]
) -> list[LoadedChangeset]:
    """The changesets ``repair`` can accept: drifted, with a file to take the new content from."""
    drift = find_drift(changesets, state)
    return [c for c in changesets if c.version in drift]


def accepted_hashes(planned: ChangesetPlan, journaled: JournaledChangeset) -> dict[int, str]:
    """The batch hashes ``repair`` journals for a drifted changeset: the new plan's, for the
    batches the journal holds."""
    return {b.index: b.hash for b in planned.batches if b.index in journaled.batch_hashes}
