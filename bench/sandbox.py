"""How fast the embedded sandbox handles a full bulk request (20 x 100 records), in process.

    .venv/bin/python bench/sandbox.py [--runs N]

Prints the median wall time of POST bulkRequest.json with 20 inner POST records.json calls of
100 records each, the median of one 100-record POST records.json call, and their ratio (the
ideal being 20: a bulk costs no more than its calls). Each run starts from an empty store.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kmigrate.sandbox import Sandbox

DEFINITION = {
    "apps": [
        {
            "id": 1,
            "name": "Orders",
            "fields": {
                "title": {"type": "SINGLE_LINE_TEXT", "required": True},
                "order_no": {"type": "SINGLE_LINE_TEXT", "unique": True},
                "priority": {"type": "DROP_DOWN", "options": ["High", "Low"]},
                "amount": {"type": "NUMBER"},
                "due": {"type": "DATE"},
            },
            "process": {
                "states": ["Draft", "Done"],
                "actions": [{"name": "Finish", "from": "Draft", "to": "Done"}],
            },
        }
    ]
}


def records(start: int, count: int) -> list[dict]:
    return [
        {
            "title": {"value": f"Order {n}"},
            "order_no": {"value": f"O-{n:06d}"},
            "priority": {"value": "High"},
            "amount": {"value": str(n)},
            "due": {"value": "2026-03-01"},
        }
        for n in range(start, start + count)
    ]


def timed(sandbox: Sandbox, path: str, body: dict) -> float:
    with sandbox.client() as client:
        sandbox.reset()
        started = time.perf_counter()
        response = client.post(path, json=body)
        elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{path} failed: {response.status_code} {response.text[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    bulk = {
        "requests": [
            {
                "method": "POST",
                "api": "/k/v1/records.json",
                "payload": {"app": 1, "records": records(i * 100, 100)},
            }
            for i in range(20)
        ]
    }
    single = {"app": 1, "records": records(0, 100)}
    with Sandbox.from_definition(DEFINITION) as sandbox:
        timed(sandbox, "/k/v1/bulkRequest.json", bulk)  # warm up
        bulk_times = [timed(sandbox, "/k/v1/bulkRequest.json", bulk) for _ in range(args.runs)]
        single_times = [timed(sandbox, "/k/v1/records.json", single) for _ in range(args.runs)]
    b, s = statistics.median(bulk_times) * 1000, statistics.median(single_times) * 1000
    print(
        f"bulk 20 x 100 records (POST records.json): median {b:.1f} ms over {args.runs} runs "
        f"(min {min(bulk_times) * 1000:.1f} ms)"
    )
    print(f"one call of 100 records:                    median {s:.1f} ms")
    print(f"ratio bulk / single call:                   {b / s:.1f} (20 would be linear)")


if __name__ == "__main__":
    main()
