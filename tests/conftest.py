"""Suite-wide settings: property tests are reproducible and leave nothing in the tree."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# derandomize: the same examples on every run and machine (a failure reproduces as is);
# database=None: no .hypothesis/ folder written into the work tree.
settings.register_profile("kmigrate", derandomize=True, database=None)
settings.load_profile("kmigrate")
# Hypothesis still writes caches of its own (constants it found, the characters a codec can
# encode); keep them out of the tree, in one folder kept between runs: the utf-8 table alone
# takes each worker ~3 s of CPU to build, and a cache changes no example (derandomize).
_home = Path(tempfile.gettempdir()) / f"kmigrate-hypothesis-{os.getuid()}"
_home.mkdir(mode=0o700, exist_ok=True)
set_hypothesis_home_dir(_home)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _slow_first(items)
    _restore_xdist_groups(config, items)


def _slow_first(items: list[pytest.Item]) -> None:
    """The `slow` tests (processes, served sandboxes, the harness suites: the longest) first, in
    their order, the rest after. xdist hands the tests out in this order, one at a time to the
    worker that is free (the groups, several tests each, go first anyway): started last, one
    long test kept one worker busy while the other had long finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


def _restore_xdist_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `--dist loadgroup` group again: pytest-xdist 3.8 sends an `xdist_group`'s tests to
    one worker by suffixing their node ids with `@group` on the worker, through
    ``item._nodeid``, which pytest 9.2 no longer reads (it keeps ``item._id``): the suffix is
    lost and each group is spread over the workers, every one of them building the group's
    costly fixture again (pytest-dev/pytest-xdist#1386). This sets the suffix where pytest
    reads it; it does nothing where xdist's own suffix took effect."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        groups = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(groups))
        if groups and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            from _pytest.nodeid import NodeId  # private, pytest 9.2+ only: until xdist sets it itself

            item._id = NodeId.parse(item.nodeid + suffix)
