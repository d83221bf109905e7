"""Saved plans (kmigrate/savedplan.py): `plan --out FILE` and `apply FILE`, refused when stale."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from kmigrate.cli import main
from kmigrate.config import load_project
from kmigrate.sandbox import Sandbox

from .projects import TOKEN, items_project, served, write_changeset, write_items_csv

CREDS = {"KINTONE_API_TOKEN": TOKEN}


def run(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args], env=CREDS)


@contextmanager
def remote_project(tmp_path):
    """An items project whose `remote` environment is a served sandbox: requests can be counted."""
    root = items_project(tmp_path, base_url="http://127.0.0.1:1")
    toml = root / "kmigrate.toml"
    toml.write_text(toml.read_text() + "vars = { qty = 1 }\n")
    write_items_csv(root, "items.csv", range(3))
    write_changeset(
        root, "V0001__csv.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    write_changeset(
        root,
        "V0002__inline.yaml",
        "operations:\n  - add: {app: items, records: [{code: X, qty: {{ vars.qty }}}]}\n",
    )
    env_file = load_project(root).environment().sandbox_file
    with Sandbox.open(env_file, tmp_path / "remote.sqlite3") as sandbox, served(sandbox) as url:
        toml.write_text(toml.read_text().replace("http://127.0.0.1:1", url))
        yield root, sandbox


def test_a_fresh_saved_plan_is_applied_exactly(tmp_path):
    with remote_project(tmp_path) as (root, sandbox):
        saved = tmp_path / "plan.json"
        made = run(root, "-e", "remote", "plan", "--out", str(saved))
        assert made.exit_code == 0 and "Plan for environment remote" in made.stdout
        data = json.loads(saved.read_text())
        assert data["kmigrate_saved_plan"] == 1 and data["environment"] == "remote" and data["journal"] == {}
        assert [c["id"] for c in data["changesets"]] == ["V0001__csv", "V0002__inline"]
        assert data["plan"]["format"] == 1 and len(data["plan"]["changesets"]) == 2
        assert TOKEN not in saved.read_text()
        applied = run(root, "apply", "--yes", "--format", "json", str(saved))  # the environment: the file's
        assert applied.exit_code == 0, applied.output
        events = [json.loads(line) for line in applied.stdout.splitlines()]
        sent = [(e["changeset"], e["hash"]) for e in events if e.get("event") == "batch_sent"]
        planned = [(c["id"], b["hash"]) for c in data["plan"]["changesets"] for b in c["batches"]]
        assert sent == planned  # exactly the saved plan's bulk requests, nothing else
        assert [r["code"]["value"] for r in sandbox.records(1)] == ["I000000", "I000001", "I000002", "X"]


def _edit_pending(root, tmp_path):
    path = root / "changesets" / "V0002__inline.yaml"
    path.write_text(path.read_text().replace("code: X", "code: Y"))


def _add_changeset(root, tmp_path):
    write_changeset(root, "V0003__more.yaml", "operations:\n  - add: {app: items, records: [{code: Z}]}\n")


def _change_data(root, tmp_path):
    write_items_csv(root, "items.csv", range(4))


def _change_variable(root, tmp_path):
    toml = root / "kmigrate.toml"
    toml.write_text(toml.read_text().replace("vars = { qty = 1 }", "vars = { qty = 2 }"))


def _journal_moves_on(root, tmp_path):
    # another run applied the first changeset meanwhile (a saved plan of both would apply it twice)
    other = tmp_path / "first-only.json"
    (root / "changesets" / "V0002__inline.yaml").rename(tmp_path / "V0002__inline.yaml")
    assert run(root, "-e", "remote", "plan", "--out", str(other)).exit_code == 0
    assert run(root, "apply", "--yes", str(other)).exit_code == 0
    (tmp_path / "V0002__inline.yaml").rename(root / "changesets" / "V0002__inline.yaml")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_edit_pending, "V0002__inline was edited"),
        (_add_changeset, "V0003__more was added"),
        (_change_data, "V0001__csv renders differently"),
        (_change_variable, "the template variables changed"),
        (_journal_moves_on, "the journal moved on"),
    ],
)
def test_a_stale_saved_plan_is_refused_with_nothing_sent(tmp_path, change, reason):
    with remote_project(tmp_path) as (root, sandbox):
        saved = tmp_path / "plan.json"
        assert run(root, "-e", "remote", "plan", "--out", str(saved)).exit_code == 0
        change(root, tmp_path)
        sent, records = sandbox.request_count, sandbox.records(1)
        refused = run(root, "apply", "--yes", str(saved))
        assert refused.exit_code == 2, refused.output
        assert "the saved plan is stale, nothing was sent" in refused.output and reason in refused.output
        assert "kmigrate plan --out FILE" in refused.output
        assert sandbox.request_count == sent and sandbox.records(1) == records
        dry = run(root, "apply", "--dry-run", str(saved))
        assert dry.exit_code == 2 and reason in dry.output


def test_a_var_given_at_apply_time_makes_the_plan_stale(tmp_path):
    with remote_project(tmp_path) as (root, sandbox):
        saved = tmp_path / "plan.json"
        assert run(root, "-e", "remote", "plan", "--out", str(saved)).exit_code == 0
        refused = run(root, "--var", "qty=5", "apply", "--yes", str(saved))
        assert refused.exit_code == 2 and "the template variables changed" in refused.output
        assert sandbox.request_count == 0


def test_a_saved_plan_for_another_environment_or_not_a_saved_plan_is_refused(tmp_path):
    with remote_project(tmp_path) as (root, sandbox):
        saved = tmp_path / "plan.json"
        assert run(root, "-e", "remote", "plan", "--out", str(saved)).exit_code == 0
        other = run(root, "-e", "sandbox", "apply", str(saved))
        assert other.exit_code == 2 and "was made for environment 'remote', not 'sandbox'" in other.output
        printed = tmp_path / "printed.json"
        printed.write_text(run(root, "-e", "remote", "plan", "--format", "json").stdout)
        wrong = run(root, "apply", str(printed))
        assert wrong.exit_code == 2 and "not a saved plan" in wrong.output
        assert sandbox.request_count == 0


def test_the_saved_plan_is_written_as_produced_and_holds_the_very_json_plan(tmp_path, monkeypatch):
    """``plan --out`` streams the plan (render.iter_json, never one joined string) and the file
    holds the same plan as ``plan --format json``; a plan saved by this code is still refused
    when a data file changes."""
    from kmigrate import api, render

    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(30))
    write_changeset(
        root, "V0001__csv.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    ctx = api.Context.load(root)
    expected = json.loads(render.render_json(api.plan(ctx)))

    def joined(plan):
        raise AssertionError("the plan was joined into one string")

    monkeypatch.setattr(render, "render_json", joined)
    monkeypatch.setattr("kmigrate.savedplan.render_json", joined)
    saved = tmp_path / "plan.json"
    assert run(root, "plan", "--out", str(saved)).exit_code == 0
    data = json.loads(saved.read_text())
    assert data["plan"] == expected and data["kmigrate_saved_plan"] == 1
    assert list(data) == [
        "kmigrate_saved_plan",
        "kmigrate",
        "environment",
        "target",
        "apps",
        "vars_sha256",
        "journal",
        "changesets",
        "plan",
    ]
    write_items_csv(root, "items.csv", range(31))
    refused = run(root, "apply", str(saved))
    assert refused.exit_code == 2 and "renders differently" in refused.output


def test_a_plan_failing_part_way_leaves_the_old_saved_plan_whole(tmp_path, monkeypatch):
    """The saved plan is renamed into place once whole: an error while the plan is written
    (here, a batch that cannot be produced) leaves the previous file as it was, and no
    half-written file beside it."""
    from kmigrate import savedplan

    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(30))
    write_changeset(
        root, "V0001__csv.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    saved = tmp_path / "plans" / "plan.json"
    assert run(root, "plan", "--out", str(saved)).exit_code == 0
    before = saved.read_bytes()

    def broken(plan):
        yield '{"format": 1, '
        raise OSError("the disk went away")

    monkeypatch.setattr(savedplan, "iter_json", broken)
    result = run(root, "plan", "--out", str(saved))
    assert result.exit_code != 0
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["plan.json"]
