"""The runner end to end on the embedded sandbox: apply, re-run, resume, refs, in-doubt, drift."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.client import NO_RETRY, Client
from kmigrate.config import Credentials, load_project
from kmigrate.errors import DriftError, InDoubtError, JournalError, KintoneError, OrderError
from kmigrate.journal import Journal
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

from .projects import (
    SMALL_BULK,
    TOKEN,
    copy_example,
    items_project,
    seed_records,
    small_calls,
    write_changeset,
    write_items_csv,
)
from .test_journal import journal_commits

AUTH = {"X-Cybozu-API-Token": TOKEN}
ITEMS_CREDENTIALS = Credentials(api_tokens=(TOKEN,))


def typed(record: dict, kind: str):
    return next(v["value"] for v in record.values() if v["type"] == kind)


def open_sandbox(root, env_name="sandbox"):
    env = load_project(root).environment(env_name)
    return Sandbox.open(env.sandbox_file, env.sandbox_store)


def run(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args], catch_exceptions=False)


# ---- the example project -----------------------------------------------------------------------


def test_example_project_applies_exactly_and_a_rerun_sends_nothing(tmp_path):
    root = copy_example(tmp_path)
    first = run(root, "apply")
    assert first.exit_code == 0, first.output
    assert "applied 4 batch(es)" in first.output

    with open_sandbox(root) as sandbox:
        products = {r["sku"]["value"]: r for r in sandbox.records(3)}
        customers = {r["customer_code"]["value"]: r for r in sandbox.records(2)}
        orders = {r["order_no"]["value"]: r for r in sandbox.records(1)}

    assert len(products) == 8 and products["SKU-003"]["stock"]["value"] == "12"
    assert (
        products["SKU-003"]["$revision"]["value"] == "2" and products["SKU-001"]["$revision"]["value"] == "1"
    )
    assert len(customers) == 20
    assert (
        customers["C-001"]["tier"]["value"] == "Gold"
        and customers["C-012"]["email"]["value"] == "orders@quartz.example.com"
    )
    assert customers["C-012"]["$revision"]["value"] == "2" and customers["C-002"]["$revision"]["value"] == "1"
    # 30 from CSV + 2 inline, one deleted (spring_orders index 29 = the CSV's last row).
    assert len(orders) == 31 and "SO-2024-030" not in orders
    status = {no: typed(r, "STATUS") for no, r in orders.items()}
    assert status["SO-2024-001"] == status["SO-2024-002"] == "Done"  # Submit then Approve
    assert status["SO-2024-003"] == "Draft"  # Submit then Send back
    assert status["SO-2024-010"] == "In review"  # Submit only
    assert status["SO-2024-101"] == "Draft"  # the phone orders had no action
    # Each action adds 2 to the revision, an assignee change 1, an update 1.
    assert orders["SO-2024-001"]["$revision"]["value"] == "5"
    assert orders["SO-2024-010"]["$revision"]["value"] == "3"
    assert orders["SO-2024-004"]["$revision"]["value"] == "4"
    assert [u["code"] for u in typed(orders["SO-2024-004"], "STATUS_ASSIGNEE")] == ["alice"]
    assert (
        orders["SO-2024-102"]["priority"]["value"] == "High"
        and orders["SO-2024-102"]["$revision"]["value"] == "2"
    )
    assert [row["value"]["sku"]["value"] for row in orders["SO-2024-101"]["lines"]["value"]] == [
        "SKU-001",
        "SKU-002",
    ]

    second = run(root, "apply")
    assert second.exit_code == 0 and "Nothing to do: 3 changeset(s) already applied" in second.output
    status_out = run(root, "status", "--check")
    assert status_out.exit_code == 0
    assert [line.split()[1] for line in status_out.output.splitlines()] == ["applied"] * 3


def test_rerun_sends_zero_requests(tmp_path):
    root = copy_example(tmp_path)
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Client(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport())
        first = api.apply(api.Context(project, env), client=client)
        # 4 bulk requests and 6 reads for reconciliation: the highest id of the 2 apps records
        # are added to (once a run), and the first/last update-like call of 3 batches (4 apps).
        assert first.summary.requests_sent == 10 == sandbox.request_count
        second = api.apply(api.Context(project, env), client=client)
        assert sandbox.request_count == 10
        assert second.summary.skipped_changesets == 3 and second.summary.applied_batches == 0


def test_apply_runs_with_the_objects_alive_at_its_start_frozen_and_gives_them_back(tmp_path, monkeypatch):
    import gc

    root = copy_example(tmp_path)
    project = load_project(root)
    env = project.environment()
    seen: list[int] = []
    real = api.load_changesets
    monkeypatch.setattr(
        api, "load_changesets", lambda *a, **k: seen.append(gc.get_freeze_count()) or real(*a, **k)
    )
    assert gc.get_freeze_count() == 0
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Client(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport())
        api.apply(api.Context(project, env), client=client)
        assert seen[0] > 1000 and gc.get_freeze_count() == 0  # the collector sees them all again
        gc.freeze()  # someone else's: left as it is
        try:
            frozen = gc.get_freeze_count()
            api.plan(api.Context(project, env))
            assert gc.get_freeze_count() == frozen
        finally:
            gc.unfreeze()


# ---- resume after a failure ------------------------------------------------------------------


def test_failed_batch_leaves_earlier_batches_and_resume_sends_only_the_rest(tmp_path, monkeypatch):
    small_calls(monkeypatch)
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(3 * SMALL_BULK))  # 3 bulk requests of 200
    write_changeset(
        root,
        "V0001__items.yaml",
        """\
        operations:
          - add: {app: items, records_from: data/items.csv}
        """,
    )
    with open_sandbox(root) as sandbox:  # a record that clashes with the unique code of row 250 (batch 1)
        sandbox.client(headers=AUTH).post(
            "/k/v1/record.json", json={"app": 1, "record": {"code": {"value": "I000250"}}}
        ).raise_for_status()

    failed = run(root, "apply")
    assert failed.exit_code == 1
    assert "CB_VA01" in failed.output and "V0001__items" in failed.output
    assert "data/items.csv:252" in failed.output  # the header is line 1, row 250 is line 252
    assert "1 earlier batch(es)" in failed.output

    env = load_project(root).environment()
    with Journal.open(env.journal_path) as journal:
        assert [b.state for b in journal.batches("0001")] == ["applied", "failed", "pending"]
    with open_sandbox(root) as sandbox:
        assert len(sandbox.records(1)) == SMALL_BULK + 1
        clash = [r for r in sandbox.records(1) if r["code"]["value"] == "I000250"][0]
        sandbox.client(headers=AUTH).request(
            "DELETE", "/k/v1/records.json", json={"app": 1, "ids": [int(clash["$id"]["value"])]}
        ).raise_for_status()

    project = load_project(root)
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Client(SANDBOX_BASE_URL, ITEMS_CREDENTIALS, transport=sandbox.transport())
        result = api.apply(api.Context(project, env), client=client)
        # Batches 1 and 2 only, and one read: the app's highest id before the first add.
        assert sandbox.request_count == 3
        assert result.summary.applied_batches == 2
        codes = [r["code"]["value"] for r in sandbox.records(1)]
    assert sorted(codes) == [f"I{i:06d}" for i in range(3 * SMALL_BULK)]


def test_each_sent_is_on_disk_before_its_bulk_and_each_applied_is_synced_by_the_next(tmp_path, monkeypatch):
    small_calls(monkeypatch)
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(3 * SMALL_BULK))
    write_changeset(
        root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    traced: list[list[tuple[str, str]]] = []
    real_open = Journal.open.__func__  # type: ignore[attr-defined]

    def open_traced(cls: type[Journal], path, **kw):
        journal = real_open(cls, path, **kw)
        traced.append(journal_commits(journal))
        return journal

    monkeypatch.setattr(Journal, "open", classmethod(open_traced))
    assert run(root, "apply").exit_code == 0
    commits = [c for commits in traced for c in commits]
    assert [c for c in commits if c[1]] == [("FULL", "sent"), ("NORMAL", "applied")] * 3
    assert commits[-1][0] == "FULL"  # the run's end syncs the last `applied`


# ---- refs --------------------------------------------------------------------------------------


def test_refs_across_bulks_and_changesets(tmp_path, monkeypatch):
    small_calls(monkeypatch)
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(250))  # the add spans two bulks (of 200)
    write_changeset(
        root,
        "V0001__items.yaml",
        """\
        operations:
          - add: {app: items, ref: items, records_from: data/items.csv}
          - status: {app: items, records: {ref: items}, action: Check}
        """,
    )
    write_changeset(
        root,
        "V0002__later.yaml",
        """\
        operations:
          - update:
              app: items
              records:
                - {id: {ref: items, index: 249}, qty: 99}
          - delete: {app: items, ids: [{ref: items, index: 0}]}
        """,
    )
    result = run(root, "apply")
    assert result.exit_code == 0, result.output
    with open_sandbox(root) as sandbox:
        records = {r["code"]["value"]: r for r in sandbox.records(1)}
    assert len(records) == 249 and "I000000" not in records
    assert all(typed(r, "STATUS") == "Checked" for r in records.values())
    assert records["I000249"]["qty"]["value"] == "99" and records["I000249"]["$revision"]["value"] == "4"
    env = load_project(root).environment()
    with Journal.open(env.journal_path) as journal:
        assert len(journal.refs()["items"]) == 250


# ---- in doubt ----------------------------------------------------------------------------------


class LoseAnswers(httpx.BaseTransport):
    """Forwards to the sandbox, then loses the answer of the n-th bulk request (it committed);
    with ``then_down``, every request after it finds no network (nothing can be read)."""

    def __init__(self, inner: httpx.BaseTransport, lose: int, then_down: bool = False):
        self.inner, self.lose, self.bulks, self.then_down = inner, lose, 0, then_down
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.then_down and self.bulks >= self.lose:
            raise httpx.ConnectError("network is unreachable", request=request)
        self.paths.append(f"{request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        if request.url.path.endswith("bulkRequest.json"):
            self.bulks += 1
            if self.bulks == self.lose:
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def no_retry_client(transport: httpx.BaseTransport) -> Client:
    return Client(SANDBOX_BASE_URL, ITEMS_CREDENTIALS, transport=transport, retry=NO_RETRY)


def test_a_lost_answer_is_settled_in_the_same_run_by_reading_kintone(tmp_path, monkeypatch):
    small_calls(monkeypatch)
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(450))  # bulks of 200: 200, 200, 50
    write_changeset(
        root,
        "V0001__items.yaml",
        """\
        operations:
          - add: {app: items, records_from: data/items.csv}
        """,
    )
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        lossy = LoseAnswers(sandbox.transport(), lose=2)
        result = api.apply(api.Context(project, env), client=no_retry_client(lossy))
        assert result.summary.applied_batches == 3 and result.summary.reconciled_batches == 1
        codes = [r["code"]["value"] for r in sandbox.records(1)]
        assert sorted(codes) == [f"I{i:06d}" for i in range(450)]  # batch 1 not sent twice
        assert lossy.paths.count("POST /k/v1/bulkRequest.json") == 3
    with Journal.open(env.journal_path) as journal:
        assert [b.state for b in journal.batches("0001")] == ["applied"] * 3
        (event,) = journal.events(kinds=["reconciled"])
        assert (event.batch, event.detail["applied"], event.detail["by"]) == (1, True, "reading Kintone")
        calls = event.detail["calls"]  # one verdict per call of the bulk, all from its records
        assert len(calls) == 20 and "all were found above id 200 (ids 201..210)" in calls[0]
        assert "(ids 391..400)" in calls[19]


def test_a_batch_left_in_doubt_with_nothing_readable_is_settled_by_the_next_apply(tmp_path, monkeypatch):
    small_calls(monkeypatch)
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(450))  # bulks of 200: 200, 200, 50
    write_changeset(
        root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        down = no_retry_client(LoseAnswers(sandbox.transport(), lose=2, then_down=True))
        with pytest.raises(InDoubtError) as err:
            api.apply(api.Context(project, env), client=down)
        text = str(err.value)
        assert "batch 1 lost its answer" in text and "Kintone could not be read to find out" in text
        assert "cannot tell" not in text  # not a question for a person: the next run reads again
        assert (
            "Kintone could not be read now" in text
            and "run `kmigrate apply` again once Kintone answers" in text
        )
        assert (
            len(sandbox.records(1)) == 2 * SMALL_BULK
        )  # Kintone did apply batch 1; only the answer was lost
        assert api.status(api.Context(project, env))[0].state == "in doubt"

        result = api.apply(
            api.Context(project, env), client=no_retry_client(sandbox.transport())
        )  # no person involved
        assert result.summary.reconciled_batches == 1 and result.summary.applied_batches == 1
        assert sorted(r["code"]["value"] for r in sandbox.records(1)) == [f"I{i:06d}" for i in range(450)]
    assert [e.kind for e in api.history(api.Context(project, env))].count("reconciled") == 1


def forget_probes(env) -> None:
    """Make the in-doubt batches look journaled by a kmigrate before reconciliation (no probe)."""
    with Journal.open(env.journal_path) as journal:
        journal.db.execute("UPDATE batches SET probe = NULL WHERE state = 'sent'")
        journal.db.conn.commit()


def test_resolving_a_batch_that_made_ref_records_names_the_ref_left_without_ids(tmp_path):
    root = items_project(tmp_path)
    write_changeset(
        root,
        "V0001__items.yaml",
        """\
        operations:
          - add: {app: items, ref: first, records: [{code: A}]}
          - status: {app: items, records: {ref: first}, action: Check}
        """,
    )
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InDoubtError):
            api.apply(
                api.Context(project, env),
                client=no_retry_client(LoseAnswers(sandbox.transport(), 1, then_down=True)),
            )
    forget_probes(env)
    with pytest.raises(InDoubtError, match="nothing was read from Kintone before it was sent"):
        api.apply(
            api.Context(project, env)
        )  # a journal of an older kmigrate: Kintone cannot tell, so it asks
    assert api.resolve(api.Context(project, env), "0001", 0, applied=True) == ["first"]
    with pytest.raises(
        JournalError, match="ref 'first': V0001__items batch 0 was resolved as applied by hand"
    ) as err:
        api.apply(api.Context(project, env))
    assert "kmigrate resolve 0001 0 --applied --ids-key FIELD" in str(err.value)


# ---- drift, order, repair ----------------------------------------------------------------------


def test_drift_stops_the_run_until_repaired(tmp_path):
    root = copy_example(tmp_path)
    assert run(root, "apply").exit_code == 0
    path = root / "changesets" / "V0003__spring_cleanup.yaml"
    path.write_text(path.read_text().replace("tier: Silver", "tier: Gold"))
    project = load_project(root)
    with pytest.raises(DriftError, match="V0003__spring_cleanup.*its source and what it renders to"):
        api.apply(api.Context(project, project.environment()))
    drifted = run(root, "apply")
    assert drifted.exit_code == 2 and "kmigrate repair" in drifted.output
    assert "drifted" in run(root, "status").output
    assert run(root, "repair", "--yes", "--note", "typo fixed in review").exit_code == 0
    assert run(root, "apply").exit_code == 0
    assert any(e.kind == "repaired" for e in api.history(api.Context(project, project.environment())))


def test_data_file_change_is_drift(tmp_path):
    root = copy_example(tmp_path)
    assert run(root, "apply").exit_code == 0
    data = root / "changesets" / "data" / "customers.csv"
    data.write_text(data.read_text().replace("Acme Trading", "Acme Trading Ltd"))
    result = run(root, "apply")
    assert result.exit_code == 2 and "what it renders to" in result.output


def test_new_changeset_older_than_applied_needs_out_of_order(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0002__b.yaml", "operations:\n  - add: {app: items, records: [{code: B}]}\n")
    assert run(root, "apply").exit_code == 0
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    project = load_project(root)
    with pytest.raises(OrderError, match="V0001__a is older than V0002"):
        api.apply(api.Context(project, project.environment()))
    result = run(root, "apply", "--out-of-order")
    assert result.exit_code == 0, result.output
    with open_sandbox(root) as sandbox:
        assert sorted(r["code"]["value"] for r in sandbox.records(1)) == ["A", "B"]


def test_kintone_error_is_located_at_operation_and_record(tmp_path):
    root = items_project(tmp_path)
    seed_records(root, 1, [{"code": "B"}])  # Kintone holds B already: only Kintone can refuse it
    write_changeset(
        root,
        "V0001__a.yaml",
        """\
        operations:
          - add:
              app: items
              records:
                - {code: A}
                - {code: B, qty: 2}
        """,
    )
    project = load_project(root)
    with pytest.raises(KintoneError) as info:
        api.apply(api.Context(project, project.environment()))
    text = str(info.value)
    assert "V0001__a.yaml:6" in text and "operation 1" in text and "record 2" in text and "code" in text


def test_ten_thousand_records_take_five_bulk_requests(tmp_path):
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(10_000))
    write_changeset(
        root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        client = Client(SANDBOX_BASE_URL, ITEMS_CREDENTIALS, transport=sandbox.transport())
        result = api.apply(api.Context(project, env), client=client)
        # 5 bulks and 1 read (the app's highest id, once a run: later batches know it from the answers).
        assert sandbox.request_count == 6 == result.summary.requests_sent
        assert len(sandbox.records(1)) == 10_000


def test_a_ref_whose_first_batch_was_resolved_by_hand_never_shifts_to_other_records(tmp_path, monkeypatch):
    # Batch 0's ids were in the lost answer; batch 1's are journaled. Without a placeholder for
    # the missing ids, position 0 of the ref would become batch 1's first record: the status
    # action meant for records 0-199 would land on records 200-399 (bulks of 200).
    small_calls(monkeypatch)
    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(2 * SMALL_BULK))
    write_changeset(
        root,
        "V0001__items.yaml",
        """\
        operations:
          - add: {app: items, ref: items, records_from: data/items.csv}
        """,
    )
    write_changeset(
        root,
        "V0002__check.yaml",
        """\
        operations:
          - status: {app: items, records: {ref: items}, action: Check}
        """,
    )
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InDoubtError):
            api.apply(
                api.Context(project, env),
                client=no_retry_client(LoseAnswers(sandbox.transport(), 1, then_down=True)),
            )
        forget_probes(env)  # so only a person can settle it, without the ids
        assert api.resolve(api.Context(project, env), "0001", 0, applied=True) == ["items"]
        client = Client(SANDBOX_BASE_URL, ITEMS_CREDENTIALS, transport=sandbox.transport())
        with pytest.raises(JournalError, match="ref 'items'.*V0001__items batch 0"):
            api.apply(api.Context(project, env), client=client)
        assert len(sandbox.records(1)) == 2 * SMALL_BULK  # V0001's batch 1 went through
        assert all(typed(r, "STATUS") == "New" for r in sandbox.records(1))  # nothing checked by mistake


def test_a_changeset_with_nothing_to_send_is_applied_once_and_then_skipped(tmp_path):
    root = items_project(tmp_path)
    (root / "changesets" / "data" / "empty.csv").write_text("code,qty\n")
    write_changeset(
        root, "V0001__empty.yaml", "operations:\n  - add: {app: items, records_from: data/empty.csv}\n"
    )
    first = run(root, "apply")
    assert first.exit_code == 0 and "V0001__empty: applied" in first.output
    second = run(root, "apply")
    assert second.exit_code == 0, second.output
    assert (
        "Nothing to do: 1 changeset(s) already applied" in second.output
        and "V0001__empty: applied" not in second.output
    )
    ctx = api.Context.load(root)
    assert [(e.kind, e.changeset) for e in api.history(ctx)] == [("applied", "0001")]  # once, and visible
    with Journal.open(ctx.env.journal_path) as journal:
        assert [r.outcome for r in journal.runs()] == ["applied", "nothing to do"]


def test_a_deleted_applied_changeset_stops_apply_and_says_to_restore_it(tmp_path):
    root = items_project(tmp_path)
    path = write_changeset(
        root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n"
    )
    assert run(root, "apply").exit_code == 0
    saved = path.read_text()
    path.unlink()
    result = run(root, "apply")
    assert result.exit_code == 2 and "V0001: applied, but its file is gone" in result.output
    assert "a deleted changeset must be restored (V0001)" in result.output
    assert "missing" in run(root, "status").output
    path.write_text(saved)
    assert "Nothing to do" in run(root, "apply").output


def test_status_shows_why_a_changeset_whose_batch_failed_is_not_applied(tmp_path):
    root = items_project(tmp_path)
    seed_records(root, 1, [{"code": "A"}])
    write_changeset(root, "V0001__dup.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    assert run(root, "apply").exit_code == 1
    (row,) = api.status(api.Context(load_project(root), load_project(root).environment()))
    assert row.state == "pending" and row.batches_applied == 0 and row.batches_total == 1
    assert row.note.startswith("batch #0 failed: [CB_VA01]") and "kmigrate apply" in row.note


# ---- one pass over the data ---------------------------------------------------------------------


def test_apply_reads_a_big_data_file_once_and_compiles_each_record_once(tmp_path, monkeypatch):
    """A changeset past ``Limits.eager_records`` (its batches not held as objects): `apply` opens
    its data file once to parse it and once to hash its bytes, compiles each record once, and
    sends batches whose hashes are those it journaled."""
    import builtins

    from kmigrate import datafiles, loader
    from kmigrate.planner import compile as compiled

    root = items_project(tmp_path)
    write_items_csv(root, "items.csv", range(10_050))
    write_changeset(
        root, "V0001__big.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    opened: list[str] = []

    def counting(opener):
        def opens(file, *args, **kwargs):
            if str(file).endswith("items.csv"):
                opened.append(f"{opener}:{args[0] if args else kwargs.get('mode', 'r')}")
            return builtins.open(file, *args, **kwargs)

        return opens

    monkeypatch.setattr(datafiles, "open", counting("parse"), raising=False)
    monkeypatch.setattr(loader, "open", counting("bytes"), raising=False)
    records = []  # one per record compiled, through either of the compiler's two ways in
    real, real_items = compiled.OpCompiler.records, compiled.OpCompiler.text_items
    monkeypatch.setattr(
        compiled.OpCompiler, "records", lambda self: (records.append(1) or r for r in real(self))
    )

    def counted_items(self):
        chunks = real_items(self)
        return None if chunks is None else ((records.extend([1] * len(c)) or c) for c in chunks)

    monkeypatch.setattr(compiled.OpCompiler, "text_items", counted_items)
    sent = []
    ctx = api.Context.load(root)
    result = api.apply(ctx, on_event=lambda e: sent.append(e.batch.hash) if e.kind == "batch_sent" else None)
    assert result.summary is not None and result.summary.applied_records == 10_050
    assert sorted(opened) == ["bytes:rb", "parse:r"]
    assert len(records) == 10_050  # each record compiled once: not again to send
    with Journal.open(ctx.env.journal_path) as journal:
        journaled = [b.hash for b in journal.batches() if b.changeset == "0001"]
    assert sent == journaled == result.plan.changesets[0].batch_hashes and len(sent) == 6
