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
from pathlib import Path

from .common import (
    Figures,
    Run,
    add_suite_arguments,
    clock,
    in_parallel,
    one_run,
    prepare,
    report,
    suite_options,
)
from .zygote import Zygote

PHASES = ("before", "commit", "answer+0", "answer+2", "answer+10")
TIMEOUT = 30.0


def kill_points(requests: int, points: int) -> list[str]:
    """``points`` kill points spread evenly over (request, phase) for requests 1..``requests``."""
    grid = [f"{n}:{phase}" for n in range(1, requests + 1) for phase in PHASES]
    if points >= len(grid):
        return grid
    step = len(grid) / points
    return [grid[int(i * step)] for i in range(points)]


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
    parallel: int = 1,
    records_per_call: int | None = None,
) -> tuple[Figures, int]:
    """``jobs`` kill points at once (each has its own served sandbox, project and journal). With
    ``runners`` > 1 the applies after the kill take turns over that many fresh runner folders;
    ``records_per_call`` plans smaller write calls than Kintone's 100 (tests/projects.py)."""
    started = clock()
    with Zygote(records_per_call=records_per_call) as zygote:
        # With a journal app, its requests are in the grid: the fault-free run has it too.
        setup, requests = prepare(
            work,
            records=records,
            chunks=chunks,
            seed=seed,
            bulk_semantics=bulk_semantics,
            launch=zygote.start,
            timeout=TIMEOUT,
            journal_app=journal_app,
            runners=runners,
            parallel=parallel,
        )
        figures = Figures(
            f"crash matrix (bulk semantics {bulk_semantics}, shop + {chunks} changesets of {records} visits; "
            f"{requests} requests fault-free"
            + (f"; a journal app, {runners} runners" if journal_app else "")
            + ")"
        )
        grid = kill_points(requests, points)

        def run_one(number: int) -> Run:
            return one_run(
                setup,
                work / f"point-{number}",
                name=f"kill point {grid[number]}",
                applies=1 + attempts,
                timeout=TIMEOUT,
                kill=grid[number],
            )

        for outcome in in_parallel(run_one, len(grid), jobs):
            figures.add(outcome)
            if progress:
                first = outcome.applies[0].returncode
                killed = "killed" if first == -9 else f"not killed (exit {first})"
                state = "done" if outcome.finished else "NEEDED A PERSON"
                print(f"{outcome.name}: {killed}, {state}", file=sys.stderr)
    figures.seconds = clock() - started
    return figures, requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.crash", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--records", type=int, default=800, help="CSV visits in all")
    parser.add_argument("--chunks", type=int, default=8, help="changesets the visits are split over")
    parser.add_argument("--attempts", type=int, default=6, help="applies after the kill before giving up")
    parser.add_argument(
        "--parallel", type=int, default=1, help="apply --parallel N (bulks in flight at once)"
    )
    add_suite_arguments(parser, what="kill point")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kmigrate-crash-") as tmp:
        figures, _ = run_matrix(
            points=args.points,
            records=args.records,
            chunks=args.chunks,
            attempts=args.attempts,
            parallel=args.parallel,
            **suite_options(args, Path(tmp)),
        )
    return report(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
