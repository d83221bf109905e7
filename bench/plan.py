"""Time and peak memory to load and plan big changesets.

    .venv/bin/python bench/plan.py [--rows 100000] [--loop 10000]

Makes two throwaway projects in a temporary folder: one changeset adding ROWS records from a
CSV file (then submitting them all through a ref), and one adding LOOP records from an inline
Jinja loop. Each case runs in its own subprocess, so its peak RSS (ru_maxrss) is its own.
Phases: load (render, parse, validate, checksum: ``kmigrate.api.load_changesets``), plan
(``build_plan``), and render the JSON plan (streamed to nowhere, which compiles a big
changeset's batches again). As a baseline, the same process times reading the CSV file with
``csv.DictReader`` alone.

Targets (issue 3): 100,000 CSV records loaded and planned in under 3 s and 300 MB peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_project(folder: Path, case: str, rows: int, loop: int) -> None:
    (folder / "changesets" / "data").mkdir(parents=True)
    (folder / "kmigrate.toml").write_text(
        '[env.sandbox]\nsandbox = "sandbox.yaml"\napps = { orders = 1 }\n', encoding="utf-8"
    )
    if case == "csv":
        with (folder / "changesets" / "data" / "orders.csv").open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["title", "order_no", "amount", "priority", "customer"])
            for i in range(rows):
                out.writerow(
                    [
                        f"Order number {i}",
                        f"ORD-{i:06d}",
                        (i * 7) % 10_000,
                        "High" if i % 2 else "Low",
                        f"C-{i % 500:04d}",
                    ]
                )
        (folder / "changesets" / "V0001__import_orders.yaml").write_text(
            "description: Import orders from CSV and submit them\n"
            "operations:\n"
            "  - add:\n      app: orders\n      ref: imported\n      records_from: data/orders.csv\n"
            "  - status:\n      app: orders\n      records: {ref: imported}\n      action: Submit\n",
            encoding="utf-8",
        )
    else:
        (folder / "changesets" / "V0001__generated_orders.yaml").write_text(
            "description: Orders from a Jinja loop\n"
            "operations:\n"
            "  - add:\n      app: orders\n      records:\n"
            f"      {{% for i in range({loop}) %}}\n"
            '        - {title: "Order {{ i }}", order_no: "G-{{ \'%06d\' % i }}", '
            "amount: {{ i * 3 }}, priority: High}\n"
            "      {% endfor %}\n",
            encoding="utf-8",
        )


def run_case(folder: Path, case: str) -> dict[str, float]:
    """In this process: the measured phases of one case."""
    from kmigrate import api
    from kmigrate.config import load_project
    from kmigrate.planner import build_plan
    from kmigrate.render import iter_json

    figures: dict[str, float] = {"rss_imports_mb": peak_mb()}
    if case == "csv":
        start = time.perf_counter()
        with (folder / "changesets" / "data" / "orders.csv").open(newline="", encoding="utf-8") as f:
            n = sum(1 for _ in csv.DictReader(f))
        figures["baseline_dictreader_s"] = time.perf_counter() - start
        figures["rows"] = n
    project = load_project(folder)
    env = project.environment()
    start = time.perf_counter()
    changesets = api.load_changesets(api.Context(project, env))
    figures["load_s"] = time.perf_counter() - start
    figures["rss_after_load_mb"] = peak_mb()
    start = time.perf_counter()
    plan = build_plan(changesets, env)
    figures["plan_s"] = time.perf_counter() - start
    figures["rss_after_plan_mb"] = peak_mb()
    figures["records"] = sum(op.records for cs in plan.changesets for op in cs.operations)
    figures["bulk_requests"] = sum(len(cs.batches) for cs in plan.changesets)
    start = time.perf_counter()
    size = sum(len(piece) for piece in iter_json(plan))
    figures["render_json_s"] = time.perf_counter() - start
    figures["json_mb"] = size / 1e6
    figures["rss_after_render_mb"] = peak_mb()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--loop", type=int, default=10_000)
    parser.add_argument("--case", choices=["csv", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the subprocess
        print(json.dumps(run_case(args.dir, args.case)))
        return
    print(f"python {sys.version.split()[0]}; each case in its own process\n")
    for case, label in (
        ("csv", f"{args.rows:,} records from CSV (+ a status change for each)"),
        ("loop", f"{args.loop:,} records from an inline Jinja loop"),
    ):
        with tempfile.TemporaryDirectory(prefix="kmigrate-bench-") as tmp:
            folder = Path(tmp)
            make_project(folder, case, args.rows, args.loop)
            out = subprocess.run(
                [sys.executable, __file__, "--case", case, "--dir", str(folder)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            f = json.loads(out.stdout)
        total = f["load_s"] + f["plan_s"]
        print(label)
        print(
            f"  load      {f['load_s']:6.2f} s   peak RSS {f['rss_after_load_mb']:6.0f} MB "
            f"(imports alone {f['rss_imports_mb']:.0f} MB)"
        )
        print(
            f"  plan      {f['plan_s']:6.2f} s   peak RSS {f['rss_after_plan_mb']:6.0f} MB   "
            f"{f['records']:,.0f} records in {f['bulk_requests']:,.0f} bulk requests"
        )
        print(f"  load+plan {total:6.2f} s")
        print(
            f"  JSON plan {f['render_json_s']:6.2f} s   peak RSS {f['rss_after_render_mb']:6.0f} MB   "
            f"{f['json_mb']:.1f} MB of JSON"
        )
        if case == "csv":
            base = f["baseline_dictreader_s"]
            print(f"  baseline: csv.DictReader alone {base:.2f} s; load+plan = {total / base:.1f}x that")
            ok = total < 3 and f["rss_after_plan_mb"] < 300
            print(f"  target (< 3 s, < 300 MB): {'met' if ok else 'NOT met'}")
        print()


if __name__ == "__main__":
    main()
