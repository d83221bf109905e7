"""The benchmark's workloads: what each runner is asked to do, and the kmigrate project for it.

A workload is a list of operations (``Op``) over the apps of a sandbox definition, plus a
``seed`` the sandbox holds before any runner starts (W2's data fix changes records that exist).
Records come from CSV files every runner reads itself; ids for deletes and status changes are
written out (the seed's ids are 1..N per app in a fresh store) or, for W3, taken from a ref.

    workload = build("W2", SIZES["tiny"])
    workload.write_data(folder)          # the CSV files, shared by every runner
    workload.write_project(folder)       # kmigrate.toml, sandbox.yaml, changesets/
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CALLS_PER_BULK = 20
RECORDS_PER_CALL = 100
RECORDS_PER_BULK = CALLS_PER_BULK * RECORDS_PER_CALL


@dataclass(frozen=True)
class Size:
    name: str
    w1: int  # W1 adds
    w2_rounds: int  # W2: each round is 500 operations over three apps
    w3: int  # W3 adds (and as many status changes)
    w4: int  # W4 adds
    naive_cap: int  # naive runner: records sent one by one, then extrapolated
    naive_cap_latency: int  # the same with injected latency (each request waits)


SIZES = {
    "tiny": Size("tiny", w1=300, w2_rounds=1, w3=120, w4=2_500, naive_cap=200, naive_cap_latency=20),
    "small": Size("small", w1=10_000, w2_rounds=4, w3=500, w4=100_000, naive_cap=1_000, naive_cap_latency=50),
    "full": Size(
        "full", w1=100_000, w2_rounds=40, w3=5_000, w4=1_000_000, naive_cap=2_000, naive_cap_latency=100
    ),
}
WORKLOADS = ("W1", "W2", "W3", "W4")


@dataclass(frozen=True)
class Op:
    """One operation as every runner sees it."""

    kind: str  # add | update | upsert | delete | status
    alias: str  # the app's alias in kmigrate.toml
    source: str | None = None  # add/update/upsert: a CSV file in the data folder
    ids: tuple[int, ...] = ()  # delete/status: record ids
    ref: str | None = None  # add: names its records; status: acts on that add's records
    key: str | None = None  # update/upsert: the unique field
    action: str | None = None  # status
    count: int = 0  # how many records (items) it touches

    @property
    def call_kind(self) -> tuple[str, str, str | None]:
        """Items of consecutive operations with the same call kind may share calls."""
        return (self.kind, self.alias, self.key)


@dataclass
class Workload:
    name: str
    title: str
    sandbox: dict[str, Any]
    apps: dict[str, int]
    ops: list[Op]
    seed: list[Op] = field(default_factory=list)
    csv_files: dict[str, tuple[list[str], Any]] = field(default_factory=dict)  # name -> header, rows()

    @property
    def records(self) -> int:
        return sum(op.count for op in self.ops)

    @property
    def floor(self) -> int:
        """The fewest bulk requests for the written order: calls of up to 100 items of one kind
        (consecutive operations of one call kind share them), 20 calls to a bulk, and an item
        that needs the id of a record added in the current bulk starts the next one (the id is
        known only once that bulk has run). Greedy is optimal here: every constraint holds for
        any part of a feasible bulk (see kmigrate/planner/packing.py's docstring); computed apart from
        the planner, on counts alone."""
        bulks, calls, in_call, kind = 0, 0, 0, None
        added_before: dict[str, int] = {}  # per ref: records added in bulks before the current
        added_now: dict[str, int] = {}  # ... and in the current one

        def new_bulk() -> None:
            nonlocal bulks, calls, in_call
            if calls or in_call:
                bulks += 1
            calls = in_call = 0
            for ref, n in added_now.items():
                added_before[ref] = added_before.get(ref, 0) + n
            added_now.clear()

        for op in self.ops:
            done = 0
            while done < op.count:
                if kind != op.call_kind or in_call == RECORDS_PER_CALL:
                    if in_call:
                        calls += 1
                    in_call, kind = 0, op.call_kind
                    if calls == CALLS_PER_BULK:
                        new_bulk()
                room = RECORDS_PER_CALL - in_call
                if op.kind == "status" and op.ref:
                    if done >= added_before.get(op.ref, 0):
                        new_bulk()
                        kind = op.call_kind
                    room = min(room, added_before[op.ref] - done)
                take = min(room, op.count - done)
                in_call += take
                done += take
                if op.kind == "add" and op.ref:
                    added_now[op.ref] = added_now.get(op.ref, 0) + take
        if in_call:
            calls += 1
        new_bulk()
        return bulks

    def per_kind_requests(self) -> int:
        """What the per-kind runner sends: each operation in its own bulks of 2,000 records."""
        return sum(math.ceil(op.count / RECORDS_PER_BULK) for op in self.ops)

    def write_data(self, folder: Path) -> None:
        data = folder / "changesets" / "data"
        data.mkdir(parents=True, exist_ok=True)
        for name, (header, rows) in self.csv_files.items():
            with open(data / name, "w", newline="", encoding="utf-8") as handle:
                out = csv.writer(handle)
                out.writerow(header)
                out.writerows(rows())

    def write_project(self, folder: Path) -> None:
        """kmigrate.toml (env ``bench``: the embedded sandbox), sandbox.yaml and one changeset
        with every operation."""
        apps = ", ".join(f"{alias} = {app}" for alias, app in self.apps.items())
        toml = f'default_env = "bench"\n\n[env.bench]\nsandbox = "sandbox.yaml"\napps = {{ {apps} }}\n'
        (folder / "kmigrate.toml").write_text(toml, encoding="utf-8")
        (folder / "sandbox.yaml").write_text(yaml.safe_dump(self.sandbox, sort_keys=False), encoding="utf-8")
        lines = [f"description: {json.dumps(self.title)}", "operations:"]
        for op in self.ops:
            lines.extend(_changeset_op(op))
        (folder / "changesets").mkdir(exist_ok=True)
        (folder / "changesets" / f"V0001__{self.name.lower()}.yaml").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )


def _changeset_op(op: Op) -> list[str]:
    body: dict[str, Any] = {"app": op.alias}
    if op.source:
        body["records_from"] = f"data/{op.source}"
    if op.key:
        body["key"] = op.key
    if op.kind == "add" and op.ref:
        body["ref"] = op.ref
    if op.kind == "delete":
        body["ids"] = list(op.ids)
    if op.kind == "status":
        body["records"] = {"ref": op.ref} if op.ref else list(op.ids)
        body["action"] = op.action
    # JSON is YAML: one flow mapping per operation, ids on one line.
    return [f"  - {op.kind}: {json.dumps(body, ensure_ascii=False)}"]


# ---- the workloads ------------------------------------------------------------------------

KEY = {"type": "SINGLE_LINE_TEXT", "required": True, "unique": True}  # a unique key field
TEXT, NUMBER = {"type": "SINGLE_LINE_TEXT"}, {"type": "NUMBER"}
SUBMIT = {
    "enable": True,
    "states": ["Draft", "In review"],
    "actions": [{"name": "Submit", "from": "Draft", "to": "In review"}],
}

ITEMS_APP = {"id": 1, "name": "Items", "fields": {"code": KEY, "qty": NUMBER, "note": TEXT}}
ORDERS_APP = {
    "id": 1,
    "name": "Orders",
    "fields": {"order_no": KEY, "amount": NUMBER, "note": TEXT},
    "process": SUBMIT,
}
TIERS = {"type": "DROP_DOWN", "options": ["Bronze", "Silver", "Gold"]}
CUSTOMERS_APP = {"id": 2, "name": "Customers", "fields": {"customer_code": KEY, "name": TEXT, "tier": TIERS}}
PRODUCTS_APP = {"id": 3, "name": "Products", "fields": {"sku": KEY, "name": TEXT, "stock": NUMBER}}


def _items(n: int) -> Workload:
    def rows() -> Any:
        return ([f"I{i:07d}", i % 97, f"item number {i}"] for i in range(n))

    return Workload(
        name="?",
        title=f"{n:,} adds from CSV",
        sandbox={"apps": [ITEMS_APP]},
        apps={"items": 1},
        ops=[Op("add", "items", source="items.csv", count=n)],
        csv_files={"items.csv": (["code", "qty", "note"], rows)},
    )


# W2, per round: adds to orders, updates of customers by key, upserts of products (half of
# them new), deletes of seeded orders, and a status action on other seeded orders.
W2_ADD, W2_UPDATE, W2_UPSERT, W2_DELETE, W2_STATUS = 150, 120, 100, 30, 100


def _data_fix(rounds: int) -> Workload:
    seeded_orders = rounds * (W2_DELETE + W2_STATUS)
    seeded_customers = rounds * W2_UPDATE
    seeded_products = rounds * W2_UPSERT // 2
    files: dict[str, tuple[list[str], Any]] = {
        "seed_orders.csv": (
            ["order_no", "amount", "note"],
            lambda: ([f"S{i:06d}", i % 500, "seeded"] for i in range(seeded_orders)),
        ),
        "seed_customers.csv": (
            ["customer_code", "name", "tier"],
            lambda: ([f"C{i:06d}", f"Customer {i}", "Bronze"] for i in range(seeded_customers)),
        ),
        "seed_products.csv": (
            ["sku", "name", "stock"],
            lambda: ([f"P{i:06d}", f"Product {i}", 10] for i in range(seeded_products)),
        ),
    }
    seed = [
        Op("add", "orders", source="seed_orders.csv", count=seeded_orders),
        Op("add", "customers", source="seed_customers.csv", count=seeded_customers),
        Op("add", "products", source="seed_products.csv", count=seeded_products),
    ]
    ops: list[Op] = []
    half = W2_UPSERT // 2
    for r in range(rounds):
        files[f"add_{r:03d}.csv"] = (
            ["order_no", "amount", "note"],
            lambda r=r: ([f"N{r:03d}-{i:04d}", i, "new in the fix"] for i in range(W2_ADD)),
        )
        files[f"update_{r:03d}.csv"] = (
            ["customer_code", "tier"],
            lambda r=r: (
                [f"C{r * W2_UPDATE + i:06d}", "Gold" if i % 2 else "Silver"] for i in range(W2_UPDATE)
            ),
        )
        # Half existing products (restocked), half new ones (inserted).
        files[f"upsert_{r:03d}.csv"] = (
            ["sku", "name", "stock"],
            lambda r=r: (
                [f"P{r * half + i:06d}" if i < half else f"Q{r:03d}-{i:04d}", f"Product {r}/{i}", 50 + i]
                for i in range(W2_UPSERT)
            ),
        )
        first = r * (W2_DELETE + W2_STATUS) + 1
        ops += [
            Op("add", "orders", source=f"add_{r:03d}.csv", count=W2_ADD),
            Op("update", "customers", source=f"update_{r:03d}.csv", key="customer_code", count=W2_UPDATE),
            Op("upsert", "products", source=f"upsert_{r:03d}.csv", key="sku", count=W2_UPSERT),
            Op("delete", "orders", ids=tuple(range(first, first + W2_DELETE)), count=W2_DELETE),
            Op(
                "status",
                "orders",
                ids=tuple(range(first + W2_DELETE, first + W2_DELETE + W2_STATUS)),
                action="Submit",
                count=W2_STATUS,
            ),
        ]
    return Workload(
        name="W2",
        title=f"A data fix over three apps: {rounds * 500:,} operations in {len(ops)} interleaved steps",
        sandbox={"apps": [ORDERS_APP, CUSTOMERS_APP, PRODUCTS_APP]},
        apps={"orders": 1, "customers": 2, "products": 3},
        ops=ops,
        seed=seed,
        csv_files=files,
    )


def _add_then_status(n: int) -> Workload:
    return Workload(
        name="W3",
        title=f"{n:,} adds, then a status action on each through a ref",
        sandbox={"apps": [ORDERS_APP]},
        apps={"orders": 1},
        ops=[
            Op("add", "orders", source="orders.csv", ref="new_orders", count=n),
            Op("status", "orders", ref="new_orders", action="Submit", count=n),
        ],
        csv_files={
            "orders.csv": (
                ["order_no", "amount", "note"],
                lambda: ([f"O{i:07d}", i % 1000, f"order {i}"] for i in range(n)),
            )
        },
    )


def build(name: str, size: Size) -> Workload:
    if name == "W1":
        w = _items(size.w1)
    elif name == "W2":
        return _data_fix(size.w2_rounds)
    elif name == "W3":
        return _add_then_status(size.w3)
    elif name == "W4":
        w = _items(size.w4)
    else:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    w.name = name
    return w
