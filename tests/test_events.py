"""Machine output (kmigrate/events.py): `--format json` of apply, status and history as JSON lines."""

from __future__ import annotations

import json

from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.config import load_project
from kmigrate.sandbox import Sandbox

from .projects import TOKEN, copy_example, items_project, served, write_changeset


def run(root, *args, env=None, input=None):
    # stderr apart: stdout must hold nothing but JSON lines
    return CliRunner().invoke(main, ["-C", str(root), *args], env=env, input=input)


def lines_of(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]  # every line parses


def test_apply_prints_the_format_then_every_event_then_the_summary(tmp_path):
    root = copy_example(tmp_path)
    result = run(root, "apply", "--format", "json")
    assert result.exit_code == 0, result.stderr
    lines = lines_of(result)
    assert lines[0] == {
        "format": 1,
        "kmigrate": lines[0]["kmigrate"],
        "command": "apply",
        "environment": "sandbox",
    }
    assert "summary" in lines[-1] and lines[-1]["outcome"] == "applied" and lines[-1]["exit_code"] == 0
    events = [line["event"] for line in lines[1:-1]]
    assert all("event" in line for line in lines[1:-1])
    # each batch is sent then applied, inside its changeset's start and end
    assert events == [
        "changeset_started", "batch_sent", "batch_applied", "changeset_applied",
        "changeset_started", "batch_sent", "batch_applied", "batch_sent", "batch_applied", "changeset_applied",
        "changeset_started", "batch_sent", "batch_applied", "changeset_applied",
    ]  # fmt: skip
    assert lines[-1]["summary"]["applied_batches"] == 4 and lines[-1]["summary"]["applied_records"] == 100
    assert "applied 4 batch(es)" in result.stderr  # the person's lines go to stderr

    again = run(root, "apply", "--format", "json")
    lines = lines_of(again)
    assert again.exit_code == 0 and lines[0]["format"] == 1
    assert lines[-1]["outcome"] == "nothing to do" and lines[-1]["summary"]["requests_sent"] == 0


def test_a_partial_changeset_reports_its_applied_batch_as_skipped(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    assert run(root, "apply").exit_code == 0
    # a second, failing changeset: its first batch lands, the second is refused (duplicate code)
    write_changeset(
        root,
        "V0002__b.yaml",
        "operations:\n"
        "  - add: {app: items, ref: b, records: [{code: B}]}\n"
        "  - status: {app: items, records: {ref: b}, action: Check}\n"
        "  - add: {app: items, records: [{code: A}]}\n",
    )
    failed = run(root, "apply", "--format", "json")
    lines = lines_of(failed)
    assert failed.exit_code == 1 and lines[0]["format"] == 1
    assert [line["event"] for line in lines[1:-1]][-2:] == ["batch_sent", "batch_failed"]
    assert lines[-1]["outcome"] == "failed" and lines[-1]["exit_code"] == 1 and "error" in lines[-1]
    with api.connect(api.Context.load(root)) as client:  # the clashing record gone: batch 1 can land
        client.request("DELETE", "records", body={"app": 1, "ids": [1]})
    resumed = run(root, "apply", "--format", "json")
    events = [(line["event"], line.get("batch")) for line in lines_of(resumed)[1:-1]]
    assert resumed.exit_code == 0, resumed.stderr
    assert ("batch_skipped", 0) in events and ("batch_applied", 1) in events


def test_an_input_error_still_ends_with_a_summary_line(tmp_path):
    root = copy_example(tmp_path)
    (root / "changesets" / "V0004__bad.yaml").write_text(
        "operations:\n  - add: {app: nowhere, records: [{a: 1}]}\n"
    )
    result = run(root, "apply", "--format", "json")
    lines = lines_of(result)
    assert result.exit_code == 2 and lines[0]["format"] == 1 and len(lines) == 2
    assert (
        lines[-1]["outcome"] == "failed" and lines[-1]["exit_code"] == 2 and "nowhere" in lines[-1]["error"]
    )


def test_status_and_history_as_json_lines(tmp_path):
    root = copy_example(tmp_path)
    pending = run(root, "status", "--format", "json", "--check")
    lines = lines_of(pending)
    assert pending.exit_code == 3 and lines[0]["command"] == "status"
    assert [line["state"] for line in lines[1:-1]] == ["pending"] * 3
    assert (
        lines[-1]["summary"] == {"changesets": 3, "by_state": {"pending": 3}} and lines[-1]["exit_code"] == 3
    )
    assert run(root, "apply").exit_code == 0
    history = run(root, "history", "--format", "json")
    lines = lines_of(history)
    assert history.exit_code == 0 and lines[0]["command"] == "history"
    assert [(e["kind"], e["changeset"], e["batch"]) for e in lines[1:-1]] == [
        ("applied", "0001", 0),
        ("applied", "0002", 0),
        ("applied", "0002", 1),
        ("applied", "0003", 0),
    ]
    assert lines[-1]["summary"] == {"events": 4}


def test_declining_exits_3_and_the_confirmation_lists_only_what_will_be_sent(tmp_path, monkeypatch):
    import kmigrate.cli.run as cli_run

    monkeypatch.setattr(cli_run, "_is_terminal", lambda stream: True)  # a person at a terminal
    store = tmp_path / "remote.sqlite3"
    root = items_project(tmp_path, base_url="http://127.0.0.1:1")
    write_changeset(root, "V0001__first.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env_file = load_project(root).environment().sandbox_file
    with Sandbox.open(env_file, store) as sandbox, served(sandbox) as url:
        text = (root / "kmigrate.toml").read_text().replace("http://127.0.0.1:1", url)
        (root / "kmigrate.toml").write_text(text)
        creds = {"KINTONE_API_TOKEN": TOKEN}
        assert run(root, "-e", "remote", "apply", "--yes", env=creds).exit_code == 0
        write_changeset(
            root, "V0002__second.yaml", "operations:\n  - add: {app: items, records: [{code: B}]}\n"
        )
        sent_before = sandbox.request_count
        declined = run(root, "-e", "remote", "apply", env=creds, input="n\n")
        assert declined.exit_code == 3 and "declined: nothing was sent" in declined.stderr
        assert "V0002__second" in declined.stdout and "V0001__first" not in declined.stdout
        assert sandbox.request_count == sent_before
        # in JSON mode the question and the plan go to stderr; stdout stays JSON lines
        machine = run(root, "-e", "remote", "apply", "--format", "json", env=creds, input="n\n")
        lines = lines_of(machine)
        assert machine.exit_code == 3 and lines[-1]["outcome"] == "declined" and lines[-1]["exit_code"] == 3
        assert "V0002__second" in machine.stderr
        accepted = run(root, "-e", "remote", "apply", env=creds, input="y\n")
        assert accepted.exit_code == 0, accepted.stderr
        assert [r["code"]["value"] for r in sandbox.records(1)] == ["A", "B"]
