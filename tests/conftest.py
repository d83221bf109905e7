"""Suite-wide settings: property tests are reproducible and leave nothing in the tree."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# derandomize: the same examples on every run and machine (a failure reproduces as is);
# database=None: no .hypothesis/ folder written into the work tree.
settings.register_profile("kmigrate", derandomize=True, database=None)
settings.load_profile("kmigrate")
# Hypothesis still writes a small cache of its own (constants it found); keep it out of the tree.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="kmigrate-hypothesis-"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
