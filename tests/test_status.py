"""What `kmigrate status` shows: files and journal together, one row per changeset."""

from __future__ import annotations

from pathlib import Path

from kmigrate.changeset import LoadedChangeset
from kmigrate.journal import BatchRecord, ChangesetRecord
from kmigrate.plan import APPLIED, FAILED, PENDING, SENT, JournaledChangeset
from kmigrate.status import changeset_statuses


def loaded(version: str, source: str = "s") -> LoadedChangeset:
    return LoadedChangeset(version, f"n{version}", Path(f"V{version}__n{version}.yaml"), "", (), source, "r")


def record(version: str, state: str, batches: int) -> ChangesetRecord:
    return ChangesetRecord(
        version, f"n{version}", f"V{version}__n{version}.yaml", "s", "r", state, batches, None, None
    )


def batch(version: str, index: int, state: str, error: dict | None = None) -> BatchRecord:
    return BatchRecord(version, index, "h", state, None, None, None, None, error)


def test_each_state_says_what_to_do():
    journaled = {
        v: JournaledChangeset(v, "s", "r", batch_states=states)
        for v, states in {
            "1": {0: APPLIED},
            "2": {0: APPLIED, 1: SENT},
            "3": {0: APPLIED},
            "4": {0: FAILED},
            "9": {0: APPLIED},
        }.items()
    }
    records = [record("1", APPLIED, 1), record("2", "partial", 2), record("3", APPLIED, 1)]
    records += [record("4", PENDING, 1), record("9", APPLIED, 1)]
    batches = [batch("1", 0, APPLIED), batch("2", 0, APPLIED), batch("2", 1, SENT), batch("3", 0, APPLIED)]
    batches += [batch("4", 0, FAILED, {"code": "GAIA_XX", "message": "no"}), batch("9", 0, APPLIED)]
    files = [loaded("1"), loaded("2"), loaded("3", source="edited"), loaded("4"), loaded("10")]
    rows = changeset_statuses(files, journaled, records, batches)
    assert [(r.version, r.state, r.batches_applied, r.batches_total) for r in rows] == [
        ("1", APPLIED, 1, 1),
        ("2", "in doubt", 1, 2),
        ("3", "drifted", 1, 1),
        ("4", PENDING, 0, 1),
        ("9", "missing", 1, 1),
        ("10", PENDING, 0, None),  # version order: 10 after 9
    ]
    notes = {r.version: r.note for r in rows}
    assert (
        "`kmigrate apply` settles it by reading Kintone" in notes["2"] and "`kmigrate repair`" in notes["3"]
    )
    assert notes["4"] == "batch #0 failed: [GAIA_XX] no; fix it and run `kmigrate apply`"
    assert notes["9"] == "journaled, but its file is gone" and notes["1"] == notes["10"] == ""
    assert rows[4].path == Path("V9__n9.yaml") and rows[4].name == "n9"  # from the journal
