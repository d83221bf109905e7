"""Benchmark: `apply` of N records to the embedded sandbox, and the no-op re-run.

    .venv/bin/python bench/apply.py [N ...]        (default: 10000 100000)

For each N it prints the wall time and the bulk requests of the first apply, the wall time of
the second apply (nothing to do: target under 1 s at 100,000 records), and a baseline measured
in the same run: the same records sent as ready-made bulk requests straight to the sandbox,
with no loader, planner or journal, so the ratio shows what kmigrate itself costs.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmigrate import api  # noqa: E402
from kmigrate.client import Client  # noqa: E402
from kmigrate.config import Credentials, load_project  # noqa: E402
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox  # noqa: E402

SANDBOX = """\
apps:
  - id: 1
    name: Items
    fields:
      code: {type: SINGLE_LINE_TEXT, required: true, unique: true}
      qty: {type: NUMBER}
      note: {type: SINGLE_LINE_TEXT}
"""


def make_project(root: Path, n: int) -> None:
    (root / "changesets" / "data").mkdir(parents=True)
    (root / "sandbox.yaml").write_text(SANDBOX)
    (root / "kmigrate.toml").write_text('[env.sandbox]\nsandbox = "sandbox.yaml"\napps = { items = 1 }\n')
    with open(root / "changesets" / "data" / "items.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["code", "qty", "note"])
        for i in range(n):
            writer.writerow([f"I{i:07d}", i % 97, f"item number {i}"])
    (root / "changesets" / "V0001__items.yaml").write_text(
        "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )


def baseline(n: int) -> tuple[float, int]:
    """The same records as prebuilt bulk requests, straight to a fresh in-memory sandbox."""
    sandbox = Sandbox.from_definition(__import__("yaml").safe_load(SANDBOX))
    client = Client(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport())
    records = [
        {"code": {"value": f"I{i:07d}"}, "qty": {"value": str(i % 97)}, "note": {"value": f"item number {i}"}}
        for i in range(n)
    ]
    bulks = []
    for start in range(0, n, 2000):
        chunk = records[start : start + 2000]
        bulks.append(
            [
                {
                    "method": "POST",
                    "api": "/k/v1/records.json",
                    "payload": {"app": 1, "records": chunk[i : i + 100]},
                }
                for i in range(0, len(chunk), 100)
            ]
        )
    began = time.perf_counter()
    for requests in bulks:
        client.bulk(requests)
    return time.perf_counter() - began, sandbox.request_count


def measure(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, n)
        project = load_project(root)
        env = project.environment()
        with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
            client = Client(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport())
            began = time.perf_counter()
            first = api.apply(api.Context(project, env), client=client)
            apply_s = time.perf_counter() - began
            requests = sandbox.request_count
            assert first.summary.applied_records == n, first.summary

            began = time.perf_counter()
            again = api.apply(api.Context(load_project(root), env), client=client)
            noop_s = time.perf_counter() - began
            assert sandbox.request_count == requests and again.summary.applied_batches == 0
        base_s, base_requests = baseline(n)
    floor = -(-n // 2000)
    print(
        f"{n:>7} records: apply {apply_s:6.2f} s, {requests} bulk requests (floor {floor}); "
        f"no-op re-run {noop_s:5.2f} s, 0 requests; "
        f"baseline (prebuilt bulks, no kmigrate) {base_s:6.2f} s / {base_requests} requests -> ratio {apply_s / base_s:4.2f}x"
    )


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["10000", "100000"]:
        measure(int(arg))
