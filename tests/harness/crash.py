"""The crash matrix: `kmigrate apply` SIGKILLed at many points, re-run alone until done,
compared with a fault-free run.

    python -m tests.harness.crash --points 100 [--chunks 8 --records 800] [--bulk-semantics prefix] [--json FILE]
    python -m tests.harness.crash --points 100 --journal-app [--runners 3]   # issue #8: fresh runners after the kill

The project: the example shop plus ``--chunks`` changesets of CSV visits (refs within and
across changesets, an app with no unique field). A fault-free run counts its requests, R. A
kill point is (n, phase) for the nth request, 1 <= n <= R: the served sandbox
(`kmigrate sandbox serve --kill-client n:PHASE --client-pid-file F`) SIGKILLs the apply
process whose pid the harness wrote to F:

- ``before``: the request arrived and is not handled (the journal says `sent`);
- ``commit``: the sandbox committed it and the answer is never written: the kill lands between
  Kintone's commit and the journal's write;
- ``answer+MS``: MS milliseconds after the answer was written, while kmigrate journals it.

The points are spread evenly over that grid. Then `kmigrate apply` runs again (no kill) until
done, at most ``--attempts`` times; a run that asks for `kmigrate resolve` "needed a person".
Exit status 1 when any mismatch or any run that needed a person was seen. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.remote.projects import journal_app_requests, runner_folders, with_journal_app
from tests.remote.projects import point as set_point

from .common import (
    Figures,
    Mismatches,
    clock,
    compare,
    final_records,
    in_parallel,
    last_line,
    make_project,
    reconciliations,
    reference,
    run_apply,
    serve,
    write_json,
)

PHASES = ("before", "commit", "answer+0", "answer+2", "answer+10")
TIMEOUT = 30.0


def kill_points(requests: int, points: int) -> list[str]:
    """``points`` kill points spread evenly over (request, phase) for requests 1..``requests``."""
    grid = [f"{n}:{phase}" for n in range(1, requests + 1) for phase in PHASES]
    if points >= len(grid):
        return grid
    step = len(grid) / points
    return [grid[int(i * step)] for i in range(points)]


@dataclass
class Point:
    """One kill point's outcome, summed into the figures in point order."""

    point: str
    first_exit: int
    attempts: int
    counters: dict[str, Any]
    reconciliations: int
    mismatches: Mismatches
    finished: bool
    person: str | None


def one_point(
    number: int,
    point: str,
    template: Path,
    expected: dict[int, list[dict[str, Any]]],
    *,
    bulk_semantics: str,
    attempts: int,
    work: Path,
    journal_app: bool = False,
    runners: int = 1,
) -> Point:
    run_dir = work / f"point-{number}"
    run_dir.mkdir(parents=True, exist_ok=True)
    folders = runner_folders(template, run_dir, runners)
    pid_file = run_dir / "apply.pid"
    finished, person, made = False, None, 0
    with serve(folders[0], run_dir, bulk_semantics=bulk_semantics, kill=point, pid_file=pid_file) as served:
        for folder in folders:
            set_point(folder, served.url, journal_app=journal_app)
        first = run_apply(folders[0], timeout=TIMEOUT, pid_file=pid_file)
        made += 1
        attempt = first
        if attempt.done:
            finished = True
        for _ in range(attempts):
            if finished or attempt.asks_for_a_person:
                break
            # With several runners the next one after the kill is a fresh machine.
            attempt = run_apply(folders[made % len(folders)], timeout=TIMEOUT)
            made += 1
            finished = attempt.done
        if not finished:
            reason = (
                last_line(attempt.output)
                if attempt.asks_for_a_person
                else f"not done after {attempts} applies"
            )
            person = f"kill point {point}: {reason}"
        counters = served.counters()
    return Point(
        point,
        first.returncode,
        made,
        counters,
        sum(reconciliations(folder / ".kmigrate" / "served.db") for folder in folders),
        compare(expected, final_records(served), finished=finished),
        finished,
        person,
    )


def run_matrix(
    *,
    points: int,
    records: int,
    chunks: int,
    bulk_semantics: str = "atomic",
    seed: int = 1,
    attempts: int = 6,
    work: Path,
    progress: bool = False,
    jobs: int = 1,
    journal_app: bool = False,
    runners: int = 1,
) -> tuple[Figures, int]:
    """``jobs`` kill points at once (each has its own served sandbox, project and journal). With
    ``journal_app``, the applies after the kill take turns over ``runners`` fresh runner folders."""
    started = clock()
    template = make_project(work / "template", records=records, chunks=chunks, seed=seed)
    if journal_app:
        with_journal_app(template)
    expected, requests = reference(template, work, bulk_semantics=bulk_semantics, timeout=TIMEOUT)
    if journal_app:  # the grid: the requests of a fault-free apply with the journal app
        requests = journal_app_requests(template, work, bulk_semantics, timeout=TIMEOUT)
    figures = Figures(
        f"crash matrix (bulk semantics {bulk_semantics}, shop + {chunks} changesets of {records} visits; "
        f"{requests} requests fault-free"
        + (f"; a journal app, {runners} runners" if journal_app else "")
        + ")"
    )
    grid = kill_points(requests, points)

    def run_one(number: int) -> Point:
        return one_point(
            number,
            grid[number],
            template,
            expected,
            bulk_semantics=bulk_semantics,
            attempts=attempts,
            work=work,
            journal_app=journal_app,
            runners=runners,
        )

    for outcome in in_parallel(run_one, len(grid), jobs):
        figures.runs += 1
        figures.attempts += outcome.attempts
        if outcome.first_exit == -9:
            figures.killed += 1
        figures.requests += outcome.counters["requests"]
        figures.reconciliations += outcome.reconciliations
        figures.mismatches.add(outcome.mismatches)
        if outcome.person:
            figures.needed_a_person.append(outcome.person)
        if progress:
            state = "done" if outcome.finished else "NEEDED A PERSON"
            killed = "killed" if outcome.first_exit == -9 else f"not killed (exit {outcome.first_exit})"
            print(f"kill point {outcome.point}: {killed}, {state}", file=sys.stderr)
    figures.seconds = clock() - started
    return figures, requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.crash", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--records", type=int, default=800, help="CSV visits in all")
    parser.add_argument("--chunks", type=int, default=8, help="changesets the visits are split over")
    parser.add_argument("--bulk-semantics", choices=["atomic", "prefix"], default="atomic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--attempts", type=int, default=6, help="applies after the kill before giving up")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--work", type=Path, default=None, help="keep the points' folders here")
    parser.add_argument("--quiet", action="store_true", help="no line per kill point")
    parser.add_argument("--jobs", type=int, default=1, help="kill points at once (lines come in order)")
    parser.add_argument("--journal-app", action="store_true", help="the project has a journal app (issue #8)")
    parser.add_argument(
        "--runners", type=int, default=3, help="with --journal-app: fresh runner folders taking turns"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kmigrate-crash-") as tmp:
        figures, _ = run_matrix(
            points=args.points,
            records=args.records,
            chunks=args.chunks,
            bulk_semantics=args.bulk_semantics,
            seed=args.seed,
            attempts=args.attempts,
            work=args.work or Path(tmp),
            progress=not args.quiet,
            jobs=args.jobs,
            journal_app=args.journal_app,
            runners=args.runners if args.journal_app else 1,
        )
    print("\n".join(figures.lines()))
    write_json(args.json, figures.as_json())
    return 1 if figures.mismatches.total or figures.needed_a_person else 0


if __name__ == "__main__":
    sys.exit(main())
