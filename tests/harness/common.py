"""What the fault suite and the crash matrix share: the generated project, a served sandbox as
a real process, `kmigrate apply` as a real process re-run until done, and the comparison of
the sandbox's final records with a fault-free run.

Only the public faces are used: `kmigrate sandbox serve` (with `--faults`, `--kill-client`),
`kmigrate apply`, the sandbox store read back through ``Sandbox.open`` once the server has
stopped, and the journal's event log (for reconciliations).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from kmigrate.sandbox import Sandbox

from ..projects import copy_example_to

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

SERVED_ENV = """
# The harness's served sandbox (`kmigrate sandbox serve`); the port is set per run.
[env.served]
base_url = "http://127.0.0.1:{port}"
apps = {{ orders = 1, customers = 2, products = 3, visits = 4 }}
"""


# ---- the project -----------------------------------------------------------------------------


def make_project(dest: Path, *, records: int, chunks: int = 1, seed: int = 1) -> Path:
    """The example shop plus ``records`` seeded CSV visits into an app with no unique field,
    split over ``chunks`` changesets (each adds its share under a ref, then moves it to
    `Checked`; each after the first also updates two records of the chunk before, by ref
    index), and a last changeset that updates and deletes by ref across changesets."""
    if dest.exists():
        shutil.rmtree(dest)
    copy_example_to(dest)
    with (dest / "sandbox.yaml").open("a", encoding="utf-8") as handle:
        handle.write(VISITS_APP_YAML)
    toml = (dest / "kmigrate.toml").read_text(encoding="utf-8")
    toml = toml.replace(
        "apps = { orders = 1, customers = 2, products = 3 }",
        "apps = { orders = 1, customers = 2, products = 3, visits = 4 }",
        1,
    )
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


def set_served_port(root: Path, port: int) -> None:
    toml = (root / "kmigrate.toml").read_text(encoding="utf-8")
    toml = re.sub(r"\n# The harness's served sandbox.*", "", toml, flags=re.S)
    (root / "kmigrate.toml").write_text(toml + SERVED_ENV.format(port=port), encoding="utf-8")


# ---- processes -------------------------------------------------------------------------------


def kmigrate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kmigrate", *args]


def child_environ(**extra: str) -> dict[str, str]:
    """The process environment without credentials (the served sandbox takes none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KINTONE_", "KMIGRATE_"))}
    env.update(extra)
    return env


@dataclass
class Served:
    """A `kmigrate sandbox serve` process and what it was started with."""

    process: subprocess.Popen[str]
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
    faults: str = "seed=0",
    bulk_semantics: str = "atomic",
    kill: str | None = None,
    pid_file: Path | None = None,
) -> Iterator[Served]:
    """`kmigrate sandbox serve` on a free port over a fresh store in ``run_dir``."""
    store = run_dir / "sandbox.sqlite3"
    args = ["sandbox", "--file", str(root / "sandbox.yaml"), "--store", str(store), "serve"]
    args += ["--host", "127.0.0.1", "--port", "0", "--quiet", "--faults", faults]
    args += ["--bulk-semantics", bulk_semantics]
    if kill is not None and pid_file is not None:
        args += ["--kill-client", kill, "--client-pid-file", str(pid_file)]
    process = subprocess.Popen(
        kmigrate_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_environ(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found is None:
            raise RuntimeError(f"sandbox serve did not start: {line}{process.stdout.read()}")
        yield Served(process, f"http://127.0.0.1:{found.group(1)}", store, root / "sandbox.yaml")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


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


def run_apply(root: Path, *, timeout: float, pid_file: Path | None = None, limit: float = 600) -> Attempt:
    """One `kmigrate apply -e served` as a real process (its pid in ``pid_file`` first); its
    output is also kept beside the project (``apply-N.log``, for a look with ``--work``)."""
    attempt = _run_apply(root, timeout=timeout, pid_file=pid_file, limit=limit)
    logs = sorted(root.parent.glob("apply-*.log"))
    (root.parent / f"apply-{len(logs) + 1}.log").write_text(
        f"exit {attempt.returncode}\n{attempt.output}", encoding="utf-8"
    )
    return attempt


def _run_apply(root: Path, *, timeout: float, pid_file: Path | None, limit: float) -> Attempt:
    process = subprocess.Popen(
        kmigrate_command("-C", str(root), "-e", "served", "apply", "--yes"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_environ(KMIGRATE_TIMEOUT=str(timeout)),
    )
    if pid_file is not None:
        pid_file.write_text(str(process.pid))
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return Attempt(-1, (output or "") + f"\n[harness: apply did not finish within {limit} s]")
    return Attempt(process.returncode, output or "")


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


def reference(
    root: Path, work: Path, *, bulk_semantics: str, timeout: float
) -> tuple[dict[int, list[dict[str, Any]]], int]:
    """The fault-free run's records and its request count."""
    run_dir = work / "reference"
    run_dir.mkdir(parents=True, exist_ok=True)
    project = make_copy(root, run_dir / "project")
    with serve(project, run_dir, bulk_semantics=bulk_semantics) as served:
        set_served_port(project, int(served.url.rsplit(":", 1)[1]))
        attempt = run_apply(project, timeout=timeout)
        if not attempt.done:
            raise RuntimeError(f"the fault-free run failed:\n{attempt.output}")
        requests = served.counters()["requests"]
    return final_records(served), requests


def make_copy(template: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns(".kmigrate"))
    return dest


def write_json(path: Path | None, data: Mapping[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


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
