"""The planner, pure: loaded changesets (+ the journal's state) -> a ``Plan`` of bulk requests.

Three rooms: ``build`` (changesets -> ``Plan``, lazy ``BatchSequence`` for big ones),
``compile`` (each operation -> items, one per record, and its summary) and ``packing`` (items
-> calls -> bulk requests, by the rule its docstring states); ``refs`` holds the refs seen.
"""

from ..kintone import MAX_RECORDS_PER_CALL
from .build import BatchSequence, build_plan
from .packing import MAX_CALLS_PER_BULK, Limits

__all__ = ["build_plan", "BatchSequence", "Limits", "MAX_CALLS_PER_BULK", "MAX_RECORDS_PER_CALL"]
