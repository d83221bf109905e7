"""The benchmark: kmigrate against a raw baseline, a per-kind and a naive runner, in one run.

    .venv/bin/python bench/run.py [--size tiny|small|full] [--workloads W1,W2,W3,W4]
                                  [--out docs/benchmarks.md | --no-write] [--profile]

Workloads (bench/workloads.py): W1 adds from CSV, W2 a mixed data fix over three apps, W3 adds
then a status action on each through a ref, W4 a million adds (memory). Every measurement runs
in a process of its own, so each peak RSS (``os.wait4``'s ``ru_maxrss``) is that command's alone.

- In process (the embedded sandbox, no injected latency): apply time, bulk requests against the
  floor, the sandbox's own time (timed around its WSGI app) and the client's overhead, for
  kmigrate and each runner (bench/runners.py). The naive runner stops after a cap of records at
  the full size and is extrapolated linearly (said in the table).
- kmigrate's commands as a user runs them: ``kmigrate plan``, ``plan --format json``, and the
  second ``kmigrate apply`` (nothing to do).
- W1 with 50 ms injected before every request, in process.
- W1 through a served sandbox (the server of ``kmigrate sandbox serve --faults latency=50-50``,
  over https) with 50 ms per request: ``kmigrate
  apply`` against Kintone's official ``cli-kintone record import`` (``npm install --prefix
  bench/.node @kintone/cli``).
- W1 through the served sandbox with 500 ms per request: ``apply --parallel 4`` against
  ``--parallel 1`` (the served sandbox takes requests concurrently; its latency sleeps outside
  the store's lock).

The tables are printed and written to docs/benchmarks.md between its ``bench:results`` markers.
``--profile`` instead profiles the W1 apply and the W4 ``plan --format json`` (cProfile) and
prints the top cumulative entries.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workloads as wl

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLI_KINTONE = BENCH / ".node" / "node_modules" / ".bin" / "cli-kintone"
KMIGRATE = [sys.executable, "-m", "kmigrate"]
LATENCY_MS = 50
PARALLEL_LATENCY_MS = 500
MARK_START, MARK_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
SERVED_LOGIN = {"KINTONE_USERNAME": "bench", "KINTONE_PASSWORD": "bench"}  # the sandbox takes any login
REQUEST_LINE = re.compile(r'"((?:GET|POST|PUT|DELETE) /k/[^ ?"]*)')


# ---- processes -----------------------------------------------------------------------------


@dataclass
class Process:
    seconds: float
    rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_process(
    cmd: Sequence[str | Path],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    stdout_to_null: bool = False,
) -> Process:
    """Run ``cmd`` to the end; its wall time and its own peak RSS (``wait4``, not RUSAGE_CHILDREN,
    which is the largest of every child so far)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL if stdout_to_null else out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        deadline = began + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Process(
            seconds,
            usage.ru_maxrss / 1024,  # KiB on Linux
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def child(args: list[str], cwd: Path = ROOT) -> tuple[dict[str, Any], Process]:
    """One measurement in a process of its own (``run.py --child ...``): its JSON and its process."""
    proc = run_process([sys.executable, BENCH / "run.py", "--child", *args], cwd)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


# ---- one measured run, in the child process -------------------------------------------------


def measure_in_child(ns: argparse.Namespace) -> dict[str, Any]:
    import runners

    workload = wl.build(ns.workload, wl.SIZES[ns.size])
    return runners.measure(
        ns.runner, workload, Path(ns.dir), latency_ms=ns.latency, cap=ns.cap or None, profile_to=ns.profile_to
    )


# ---- results -------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    runner: str
    records: int
    requests: float
    floor: int
    seconds: float
    sandbox_s: float
    latency_s: float
    rss_mb: float
    note: str = ""

    @property
    def overhead_s(self) -> float:
        return self.seconds - self.latency_s - self.sandbox_s


@dataclass
class Commands:
    """kmigrate's own commands on a workload, each as a process."""

    workload: str
    plan: Process | None = None
    plan_json: Process | None = None
    noop: Process | None = None


@dataclass
class Served:
    tool: str
    requests: int | None
    seconds: float | None
    rss_mb: float | None
    note: str = ""


@dataclass
class Report:
    size: str
    repeat: int = 1
    rows: list[Row] = field(default_factory=list)
    commands: list[Commands] = field(default_factory=list)
    latency_rows: list[Row] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    parallel: list[Served] = field(default_factory=list)
    parallel_note: str = ""


RUNNERS = ("kmigrate", "raw", "per-kind", "naive")


def runner_rows(
    workload: wl.Workload, folder: Path, size: wl.Size, cap: int, latency: int = 0, repeat: int = 1
) -> list[Row]:
    """Every runner ``repeat`` times, taking turns (a change in the machine's load falls on all
    of them alike), each run in a fresh process; per runner, the run with the median apply time.
    The naive runner stops after ``cap`` records and is extrapolated."""
    runs: dict[str, list[tuple[dict[str, Any], Process]]] = {runner: [] for runner in RUNNERS}
    for _ in range(repeat):
        for runner in RUNNERS:
            args = [
                "--runner",
                runner,
                "--workload",
                workload.name,
                "--size",
                size.name,
                "--dir",
                str(folder),
            ]
            args += ["--latency", str(latency)]
            if runner == "naive" and cap < workload.records:
                args += ["--cap", str(cap)]
            runs[runner].append(child(args))
            print(
                f"  {workload.name} {runner} ({latency} ms): {runs[runner][-1][0]['seconds']:.2f} s",
                file=sys.stderr,
            )
    rows = []
    for runner, measured in runs.items():
        got, proc = sorted(measured, key=lambda run: run[0]["seconds"])[len(measured) // 2]
        row = Row(
            workload.name,
            runner,
            workload.records,
            got["requests"],
            workload.floor,
            got["seconds"],
            got["sandbox_s"],
            got["latency_s"],
            proc.rss_mb,
        )
        if runner == "naive" and got["sent"] < workload.records:
            scale = workload.records / got["sent"]
            row.seconds, row.sandbox_s, row.latency_s = (
                s * scale for s in (row.seconds, row.sandbox_s, row.latency_s)
            )
            row.requests = got["requests"] * scale
            row.note = f"extrapolated from {got['sent']:,} records"
        elif got["sent"] != workload.records:
            raise SystemExit(f"{runner} sent {got['sent']} of {workload.records} records in {workload.name}")
        if got.get("reads"):
            row.note = f"+{got['reads']:,} read(s) for reconciliation"
        rows.append(row)
    return rows


def prepare(workload: wl.Workload, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    workload.write_data(folder)
    workload.write_project(folder)


def bench_workload(workload: wl.Workload, size: wl.Size, base: Path, report: Report, repeat: int) -> None:
    folder = base / workload.name
    prepare(workload, folder)
    commands = Commands(workload.name)
    commands.plan = run_process([*KMIGRATE, "plan"], folder, stdout_to_null=True)
    commands.plan_json = run_process([*KMIGRATE, "plan", "--format", "json"], folder, stdout_to_null=True)
    for proc in (commands.plan, commands.plan_json):
        if proc.returncode != 0:
            raise SystemExit(f"kmigrate plan failed in {workload.name}:\n{proc.stderr[-3000:]}")
    report.rows += runner_rows(
        workload, folder, size, size.naive_cap, repeat=1 if workload.name == "W4" else repeat
    )
    commands.noop = run_process([*KMIGRATE, "apply"], folder)
    if commands.noop.returncode != 0 or "Nothing to do" not in commands.noop.stdout:
        raise SystemExit(f"the no-op re-run did something:\n{commands.noop.stdout}\n{commands.noop.stderr}")
    report.commands.append(commands)
    shutil.rmtree(folder / ".kmigrate")  # the stores: W4's are large


def bench_latency(size: wl.Size, base: Path, report: Report, repeat: int) -> None:
    workload = wl.build("W1", size)
    folder = base / "W1-latency"
    prepare(workload, folder)
    report.latency_rows += runner_rows(workload, folder, size, size.naive_cap_latency, LATENCY_MS, repeat)
    shutil.rmtree(folder)


# ---- a served sandbox ----------------------------------------------------------------------


@contextmanager
def served_sandbox(folder: Path, latency_ms: int) -> Iterator[tuple[str, dict[str, str], list[Any]]]:
    """The folder's sandbox on a free localhost port over https, in a process of its own, with
    ``latency_ms`` before every request. Yields the base URL, the environment variables that
    make kmigrate (httpx) and cli-kintone (node) trust its self-signed certificate, and a list
    that holds the request count and the APIs called once the server has stopped.

    https because cli-kintone refuses any other base URL, and ``kmigrate sandbox serve`` speaks
    plain http: ``run.py --serve`` runs the same server with the same fault option over TLS.
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    trust = {"SSL_CERT_FILE": str(cert), "NODE_EXTRA_CA_CERTS": str(cert)}
    cmd = [sys.executable, BENCH / "run.py", "--serve", str(latency_ms), "--dir", str(folder)]
    log = folder / "served.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=folder, stdout=subprocess.PIPE, stderr=err)
        count: list[Any] = []  # [requests, 'API xN, ...'] once stopped
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline().decode() if ready else ""
            found = re.search(r"https://[\w.]+:\d+", line)
            if not found:
                raise SystemExit(f"the served sandbox did not start: {line!r} {log.read_text()[-2000:]}")
            yield found.group(0), trust, count
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    calls = Counter(m.group(1) for line in log.read_text().splitlines() if (m := REQUEST_LINE.search(line)))
    count.append(sum(calls.values()))
    count.append(", ".join(f"{api} x{n}" for api, n in sorted(calls.items())))  # type: ignore[arg-type]


def serve_over_tls(latency_ms: int, folder: Path) -> None:
    """``run.py --serve MS``: ``kmigrate sandbox serve --faults latency=MS-MS`` over https.

    The sandbox's own server and fault layer (``make_server(..., faults=...)``), its listening
    socket wrapped in TLS with the folder's throwaway certificate.
    """
    import ssl

    from transports import latency_profile

    from kmigrate.sandbox import Sandbox
    from kmigrate.sandbox.server import make_server

    sandbox = Sandbox.open(folder / "sandbox.yaml")
    server = make_server(
        sandbox,
        "127.0.0.1",
        0,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        faults=latency_profile(latency_ms),
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    print(f"Kintone sandbox on https://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sandbox.close()


def served_run(folder: Path, latency_ms: int, tool: str, cmd: list[str | Path], kmigrate: bool) -> Served:
    """One run of ``cmd`` against a fresh served sandbox; for kmigrate, ``[env.served]`` points
    at it and its journal starts empty. ``{url}`` in ``cmd`` is the sandbox's base URL."""
    import runners

    config = folder / "kmigrate.toml"
    original = config.read_text()
    with served_sandbox(folder, latency_ms) as (url, trust, count):
        env = dict(trust)
        if kmigrate:
            apps = original.split("apps = ", 1)[1].splitlines()[0]
            config.write_text(original + f'\n[env.served]\nbase_url = "{url}"\napps = {apps}\n')
            runners.remove_db(folder / ".kmigrate" / "served.db")
            env.update(SERVED_LOGIN)
        try:
            proc = run_process([str(c).replace("{url}", url) for c in cmd], folder, env=env)
        finally:
            config.write_text(original)
    if proc.returncode != 0:
        why = " ".join((proc.stderr.strip() or proc.stdout.strip()).split())[-600:]
        return Served(tool, count[0], None, None, f"failed: {why}; requests: {count[1]}")
    return Served(tool, count[0], proc.seconds, proc.rss_mb, count[1])


def median_run(runs: list[Served]) -> Served:
    failed = [r for r in runs if r.seconds is None]
    if failed:
        return failed[0]
    return sorted(runs, key=lambda r: r.seconds or 0)[len(runs) // 2]


def bench_served(size: wl.Size, base: Path, report: Report, repeat: int) -> None:
    """W1 through a served sandbox with 50 ms per request: kmigrate apply against cli-kintone,
    taking turns."""
    workload = wl.build("W1", size)
    folder = base / "W1-served"
    prepare(workload, folder)
    tools: dict[str, tuple[list[str | Path], bool]] = {
        "kmigrate apply": ([*KMIGRATE, "-e", "served", "apply", "--yes"], True),
        "kmigrate apply --parallel 4": (
            [*KMIGRATE, "-e", "served", "apply", "--yes", "--parallel", "4"],
            True,
        ),
    }
    cli = "cli-kintone record import"
    if CLI_KINTONE.exists():
        login = SERVED_LOGIN["KINTONE_USERNAME"], SERVED_LOGIN["KINTONE_PASSWORD"]
        cmd: list[str | Path] = [CLI_KINTONE, "record", "import", "--base-url", "{url}", "--app", "1"]
        cmd += ["--file-path", folder / "changesets" / "data" / "items.csv"]
        cmd += ["--username", login[0], "--password", login[1]]
        tools[cli] = (cmd, False)
    runs: dict[str, list[Served]] = {tool: [] for tool in tools}
    for _ in range(repeat):
        for tool, (cmd, is_kmigrate) in tools.items():
            runs[tool].append(served_run(folder, LATENCY_MS, tool, cmd, is_kmigrate))
            print(f"  W1 served {tool}: {runs[tool][-1].seconds} s", file=sys.stderr)
    report.served += [median_run(r) for r in runs.values()]
    if cli not in tools:
        report.served.append(
            Served(cli, None, None, None, "not installed: npm install --prefix bench/.node @kintone/cli")
        )


def has_parallel() -> bool:
    out = subprocess.run([*KMIGRATE, "apply", "--help"], capture_output=True, text=True, cwd=ROOT)
    return "--parallel" in out.stdout


def bench_parallel(size: wl.Size, base: Path, report: Report, repeat: int = 1) -> None:
    """W1 through a served sandbox with 500 ms per request: ``--parallel 1`` and ``4``, taking turns."""
    if not has_parallel():
        report.parallel_note = "not built yet: `kmigrate apply --parallel` does not exist"
        return
    workload = wl.build("W1", size)
    folder = base / "W1-parallel"
    prepare(workload, folder)
    runs: dict[int, list[Served]] = {1: [], 4: []}
    for _ in range(repeat):
        for n in runs:
            cmd: list[str | Path] = [*KMIGRATE, "-e", "served", "apply", "--yes", "--parallel", str(n)]
            runs[n].append(
                served_run(folder, PARALLEL_LATENCY_MS, f"kmigrate apply --parallel {n}", cmd, True)
            )
            print(f"  W1 served --parallel {n}: {runs[n][-1].seconds} s", file=sys.stderr)
    report.parallel += [median_run(r) for r in runs.values()]


# ---- the tables ----------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _requests(value: float) -> str:
    return f"{value:,.0f}"


def speed_table(rows: list[Row], latency: int = 0) -> list[str]:
    out = [
        "| workload | runner | records | bulk/requests sent | floor | apply s | x raw | sandbox s "
        + ("| latency s " if latency else "")
        + "| client overhead s | overhead % of apply | peak RSS MB | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|" + ("--:|" if latency else "") + "--:|--:|--:|---|",
    ]
    raw = {r.workload: r for r in rows if r.runner == "raw"}
    for r in rows:
        base = raw.get(r.workload)
        ratio = f"{r.seconds / base.seconds:.2f}x" if base and base.seconds else "-"
        cells = [
            r.workload,
            r.runner,
            f"{r.records:,}",
            _requests(r.requests),
            f"{r.floor:,}",
            _f(r.seconds),
            ratio,
            _f(r.sandbox_s),
            *([_f(r.latency_s)] if latency else []),
            _f(r.overhead_s),
            f"{100 * r.overhead_s / r.seconds:.0f}%" if r.seconds else "-",
            _f(r.rss_mb, 0),
            r.note,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def commands_table(commands: list[Commands]) -> list[str]:
    out = [
        "| workload | `kmigrate plan` s | peak RSS MB | `plan --format json` s | peak RSS MB "
        "| no-op `kmigrate apply` s | peak RSS MB |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for c in commands:
        cells = [c.workload]
        for proc in (c.plan, c.plan_json, c.noop):
            cells += [_f(proc.seconds if proc else None), _f(proc.rss_mb if proc else None, 0)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def served_table(rows: list[Served], against: str) -> list[str]:
    out = ["| tool | requests | wall s | peak RSS MB | ratio | note |", "|---|--:|--:|--:|--:|---|"]
    reference = next((r for r in rows if r.tool.startswith(against) and r.seconds), None)
    for r in rows:
        ratio = f"{r.seconds / reference.seconds:.2f}x" if reference and r.seconds else "-"
        requests = "-" if r.requests is None else f"{r.requests:,}"
        out.append(
            f"| {r.tool} | {requests} | {_f(r.seconds)} | {_f(r.rss_mb, 0)} | {ratio} | {r.note.replace('|', '/')} |"
        )
    return out


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )


def render(report: Report) -> str:
    lines = [
        f"Size `{report.size}`, measured on {machine()}.",
        ""
        if report.repeat == 1
        else f"In-process figures and served runs: the median of {report.repeat} runs, the runners taking turns "
        "(W4, the memory workload: one run).",
        "",
        "The machine is shared with other work running at the same time: absolute figures move from run",
        "to run; the ratios between runners of the same run are what counts.",
        "",
    ]
    if report.rows:
        lines += [
            "### In process, no injected latency",
            "",
            "Apply time (`api.apply` with a client over the embedded sandbox: load, plan, send, journal);",
            "the sandbox's own time is measured around its WSGI app; client overhead = apply - latency x",
            "requests - sandbox. Each run in a process of its own (peak RSS is that process's).",
            "",
            *speed_table(report.rows),
            "",
            "### kmigrate's commands, each as a process (interpreter start included)",
            "",
            *commands_table(report.commands),
            "",
        ]
    if report.latency_rows:
        lines += [
            f"### W1 with {LATENCY_MS} ms injected before every request (in process)",
            "",
            *speed_table(report.latency_rows, latency=LATENCY_MS),
            "",
        ]
    if report.served:
        lines += [
            f"### W1 through a served sandbox with {LATENCY_MS} ms per request: kmigrate vs Kintone's official CLI",
            "",
            "Each tool as a process against a fresh sandbox served over https in a process of its own",
            "(cli-kintone takes no other base URL): the sandbox's server and `--faults latency=50-50`, over TLS;",
            "requests as the server logged them; ratio = against cli-kintone.",
            "",
            *served_table(report.served, "cli-kintone"),
            "",
        ]
    if report.parallel or report.parallel_note or report.rows:  # not in an --only run without it
        lines += [
            f"### `apply --parallel 4` against `--parallel 1`, {PARALLEL_LATENCY_MS} ms per request (served)",
            "",
        ]
    if report.parallel:
        lines += [
            "Each run as a process against a fresh sandbox served over https in a process of its own, with",
            f"`--faults latency={PARALLEL_LATENCY_MS}-{PARALLEL_LATENCY_MS}`; ratio = against `--parallel 1` "
            "(below 1: faster).",
            "",
            *served_table(report.parallel, "kmigrate apply --parallel 1"),
            "",
        ]
    elif report.parallel_note or report.rows:
        lines += [report.parallel_note or "not measured in this run", ""]
    return "\n".join(lines)


def write_results(path: Path, text: str) -> None:
    """Replace what is between the markers in ``path`` (made with a heading if missing)."""
    block = f"{MARK_START}\n{text.rstrip()}\n{MARK_END}"
    if path.exists():
        current = path.read_text(encoding="utf-8")
        if MARK_START in current and MARK_END in current:
            head, _, rest = current.partition(MARK_START)
            _, _, tail = rest.partition(MARK_END)
            path.write_text(head + block + tail, encoding="utf-8")
            return
        path.write_text(current.rstrip() + "\n\n## Results\n\n" + block + "\n", encoding="utf-8")
        return
    path.write_text(f"# Benchmarks\n\n## Results\n\n{block}\n", encoding="utf-8")


# ---- profiling -----------------------------------------------------------------------------


PROFILES = BENCH / ".profiles"  # kept for a closer look (gitignored)


def profile_summary(stats_file: Path, top: int = 15) -> None:
    """The top entries by cumulative time (all, then kmigrate's own), who calls the data-file
    reader and the record compiler (each call is one record read or compiled), and self time."""
    import pstats

    def stats() -> pstats.Stats:
        return pstats.Stats(str(stats_file), stream=sys.stdout)

    stats().sort_stats("cumulative").print_stats(top)
    print(f"-- kmigrate's own functions, top {top} by cumulative time")
    stats().sort_stats("cumulative").print_stats(r"/kmigrate/(?!cli/|__main__)", top)
    print(
        "-- who reads data-file records (DataFile.__iter__) and compiles them (_OpCompiler.records, _compile)"
    )
    stats().print_callers(r"datafiles.py:\d+\(__iter__\)|planner.py:\d+\((records|_compile)\)")
    print(f"-- top {top} by own time")
    stats().sort_stats("tottime").print_stats(top)


def profile(size: wl.Size, base: Path) -> None:
    """cProfile of the W1 apply (in process, as the table measures it) and of the W4
    ``kmigrate plan --format json`` (as a process)."""
    PROFILES.mkdir(exist_ok=True)
    w1 = wl.build("W1", size)
    folder = base / "W1-profile"
    prepare(w1, folder)
    stats_file = PROFILES / f"w1-apply-{size.name}.prof"
    args = ["--runner", "kmigrate", "--workload", "W1", "--size", size.name, "--dir", str(folder)]
    got, _ = child([*args, "--latency", "0", "--profile-to", str(stats_file)])
    print(f"== W1 apply of {w1.records:,} records in process: {got['seconds']:.1f} s under cProfile")
    profile_summary(stats_file)
    w4 = wl.build("W4", size)
    folder = base / "W4-profile"
    prepare(w4, folder)
    stats_file = PROFILES / f"w4-plan-json-{size.name}.prof"
    proc = run_process(
        [sys.executable, "-m", "cProfile", "-o", stats_file, "-m", "kmigrate", "plan", "--format", "json"],
        folder,
        stdout_to_null=True,
    )
    print(
        f"== W4 `kmigrate plan --format json` of {w4.records:,} records: {proc.seconds:.1f} s under cProfile, "
        f"peak RSS {proc.rss_mb:.0f} MB"
    )
    profile_summary(stats_file)


# ---- the command ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(wl.SIZES), default="full")
    parser.add_argument("--workloads", default=",".join(wl.WORKLOADS), help="e.g. W1,W3")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per in-process figure; the median is shown"
    )
    parser.add_argument("--skip-latency", action="store_true", help="no 50 ms run, no served runs")
    parser.add_argument(
        "--only",
        default="",
        help="W1's runs with latency only, some of: latency,served,parallel (no workload table)",
    )
    parser.add_argument("--profile", action="store_true", help="profile W1 apply and W4 plan --format json")
    # The child processes.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runner", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.child:
        print(json.dumps(measure_in_child(ns)))
        return 0
    if ns.serve is not None:
        serve_over_tls(ns.serve, Path(ns.dir))
        return 0
    size = wl.SIZES[ns.size]
    names = [n.strip().upper() for n in ns.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in wl.WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(wl.WORKLOADS)}")
    with tempfile.TemporaryDirectory(prefix="kmigrate-bench-") as tmp:
        base = Path(tmp)
        if ns.profile:
            profile(size, base)
            return 0
        report = Report(size.name, ns.repeat)
        only = {part.strip() for part in ns.only.split(",") if part.strip()}
        for name in names if not only else []:
            print(f"{name}...", file=sys.stderr)
            bench_workload(wl.build(name, size), size, base, report, ns.repeat)
        if "W1" in names and not ns.skip_latency:
            for section, run in (
                ("latency", bench_latency),
                ("served", bench_served),
                ("parallel", bench_parallel),
            ):
                if not only or section in only:
                    run(size, base, report, ns.repeat)
    text = render(report)
    print(text)
    if not ns.no_write:
        write_results(ns.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
