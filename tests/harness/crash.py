"""The crash matrix: `kmigrate apply` SIGKILLed at many points, re-run alone until done,
compared with a fault-free run.

    python -m tests.harness.crash --points 100 [--chunks 8 --records 800] [--bulk-semantics prefix] [--json FILE]

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

from .common import (
    Figures,
    Mismatches,
    clock,
    compare,
    final_records,
    in_parallel,
    last_line,
    make_copy,
    make_project,
    reconciliations,
    reference,
    run_apply,
    serve,
    set_served_port,
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
    parallel: int = 1,
) -> Point:
    run_dir = work / f"point-{number}"
    run_dir.mkdir(parents=True, exist_ok=True)
    project = make_copy(template, run_dir / "project")
    pid_file = run_dir / "apply.pid"
    finished, person, made = False, None, 0
    with serve(project, run_dir, bulk_semantics=bulk_semantics, kill=point, pid_file=pid_file) as served:
        set_served_port(project, int(served.url.rsplit(":", 1)[1]))
        if parallel > 1:  # every apply of the point, the resumes too: `parallel` of [env.served]
            with (project / "kmigrate.toml").open("a", encoding="utf-8") as toml:
                toml.write(f"parallel = {parallel}\n")
        first = run_apply(project, timeout=TIMEOUT, pid_file=pid_file)
        made += 1
        attempt = first
        if attempt.done:
            finished = True
        for _ in range(attempts):
            if finished or attempt.asks_for_a_person:
                break
            attempt = run_apply(project, timeout=TIMEOUT)
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
        reconciliations(project / ".kmigrate" / "served.db"),
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
    parallel: int = 1,
) -> tuple[Figures, int]:
    """``jobs`` kill points at once (each has its own served sandbox, project and journal)."""
    started = clock()
    template = make_project(work / "template", records=records, chunks=chunks, seed=seed)
    expected, requests = reference(template, work, bulk_semantics=bulk_semantics, timeout=TIMEOUT)
    figures = Figures(
        f"crash matrix (bulk semantics {bulk_semantics}, shop + {chunks} changesets of {records} visits; "
        f"{requests} requests fault-free)"
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
            parallel=parallel,
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
    parser.add_argument(
        "--parallel", type=int, default=1, help="apply --parallel N (bulks in flight at once)"
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
            parallel=args.parallel,
        )
    print("\n".join(figures.lines()))
    write_json(args.json, figures.as_json())
    return 1 if figures.mismatches.total or figures.needed_a_person else 0


if __name__ == "__main__":
    sys.exit(main())
