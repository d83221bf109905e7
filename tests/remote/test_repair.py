"""`kmigrate repair` with a journal app: the markers take the accepted content too, so a fresh
runner (and every other runner, at its next sync) judges drift as the repairing one does."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmigrate import api
from kmigrate.errors import DriftError
from kmigrate.journal import Journal
from kmigrate.sandbox import Sandbox

from .projects import JOURNAL_APP
from .test_apply import Recorder, apply, client_over, runner


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "kintone.sqlite3"


@pytest.fixture
def box(tmp_path: Path, store: Path):
    from .projects import write_project

    root = write_project(tmp_path / "definition", store=store)
    with Sandbox.open(root / "sandbox.yaml", store) as sandbox:
        yield sandbox


def edit(project) -> None:
    """An applied changeset changed after the fact (the record in Kintone stays as it was)."""
    path = project.changesets_dir / "V0002__late.yaml"
    path.write_text(path.read_text().replace("qty: 1", "qty: 2"))


def late_markers(box: Sandbox) -> list[dict]:
    return [r for r in box.records(JOURNAL_APP) if r["key"]["value"].startswith("items:0002:")]


def test_repair_writes_the_markers_and_a_fresh_runner_sees_no_drift(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    a_project, a_env = runner(tmp_path, "a", store)
    apply(a_project, a_env, Recorder(box))
    d_project, d_env = runner(tmp_path, "d", store)  # another machine, synced before the repair
    assert apply(d_project, d_env, Recorder(box)).nothing_to_do
    (before,) = late_markers(box)
    edit(a_project)
    with pytest.raises(DriftError):
        apply(a_project, a_env, Recorder(box))

    recorder = Recorder(box)
    assert api.repair(api.Context(a_project, a_env), client=client_over(recorder)) == ["V0002__late"]
    (after,) = late_markers(box)
    planned = api.plan(api.Context(a_project, a_env)).changesets[1]
    assert after["hash"]["value"] == planned.batches[0].hash != before["hash"]["value"]
    assert after["rendered_checksum"]["value"] == planned.rendered_checksum
    assert int(after["$revision"]["value"]) == int(before["$revision"]["value"]) + 1
    assert recorder.data_writes() == []  # Kintone's records stay as they were

    b_project, b_env = runner(tmp_path, "b", store)  # a fresh runner with the edited files
    edit(b_project)
    recorder = Recorder(box)
    assert apply(b_project, b_env, recorder).nothing_to_do and recorder.data_writes() == []
    assert [s.state for s in api.status(api.Context(b_project, b_env), client_over(Recorder(box)))] == [
        "applied"
    ] * 2
    edit(d_project)  # the machine synced before the repair takes it at its next sync
    assert apply(d_project, d_env, Recorder(box)).nothing_to_do
    with Journal.open(d_env.journal_path) as journal:
        assert [e.kind for e in journal.events("0002")][-1] == "synced"
    c_project, c_env = runner(tmp_path, "c", store)  # the old files: drift, as the markers say
    with pytest.raises(DriftError):
        apply(c_project, c_env, Recorder(box))


def test_repair_writes_markers_by_revision_and_reads_again_after_a_conflict(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    project, env = runner(tmp_path, "a", store)
    apply(project, env, Recorder(box))
    edit(project)
    recorder = Recorder(box)
    conflicts = []

    def another_write_first(method: str, path: str, body: dict) -> None:
        if (
            method == "PUT"
            and path.endswith("/records.json")
            and body.get("app") == JOURNAL_APP
            and not conflicts
        ):
            (marker,) = late_markers(box)
            with box.client() as http:  # someone writes the marker between the read and the PUT
                touched = {
                    "app": JOURNAL_APP,
                    "id": marker["$id"]["value"],
                    "record": {"run": {"value": "x"}},
                }
                conflicts.append(http.put("/k/v1/record.json", json=touched).status_code)

    recorder.before = another_write_first
    assert api.repair(api.Context(project, env), client=client_over(recorder)) == ["V0002__late"]
    puts = [b for m, p, b in recorder.sent if m == "PUT" and p.endswith("/records.json")]
    assert conflicts == [200] and len(puts) == 2  # refused at the old revision, then written
    (marker,) = late_markers(box)
    assert marker["hash"]["value"] == api.plan(api.Context(project, env)).changesets[1].batches[0].hash
    fresh_project, fresh_env = runner(tmp_path, "fresh", store)
    edit(fresh_project)
    assert apply(fresh_project, fresh_env, Recorder(box)).nothing_to_do
