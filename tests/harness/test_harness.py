"""The fault suite and the crash matrix at CI size (the full size: docs/testing.md).

Each suite runs once per bulk semantics (module-scoped fixtures); the tests read its figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .common import Figures
from .crash import kill_points, run_matrix
from .faults import PROFILES, run_suite

pytestmark = pytest.mark.slow

SEMANTICS = ["atomic", "prefix"]
# Runs at once: a run mostly waits (backoffs, slow answers, process start-up), not computes (a
# suite here used ~10 s of CPU in 18-30 s). Two rounds of 5; the figures are the same at any
# number of jobs (each run has its own seed, sandbox and journal).
JOBS = 5


# At CI size a bulk failing part-way is left to its own test below, where it happens for sure.
CI_PROFILES = tuple(",".join(p for p in spec.split(",") if not p.startswith("partial=")) for spec in PROFILES)


def grouped(name: str) -> list:
    """One param per semantics, each in its own xdist group: the tests reading one suite's
    figures run on one worker, so the suite runs once."""
    return [pytest.param(s, marks=pytest.mark.xdist_group(f"{name}-{s}")) for s in SEMANTICS]


@pytest.fixture(scope="module", params=grouped("faults"))
def fault_suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    work: Path = tmp_path_factory.mktemp(f"faults-{request.param}")
    return run_suite(
        runs=10, records=120, bulk_semantics=request.param, work=work, profiles=CI_PROFILES, jobs=JOBS
    )


@pytest.fixture(scope="module", params=grouped("crash"))
def crash_matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    work: Path = tmp_path_factory.mktemp(f"crash-{request.param}")
    figures, _ = run_matrix(
        points=10, records=60, chunks=2, bulk_semantics=request.param, work=work, jobs=JOBS
    )
    return figures


def test_fault_suite_injects_every_kind_and_never_duplicates_loses_or_corrupts(fault_suite: Figures):
    assert fault_suite.runs == 10 and fault_suite.attempts >= 10
    assert fault_suite.requests > 10 * 6  # every run sent its batches (and retries)
    assert sum(fault_suite.faults[k] for k in ("429", "500", "503", "reset", "drop", "slow")) > 0
    assert fault_suite.retries > 0
    m = fault_suite.mismatches
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), m.examples


def test_fault_suite_needs_no_person(fault_suite: Figures):
    assert fault_suite.needed_a_person == []


def test_crash_matrix_kills_every_point_and_never_duplicates_loses_or_corrupts(crash_matrix: Figures):
    assert crash_matrix.runs == 10 and crash_matrix.killed == 10
    m = crash_matrix.mismatches
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), m.examples


def test_crash_matrix_needs_no_person(crash_matrix: Figures):
    assert crash_matrix.needed_a_person == []


def test_kill_points_spread_over_requests_and_phases():
    points = kill_points(20, 100)
    assert len(points) == 100 and len(set(points)) == 100
    assert {p.split(":")[1] for p in points} == {"before", "commit", "answer+0", "answer+2", "answer+10"}
    assert points[0] == "1:before" and kill_points(2, 100) == kill_points(2, 10)  # at most the grid
    assert len({p.split(":")[0] for p in kill_points(40, 100)}) == 40  # every request is hit


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_a_bulk_failing_part_way_is_settled_exactly(semantics: str, tmp_path: Path):
    # The first bulk (V0001: an upsert, then an add) fails at its second request, once. Under
    # prefix semantics the upsert stayed: sending the whole batch again upserts twice.
    figures = run_suite(
        runs=1, records=20, bulk_semantics=semantics, work=tmp_path, profiles=("partial=1,count=1",)
    )
    assert figures.faults["partial"] == 1
    m = figures.mismatches
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), m.examples
    assert figures.needed_a_person == []
