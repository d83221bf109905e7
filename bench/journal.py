"""Journal costs at the scale of 100,000 applied records (50 bulk requests of 2,000).

Prints the time to journal a run (sent + applied per batch, 2,000 ref ids each) on a file,
and the reads a re-run makes before deciding there is nothing to do: state() and refs().
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmigrate.journal import Journal  # noqa: E402
from kmigrate.plan import Batch, Call, ChangesetPlan, Segment  # noqa: E402

BATCHES, PER_BATCH = 50, 2000


def main() -> None:
    batches = tuple(
        Batch(
            b,
            tuple(
                Call(
                    "POST",
                    "/k/v1/records.json",
                    {
                        "app": 1,
                        "records": [{"n": {"value": str(b * PER_BATCH + c * 100 + r)}} for r in range(100)],
                    },
                    (Segment(0, 0, 100, "r"),),
                )
                for c in range(20)
            ),
        )
        for b in range(BATCHES)
    )
    cs = ChangesetPlan("0001", "big", Path("changesets/V0001__big.yaml"), "s", "r", batches=batches)
    hashes = [b.hash for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal.open(Path(tmp) / "bench.db")
        t0 = time.perf_counter()
        j.record_changeset(cs)
        run = j.start_run("bench")
        for b in range(BATCHES):
            ids = list(range(b * PER_BATCH + 1, (b + 1) * PER_BATCH + 1))
            j.mark_sent("0001", b, hashes[b], run)
            results = [
                {"ids": [str(i) for i in ids[c * 100 : (c + 1) * 100]], "revisions": ["1"] * 100}
                for c in range(20)
            ]
            j.mark_applied("0001", b, results, {"r": ids}, run)
        j.finish_run(run, "applied")
        t1 = time.perf_counter()
        j.close()
        t2 = time.perf_counter()
        j = Journal.open(Path(tmp) / "bench.db")
        state = j.state()
        t3 = time.perf_counter()
        refs = j.refs()
        t4 = time.perf_counter()
        assert len(refs["r"]) == BATCHES * PER_BATCH and len(state["0001"].batch_states) == BATCHES
        print(
            f"journal a run of {BATCHES} batches x {PER_BATCH} records (sent+applied, fsync each): {t1 - t0:.3f} s"
        )
        print(
            f"re-run reads: open + state(): {t3 - t2:.3f} s; refs() of {len(refs['r'])} ids: {t4 - t3:.3f} s"
        )
        print(f"journal file size: {(Path(tmp) / 'bench.db').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
