"""Issue #7's fault suite and crash matrix, run with a journal app and several runners.

The harness (tests/harness) runs `kmigrate apply` as real processes against `kmigrate sandbox
serve` with seeded faults or a SIGKILL at a chosen request, re-runs it until done (never
`kmigrate resolve`), and compares every app's records with a fault-free run. Here the project
has a journal app (`--journal-app`), and the applies take turns over three fresh runners'
folders (each its own local journal, the first of them none): 0 duplicates, 0 missing, 0 runs
needing a person. The fault profiles include bulks failing part-way: under prefix semantics
their start stays, marker included, and the batch is completed by a later apply.
"""

from __future__ import annotations

import pytest

from tests.harness.common import Figures
from tests.harness.crash import run_matrix
from tests.harness.faults import run_suite

pytestmark = pytest.mark.slow

RUNNERS = 3
SEMANTICS = ("atomic", "prefix")
# Runs (kill points) at once: each mostly waits (backoffs, slow answers); two rounds each.
FAULT_JOBS, CRASH_JOBS = 5, 4


def grouped(name: str) -> list:
    """Each suite's tests on one worker under xdist, so the suite runs once per semantics."""
    return [pytest.param(s, marks=pytest.mark.xdist_group(f"journal-{name}-{s}")) for s in SEMANTICS]


@pytest.fixture(scope="module", params=grouped("faults"))
def faults(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    work = tmp_path_factory.mktemp(f"journal-faults-{request.param}")
    # Profiles 0 and 4 break bulks part-way (partial=): 10 runs meet them at either semantics.
    return run_suite(
        runs=10,
        records=120,
        bulk_semantics=request.param,
        work=work,
        journal_app=True,
        runners=RUNNERS,
        jobs=FAULT_JOBS,
    )


@pytest.fixture(scope="module", params=grouped("crashes"))
def crashes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    work = tmp_path_factory.mktemp(f"journal-crashes-{request.param}")
    figures, _ = run_matrix(
        points=8,
        records=60,
        chunks=2,
        bulk_semantics=request.param,
        work=work,
        journal_app=True,
        runners=RUNNERS,
        jobs=CRASH_JOBS,
    )
    return figures


def test_the_fault_suite_with_a_journal_app_and_several_runners_never_duplicates_or_loses(
    faults: Figures,
) -> None:
    m = faults.mismatches
    assert faults.runs == 10 and faults.attempts >= 10
    assert sum(faults.faults[k] for k in ("429", "500", "503", "reset", "drop", "slow")) > 0
    assert faults.faults["partial"] > 0  # bulks broke part-way, and were settled
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), faults.lines()


def test_the_fault_suite_with_a_journal_app_needs_no_person(faults: Figures) -> None:
    assert faults.needed_a_person == [], faults.lines()


def test_the_crash_matrix_with_a_journal_app_and_fresh_runners_never_duplicates_or_loses(
    crashes: Figures,
) -> None:
    m = crashes.mismatches
    assert crashes.killed == crashes.runs == 8
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), crashes.lines()


def test_the_crash_matrix_with_a_journal_app_needs_no_person(crashes: Figures) -> None:
    assert crashes.needed_a_person == [], crashes.lines()
