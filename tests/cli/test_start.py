"""A cheap start: each command imports only what it uses (docs/benchmarks.md, "A cheap start").

Checked by the modules a fresh interpreter holds after the command, not by timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kmigrate import __version__

pytestmark = pytest.mark.slow  # each case starts a Python process

HEAVY = (
    "kmigrate.api",
    "kmigrate.loader",
    "pydantic",
    "jinja2",
    "httpx",
    "sqlite_utils",
    "kmigrate.sandbox.service",
    "kmigrate.sandbox.calls",  # the sandbox's default for --max-in-flight is Kintone's limit (kintone.py)
)


def modules_after(args: list[str], cwd: Path) -> set[str]:
    """The modules loaded once ``kmigrate ARGS`` has run, in a process of its own."""
    code = (
        "import sys, json\n"
        "from kmigrate.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_help_imports_none_of_the_library(tmp_path):
    loaded = modules_after(["--help"], tmp_path)
    assert "kmigrate.cli" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_the_version_comes_from_the_package_without_importlib_metadata(tmp_path):
    import importlib.metadata

    assert importlib.metadata.version("kmigrate") == __version__  # pyproject reads it from the package
    assert "importlib.metadata" not in modules_after(["--help"], tmp_path)


def test_a_no_op_apply_needs_no_http_client_and_no_sandbox_server(tmp_path):
    from tests.projects import items_project, write_changeset

    root = items_project(tmp_path)
    write_changeset(root, "V0001__first.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    first = subprocess.run(
        [sys.executable, "-m", "kmigrate", "-C", str(root), "apply"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr
    loaded = modules_after(["-C", str(root), "apply"], tmp_path)
    assert "kmigrate.journal" in loaded  # it did read the journal
    assert not [
        m for m in ("httpx", "kmigrate.client", "kmigrate.sandbox.service", "kmigrate.lint") if m in loaded
    ]
