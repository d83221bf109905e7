"""The runners compared with kmigrate, all through the same kind of httpx client and sandbox.

- ``raw``: the floor for any tool: csv.reader + dicts, calls of 100 packed 20 to a bulk across
  operations (the fewest bulk requests, as kmigrate's planner aims for), json.dumps of each
  bulk, posted straight; no validation, no plan, no journal.
- ``per_kind``: what Kintone's official JS client does (``addAllRecords``/``updateAllRecords``/
  ``deleteAllRecords``): each operation on its own, in bulks of up to 2,000 records (20 calls
  of 100), nothing merged across operations, kinds or apps.
- ``naive``: one request per record (``record.json``, ``record/status.json``; a one-id
  ``records.json`` for a delete, a one-record ``records.json`` for an upsert), stopping after
  ``cap`` records so a full-size run stays short.

Each returns how many records it sent; the sandbox's ``TimedApp`` counts the requests.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from workloads import CALLS_PER_BULK, RECORDS_PER_BULK, RECORDS_PER_CALL, Op, Workload

HEADERS = {"Content-Type": "application/json"}

# (HTTP method, plural API) of each kind's call.
CALLS = {
    "add": ("POST", "records"),
    "update": ("PUT", "records"),
    "upsert": ("PUT", "records"),
    "delete": ("DELETE", "records"),
    "status": ("PUT", "records/status"),
}


def read_csv(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows)
        for row in rows:
            yield {code: {"value": value} for code, value in zip(header, row, strict=True)}


@dataclass(frozen=True)
class RefItem:
    """A status change of the ``index``-th record a ref names."""

    ref: str
    index: int
    action: str | None


class Items:
    """An operation's items in Kintone's call shape, read when asked for (refs resolve late)."""

    def __init__(self, workload: Workload, data: Path):
        self.apps = workload.apps
        self.data = data
        self.refs: dict[str, list[str]] = {}

    def of(self, op: Op) -> Iterator[Any]:
        if op.kind == "add":
            yield from read_csv(self.data / op.source)  # type: ignore[operator]
        elif op.kind in ("update", "upsert"):
            for record in read_csv(self.data / op.source):  # type: ignore[operator]
                key = record.pop(op.key)
                yield {"updateKey": {"field": op.key, "value": key["value"]}, "record": record}
        elif op.kind == "delete":
            yield from op.ids
        elif op.kind == "status" and op.ref:
            for index in range(op.count):  # the id is known once the add's bulk has run
                yield RefItem(op.ref, index, op.action)
        elif op.kind == "status":
            for record_id in op.ids:
                yield {"id": record_id, "action": op.action}
        else:
            raise ValueError(op.kind)

    def known(self, item: Any) -> bool:
        return not isinstance(item, RefItem) or item.index < len(self.refs.get(item.ref, ()))

    def resolve(self, item: Any) -> Any:
        if isinstance(item, RefItem):
            return {"id": self.refs[item.ref][item.index], "action": item.action}
        return item

    def call(self, op: Op, chunk: list[Any]) -> dict[str, Any]:
        method, api = CALLS[op.kind]
        payload: dict[str, Any] = {"app": self.apps[op.alias]}
        payload["ids" if op.kind == "delete" else "records"] = chunk
        if op.kind == "upsert":
            payload["upsert"] = True
        return {"method": method, "api": f"/k/v1/{api}.json", "payload": payload}

    def note_results(self, ops: list[Op | None], results: list[dict[str, Any]]) -> None:
        """Ids of records added by an operation with a ref, from a bulk's answer."""
        for op, result in zip(ops, results, strict=True):
            if op is not None and op.kind == "add" and op.ref:
                self.refs.setdefault(op.ref, []).extend(result["ids"])


def post_bulk(http: httpx.Client, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = http.post(
        "/k/v1/bulkRequest.json", content=json.dumps({"requests": requests}).encode(), headers=HEADERS
    )
    if response.status_code != 200:
        raise RuntimeError(f"bulk request refused: {response.status_code} {response.text[:300]}")
    return response.json()["results"]


def raw(http: httpx.Client, workload: Workload, data: Path) -> int:
    """Calls of up to 100 (consecutive operations of one call kind share them), 20 to a bulk.
    A status change through a ref needs its record's id: the bulk that adds it must have run,
    so such an item starts a new bulk when its record is added in the current one."""
    items = Items(workload, data)
    bulk: list[dict[str, Any]] = []
    bulk_ops: list[Op | None] = []
    call: list[Any] = []
    call_op: Op | None = None
    sent = 0

    def close_call() -> None:
        nonlocal call, bulk, bulk_ops
        if call:
            bulk.append(items.call(call_op, call))  # type: ignore[arg-type]
            bulk_ops.append(call_op)
            call = []
        if len(bulk) == CALLS_PER_BULK:
            close_bulk()

    def close_bulk() -> None:
        nonlocal bulk, bulk_ops
        if call:
            close_call()
        if bulk:
            items.note_results(bulk_ops, post_bulk(http, bulk))
            bulk, bulk_ops = [], []

    for op in workload.ops:
        if call_op is not None and call_op.call_kind != op.call_kind:
            close_call()
        call_op = op
        by_ref = op.kind == "status" and op.ref
        for item in items.of(op):
            if by_ref:
                if not items.known(item):
                    close_bulk()
                item = items.resolve(item)
            if len(call) == RECORDS_PER_CALL:
                close_call()
            call.append(item)
            sent += 1
    close_bulk()
    return sent


def per_kind(http: httpx.Client, workload: Workload, data: Path) -> int:
    items = Items(workload, data)
    sent = 0
    for op in workload.ops:
        chunk: list[Any] = []
        for item in items.of(op):
            chunk.append(items.resolve(item))
            if len(chunk) == RECORDS_PER_BULK:
                sent += _send_per_kind(http, items, op, chunk)
                chunk = []
        if chunk:
            sent += _send_per_kind(http, items, op, chunk)
    return sent


def _send_per_kind(http: httpx.Client, items: Items, op: Op, chunk: list[Any]) -> int:
    calls = [items.call(op, chunk[i : i + RECORDS_PER_CALL]) for i in range(0, len(chunk), RECORDS_PER_CALL)]
    items.note_results([op] * len(calls), post_bulk(http, calls))
    return len(chunk)


def naive(http: httpx.Client, workload: Workload, data: Path, cap: int | None = None) -> int:
    items = Items(workload, data)
    sent = 0
    for op in workload.ops:
        app = workload.apps[op.alias]
        for item in items.of(op):
            if cap is not None and sent >= cap:
                return sent
            item = items.resolve(item)
            if op.kind == "add":
                method, api, body = "POST", "record", {"app": app, "record": item}
            elif op.kind == "update":
                method, api, body = "PUT", "record", {"app": app, **item}
            elif op.kind == "upsert":
                method, api, body = "PUT", "records", {"app": app, "upsert": True, "records": [item]}
            elif op.kind == "delete":
                method, api, body = "DELETE", "records", {"app": app, "ids": [item]}
            else:
                method, api, body = "PUT", "record/status", {"app": app, **item}
            response = http.request(
                method, f"/k/v1/{api}.json", content=json.dumps(body).encode(), headers=HEADERS
            )
            if response.status_code != 200:
                raise RuntimeError(f"{method} {api} refused: {response.status_code} {response.text[:300]}")
            if op.kind == "add" and op.ref:
                items.refs.setdefault(op.ref, []).append(response.json()["id"])
            sent += 1
    return sent


def seed(http: httpx.Client, workload: Workload, data: Path) -> None:
    """The records a workload changes, put in the sandbox before the measured run."""
    if workload.seed:
        raw(http, Workload("seed", "", workload.sandbox, workload.apps, workload.seed), data)


RUNNERS = {"raw": raw, "per-kind": per_kind, "naive": naive}


def measure(
    runner: str,
    workload: Workload,
    folder: Path,
    *,
    latency_ms: int = 0,
    cap: int | None = None,
    profile_to: str | None = None,
    parallel: int = 1,
) -> dict[str, Any]:
    """One run of ``runner`` (``kmigrate`` or a key of ``RUNNERS``) over the project ``folder``
    (made by ``Workload.write_data`` and ``write_project``): a sandbox of its own on a store in
    the folder, seeded, then timed. kmigrate's store is the environment's, so a later
    ``kmigrate apply`` finds the journal and the records as this run left them. Each run
    starts from an empty store (and kmigrate from no journal). ``parallel``: kmigrate's
    ``apply --parallel``."""
    import cProfile
    import time

    from transports import latency_transport, time_sandbox

    from kmigrate import api
    from kmigrate.client import Client
    from kmigrate.config import Credentials, load_project
    from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

    data = folder / "changesets" / "data"
    if runner == "kmigrate":
        project = load_project(folder)
        env = project.environment()
        definition, store = env.sandbox_file, env.sandbox_store
        remove_db(env.journal_path)
    else:
        definition, store = folder / "sandbox.yaml", folder / ".kmigrate" / f"sandbox-{runner}.sqlite3"
    remove_db(store)  # type: ignore[arg-type]
    sandbox = Sandbox.open(definition, store)  # type: ignore[arg-type]
    try:
        with httpx.Client(base_url=SANDBOX_BASE_URL, transport=sandbox.transport()) as setup:
            seed(setup, workload, data)
        timed = time_sandbox(sandbox)
        transport = latency_transport(sandbox, latency_ms)
        profiler = cProfile.Profile() if profile_to else None
        began = time.perf_counter()
        if profiler:
            profiler.enable()
        if runner == "kmigrate":
            client = Client(SANDBOX_BASE_URL, Credentials(), transport=transport)
            result = api.apply(api.Context(project, env), client=client, parallel=parallel)
            if result.summary is None:
                raise RuntimeError("kmigrate applied nothing")
            sent = result.summary.applied_records
        else:
            with httpx.Client(base_url=SANDBOX_BASE_URL, transport=transport) as http:
                if runner == "naive":
                    sent = naive(http, workload, data, cap=cap)
                else:
                    sent = RUNNERS[runner](http, workload, data)
        seconds = time.perf_counter() - began
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile_to)
    finally:
        sandbox.close()
    return {
        "seconds": seconds,
        "sent": sent,
        "requests": timed.requests - timed.reads,  # the writes: bulk requests, or one per record
        "reads": timed.reads,
        "sandbox_s": timed.seconds,
        "latency_s": timed.requests * latency_ms / 1000,
    }


def remove_db(db: Path) -> None:
    """A SQLite file and its WAL companions."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
