"""The runner's send loop: the next bulk prepared while one is in flight, and ``--parallel N``.

Concurrency is proved with barriers and events (each wait has a timeout), never with timing:
a bulk that waits for another to be in flight at the same moment can only pass if it is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate import client as client_module
from kmigrate import runner as runner_module
from kmigrate.cli import main
from kmigrate.client import Client, RetryPolicy
from kmigrate.config import Credentials, load_project
from kmigrate.errors import InDoubtError, InputError, KintoneError, TransportError
from kmigrate.journal import Journal
from kmigrate.runner import RunEvent
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox
from kmigrate.sandbox.faults import FaultProfile

from .projects import (
    SMALL_BULK,
    SMALL_CALL,
    TOKEN,
    items_project,
    small_calls,
    write_changeset,
    write_items_csv,
)

CREDS = Credentials(api_tokens=(TOKEN,))
WAIT = 30  # seconds any wait below may take before the test fails


@pytest.fixture(autouse=True)
def _small_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bulks of 200 records (190 with a journal app): what is proved here is how bulks are
    sent, not Kintone's sizes (tests/test_runner.py keeps those)."""
    small_calls(monkeypatch)


def items(tmp_path: Path, count: int = 450, extra: str = "", ref: str = "") -> tuple[Path, Any, Any]:
    """One changeset adding ``count`` items (batches of 200), naming them ``ref`` if given;
    ``extra`` more operations."""
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(count))
    named = f", ref: {ref}" if ref else ""
    write_changeset(
        root,
        "V0001__items.yaml",
        f"operations:\n  - add: {{app: items, records_from: data/items.csv{named}}}\n" + extra,
    )
    project = load_project(root)
    return root, project, project.environment()


def states(env: Any) -> list[str]:
    with Journal.open(env.journal_path) as journal:
        return [b.state for b in journal.batches("0001")]


def codes(env: Any) -> list[str]:
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        return sorted(r["code"]["value"] for r in sandbox.records(1))


def first_code(requests: Any) -> str:
    """The first item code a bulk adds (which batch it is)."""
    body = requests.requests if hasattr(requests, "requests") else requests
    return str(body[0]["payload"]["records"][0]["code"]["value"])


def apply(env: Any, project: Any, client: Client, **kw: Any) -> tuple[api.ApplyResult, list[RunEvent]]:
    seen: list[RunEvent] = []
    result = api.apply(api.Context(project, env), client=client, on_event=seen.append, **kw)
    return result, seen


def assert_results_journaled(env: Any) -> None:
    """Each batch's journaled ids are the records of its own codes, in order (by Kintone's
    answer, or read back by reconciliation), however the batches landed."""
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        by_id = {int(r["$id"]["value"]): r["code"]["value"] for r in sandbox.records(1)}
    with Journal.open(env.journal_path) as journal:
        for batch in journal.batches("0001"):
            ids = [int(i) for result in batch.result for i in result["ids"]]
            start = batch.index * SMALL_BULK
            assert [by_id[i] for i in ids] == [f"I{n:06d}" for n in range(start, start + len(ids))]


def assert_ref_in_order(env: Any, count: int) -> None:
    """The ref ``new`` names the records in the order written, however the batches landed."""
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        by_id = {int(r["$id"]["value"]): r["code"]["value"] for r in sandbox.records(1)}
    with Journal.open(env.journal_path) as journal:
        ids = journal.refs()["new"]
    assert [by_id[i] for i in ids] == [f"I{n:06d}" for n in range(count)]


def sent_and_landed(events: list[RunEvent]) -> list[tuple[str, int]]:
    return [
        (e.kind, e.batch.index)
        for e in events
        if e.batch is not None and e.kind in ("batch_sent", "batch_applied")
    ]


# ---- pipelined: one request on the wire, the next prepared meanwhile --------------------------


def test_the_next_bulk_is_prepared_while_one_is_in_flight_and_the_order_is_unchanged(tmp_path, monkeypatch):
    root, project, env = items(tmp_path)
    encoded: list[str] = []
    second_ready = threading.Event()
    real = client_module.encode_bulk

    def encoding(requests: Any, guest: Any, **kw: Any) -> Any:
        encoded.append(threading.current_thread().name)
        if len(encoded) == 2:
            second_ready.set()
        return real(requests, guest, **kw)

    monkeypatch.setattr(client_module, "encode_bulk", encoding)
    waited: list[bool] = []

    class Waiting(Client):
        def bulk(self, requests: Any, guest_space_id: Any = None) -> Any:
            if not waited:  # batch 0 in flight: batch 1 gets ready meanwhile
                waited.append(second_ready.wait(timeout=WAIT))
            return super().bulk(requests, guest_space_id)

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        result, events = apply(env, project, Waiting(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()))
    assert waited == [True]
    assert encoded == ["kmigrate-ahead"] * 3
    # One request on the wire: each batch is journaled sent only once the one before landed.
    assert sent_and_landed(events) == [(k, i) for i in range(3) for k in ("batch_sent", "batch_applied")]
    assert states(env) == ["applied"] * 3
    assert (
        result.summary is not None and result.summary.requests_sent == 4
    )  # 3 bulks, 1 read of the highest id
    assert codes(env) == [f"I{i:06d}" for i in range(450)]


def test_a_bulk_prepared_but_never_sent_is_not_journaled_as_sent(tmp_path):
    root, project, env = items(tmp_path)

    class RefusingSecond(Client):
        bulks = 0

        def bulk(self, requests: Any, guest_space_id: Any = None) -> Any:
            type(self).bulks += 1
            if type(self).bulks == 2:
                raise KintoneError("refused", status=400, code="CB_VA01", bulk_index=0)
            return super().bulk(requests, guest_space_id)

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(KintoneError, match="refused"):
            apply(env, project, RefusingSecond(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()))
    assert states(env) == ["applied", "failed", "pending"]  # batch 2 was prepared, never sent


def test_an_error_preparing_a_batch_is_raised_at_its_turn(tmp_path, monkeypatch):
    root, project, env = items(tmp_path)
    real = runner_module.Runner._prepare

    def failing(self: Any, cs: Any, batch: Any, *args: Any) -> Any:
        if batch.index == 1:
            raise RuntimeError("compiling batch 1 failed")
        return real(self, cs, batch, *args)

    monkeypatch.setattr(runner_module.Runner, "_prepare", failing)
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(RuntimeError, match="batch 1"):
            apply(env, project, Client(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()))
    assert states(env) == ["applied", "pending", "pending"]


# ---- --parallel N ----------------------------------------------------------------------------


class Gate(Client):
    """Holds its first bulks at a barrier: they pass only all in flight at once; later bulks
    go straight through."""

    barrier: threading.Barrier

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.held = 0
        self.lock = threading.Lock()

    def bulk(self, requests: Any, guest_space_id: Any = None) -> Any:
        with self.lock:
            self.held += 1
            wait = self.held <= self.barrier.parties
        if wait:
            self.barrier.wait(timeout=WAIT)
        return super().bulk(requests, guest_space_id)


def test_independent_bulks_are_in_flight_together_and_land_exactly(tmp_path):
    root, project, env = items(tmp_path, 600, ref="new")  # 3 full batches
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Gate(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport())
        client.barrier = threading.Barrier(3)
        result, events = apply(env, project, client, parallel=3)
    kinds = [k for k, _ in sent_and_landed(events)]
    assert kinds[:3] == ["batch_sent"] * 3  # all three left before any landed
    assert states(env) == ["applied"] * 3
    assert codes(env) == [f"I{i:06d}" for i in range(600)]
    assert_results_journaled(env)
    assert_ref_in_order(env, 600)


def test_a_bulk_that_consumes_a_ref_waits_for_every_batch_producing_it(tmp_path):
    extra = "  - status: {app: items, records: {ref: new}, action: Check}\n"
    root, project, env = items(tmp_path, 450, extra, ref="new")
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        result, events = apply(
            env, project, Client(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()), parallel=4
        )
        status = sandbox.definition.apps[1].system_code("STATUS")
        checked = {r[status]["value"] for r in sandbox.records(1)}
        plan = result.plan.changesets[0]
        producing = {b.index for b in plan.batches if "new" in b.produces}
        consuming = {b.index for b in plan.batches if "new" in b.consumes}
    count = len(states(env))
    assert states(env) == ["applied"] * count and producing and consuming
    order = sent_and_landed(events)
    for c in consuming:
        for p in producing - {c}:
            if p < c:
                assert order.index(("batch_applied", p)) < order.index(("batch_sent", c))
    assert checked == {"Checked"}
    assert_ref_in_order(env, 450)


class FirstLast(Client):
    """Batch 0's bulk waits until the two after it were answered, then meets ``first``: it
    lands last. ``first(send)`` may send it (``send()``) and raises what the exchange meets."""

    first: Callable[[Callable[[], Any]], Any]

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.answered = 0
        self.others_landed = threading.Event()
        self.lock = threading.Lock()

    def bulk(self, requests: Any, guest_space_id: Any = None) -> Any:
        if first_code(requests) == "I000000":
            self.others_landed.wait(timeout=WAIT)
            return type(self).first(lambda: super(FirstLast, self).bulk(requests, guest_space_id))
        results = super().bulk(requests, guest_space_id)
        with self.lock:
            self.answered += 1
            if self.answered == 2:
                self.others_landed.set()
        return results


def test_after_a_failure_those_in_flight_land_and_resume_sends_only_what_is_left(tmp_path):
    root, project, env = items(tmp_path, 600, ref="new")

    class FirstRefusedLast(FirstLast):
        @staticmethod
        def first(send: Callable[[], Any]) -> Any:
            raise KintoneError(
                "refused: a value Kintone does not take", status=400, code="CB_VA01", bulk_index=0
            )

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(KintoneError, match="0 earlier batch") as info:
            apply(
                env,
                project,
                FirstRefusedLast(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()),
                parallel=3,
            )
        assert "later batches in flight with it landed" in info.value.message
        assert states(env) == ["failed", "applied", "applied"]
        assert codes(env) == [f"I{i:06d}" for i in range(200, 600)]
        result, events = apply(
            env, project, Client(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()), parallel=3
        )
    assert [(k, i) for k, i in sent_and_landed(events)] == [("batch_sent", 0), ("batch_applied", 0)]
    assert states(env) == ["applied"] * 3
    assert codes(env) == [f"I{i:06d}" for i in range(600)]
    assert_results_journaled(env)
    assert_ref_in_order(env, 600)  # batch 0's ids came last, and come first


@pytest.mark.parametrize("delivered", [True, False])
def test_an_earlier_batch_in_doubt_after_later_ones_applied_is_settled_by_the_next_run(tmp_path, delivered):
    root, project, env = items(tmp_path, 600, ref="new")

    class Crashing(FirstLast):
        @staticmethod
        def first(send: Callable[[], Any]) -> Any:
            if delivered:
                send()
            raise KeyboardInterrupt  # the process dying with batch 0 on the wire

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InDoubtError, match="batch 0"):
            apply(env, project, Crashing(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()), parallel=3)
        assert states(env) == ["sent", "applied", "applied"]
        result, events = apply(
            env, project, Client(SANDBOX_BASE_URL, CREDS, transport=sandbox.transport()), parallel=3
        )
    assert states(env) == ["applied"] * 3
    assert codes(env) == [f"I{i:06d}" for i in range(600)]  # each record exactly once
    assert result.summary is not None and result.summary.reconciled_batches == 1
    assert_results_journaled(env)
    assert_ref_in_order(env, 600)


def test_429_answers_are_waited_out_and_sent_again_in_parallel(tmp_path):
    root, project, env = items(tmp_path, 1000)  # 5 batches
    faults = FaultProfile.parse("seed=3,429=0.4")
    waits: list[float] = []
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Client(
            SANDBOX_BASE_URL,
            CREDS,
            transport=sandbox.transport(faults=faults),
            retry=RetryPolicy(attempts=20, max_seconds=600),
            sleep=waits.append,
        )
        result, _ = apply(env, project, client, parallel=4)
    assert states(env) == ["applied"] * 5
    assert codes(env) == [f"I{i:06d}" for i in range(1000)]
    assert faults.counts["429"] > 0 and client.retry_count == faults.counts["429"] == len(waits)
    assert result.summary is not None
    assert result.summary.requests_sent == 5 + 1 + faults.counts["429"]  # bulks, the highest id, the 429s


def test_parallel_is_bounded_and_configurable(tmp_path):
    root, project, env = items(tmp_path, 10)
    refused = CliRunner().invoke(main, ["-C", str(root), "apply", "--parallel", "11"])
    assert refused.exit_code == 2 and "bulks in flight at once are 1 to 10" in refused.output
    assert not env.journal_path.exists()
    with pytest.raises(InputError):
        api.apply(api.Context(project, env), parallel=0)
    toml = root / "kmigrate.toml"
    toml.write_text(
        toml.read_text().replace("apps = { items = 1 }\n", "apps = { items = 1 }\nparallel = 11\n", 1)
    )
    bad = CliRunner().invoke(main, ["-C", str(root), "apply"])
    assert bad.exit_code == 2 and "parallel" in bad.output
    toml.write_text(toml.read_text().replace("parallel = 11", "parallel = 3"))
    assert load_project(root).environment().parallel == 3
    done = CliRunner().invoke(main, ["-C", str(root), "apply", "--parallel", "2"])
    assert done.exit_code == 0, done.output
    assert codes(load_project(root).environment()) == [f"I{i:06d}" for i in range(10)]


@pytest.mark.slow
def test_the_crash_matrix_with_parallel_bulks_never_duplicates_loses_or_needs_a_person(tmp_path):
    """SIGKILLed at points spread over a run whose changesets take several bulks in flight at
    once (each 450 visits, in bulks of 200: three bulks of adds together, then their status
    changes), then resumed until done: every record exactly once, as the same run sent one bulk
    at a time."""
    from .harness.crash import run_matrix

    figures, requests = run_matrix(
        points=6, records=900, chunks=2, work=tmp_path, jobs=3, parallel=4, records_per_call=SMALL_CALL
    )
    assert figures.runs == 6 and figures.killed >= 5
    m = figures.mismatches
    assert (m.duplicates, m.missing, m.wrong_values, m.wrong_statuses) == (0, 0, 0, 0), m.examples
    assert figures.needed_a_person == []


def test_with_a_journal_app_bulks_in_flight_together_each_carry_their_marker(tmp_path):
    """Three bulks of adds (each behind its marker) in flight at once against a journal app;
    a fresh runner then knows every batch, ids in the order written, and sends no data write."""
    from .remote.projects import JOURNAL_APP, item_codes, write_project

    store = tmp_path / "kintone.sqlite3"
    write_project(tmp_path / "definition", store=store)
    runs = []
    with Sandbox.open(tmp_path / "definition" / "sandbox.yaml", store) as sandbox:
        for name in ("a", "b"):
            project = load_project(write_project(tmp_path / name, store=store, records=570, changesets=1))
            env = project.environment()
            client = Gate(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport())
            client.barrier = threading.Barrier(3 if name == "a" else 1)
            result, events = apply(env, project, client, parallel=4)
            runs.append((env, result, events))
        markers = [r for r in sandbox.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]
        codes_now = item_codes(sandbox.records(1))
    (a_env, a, a_events), (b_env, b, _) = runs
    kinds = [k for k, _ in sent_and_landed(a_events)]
    assert kinds[:3] == ["batch_sent"] * 3  # the three adds of 190 left together
    assert a.summary is not None and a.summary.applied_records == 570 * 2  # the adds, then their status
    assert b.nothing_to_do
    assert len(markers) == a.summary.applied_batches
    assert len(codes_now) == 570
    with Journal.open(a_env.journal_path) as ja, Journal.open(b_env.journal_path) as jb:
        assert jb.refs() == ja.refs() and len(ja.refs()["first"]) == 570
        with Sandbox.open(tmp_path / "definition" / "sandbox.yaml", store) as sandbox:
            by_id = {int(r["$id"]["value"]): r["code"]["value"] for r in sandbox.records(1)}
        named = [by_id[i] for i in ja.refs()["first"]]
    assert named == sorted(named)  # the CSV's order


def test_ids_owed_to_a_marker_stop_the_run_once_those_in_flight_landed(tmp_path):
    """--parallel 2 with a journal app: batch 0's ids cannot be written to its marker, so the
    run stops before its next bulk leaves, and the bulks still in flight land and are
    journaled first (none left `sent`). A fresh runner reads the ids back and finishes exact."""
    from .remote.projects import JOURNAL_APP, item_codes, write_project
    from .remote.test_apply import Recorder, client_over

    store = tmp_path / "kintone.sqlite3"
    write_project(tmp_path / "definition", store=store)
    with Sandbox.open(tmp_path / "definition" / "sandbox.yaml", store) as sandbox:
        project = load_project(write_project(tmp_path / "a", store=store, records=760, changesets=1))
        env = project.environment()
        recorder = Recorder(sandbox)
        unwritable: list[int] = []

        def first_marker_unwritable(method: str, path: str, body: dict) -> None:
            if method == "PUT" and path == "/k/v1/record.json" and "ids" in body.get("record", {}):
                unwritable[:] = unwritable or [body["id"]]
                if body["id"] == unwritable[0]:
                    raise httpx.ConnectError("the journal app is unreachable")

        recorder.before = first_marker_unwritable
        with pytest.raises(TransportError, match="could not be written to its marker"):
            apply(env, project, client_over(recorder), parallel=2)
        assert states(env)[:3] == ["applied"] * 3 and "sent" not in states(env)
        assert len(sandbox.records(1)) == 3 * 190  # the fourth add was not sent

        fresh = load_project(write_project(tmp_path / "b", store=store, records=760, changesets=1))
        result, _ = apply(fresh.environment(), fresh, client_over(Recorder(sandbox)), parallel=2)
        assert result.summary is not None
        markers = [r for r in sandbox.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]
        assert all(r["ids"]["value"] for r in markers if r["key"]["value"].endswith(":0"))
        assert len(item_codes(sandbox.records(1))) == 760
        assert {r["Status"]["value"] for r in sandbox.records(1)} == {"Checked"}


def test_drops_resets_and_429s_in_parallel_lose_nothing_and_apply_nothing_twice(tmp_path):
    """The sandbox's fault layer in front of bulks in flight together: resets (never sent: sent
    again), 429s (waited out), drops (applied, the answer lost: settled by reading Kintone).
    Applied again until done, every record is there once and the ref names them in order."""
    extra = "  - status: {app: items, records: {ref: new}, action: Check}\n"
    root, project, env = items(tmp_path, 1000, extra, ref="new")
    faults = FaultProfile.parse("seed=5,429=0.1,reset=0.1,drop=0.15")
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        for _ in range(6):
            client = Client(
                SANDBOX_BASE_URL,
                CREDS,
                transport=sandbox.transport(faults=faults),
                retry=RetryPolicy(attempts=10, max_seconds=600),
                sleep=lambda seconds: None,
            )
            try:
                result, _ = apply(env, project, client, parallel=4)
            except (InDoubtError, KintoneError, TransportError):
                continue
            if result.summary is not None or result.nothing_to_do:
                break
        status = sandbox.definition.apps[1].system_code("STATUS")
        checked = {r[status]["value"] for r in sandbox.records(1)}
    assert faults.counts["drop"] > 0 and faults.counts["reset"] > 0 and faults.counts["429"] > 0
    assert set(states(env)) == {"applied"}
    assert codes(env) == [f"I{i:06d}" for i in range(1000)]
    assert checked == {"Checked"}
    assert_ref_in_order(env, 1000)


def test_the_proof_is_given_the_apps_each_app_looks_up_from_their_definitions():
    from kmigrate.appschema import AppSchema, FieldDef, LookupDef

    def text(code: str, lookup: LookupDef | None = None) -> FieldDef:
        return FieldDef(code, "SINGLE_LINE_TEXT", code, lookup=lookup)

    schemas = {
        1: AppSchema(fields={"code": text("code")}),
        2: AppSchema(fields={"ref": text("ref", LookupDef(1, "code", (("copied", "n"),)))}),
        3: AppSchema(  # a lookup in a table's column, of the app itself
            fields={
                "rows": FieldDef(
                    "rows", "SUBTABLE", "rows", fields={"p": text("p", LookupDef(3, "code", ()))}
                )
            }
        ),
    }
    assert api.lookup_sources(schemas) == {1: frozenset(), 2: frozenset({1}), 3: frozenset({3})}
