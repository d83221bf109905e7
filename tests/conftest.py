"""Suite-wide settings: property tests are reproducible and leave nothing in the tree."""

from __future__ import annotations

from hypothesis import settings

# derandomize: the same examples on every run and machine (a failure reproduces as is);
# database=None: no .hypothesis/ folder written into the work tree.
settings.register_profile("kmigrate", derandomize=True, database=None)
settings.load_profile("kmigrate")
