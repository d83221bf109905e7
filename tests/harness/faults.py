"""The fault suite: `kmigrate apply` as a real process against `kmigrate sandbox serve --faults`,
re-run alone (never `resolve`) until done, compared with a fault-free run.

    python -m tests.harness.faults --runs 200 [--records 5000] [--bulk-semantics prefix] [--json FILE]
    python -m tests.harness.faults --runs 200 --journal-app [--runners 3]   # issue #8: fresh runners take turns

Each run gets a fresh store, journal and project copy, and one of the profiles below with its
own seed (``--seed`` + run number), so a run is replayed by its number. A run that exits asking
for `kmigrate resolve` (or is still not done after ``--attempts`` applies) "needed a person"
and is not re-run. Exit status 1 when any mismatch or any run that needed a person was seen.
See docs/testing.md.
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

# Mixed profiles: everything, a busy Kintone, a lossy network, answers lost after commit,
# refusals (a bulk failing part-way among them: under prefix semantics its start stays).
PROFILES = (
    "latency=0-20,429=0.05,500=0.02,503=0.05,reset=0.05,drop=0.05,slow=0.02,partial=0.03",
    "latency=0-50,429=0.2,503=0.1",
    "reset=0.1,drop=0.1,latency=0-10",
    "drop=0.12,slow=0.05",
    "500=0.08,503=0.08,reset=0.04,partial=0.1",
)
SLOW_DELAY = 1.5  # seconds a slow answer takes; the client waits TIMEOUT
TIMEOUT = 1.0


def profile_for(run: int, seed: int, profiles: tuple[str, ...] = PROFILES, timeout: float = TIMEOUT) -> str:
    # A slow answer comes later than the client waits, whatever it waits.
    slow = max(SLOW_DELAY, timeout + 0.5)
    return f"seed={seed + run},{profiles[run % len(profiles)]},slow_delay={slow}"


def run_suite(
    *,
    runs: int,
    records: int,
    bulk_semantics: str = "atomic",
    seed: int = 1,
    attempts: int = 12,
    work: Path,
    progress: bool = False,
    profiles: tuple[str, ...] = PROFILES,
    jobs: int = 1,
    journal_app: bool = False,
    runners: int = 1,
    timeout: float = TIMEOUT,
) -> Figures:
    """``jobs`` runs at once (each has its own served sandbox, project and journal). With
    ``runners`` > 1 the applies of a run take turns over that many fresh runner folders."""
    started = clock()
    with Zygote() as zygote:
        setup, _ = prepare(
            work,
            records=records,
            seed=seed,
            bulk_semantics=bulk_semantics,
            launch=zygote.start,
            timeout=60,
            journal_app=journal_app,
            runners=runners,
        )
        figures = Figures(
            f"fault suite (bulk semantics {bulk_semantics}, shop + {records} CSV visits, no unique field"
            + (f"; a journal app, {runners} runners" if journal_app else "")
            + ")"
        )

        def run_one(run: int) -> Run:
            spec = profile_for(run, seed, profiles, timeout)
            return one_run(
                setup,
                work / f"run-{run}",
                name=f"run {run} ({spec})",
                applies=attempts,
                timeout=timeout,
                faults=spec,
            )

        for outcome in in_parallel(run_one, runs, jobs):
            figures.add(outcome)
            if progress:
                state = "done" if outcome.finished else "NEEDED A PERSON"
                met = ", ".join(
                    f"{k} {v}" for k, v in outcome.counters["faults"].items() if v and k != "latency"
                )
                print(f"{outcome.name}: {state} (faults: {met or 'none'})", file=sys.stderr)
    figures.seconds = clock() - started
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.faults", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--records", type=int, default=5000, help="CSV visits in the no-unique-field app")
    parser.add_argument("--attempts", type=int, default=12, help="applies per run before giving up")
    parser.add_argument(
        "--profile",
        action="append",
        default=None,
        metavar="SPEC",
        help="fault profiles to cycle (default: the five)",
    )
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT, help="the client's timeout, s (a loaded machine needs more)"
    )
    add_suite_arguments(parser, what="run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kmigrate-faults-") as tmp:
        figures = run_suite(
            runs=args.runs,
            records=args.records,
            attempts=args.attempts,
            profiles=tuple(args.profile) if args.profile else PROFILES,
            timeout=args.timeout,
            **suite_options(args, Path(tmp)),
        )
    return report(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
