"""bench/run.py at its tiny size: request counts only (speed figures belong to bench/, never to a test).

Each runner of each workload runs in process against a sandbox of its own; kmigrate must send
exactly the floor, the per-kind and naive runners what their rule says, and every runner must
leave the sandbox holding the same records (so the counts compare the same work).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import runners  # noqa: E402
import workloads as wl  # noqa: E402

from kmigrate.sandbox import Sandbox  # noqa: E402

TINY = wl.SIZES["tiny"]


def project(tmp_path: Path, name: str) -> wl.Workload:
    workload = wl.build(name, TINY)
    workload.write_data(tmp_path)
    workload.write_project(tmp_path)
    return workload


def contents(store: Path, folder: Path, workload: wl.Workload) -> dict[int, list[tuple]]:
    """Per app: each record's id, status and field values (not who/when, which differ by run)."""
    with Sandbox.open(folder / "sandbox.yaml", store) as sandbox:
        out = {}
        for app in workload.apps.values():
            definition = sandbox.definition.apps[app]
            status = definition.system_code("STATUS") if definition.process_enabled else None
            out[app] = [
                (
                    r["$id"]["value"],
                    r[status]["value"] if status else None,
                    tuple((code, r[code]["value"]) for code in definition.fields),
                )
                for r in sandbox.records(app)
            ]
        return out


@pytest.mark.parametrize("name", wl.WORKLOADS)
def test_each_runner_sends_what_its_rule_says_and_all_do_the_same_work(tmp_path: Path, name: str) -> None:
    workload = project(tmp_path, name)
    kmigrate = runners.measure("kmigrate", workload, tmp_path)
    assert kmigrate["sent"] == workload.records
    assert kmigrate["requests"] == workload.floor

    raw = runners.measure("raw", workload, tmp_path)
    assert (raw["sent"], raw["requests"]) == (workload.records, workload.floor)

    per_kind = runners.measure("per-kind", workload, tmp_path)
    assert per_kind["requests"] == workload.per_kind_requests()

    naive = runners.measure("naive", workload, tmp_path)  # no cap: every record, one request each
    assert naive["requests"] == naive["sent"] == workload.records

    expected = contents(tmp_path / ".kmigrate" / "sandbox-bench.sqlite3", tmp_path, workload)
    assert any(expected.values())
    if any(op.kind == "status" for op in workload.ops):
        statuses = {status for records in expected.values() for _, status, _ in records}
        assert "In review" in statuses  # the status changes did run
    for runner in ("raw", "per-kind", "naive"):
        assert contents(tmp_path / ".kmigrate" / f"sandbox-{runner}.sqlite3", tmp_path, workload) == expected


@pytest.mark.parametrize("name", wl.WORKLOADS)
def test_parallel_keeps_the_request_count_and_the_records(tmp_path: Path, name: str) -> None:
    """``apply --parallel 4`` sends the same bulks (the floor) and leaves the same records; ids
    of records added by bulks in flight together may come in another order, so records are
    compared by content."""
    workload = project(tmp_path, name)
    one = runners.measure("kmigrate", workload, tmp_path)
    store = tmp_path / ".kmigrate" / "sandbox-bench.sqlite3"
    sequential = contents(store, tmp_path, workload)
    four = runners.measure("kmigrate", workload, tmp_path, parallel=4)
    assert (
        (four["sent"], four["requests"])
        == (one["sent"], one["requests"])
        == (workload.records, workload.floor)
    )
    assert four["reads"] == one["reads"]
    by_content = {
        app: sorted(r[1:] for r in records) for app, records in contents(store, tmp_path, workload).items()
    }
    assert by_content == {app: sorted(r[1:] for r in records) for app, records in sequential.items()}


def test_naive_stops_at_its_cap(tmp_path: Path) -> None:
    workload = project(tmp_path, "W1")
    capped = runners.measure("naive", workload, tmp_path, cap=25)
    assert capped["sent"] == capped["requests"] == 25


@pytest.mark.parametrize(
    ("name", "size", "floor", "per_kind"),
    [
        ("W1", "full", 50, 50),  # 100,000 adds: 2,000 a bulk
        ("W4", "full", 500, 500),
        # 40 rounds of 5 steps: 150 adds (2 calls), 120 updates (2), 100 upserts (1), 30
        # deletes (1), 100 status changes (1) = 280 calls in 14 bulks; per-kind: 200 steps.
        ("W2", "full", 14, 200),
        # 5,000 adds (50 calls), 5,000 status changes through their ref (50 calls): the third
        # bulk adds 1,000 and changes 1,000 added by the first, so 100 calls fit 5 bulks.
        # Per-kind: 3 + 3.
        ("W3", "full", 5, 6),
        # 120 adds then their 120 status changes: these need the adds' ids, so 2 bulks.
        ("W3", "tiny", 2, 2),
    ],
)
def test_floor_and_per_kind_counts(name: str, size: str, floor: int, per_kind: int) -> None:
    workload = wl.build(name, wl.SIZES[size])
    assert workload.floor == floor
    assert workload.per_kind_requests() == per_kind


@pytest.mark.slow
def test_the_command_writes_its_tables_between_the_markers(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(
        "# Benchmarks\n\nkept\n\n<!-- bench:results:start -->\nold\n<!-- bench:results:end -->\ntail\n"
    )
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--size", "tiny", "--workloads", "W3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and text.endswith("<!-- bench:results:end -->\ntail\n")
    assert "old" not in text
    rows = {
        tuple(c.strip() for c in line.split("|")[1:5])
        for line in text.splitlines()
        if line.startswith("| W3")
    }
    assert ("W3", "kmigrate", "240", "2") in rows
    assert ("W3", "naive", "240", "240") in rows
