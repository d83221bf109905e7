"""What the fault suite and the crash matrix share: the generated project, a served sandbox as
a real process, `kmigrate apply` as a real process re-run until done, and the comparison of
the sandbox's final records with a fault-free run.

Only the public faces are used: `kmigrate sandbox serve` (with `--faults`, `--kill-client`),
`kmigrate apply`, the sandbox store read back through ``Sandbox.open`` once the server has
stopped, and the journal's event log (for reconciliations).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import yaml

from kmigrate.remote.records import FIELDS
from kmigrate.sandbox import Sandbox

from ..projects import copy_example_to
from .zygote import fresh

REPO = Path(__file__).resolve().parents[2]
VISITS_APP = 4

# Per app: the field that identifies a record for the comparison (the visits app has no
# unique field in Kintone's sense: `n` is only unique by construction of the CSV), and the
# fields that belong to the process (mismatches there are "wrong statuses").
APP_KEYS = {1: "order_no", 2: "customer_code", 3: "sku", VISITS_APP: "n"}
STATUS_FIELDS = frozenset({"Status", "Assignee"})
IGNORED_FIELDS = frozenset({"$id", "Record_number", "Created_datetime", "Updated_datetime"})

VISITS_APP_YAML = """
  - id: 4
    name: Visits
    fields:
      n: {type: NUMBER}
      visitor: {type: SINGLE_LINE_TEXT, required: true}
      kind: {type: DROP_DOWN, options: [walk-in, online, phone]}
      amount: {type: NUMBER, minValue: 0}
      note: {type: MULTI_LINE_TEXT}
    process:
      enable: true
      states: [New, Checked]
      actions:
        - {name: Check, from: New, to: Checked}
"""

# The journal app (issue #8's shared journal in Kintone), for suites run with a journal app.
JOURNAL_APP = 90
PROJECT = "shop"

SERVED_ENV = """
# The harness's served sandbox (`kmigrate sandbox serve`); the port is set per run.
[env.served]
base_url = "http://127.0.0.1:{port}"
apps = {{ orders = 1, customers = 2, products = 3, visits = 4 }}
"""


# ---- the project -----------------------------------------------------------------------------


def make_project(
    dest: Path, *, records: int, chunks: int = 1, seed: int = 1, journal_app: bool = False
) -> Path:
    """The example shop plus ``records`` seeded CSV visits into an app with no unique field,
    split over ``chunks`` changesets (each adds its share under a ref, then moves it to
    `Checked`; each after the first also updates two records of the chunk before, by ref
    index), and a last changeset that updates and deletes by ref across changesets. With
    ``journal_app``, the sandbox has a journal app too and the project is named (issue #8)."""
    if dest.exists():
        shutil.rmtree(dest)
    copy_example_to(dest)
    with (dest / "sandbox.yaml").open("a", encoding="utf-8") as handle:
        handle.write(VISITS_APP_YAML)
    if journal_app:
        sandbox = yaml.safe_load((dest / "sandbox.yaml").read_text(encoding="utf-8"))
        sandbox["apps"].append({"id": JOURNAL_APP, "name": "kmigrate journal", "fields": FIELDS})
        (dest / "sandbox.yaml").write_text(yaml.safe_dump(sandbox, sort_keys=False), encoding="utf-8")
    toml = (dest / "kmigrate.toml").read_text(encoding="utf-8")
    toml = toml.replace(
        "apps = { orders = 1, customers = 2, products = 3 }",
        "apps = { orders = 1, customers = 2, products = 3, visits = 4 }",
        1,
    )
    if journal_app:
        toml = f'project = "{PROJECT}"\n' + toml
    (dest / "kmigrate.toml").write_text(toml, encoding="utf-8")
    rng = random.Random(seed)
    names = ["Aiko", "Ben", "Chiara", "Dmitri", "Emeka", "Fatima", "Goro", "Hana", "Ines", "Jun"]
    changesets = dest / "changesets"
    sizes = [records // chunks + (1 if i < records % chunks else 0) for i in range(chunks)]
    n = 0
    for i, size in enumerate(sizes):
        data = changesets / "data" / f"visits_{i}.csv"
        with data.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["n", "visitor", "kind", "amount", "note"])
            for _ in range(size):
                n += 1
                # Many visits look alike on purpose: only `n` tells two apart.
                writer.writerow(
                    [
                        n,
                        rng.choice(names),
                        rng.choice(["walk-in", "online", "phone"]),
                        rng.randint(0, 50) * 100,
                        "",
                    ]
                )
        follow = ""
        if i > 0:
            follow = (
                "  - update:\n      app: visits\n      records:\n"
                f"        - {{id: {{ref: visits_{i - 1}, index: 0}}, note: 'seen again in chunk {i}'}}\n"
                f"        - {{id: {{ref: visits_{i - 1}, index: {sizes[i - 1] - 1}}}, amount: {i}}}\n"
            )
        (changesets / f"V{4 + i:04d}__visits_{i}.yaml").write_text(
            f"description: Visits, part {i + 1} of {chunks}\noperations:\n"
            f"  - add:\n      app: visits\n      ref: visits_{i}\n      records_from: data/visits_{i}.csv\n"
            f"  - status:\n      app: visits\n      records: {{ref: visits_{i}}}\n      action: Check\n"
            + follow,
            encoding="utf-8",
        )
    last = chunks - 1
    (changesets / f"V{4 + chunks:04d}__visits_followup.yaml").write_text(
        "description: Corrections to visits and orders of earlier changesets, by ref\noperations:\n"
        "  - update:\n      app: visits\n      records:\n"
        f"        - {{id: {{ref: visits_0, index: 1}}, note: 'corrected', amount: 1}}\n"
        f"        - {{id: {{ref: visits_{last}, index: {sizes[last] // 2}}}, visitor: 'Renamed'}}\n"
        "  - update:\n      app: orders\n      records:\n"
        "        - {id: {ref: phone_orders, index: 0}, note: 'follow-up'}\n"
        "  - delete:\n      app: visits\n"
        f"      ids: [{{ref: visits_{last}, index: {sizes[last] - 1}}}]\n",
        encoding="utf-8",
    )
    return dest


def point_at(root: Path, url: str, *, journal_app: bool = False, parallel: int = 1) -> None:
    """The served environment (the file's last table) at ``url``, naming the journal app, and
    with ``parallel`` > 1 every apply's `--parallel` (bulks in flight at once)."""
    toml = (root / "kmigrate.toml").read_text(encoding="utf-8")
    toml = re.sub(r"\n# The harness's served sandbox.*", "", toml, flags=re.S)
    port = int(url.rsplit(":", 1)[1])
    served = SERVED_ENV.format(port=port) + (f"journal_app = {JOURNAL_APP}\n" if journal_app else "")
    served += f"parallel = {parallel}\n" if parallel > 1 else ""
    (root / "kmigrate.toml").write_text(toml + served, encoding="utf-8")


def runner_folders(template: Path, run_dir: Path, count: int) -> list[Path]:
    """``count`` fresh copies of the project (no .kmigrate/): the runners that take turns (one
    is the usual ``project`` folder)."""
    if count <= 1:
        return [make_copy(template, run_dir / "project")]
    return [make_copy(template, run_dir / f"runner-{i}") for i in range(count)]


# ---- processes -------------------------------------------------------------------------------


def child_environ(**extra: str) -> dict[str, str]:
    """The process environment without credentials (the served sandbox takes none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KINTONE_", "KMIGRATE_"))}
    env.update(extra)
    return env


class Process(Protocol):
    """What the harness uses of a started `kmigrate` (``subprocess.Popen``, or a fork of the
    zygote: tests/harness/zygote.py)."""

    pid: int
    returncode: int | None

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...


class Launch(Protocol):
    """Starts ``kmigrate ARGV`` with ``env``, its stdout and stderr written to ``output``."""

    def __call__(self, argv: list[str], *, env: dict[str, str], output: Path) -> Process: ...


@dataclass
class Served:
    """A `kmigrate sandbox serve` process and what it was started with."""

    process: Process
    url: str
    store: Path
    sandbox_file: Path

    def counters(self) -> dict[str, Any]:
        """GET /__sandbox/faults (never faulted; marks a client-run boundary for retries)."""
        return httpx.get(f"{self.url}/__sandbox/faults", timeout=10).json()


@contextmanager
def serve(
    root: Path,
    run_dir: Path,
    *,
    launch: Launch = fresh,
    faults: str = "seed=0",
    bulk_semantics: str = "atomic",
    kill: str | None = None,
    pid_file: Path | None = None,
) -> Iterator[Served]:
    """`kmigrate sandbox serve` on a free port over a fresh store in ``run_dir`` (its output in
    ``serve.log`` there)."""
    store = run_dir / "sandbox.sqlite3"
    args = ["sandbox", "--file", str(root / "sandbox.yaml"), "--store", str(store), "serve"]
    args += ["--host", "127.0.0.1", "--port", "0", "--quiet", "--faults", faults]
    args += ["--bulk-semantics", bulk_semantics]
    if kill is not None and pid_file is not None:
        args += ["--kill-client", kill, "--client-pid-file", str(pid_file)]
    log = run_dir / "serve.log"
    process = launch(args, env=child_environ(), output=log)
    try:
        url = _served_url(process, log, timeout=60)
        yield Served(process, url, store, root / "sandbox.yaml")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _served_url(process: Process, log: Path, *, timeout: float) -> str:
    """The URL `sandbox serve` prints first, once it is in ``log`` (the process may still be
    starting: the log is read again every 20 ms while it runs, for ``timeout`` s at most)."""
    deadline = clock() + timeout
    while True:
        found = re.search(r"http://127\.0\.0\.1:\d+", log.read_text(encoding="utf-8", errors="replace"))
        if found is not None:
            return found.group(0)
        try:
            process.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            if clock() < deadline:
                continue
            raise RuntimeError(
                f"sandbox serve printed no URL within {timeout} s: {log.read_text()}"
            ) from None
        raise RuntimeError(f"sandbox serve did not start (exit {process.returncode}): {log.read_text()}")


@dataclass
class Attempt:
    returncode: int
    output: str

    @property
    def done(self) -> bool:
        return self.returncode == 0

    @property
    def asks_for_a_person(self) -> bool:
        return "kmigrate resolve" in self.output


def run_apply(
    root: Path, *, timeout: float, launch: Launch = fresh, pid_file: Path | None = None, limit: float = 600
) -> Attempt:
    """One `kmigrate apply -e served` as a process of its own (its pid in ``pid_file`` first);
    its exit status and output are kept beside the project (``apply-N.log``, for a look with
    ``--work``)."""
    log = root.parent / f"apply-{len(list(root.parent.glob('apply-*.log'))) + 1}.log"
    process = launch(
        ["-C", str(root), "-e", "served", "apply", "--yes"],
        env=child_environ(KMIGRATE_TIMEOUT=str(timeout)),
        output=log,
    )
    if pid_file is not None:
        pid_file.write_text(str(process.pid))
    try:
        code = process.wait(timeout=limit)
        note = ""
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        code, note = -1, f"\n[harness: apply did not finish within {limit} s]"
    output = log.read_text(encoding="utf-8", errors="replace") + note
    log.write_text(f"exit {code}\n{output}", encoding="utf-8")
    return Attempt(code, output)


# ---- outcomes --------------------------------------------------------------------------------


def final_records(served: Served) -> dict[int, list[dict[str, Any]]]:
    """Every app's records, read from the store once the server process has stopped."""
    with Sandbox.open(served.sandbox_file, served.store) as sandbox:
        return {app: sandbox.records(app) for app in sorted(sandbox.definition.apps)}


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    return {code: cell.get("value") for code, cell in record.items() if code not in IGNORED_FIELDS}


@dataclass
class Mismatches:
    duplicates: int = 0
    missing: int = 0
    wrong_values: int = 0
    wrong_statuses: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.duplicates + self.missing + self.wrong_values + self.wrong_statuses

    def add(self, other: Mismatches) -> None:
        self.duplicates += other.duplicates
        self.missing += other.missing
        self.wrong_values += other.wrong_values
        self.wrong_statuses += other.wrong_statuses
        self.examples += other.examples[: max(0, 10 - len(self.examples))]


def compare(
    expected: Mapping[int, list[dict[str, Any]]],
    actual: Mapping[int, list[dict[str, Any]]],
    *,
    finished: bool,
) -> Mismatches:
    """Records matched by each app's key. Duplicates: a key held by more than one record.
    For a finished run also: missing (a key the reference has and the run not), wrong values
    (a matched record that differs, its revision included, or one the reference deleted),
    wrong statuses (only the status or assignees differ). An unfinished run (it needed a
    person) is checked for duplicates only: its later changesets never ran."""
    out = Mismatches()
    for app, key in APP_KEYS.items():
        want = {str(r[key]["value"]): _plain(r) for r in expected.get(app, [])}
        have: dict[str, list[dict[str, Any]]] = {}
        for r in actual.get(app, []):
            have.setdefault(str(r[key]["value"]), []).append(_plain(r))
        for value, records in have.items():
            if len(records) > 1:
                out.duplicates += len(records) - 1
                out.examples.append(f"app {app} {key}={value}: {len(records)} records")
        if not finished:
            continue
        for value in have.keys() - want.keys():
            out.wrong_values += 1
            out.examples.append(f"app {app} {key}={value}: present, the fault-free run has none")
        for value, record in want.items():
            got = have.get(value)
            if not got:
                out.missing += 1
                out.examples.append(f"app {app} {key}={value}: missing")
                continue
            differs = {c for c in set(record) | set(got[0]) if record.get(c) != got[0].get(c)}
            if differs - STATUS_FIELDS:
                out.wrong_values += 1
                out.examples.append(f"app {app} {key}={value}: {sorted(differs)} differ")
            elif differs:
                out.wrong_statuses += 1
                out.examples.append(f"app {app} {key}={value}: status differs")
    return out


def reconciliations(journal: Path) -> int:
    """Batches the journal says were settled without a person: events of a `reconcil...` kind,
    or `resolved` events whose detail says they were automatic."""
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as conn:
        try:
            rows = conn.execute("SELECT kind, detail FROM events").fetchall()
        except sqlite3.Error:
            return 0
    count = 0
    for kind, detail in rows:
        text = (detail or "").lower()
        if kind.startswith("reconcil") or (
            kind == "resolved" and ("automatic" in text or "reconcil" in text)
        ):
            count += 1
    return count


@dataclass
class Figures:
    """What a suite prints: the issue's figures, summed over runs."""

    suite: str
    runs: int = 0
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    reconciliations: int = 0
    attempts: int = 0
    killed: int = 0
    mismatches: Mismatches = field(default_factory=Mismatches)
    needed_a_person: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, run: Run) -> None:
        self.runs += 1
        self.attempts += len(run.applies)
        self.killed += run.applies[0].returncode == -signal.SIGKILL
        self.requests += run.counters["requests"]
        self.faults.update(run.counters["faults"])
        self.retries += run.counters["retries"]
        self.reconciliations += run.reconciliations
        self.mismatches.add(run.mismatches)
        if run.person is not None:
            self.needed_a_person.append(run.person)

    def lines(self) -> list[str]:
        kinds = ", ".join(
            f"{k} {self.faults.get(k, 0)}"
            for k in ("429", "500", "503", "reset", "drop", "slow", "partial", "latency")
        )
        m = self.mismatches
        out = [
            f"{self.suite}: {self.runs} runs, {self.attempts} apply processes, {self.requests} requests, "
            f"{self.seconds:.0f} s",
            f"faults by kind: {kinds}" + (f"; SIGKILLs {self.killed}" if self.killed else ""),
            f"retries: {self.retries}",
            f"reconciliations: {self.reconciliations}",
            f"mismatches: duplicates {m.duplicates}, missing {m.missing}, wrong values {m.wrong_values}, "
            f"wrong statuses {m.wrong_statuses}",
            f"runs that needed a person: {len(self.needed_a_person)}",
        ]
        out += [f"  e.g. {e}" for e in m.examples[:5]]
        out += [f"  needed a person: {p}" for p in self.needed_a_person[:5]]
        return out

    def as_json(self) -> dict[str, Any]:
        m = self.mismatches
        return {
            "suite": self.suite,
            "runs": self.runs,
            "apply_processes": self.attempts,
            "requests": self.requests,
            "faults": dict(self.faults),
            "sigkills": self.killed,
            "retries": self.retries,
            "reconciliations": self.reconciliations,
            "mismatches": {
                "duplicates": m.duplicates,
                "missing": m.missing,
                "wrong_values": m.wrong_values,
                "wrong_statuses": m.wrong_statuses,
            },
            "needed_a_person": len(self.needed_a_person),
            "seconds": round(self.seconds, 1),
        }


def last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors[-1] if errors else lines[-1] if lines else "")[:300]


# ---- a suite's runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What every run of a suite shares: the project, the fault-free run's records, how
    kmigrate is started, and the runners' folders each run has (taking turns at `apply`)."""

    template: Path
    bulk_semantics: str
    launch: Launch
    journal_app: bool = False
    runners: int = 1
    parallel: int = 1  # every apply's --parallel (the fault-free run's is 1)
    expected: dict[int, list[dict[str, Any]]] | None = None  # None: this is the fault-free run


@dataclass
class Run:
    """One run (a fault profile, or a kill point): its applies in order and what came of it."""

    name: str
    applies: list[Attempt]
    counters: dict[str, Any]
    reconciliations: int
    mismatches: Mismatches
    records: dict[int, list[dict[str, Any]]] | None = None  # kept for the fault-free run only

    @property
    def finished(self) -> bool:
        return self.applies[-1].done

    @property
    def person(self) -> str | None:
        """Why the run needed a person (None: it did not)."""
        last = self.applies[-1]
        if last.done:
            return None
        if last.asks_for_a_person:
            return f"{self.name}: {last_line(last.output)}"
        return f"{self.name}: not done after {len(self.applies)} applies: {last_line(last.output)}"


def prepare(
    work: Path,
    *,
    records: int,
    chunks: int = 1,
    seed: int = 1,
    bulk_semantics: str,
    launch: Launch,
    timeout: float,
    journal_app: bool = False,
    runners: int = 1,
    parallel: int = 1,
) -> tuple[Setup, int]:
    """The suite's project in ``work/template`` and its fault-free run (with the journal app
    when there is one): the setup and the requests that run sent."""
    template = make_project(
        work / "template", records=records, chunks=chunks, seed=seed, journal_app=journal_app
    )
    setup = Setup(template, bulk_semantics, launch, journal_app)
    reference = one_run(setup, work / "reference", name="the fault-free run", applies=1, timeout=timeout)
    if reference.records is None or not reference.finished:
        raise RuntimeError(f"the fault-free run failed:\n{reference.applies[0].output}")
    return replace(setup, runners=runners, parallel=parallel, expected=reference.records), int(
        reference.counters["requests"]
    )


def one_run(
    setup: Setup,
    run_dir: Path,
    *,
    name: str,
    applies: int,
    timeout: float,
    faults: str = "seed=0",
    kill: str | None = None,
) -> Run:
    """A fresh store, journal and project copies; `sandbox serve` with ``faults`` (and the
    first apply SIGKILLed at ``kill``); then `kmigrate apply` until it is done, asks for a
    person, or has run ``applies`` times. With several runners the applies take turns, so the
    one after a fault or the kill is a fresh machine's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    folders = runner_folders(setup.template, run_dir, setup.runners)
    pid_file = run_dir / "apply.pid" if kill is not None else None
    made: list[Attempt] = []
    with serve(
        folders[0],
        run_dir,
        launch=setup.launch,
        faults=faults,
        bulk_semantics=setup.bulk_semantics,
        kill=kill,
        pid_file=pid_file,
    ) as served:
        for folder in folders:
            point_at(folder, served.url, journal_app=setup.journal_app, parallel=setup.parallel)
        while len(made) < applies:
            folder = folders[len(made) % len(folders)]
            attempt = run_apply(
                folder, timeout=timeout, launch=setup.launch, pid_file=pid_file if not made else None
            )
            made.append(attempt)
            counters = served.counters()  # between two applies: the boundary retries are counted by
            if attempt.done or attempt.asks_for_a_person:
                break
    records = final_records(served)
    settled = sum(reconciliations(folder / ".kmigrate" / "served.db") for folder in folders)
    if setup.expected is None:
        return Run(name, made, counters, settled, Mismatches(), records)
    return Run(name, made, counters, settled, compare(setup.expected, records, finished=made[-1].done))


def make_copy(template: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(".kmigrate"))
    return dest


# ---- the command lines --------------------------------------------------------------------------


def add_suite_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """The options both harnesses take; ``what`` is one run of theirs ("run", "kill point")."""
    parser.add_argument("--bulk-semantics", choices=["atomic", "prefix"], default="atomic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--work", type=Path, default=None, help=f"keep each {what}'s folder here")
    parser.add_argument("--quiet", action="store_true", help=f"no line per {what}")
    parser.add_argument("--jobs", type=int, default=1, help=f"{what}s at once (their lines come in order)")
    parser.add_argument("--journal-app", action="store_true", help="the project has a journal app (issue #8)")
    parser.add_argument(
        "--runners", type=int, default=3, help="with --journal-app: fresh runner folders taking turns"
    )


def suite_options(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Those options as the keyword arguments of ``run_suite`` and ``run_matrix``."""
    return {
        "bulk_semantics": args.bulk_semantics,
        "seed": args.seed,
        "work": args.work or work,
        "progress": not args.quiet,
        "jobs": args.jobs,
        "journal_app": args.journal_app,
        "runners": args.runners if args.journal_app else 1,
    }


def report(figures: Figures, json_path: Path | None) -> int:
    """The figures printed (and written as JSON); the exit status: 1 when anything was wrong."""
    print("\n".join(figures.lines()))
    if json_path is not None:
        json_path.write_text(json.dumps(figures.as_json(), indent=2) + "\n", encoding="utf-8")
    return 1 if figures.mismatches.total or figures.needed_a_person else 0


def clock() -> float:
    return time.monotonic()


T = TypeVar("T")


def in_parallel(work: Callable[[int], T], count: int, jobs: int) -> list[T]:
    """``work(0)`` .. ``work(count - 1)``, at most ``jobs`` at once, the results in that order.
    Threads: a run mostly waits on its processes (backoffs, slow answers), so runs overlap well."""
    if jobs <= 1:
        return [work(i) for i in range(count)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(work, range(count)))
