"""The run commands through the CLI: apply's confirmation and dry run, status --check, history, unlock."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kmigrate.cli import main
from kmigrate.config import load_project
from kmigrate.journal import Journal
from kmigrate.sandbox import Sandbox

from ..projects import TOKEN, copy_example, items_project, served, write_changeset


def run(root, *args, env=None):
    return CliRunner().invoke(main, ["-C", str(root), *args], env=env)


def item_codes(root, store=None):
    env = load_project(root).environment()
    with Sandbox.open(env.sandbox_file, store or env.sandbox_store) as sandbox:
        return [r["code"]["value"] for r in sandbox.records(1)]


def test_a_remote_environment_needs_yes_without_a_terminal(tmp_path):
    store = tmp_path / "remote.sqlite3"
    root = items_project(tmp_path, base_url="http://127.0.0.1:1")  # replaced below once served
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env_file = load_project(root).environment().sandbox_file
    with Sandbox.open(env_file, store) as sandbox, served(sandbox) as url:
        text = (root / "kmigrate.toml").read_text().replace("http://127.0.0.1:1", url)
        (root / "kmigrate.toml").write_text(text)
        creds = {"KINTONE_API_TOKEN": TOKEN}
        refused = run(root, "-e", "remote", "apply", env=creds)
        assert (
            refused.exit_code == 2
            and "no terminal to confirm on" in refused.output
            and "--yes" in refused.output
        )
        assert sandbox.request_count == 0
        applied = run(root, "-e", "remote", "apply", "--yes", env=creds)
        assert applied.exit_code == 0, applied.output
        assert [r["code"]["value"] for r in sandbox.records(1)] == ["A"]


def test_plain_http_to_another_host_is_refused_before_anything_is_sent(tmp_path):
    root = items_project(tmp_path, base_url="http://kintone.example.com")
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    result = run(root, "-e", "remote", "apply", "--yes", env={"KINTONE_API_TOKEN": TOKEN})
    assert result.exit_code == 2 and "--insecure-http" in result.output
    assert "Traceback" not in result.output


def test_dry_run_prints_the_plan_and_sends_nothing(tmp_path):
    root = copy_example(tmp_path)
    result = run(root, "apply", "--dry-run")
    assert result.exit_code == 0 and "Plan for environment sandbox: 3 changesets to apply" in result.output
    assert not (root / ".kmigrate" / "sandbox.db").exists()  # nothing journaled
    env = load_project(root).environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        assert sandbox.records(1) == []


def test_status_check_exits_3_while_work_is_pending(tmp_path):
    root = copy_example(tmp_path)
    pending = run(root, "status", "--check")
    assert pending.exit_code == 3 and pending.output.count("pending") == 3
    assert run(root, "apply").exit_code == 0
    done = run(root, "status", "--check", "--format", "json")
    assert done.exit_code == 0
    rows = [json.loads(line) for line in done.output.splitlines()]
    assert [row["state"] for row in rows if row.get("event") == "changeset"] == ["applied"] * 3


def test_history_lists_the_event_log(tmp_path):
    root = copy_example(tmp_path)
    assert run(root, "apply").exit_code == 0
    history = run(root, "history")
    lines = history.output.splitlines()
    assert history.exit_code == 0 and len(lines) == 4 and all(" applied " in line for line in lines)
    only = run(root, "history", "--changeset", "V0002", "--format", "json")
    logged = [json.loads(line) for line in only.output.splitlines()]
    assert [(e["kind"], e["changeset"], e["batch"]) for e in logged if e.get("event") == "journal_event"] == [
        ("applied", "0002", 0),
        ("applied", "0002", 1),
    ]


def test_unlock_frees_a_lock_and_logs_it(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env = load_project(root).environment()
    with Journal.open(env.journal_path) as journal:
        journal.acquire_lock()  # held by this (live) process, as by a run elsewhere
    locked = run(root, "apply")
    assert locked.exit_code == 1 and "locked by" in locked.output and "kmigrate unlock" in locked.output
    freed = run(root, "unlock", "--reason", "the CI job was cancelled")
    assert freed.exit_code == 0 and "Freed the lock" in freed.output
    assert run(root, "apply").exit_code == 0 and item_codes(root) == ["A"]
    with Journal.open(env.journal_path) as journal:
        unlocked = [e for e in journal.events() if e.kind == "unlocked"]
    assert len(unlocked) == 1 and unlocked[0].detail["reason"] == "the CI job was cancelled"
    assert run(root, "unlock").output.strip() == "The journal was not locked."


def test_resolve_needs_a_verdict(tmp_path):
    root = items_project(tmp_path)
    result = run(root, "resolve", "0001", "0")
    assert result.exit_code == 2 and "--applied or --not-applied" in result.output


@pytest.mark.slow  # a kmigrate process on a pseudo-terminal
def test_apply_on_a_terminal_draws_a_progress_bar(tmp_path):
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from ..projects import write_items_csv

    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(4500))
    write_changeset(
        root, "V0001__a.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmigrate", "-C", str(root), "apply"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([leader], [], [], max(left, 0))
            assert ready, f"no output for 60 s; the screen so far:\n{screen.decode(errors='replace')}"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    text = screen.decode()
    assert "applying" in text and "4500/4500" in text  # the bar, counting records
    assert "bulk requests)" not in text  # plain lines are for logs, not terminals
    assert "applied 3 batch(es), 4500 record(s)" in text


def test_apply_without_a_terminal_prints_one_line_per_batch_numbered_as_resolve_takes_it(tmp_path):
    from ..projects import write_items_csv

    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(2500))
    write_changeset(
        root, "V0001__a.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    result = run(root, "apply")
    assert result.exit_code == 0, result.output
    assert "V0001__a: batch #0 applied (2000 records; 1/2 bulk requests)" in result.output
    assert "V0001__a: batch #1 applied (500 records; 2/2 bulk requests)" in result.output


def test_apply_timeout_flag_wins_over_kmigrate_timeout_and_the_file(tmp_path, monkeypatch):
    from kmigrate import api

    root = items_project(tmp_path)
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    (root / "kmigrate.toml").write_text(
        (root / "kmigrate.toml")
        .read_text()
        .replace('sandbox = "sandbox.yaml"', 'sandbox = "sandbox.yaml"\ntimeout = 30', 1)
    )
    seen: list[float] = []
    real_connect = api.connect

    def connect(env):
        client = real_connect(env)
        seen.append(client._http.timeout.read)
        return client

    monkeypatch.setattr(api, "connect", connect)
    monkeypatch.delenv("KMIGRATE_TIMEOUT", raising=False)
    assert run(root, "apply").exit_code == 0 and seen == [30.0]
    write_changeset(root, "V0002__b.yaml", "operations:\n  - add: {app: items, records: [{code: B}]}\n")
    assert run(root, "apply", env={"KMIGRATE_TIMEOUT": "12"}).exit_code == 0 and seen[-1] == 12.0
    write_changeset(root, "V0003__c.yaml", "operations:\n  - add: {app: items, records: [{code: C}]}\n")
    done = run(root, "apply", "--timeout", "2.5", env={"KMIGRATE_TIMEOUT": "12"})
    assert done.exit_code == 0 and seen[-1] == 2.5
    bad = run(root, "apply", "--timeout", "soon")
    assert bad.exit_code == 2 and "--timeout = 'soon'" in bad.output and item_codes(root) == ["A", "B", "C"]
