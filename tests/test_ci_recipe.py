"""docs/ci/github-actions.yml: its kmigrate steps, run as written against `kmigrate sandbox serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .projects import EXAMPLE

pytestmark = pytest.mark.slow

WORKFLOW = EXAMPLE / "docs" / "ci" / "github-actions.yml"


def kmigrate_steps(job: str) -> list[str]:
    """The `run:` lines of ``job`` that call kmigrate (the others are GitHub's: pip, gh)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [
        s["run"] for s in workflow["jobs"][job]["steps"] if "run" in s and s["run"].startswith("kmigrate ")
    ]


def shell_environ(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KINTONE_", "KMIGRATE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # kmigrate on PATH
    env["KMIGRATE_ENV"] = yaml.safe_load(WORKFLOW.read_text())["env"]["KMIGRATE_ENV"]
    env["HOME"] = str(tmp_path)
    return env


def test_the_workflow_names_the_steps_this_test_runs():
    assert kmigrate_steps("review") == [
        'kmigrate -e "$KMIGRATE_ENV" validate',
        'kmigrate -e "$KMIGRATE_ENV" lint --strict',
        'kmigrate -e "$KMIGRATE_ENV" plan --format markdown --diff > plan.md',
    ]
    assert kmigrate_steps("deploy")[-3:] == [
        'kmigrate -e "$KMIGRATE_ENV" plan --out plan.json',
        'kmigrate -e "$KMIGRATE_ENV" apply plan.json --yes --wait 600 --format json > apply.jsonl',
        'kmigrate -e "$KMIGRATE_ENV" status --check',
    ]


def test_the_recipe_runs_on_fresh_runners_against_a_served_sandbox(tmp_path):
    """Each job on a fresh runner (its own clone, no .kmigrate/): the journal is the served
    Kintone's journal app, the credentials the CI's secrets, the environment `production`."""
    from .remote.projects import JOURNAL_APP, item_codes, write_project
    from .remote.test_processes import EXPECTED, USER, Served

    served = Served(tmp_path)
    env = {**shell_environ(tmp_path), **USER}
    outputs: list[str] = []

    def runner(name: str) -> Path:
        root = write_project(tmp_path / name, base_url=served.url)
        toml = (root / "kmigrate.toml").read_text().replace("[env.target]", "[env.production]")
        (root / "kmigrate.toml").write_text(toml.replace('default_env = "target"\n', ""))
        return root

    def job(name: str, root: Path) -> None:
        for command in kmigrate_steps(name):
            done = subprocess.run(
                ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs.append(done.stdout + done.stderr)

    try:
        pull_request = runner("pr-1")
        job("review", pull_request)
        comment = (pull_request / "plan.md").read_text()
        assert comment.startswith("### kmigrate plan: `production`")
        assert "_Applied state: the journal app in Kintone (app 90), read now._" in comment
        assert "2 changesets to apply" in comment and "#### Before -> after (read from Kintone)" in comment

        deploy = runner("deploy-1")
        job("deploy", deploy)
        lines = [json.loads(line) for line in (deploy / "apply.jsonl").read_text().splitlines()]
        assert lines[0]["format"] == 1 and lines[0]["environment"] == "production"
        assert lines[-1]["outcome"] == "applied" and lines[-1]["summary"]["applied_changesets"] == [
            "V0001__items",
            "V0002__late",
        ]

        # the next pull request, on another fresh runner, sees the deployment through the journal app
        again = runner("pr-2")
        job("review", again)
        assert "0 changesets to apply" in (again / "plan.md").read_text()
    finally:
        served.stop()
    assert item_codes(served.records(1)) == EXPECTED
    assert len([r for r in served.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]) == 3
    assert not any(USER["KINTONE_PASSWORD"] in out for out in outputs)
