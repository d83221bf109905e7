"""docs/ci/github-actions.yml: its kmigrate steps, run as written against `kmigrate sandbox serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .projects import EXAMPLE, copy_example

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


def test_the_recipe_runs_end_to_end_against_a_served_sandbox(tmp_path):
    root = copy_example(tmp_path, with_sum=True)
    store = tmp_path / "served.sqlite3"
    env = shell_environ(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "kmigrate", "sandbox", "--file", str(root / "sandbox.yaml"), "--store", str(store),
         "serve", "--host", "127.0.0.1", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = (
            server.stdout.readline()
        )  # "Kintone sandbox on http://127.0.0.1:PORT ..." (blocks until listening)
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, first
        toml = root / "kmigrate.toml"
        toml.write_text(toml.read_text().replace("https://example.cybozu.com", url.group(0)))
        toml.write_text(toml.read_text().replace("apps = { orders = 101, customers = 102, products = 103 }",
                                                 "apps = { orders = 1, customers = 2, products = 3 }"))  # fmt: skip

        def step(command: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            return done

        for command in kmigrate_steps("review"):
            step(command)
        comment = (root / "plan.md").read_text()
        assert comment.startswith("### kmigrate plan: `production`")
        assert "3 changesets to apply" in comment and "#### Before -> after (read from Kintone)" in comment
        assert "operation 5: **deletes 1 record(s)** of orders" in comment

        for command in kmigrate_steps("deploy"):
            step(command)
        lines = [json.loads(line) for line in (root / "apply.jsonl").read_text().splitlines()]
        assert lines[0]["format"] == 1 and lines[0]["environment"] == "production"
        assert lines[-1]["outcome"] == "applied" and lines[-1]["summary"]["applied_batches"] == 4

        # the next pull request's plan sees the deployment: nothing left to apply
        for command in kmigrate_steps("review"):
            step(command)
        assert "0 changesets to apply" in (root / "plan.md").read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)
