"""A project over apps in two spaces: one journal app per space, refused where one is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kmigrate import api
from kmigrate.config import load_project
from kmigrate.errors import ConfigError
from kmigrate.remote.records import FIELDS
from kmigrate.sandbox import Sandbox

from .test_apply import Recorder, client_over

SANDBOX = {
    "apps": [
        {"id": 1, "name": "Items", "fields": {"code": {"type": "SINGLE_LINE_TEXT", "unique": True}}},
        {
            "id": 7,
            "name": "Staff",
            "guest_space_id": 3,
            "fields": {"code": {"type": "SINGLE_LINE_TEXT", "unique": True}},
        },
        {"id": 90, "name": "journal", "fields": FIELDS},
        {"id": 91, "name": "journal (guest space 3)", "guest_space_id": 3, "fields": FIELDS},
    ]
}
CHANGESET = """\
operations:
  - add: {app: items, records: [{code: A}, {code: B}]}
  - add: {app: staff, records: [{code: S1}]}
"""


def project_in(root: Path, store: Path, journal_app: str) -> api.Context:
    (root / "changesets").mkdir(parents=True)
    (root / "sandbox.yaml").write_text(yaml.safe_dump(SANDBOX))
    (root / "changesets" / "V0001__both.yaml").write_text(CHANGESET)
    (root / "kmigrate.toml").write_text(
        'project = "spaces"\n[env.target]\nsandbox = "sandbox.yaml"\n'
        "apps = { items = 1, staff = {id = 7, guest_space_id = 3} }\n" + journal_app
    )
    project = load_project(root)
    return api.Context(project, project.environment())


def test_each_space_gets_its_markers_and_a_fresh_runner_knows_both(tmp_path: Path) -> None:
    store = tmp_path / "k.sqlite3"
    setting = 'journal_app = { default = 90, "3" = 91 }\n'
    ctx = project_in(tmp_path / "a", store, setting)
    with Sandbox.open(tmp_path / "a" / "sandbox.yaml", store) as box:
        with client_over(Recorder(box)) as client:
            result = api.apply(ctx, client=client)
        assert result.summary is not None and result.summary.applied_batches == 2  # a bulk per space
        assert [r["key"]["value"] for r in box.records(90) if r["kind"]["value"] == "batch"] == [
            "spaces:0001:0"
        ]
        assert [r["key"]["value"] for r in box.records(91)] == ["spaces:0001:1"]
        fresh = project_in(tmp_path / "b", store, setting)
        recorder = Recorder(box)
        with client_over(recorder) as client:
            assert api.apply(fresh, client=client).nothing_to_do
        assert recorder.data_writes() == [] and len(box.records(7)) == 1


def test_a_space_without_its_journal_app_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    store = tmp_path / "k.sqlite3"
    ctx = project_in(tmp_path / "a", store, "journal_app = 90\n")
    with Sandbox.open(tmp_path / "a" / "sandbox.yaml", store) as box:
        recorder = Recorder(box)
        with client_over(recorder) as client, pytest.raises(ConfigError, match="guest space 3") as err:
            api.apply(ctx, client=client)
        assert err.value.exit_code == 2
        assert not any(path.endswith("bulkRequest.json") for _, path, _ in recorder.sent)
        assert box.records(1) == [] and box.records(7) == []
