"""Drift: applied changesets whose files changed since, or went missing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from kmigrate.changeset import LoadedChangeset
from kmigrate.drift import accepted_hashes, drifted, find_drift, started
from kmigrate.plan import APPLIED, FAILED, PENDING, SENT, JournaledChangeset


def loaded(version: str, source: str = "s", rendered: str = "r") -> LoadedChangeset:
    return LoadedChangeset(
        version, f"n{version}", Path(f"V{version}__n{version}.yaml"), "", (), source, rendered
    )


def journaled(version: str, *states: str, source: str = "s", rendered: str = "r") -> JournaledChangeset:
    return JournaledChangeset(version, source, rendered, batch_states=dict(enumerate(states)))


def test_a_changeset_has_started_once_a_batch_was_sent_or_applied():
    assert started(journaled("1", APPLIED)) and started(journaled("1", PENDING, SENT))
    assert not started(journaled("1", PENDING, FAILED)) and not started(journaled("1"))


def test_drift_names_what_changed_and_what_went_missing():
    state = {
        "1": journaled("1", APPLIED, source="old"),
        "2": journaled("2", APPLIED, rendered="old"),
        "3": journaled("3", APPLIED),  # its file is gone
        "4": journaled("4", APPLIED),  # unchanged
        "5": journaled("5", FAILED, source="old"),  # never started: its new content is simply planned
    }
    files = [loaded("1"), loaded("2"), loaded("4"), loaded("5")]
    assert find_drift(files, state) == {
        "1": "V1__n1 (V1__n1.yaml): its source changed since it was applied",
        "2": "V2__n2 (V2__n2.yaml): what it renders to (variables, templates or data files) changed since it "
        "was applied",
        "3": "V3: applied, but its file is gone from the changesets folder",
    }
    # repair can only accept new content from a file that is there
    assert [c.version for c in drifted(files, state)] == ["1", "2"]


def test_repair_keeps_the_new_hash_of_each_batch_the_journal_holds():
    planned = SimpleNamespace(batches=[SimpleNamespace(index=i, hash=f"h{i}") for i in range(3)])
    held = JournaledChangeset(
        "1", "s", "r", batch_states={0: APPLIED, 1: APPLIED}, batch_hashes={0: "a", 1: "b"}
    )
    assert accepted_hashes(planned, held) == {0: "h0", 1: "h1"}
