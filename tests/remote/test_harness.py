"""Issue #7's fault suite and crash matrix, run with a journal app and several runners.

The harness (tests/harness) runs `kmigrate apply` as real processes against `kmigrate sandbox
serve` with seeded faults or a SIGKILL at a chosen request, re-runs it until done (never
`kmigrate resolve`), and compares every app's records with a fault-free run. Here the project
has a journal app, and the re-runs alternate between fresh runners' folders (each its own
local journal, the first of them none): 0 duplicates, 0 missing, 0 runs needing a person.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kmigrate.remote.records import FIELDS
from tests.harness.common import (
    Figures,
    compare,
    final_records,
    last_line,
    make_copy,
    make_project,
    reference,
    run_apply,
    serve,
    set_served_port,
)
from tests.harness.crash import kill_points
from tests.harness.faults import PROFILES, TIMEOUT, profile_for

pytestmark = pytest.mark.slow

JOURNAL_APP = 90
RUNNERS = ("runner-a", "runner-b", "runner-c")
# At CI size, as tests/harness/test_harness.py: a bulk failing part-way has its own test there.
NO_PARTIAL = tuple(",".join(p for p in spec.split(",") if not p.startswith("partial=")) for spec in PROFILES)


def journal_project(dest: Path, *, records: int, chunks: int = 1) -> Path:
    """The harness's project with a journal app in its sandbox and `project` named."""
    root = make_project(dest, records=records, chunks=chunks)
    sandbox = yaml.safe_load((root / "sandbox.yaml").read_text(encoding="utf-8"))
    sandbox["apps"].append({"id": JOURNAL_APP, "name": "kmigrate journal", "fields": FIELDS})
    (root / "sandbox.yaml").write_text(yaml.safe_dump(sandbox, sort_keys=False), encoding="utf-8")
    toml = (root / "kmigrate.toml").read_text(encoding="utf-8")
    (root / "kmigrate.toml").write_text('project = "shop"\n' + toml, encoding="utf-8")
    return root


def point_at(root: Path, url: str) -> None:
    """The served environment (the file's last table) with the journal app named."""
    set_served_port(root, int(url.rsplit(":", 1)[1]))
    with (root / "kmigrate.toml").open("a", encoding="utf-8") as handle:
        handle.write(f"journal_app = {JOURNAL_APP}\n")


def fault_free_requests(template: Path, work: Path, semantics: str) -> int:
    run_dir = work / "reference-journal"
    run_dir.mkdir(parents=True, exist_ok=True)
    project = make_copy(template, run_dir / "project")
    with serve(project, run_dir, bulk_semantics=semantics) as served:
        point_at(project, served.url)
        attempt = run_apply(project, timeout=30)
        assert attempt.done, attempt.output
        return int(served.counters()["requests"])


def fault_suite(work: Path, semantics: str, *, runs: int = 6, records: int = 120) -> Figures:
    template = journal_project(work / "template", records=records)
    expected, _ = reference(template, work, bulk_semantics=semantics, timeout=60)
    figures = Figures(f"fault suite with a journal app and {len(RUNNERS)} runners ({semantics})")
    for run in range(runs):
        run_dir = work / f"run-{run}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = profile_for(run, 1, NO_PARTIAL)
        folders = [make_copy(template, run_dir / name) for name in RUNNERS]
        finished, person = False, None
        with serve(folders[0], run_dir, faults=spec, bulk_semantics=semantics) as served:
            for folder in folders:
                point_at(folder, served.url)
            for attempt_no in range(12):
                attempt = run_apply(folders[attempt_no % len(folders)], timeout=TIMEOUT)
                figures.attempts += 1
                if attempt.done:
                    finished = True
                    break
                if attempt.asks_for_a_person:
                    person = f"run {run} ({spec}): {last_line(attempt.output)}"
                    break
            else:
                person = f"run {run} ({spec}): not done after 12 applies: {last_line(attempt.output)}"
            counters = served.counters()
        figures.runs += 1
        figures.requests += counters["requests"]
        figures.faults.update(counters["faults"])
        figures.mismatches.add(compare(expected, final_records(served), finished=finished))
        if person:
            figures.needed_a_person.append(person)
    return figures


def crash_matrix(work: Path, semantics: str, *, points: int = 8, records: int = 60) -> Figures:
    template = journal_project(work / "template", records=records, chunks=2)
    expected, _ = reference(template, work, bulk_semantics=semantics, timeout=30)
    requests = fault_free_requests(template, work, semantics)
    figures = Figures(f"crash matrix with a journal app and fresh runners ({semantics}; {requests} requests)")
    for number, point in enumerate(kill_points(requests, points)):
        run_dir = work / f"point-{number}"
        run_dir.mkdir(parents=True, exist_ok=True)
        folders = [make_copy(template, run_dir / name) for name in RUNNERS]
        pid_file = run_dir / "apply.pid"
        finished, person = False, None
        with serve(folders[0], run_dir, bulk_semantics=semantics, kill=point, pid_file=pid_file) as served:
            for folder in folders:
                point_at(folder, served.url)
            first = run_apply(folders[0], timeout=30, pid_file=pid_file)
            figures.attempts += 1
            figures.killed += first.returncode == -9
            attempt, finished = first, first.done
            # After the kill, the next runner is a fresh machine: no local journal at all.
            for attempt_no in range(1, 7):
                if finished or attempt.asks_for_a_person:
                    break
                attempt = run_apply(folders[attempt_no % len(folders)], timeout=30)
                figures.attempts += 1
                finished = attempt.done
            if not finished:
                person = f"kill point {point}: {last_line(attempt.output)}"
            counters = served.counters()
        figures.runs += 1
        figures.requests += counters["requests"]
        figures.mismatches.add(compare(expected, final_records(served), finished=finished))
        if person:
            figures.needed_a_person.append(person)
    return figures


# Each suite's tests on one worker under xdist, so the suite runs once.
@pytest.fixture(
    scope="module",
    params=[
        pytest.param(s, marks=pytest.mark.xdist_group(f"journal-faults-{s}")) for s in ("atomic", "prefix")
    ],
)
def faults(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    return fault_suite(tmp_path_factory.mktemp(f"journal-faults-{request.param}"), request.param)


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Figures:
    return crash_matrix(tmp_path_factory.mktemp("journal-crashes"), "atomic")


def test_the_fault_suite_with_a_journal_app_and_several_runners_never_duplicates_or_loses(
    faults: Figures,
) -> None:
    m = faults.mismatches
    assert (
        faults.runs == 6 and sum(faults.faults[k] for k in ("429", "500", "503", "reset", "drop", "slow")) > 0
    )
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), faults.lines()


def test_the_fault_suite_with_a_journal_app_needs_no_person(faults: Figures) -> None:
    assert faults.needed_a_person == [], faults.lines()


@pytest.mark.xdist_group("journal-crashes")
def test_the_crash_matrix_with_a_journal_app_and_fresh_runners_never_duplicates_or_loses(
    crashes: Figures,
) -> None:
    m = crashes.mismatches
    assert crashes.killed == crashes.runs == 8
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), crashes.lines()


@pytest.mark.xdist_group("journal-crashes")
def test_the_crash_matrix_with_a_journal_app_needs_no_person(crashes: Figures) -> None:
    assert crashes.needed_a_person == [], crashes.lines()
