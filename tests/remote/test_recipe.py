"""docs/journal.md's deployment recipe, run as written: two fresh CI runners in turn."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .projects import JOURNAL_APP, item_codes, write_project
from .test_processes import EXPECTED, USER, Served

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "journal.md"


def recipe() -> list[list[str]]:
    block = re.search(r"<!-- recipe -->\n```sh\n(.*?)```\n<!-- /recipe -->", DOC.read_text(), re.S)
    assert block is not None, "docs/journal.md lost its recipe block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def test_the_deployment_recipe_on_two_fresh_runners(tmp_path: Path) -> None:
    commands = recipe()
    assert all(c[0] == "kmigrate" for c in commands) and any("apply" in c for c in commands)
    served = Served(tmp_path)
    try:
        outputs = []
        for runner in ("ci-run-1", "ci-run-2"):
            root = write_project(tmp_path / runner, base_url=served.url)
            # The recipe names `production`: the served sandbox plays it here.
            toml = (root / "kmigrate.toml").read_text().replace("[env.target]", "[env.production]")
            (root / "kmigrate.toml").write_text(toml.replace('default_env = "target"\n', ""))
            for command in commands:
                done = subprocess.run(
                    [sys.executable, "-m", *command],
                    cwd=root,
                    env={"PATH": "/usr/bin:/bin", **USER},  # the CI's secret store, nothing else
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                outputs.append(done.stdout + done.stderr)
            assert (root / ".kmigrate" / "production.db").is_file()  # the journal, learnt afresh
        assert "Nothing to do" in outputs[-2]  # the second runner's apply
        assert not any("pw-SECRET-2" in out for out in outputs)
    finally:
        served.stop()
    assert item_codes(served.records(1)) == EXPECTED
    assert len([r for r in served.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]) == 3
