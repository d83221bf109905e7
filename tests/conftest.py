"""Suite-wide settings: property tests are reproducible and leave nothing in the tree."""

from __future__ import annotations

import tempfile

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# derandomize: the same examples on every run and machine (a failure reproduces as is);
# database=None: no .hypothesis/ folder written into the work tree.
settings.register_profile("kmigrate", derandomize=True, database=None)
settings.load_profile("kmigrate")
# Hypothesis still writes a small cache of its own (constants it found); keep it out of the tree.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="kmigrate-hypothesis-"))
