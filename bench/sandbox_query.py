"""How fast the sandbox's query language filters and sorts records.

    .venv/bin/python bench/sandbox_query.py

Prints the time to parse a query, to filter 10,000 records with a 3-clause query, and to
filter + sort + window them, each the best of several runs.
"""

from __future__ import annotations

import random
import time

from kmigrate.sandbox.query import parse_query

FIELDS = {
    "title": "SINGLE_LINE_TEXT",
    "amount": "NUMBER",
    "due": "DATE",
    "at": "DATETIME",
    "priority": "DROP_DOWN",
    "tags": "CHECK_BOX",
}


def make_records(n: int) -> list[dict]:
    rng = random.Random(7)
    records = []
    for i in range(1, n + 1):
        records.append(
            {
                "$id": {"type": "__ID__", "value": str(i)},
                "$revision": {"type": "__REVISION__", "value": "1"},
                "title": {
                    "type": "SINGLE_LINE_TEXT",
                    "value": f"Order {i} {rng.choice(['urgent', 'normal'])}",
                },
                "amount": {"type": "NUMBER", "value": str(rng.randint(0, 10_000)) if i % 10 else ""},
                "due": {"type": "DATE", "value": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
                "at": {
                    "type": "DATETIME",
                    "value": f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
                },
                "priority": {"type": "DROP_DOWN", "value": rng.choice(["High", "Low", None])},
                "tags": {"type": "CHECK_BOX", "value": rng.sample(["a", "b", "c"], rng.randint(0, 3))},
            }
        )
    return records


def best_ms(fn, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def main() -> None:
    records = make_records(10_000)
    queries = {
        "3 clauses (number, drop-down, text like)": 'amount >= 2500 and priority in ("High") or title like "urgent"',
        "3 clauses (date, datetime, check box)": 'due >= "2024-06-01" and at < "2024-05-15T00:00Z" and tags in ("a")',
    }
    for label, text in queries.items():
        parse_ms = best_ms(lambda text=text: parse_query(text, FIELDS), runs=50)
        query = parse_query(text, FIELDS)
        hits = len(query.filter(records))
        filter_ms = best_ms(lambda query=query: query.filter(records))
        print(f"{label}: parse {parse_ms:.3f} ms; filter 10,000 records {filter_ms:.1f} ms ({hits} match)")
    window = " order by amount desc, due asc limit 500 offset 100"
    ordered = parse_query(queries["3 clauses (number, drop-down, text like)"] + window, FIELDS)
    apply_ms = best_ms(lambda: ordered.apply(records))
    print(f"filter + order by 2 keys + limit 500 offset 100 over 10,000 records: {apply_ms:.1f} ms")
    default = parse_query("", FIELDS)
    print(f"default order ($id desc) of 10,000 records: {best_ms(lambda: default.sort(records)):.1f} ms")


if __name__ == "__main__":
    main()
