"""Reconciliation: a batch whose answer was lost is settled by reading Kintone (the sandbox).

The example project has every kind of call: upsert + add (V0001, batch 1), adds that later
changesets ref (V0002 batch 0), a status action by ref (V0002 batch 1), and one bulk with an
update by key, an update by id, status actions, assignees, a delete and a single-record
``request`` (V0003). Each is lost in turn, in each way an answer can be lost, and the end state
must equal a run without faults: the same records, values, statuses and revisions (a revision
counts every write, so anything applied twice shows).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.client import NO_RETRY, Client
from kmigrate.config import Credentials, load_project
from kmigrate.errors import InDoubtError, InputError, JournalError, KintoneError, TransportError
from kmigrate.journal import Journal
from kmigrate.reconcile import APPLIED, NOT_APPLIED, UNKNOWN, Verdict, decide, holds
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox
from kmigrate.sandbox.faults import FaultProfile

from .projects import TOKEN, copy_example, items_project, write_changeset

BULK = "/k/v1/bulkRequest.json"
EXAMPLE_BULKS = 4
# Field types Kintone sets itself at write time: they differ between two runs however exact.
_CLOCKED = {"CREATED_TIME", "UPDATED_TIME"}


# ---- transports that lose answers -------------------------------------------------------------


class Faulty(httpx.BaseTransport):
    """Forwards to the sandbox; the n-th bulk request meets ``fault(request, forward)`` instead.

    ``forward()`` hands the request to the sandbox (it commits) and returns the answer; the fault
    decides whether to forward and what to raise. ``down_after``: once the fault has struck, no
    request gets through (the network is gone), so nothing can be read in that run."""

    def __init__(
        self, inner: httpx.BaseTransport, nth: int, fault: Callable[..., httpx.Response], down_after=False
    ):
        self.inner, self.nth, self.fault, self.down_after = inner, nth, fault, down_after
        self.bulks = 0
        self.struck = False
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.struck and self.down_after:
            raise httpx.ConnectError("network is unreachable", request=request)
        self.sent.append(f"{request.method} {request.url.path}")
        if request.url.path == BULK:
            self.bulks += 1
            if self.bulks == self.nth:
                self.struck = True
                return self.fault(request, lambda: self._forward(request))
        return self._forward(request)

    def _forward(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        return response


def lost_after_commit(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
    forward()
    raise httpx.ReadTimeout("the answer was lost", request=request)


def lost_before_handled(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
    raise httpx.ReadTimeout("the answer was lost (the request never reached Kintone)", request=request)


def ctrl_c_after_commit(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
    forward()
    raise KeyboardInterrupt


def client_over(transport: httpx.BaseTransport, credentials: Credentials = Credentials()) -> Client:
    return Client(SANDBOX_BASE_URL, credentials, transport=transport, retry=NO_RETRY)


# ---- what the end state must be -------------------------------------------------------------


def contents(sandbox: Sandbox, apps: tuple[int, ...] = (1, 2, 3)) -> dict[int, list[dict[str, Any]]]:
    """Every record of ``apps`` as the sandbox holds it, without the write times."""
    return {
        app: [{k: v for k, v in r.items() if v.get("type") not in _CLOCKED} for r in sandbox.records(app)]
        for app in apps
    }


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """The example applied without faults: the sandbox's records and the journal's refs."""
    root = copy_example(tmp_path_factory.mktemp("exact"))
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        api.apply(api.Context(project, env), client=client_over(sandbox.transport()))
        records = contents(sandbox)
    with Journal.open(env.journal_path) as journal:
        return records, journal.refs()


def example(tmp_path: Path):
    root = copy_example(tmp_path)
    project = load_project(root)
    env = project.environment()
    return project, env, Sandbox.open(env.sandbox_file, env.sandbox_store)


def journal_of(env) -> Journal:
    return Journal.open(env.journal_path)


# ---- a lost answer, settled in the same run -------------------------------------------------


@pytest.mark.parametrize("nth", range(1, EXAMPLE_BULKS + 1))
def test_an_answer_lost_after_kintone_applied_it_is_skipped_with_its_ids(tmp_path, exact, nth):
    project, env, sandbox = example(tmp_path)
    with sandbox:
        lossy = Faulty(sandbox.transport(), nth, lost_after_commit)
        result = api.apply(api.Context(project, env), client=client_over(lossy))
        assert result.summary.reconciled_batches == 1 and result.summary.applied_batches == EXAMPLE_BULKS
        assert lossy.sent.count(f"POST {BULK}") == EXAMPLE_BULKS  # none sent twice
        assert contents(sandbox) == exact[0]
    with journal_of(env) as journal:
        assert journal.refs() == exact[1]  # the ids in the lost answer were read back
        (event,) = journal.events(kinds=["reconciled"])
        assert event.detail["applied"] is True and all(": applied: " in c for c in event.detail["calls"][-1:])


@pytest.mark.parametrize("nth", range(1, EXAMPLE_BULKS + 1))
def test_an_answer_lost_before_kintone_handled_it_is_sent_again(tmp_path, exact, nth):
    project, env, sandbox = example(tmp_path)
    with sandbox:
        lossy = Faulty(sandbox.transport(), nth, lost_before_handled)
        result = api.apply(api.Context(project, env), client=client_over(lossy))
        assert result.summary.reconciled_batches == 1
        assert lossy.sent.count(f"POST {BULK}") == EXAMPLE_BULKS + 1  # the lost one, once more
        assert contents(sandbox) == exact[0]
    with journal_of(env) as journal:
        assert journal.refs() == exact[1]
        (event,) = journal.events(kinds=["reconciled"])
        assert event.detail["applied"] is False
        assert ": not applied: " in event.detail["calls"][0]


# ---- in doubt since an earlier run (process killed, Ctrl-C, network gone) ---------------------


@pytest.mark.parametrize("fault", [lost_after_commit, lost_before_handled, ctrl_c_after_commit])
@pytest.mark.parametrize("nth", range(1, EXAMPLE_BULKS + 1))
def test_a_batch_left_in_doubt_is_settled_by_the_next_apply_alone(tmp_path, exact, nth, fault):
    project, env, sandbox = example(tmp_path)
    with sandbox:
        broken = Faulty(sandbox.transport(), nth, fault, down_after=True)
        with pytest.raises(InDoubtError) as err:
            api.apply(api.Context(project, env), client=client_over(broken))
        batch = {1: "V0001__catalogue_and_customers batch 0", 2: "V0002__spring_orders batch 0"}.get(
            nth, "V0002__spring_orders batch 1" if nth == 3 else "V0003__spring_cleanup batch 0"
        )
        assert batch in str(err.value)
        assert any(s.state == "in doubt" for s in api.status(api.Context(project, env)))

        result = api.apply(api.Context(project, env), client=client_over(sandbox.transport()))
        assert result.summary.reconciled_batches == 1
        assert contents(sandbox) == exact[0]
    with journal_of(env) as journal:
        assert journal.refs() == exact[1] and journal.in_doubt() == []
        assert [e.kind for e in journal.events()].count("resolved") == 0  # no person needed


# ---- where Kintone cannot tell: ask, precisely -------------------------------------------------


ITEMS = Credentials(api_tokens=(TOKEN,))
ADD_TWO = "operations:\n  - add: {app: items, ref: two, records: [{code: A}, {code: B}]}\n"


def two_items_then(root: Path, name: str, operation: str) -> None:
    """V0001 adds A and B under ref `two`; V0002 (``name``) runs ``operation`` on them."""
    write_changeset(root, "V0001__add.yaml", ADD_TWO)
    write_changeset(root, f"V0002__{name}.yaml", f"operations:\n  - {operation}\n")


def two_items_then_update(root: Path) -> None:
    two_items_then(root, "update", "update: {app: items, records: [{id: {ref: two, index: 0}, qty: 5}]}")


def two_items_then_check(root: Path) -> None:
    two_items_then(root, "check", "status: {app: items, records: {ref: two}, action: Check}")


def test_another_writer_changing_the_record_makes_it_ask_naming_app_record_and_why(tmp_path):
    root = items_project(tmp_path)
    two_items_then_update(root)
    project = load_project(root)
    env = project.environment()

    def someone_else_writes(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        # The bulk never reaches Kintone, but another writer changes the same record meanwhile.
        sandbox.client(headers={"X-Cybozu-API-Token": TOKEN}).put(
            "/k/v1/record.json", json={"app": 1, "id": 1, "record": {"qty": {"value": "7"}}}
        ).raise_for_status()
        raise httpx.ReadTimeout("the answer was lost", request=request)

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InDoubtError) as err:
            api.apply(
                api.Context(project, env),
                client=client_over(Faulty(sandbox.transport(), 2, someone_else_writes), ITEMS),
            )
        text = str(err.value)
        assert "V0002__update batch 0 lost its answer" in text
        assert "call 1: app 1 record 1 changed (revision 1 -> 2) but does not hold the values sent" in text
        assert "kmigrate resolve 0002 0 --applied" in text and "kmigrate resolve 0002 0 --not-applied" in text
        # Kintone holds qty 7 (the other writer's); the person decides: it was not applied.
        api.resolve(api.Context(project, env), "0002", 0, applied=False, note="qty 7 is someone else's")
        api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
        (record,) = [r for r in sandbox.records(1) if r["code"]["value"] == "A"]
        assert record["qty"]["value"] == "5" and record["$revision"]["value"] == "3"


def test_records_deleted_before_reading_make_an_add_ask_with_counts(tmp_path):
    root = items_project(tmp_path)
    two_items_then_update(root)
    project = load_project(root)
    env = project.environment()

    def applied_then_one_deleted(
        request: httpx.Request, forward: Callable[[], httpx.Response]
    ) -> httpx.Response:
        forward()
        sandbox.client(headers={"X-Cybozu-API-Token": TOKEN}).request(
            "DELETE", "/k/v1/records.json", json={"app": 1, "ids": [2]}
        ).raise_for_status()
        raise httpx.ReadTimeout("the answer was lost", request=request)

    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InDoubtError) as err:
            client = client_over(Faulty(sandbox.transport(), 1, applied_then_one_deleted), ITEMS)
            api.apply(api.Context(project, env), client=client)
    text = str(err.value)
    assert "call 1: app 1: of the 2 record(s) call 1 adds, only 1 were found above id 0 (ids 1)" in text
    assert "--ids-key code" not in text and "--ids-key FIELD" in text  # a ref keeps them: say how to give ids


def test_a_token_that_cannot_read_makes_a_lost_answer_ask_and_resolve_reads_the_ids_by_key(tmp_path):
    root = items_project(tmp_path)
    sandbox_file = root / "sandbox.yaml"
    # A second token that may add and edit but not view: nothing can be read before sending.
    sandbox_file.write_text(
        sandbox_file.read_text().replace(
            "permissions: [view, add, edit, delete]}]",
            'permissions: [view, add, edit, delete]}, {token: "blind", permissions: [add, edit]}]',
        )
    )
    two_items_then_check(root)
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        blind = client_over(
            Faulty(sandbox.transport(), 1, lost_after_commit), Credentials(api_tokens=("blind",))
        )
        with pytest.raises(InDoubtError) as err:
            api.apply(api.Context(project, env), client=blind)
        assert "nothing could be read from Kintone before it was sent" in str(err.value)
        reader = client_over(sandbox.transport(), ITEMS)
        with pytest.raises(InputError, match="a record sent has no value for qty; nothing was journaled"):
            api.resolve(api.Context(project, env), "0001", 0, applied=True, ids_key="qty", client=reader)
        with journal_of(env) as journal:
            assert journal.in_doubt() != []  # a failed read journals nothing
        assert (
            api.resolve(api.Context(project, env), "0001", 0, applied=True, ids_key="code", client=reader)
            == []
        )
        api.apply(api.Context(project, env), client=reader)
        statuses = {r["code"]["value"]: r for r in sandbox.records(1)}
    assert {
        c: next(v["value"] for v in r.values() if v["type"] == "STATUS") for c, r in statuses.items()
    } == {
        "A": "Checked",
        "B": "Checked",
    }
    with journal_of(env) as journal:
        assert journal.refs() == {"two": [1, 2]}
        (event,) = journal.events(kinds=["resolved"])
        assert event.detail["ids_read_by"] == "key code"


def test_resolve_reads_ids_by_query_and_recovers_those_a_hand_resolve_lost(tmp_path):
    root = items_project(tmp_path)
    two_items_then_check(root)
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        reader = client_over(sandbox.transport(), ITEMS)
        sandbox.client(headers={"X-Cybozu-API-Token": TOKEN}).post(
            "/k/v1/record.json", json={"app": 1, "record": {"code": {"value": "other"}}}
        ).raise_for_status()  # another writer's record, before ours
        with pytest.raises(InDoubtError):
            api.apply(
                api.Context(project, env),
                client=client_over(Faulty(sandbox.transport(), 1, lost_after_commit, True), ITEMS),
            )
        with journal_of(env) as journal:  # as an older kmigrate would have left it: no probe
            journal.db.execute("UPDATE batches SET probe = NULL WHERE state = 'sent'")
            journal.db.conn.commit()
        assert api.resolve(api.Context(project, env), "0001", 0, applied=True) == ["two"]  # by hand, ids lost
        with pytest.raises(JournalError, match="needs ids that were never journaled"):
            api.apply(api.Context(project, env), client=reader)
        result = CliRunner().invoke(
            main, ["-C", str(root), "resolve", "0001", "0", "--applied", "--ids-query", 'code in ("A", "B")']
        )
        assert result.exit_code == 0, result.output
        api.apply(api.Context(project, env), client=reader)
        checked = [r["code"]["value"] for r in sandbox.records(1) if r["Status"]["value"] == "Checked"]
    assert sorted(checked) == ["A", "B"]
    with journal_of(env) as journal:
        assert journal.refs() == {"two": [2, 3]}
        assert journal.events(kinds=["resolved"])[-1].detail["ids_recovered"] == 2


def test_resolve_refuses_ids_without_applied_and_for_a_batch_that_keeps_no_ids(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__add.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    project = load_project(root)
    env = project.environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        with pytest.raises(InDoubtError):
            api.apply(
                api.Context(project, env),
                client=client_over(Faulty(sandbox.transport(), 1, lost_after_commit, True), ITEMS),
            )
        reader = client_over(sandbox.transport(), ITEMS)
        with pytest.raises(InputError, match="go with --applied"):
            api.resolve(api.Context(project, env), "0001", 0, applied=False, ids_key="code", client=reader)
        with pytest.raises(InputError, match="creates no records a ref keeps"):
            api.resolve(api.Context(project, env), "0001", 0, applied=True, ids_key="code", client=reader)


# ---- the other reading of a failed bulk: the requests before the failing one stay -------------


def clash_project(tmp_path: Path) -> tuple[Any, Any]:
    """150 records (two calls of one bulk); the 121st clashes with a record already there."""
    root = items_project(tmp_path)
    rows = "".join(f"\n      - {{code: I{i:03d}}}" for i in range(150))
    write_changeset(
        root, "V0001__items.yaml", f"operations:\n  - add:\n      app: items\n      records:{rows}\n"
    )
    project = load_project(root)
    return project, project.environment()


def add_clash(sandbox: Sandbox) -> httpx.Client:
    """Another writer's record with the 121st code; returns that writer."""
    writer = sandbox.client(headers={"X-Cybozu-API-Token": TOKEN})
    writer.post(
        "/k/v1/record.json", json={"app": 1, "record": {"code": {"value": "I120"}}}
    ).raise_for_status()
    return writer


@pytest.mark.parametrize("semantics", ["atomic", "prefix"])
def test_after_a_refused_bulk_only_what_did_not_take_effect_is_sent_again(tmp_path, semantics):
    project, env = clash_project(tmp_path)
    with Sandbox.open(env.sandbox_file, env.sandbox_store, bulk_semantics=semantics) as sandbox:
        writer = add_clash(sandbox)
        with pytest.raises(KintoneError) as err:
            api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
        kept = 100 if semantics == "prefix" else 0
        assert len(sandbox.records(1)) == 1 + kept
        # Located at the clashing record: call 2 of the bulk, its 21st record, the operation's 121st.
        assert "record 121" in str(err.value) and "V0001__items.yaml:" in str(err.value)
        if semantics == "prefix":
            assert "the first 1 request(s) of this batch took effect all the same" in str(err.value)
        else:
            assert "this batch was rolled back whole" in str(err.value)
        with journal_of(env) as journal:
            (batch,) = journal.batches("0001")
            assert (batch.state, batch.done_calls) == ("failed", 1 if kept else 0)
        writer.request("DELETE", "/k/v1/records.json", json={"app": 1, "ids": [1]}).raise_for_status()

        api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
        codes = sorted(r["code"]["value"] for r in sandbox.records(1))
    assert codes == [f"I{i:03d}" for i in range(150)]  # each exactly once
    with journal_of(env) as journal:
        assert journal.batches("0001")[0].state == "applied"


def test_a_changed_changeset_whose_first_requests_took_effect_is_refused(tmp_path):
    project, env = clash_project(tmp_path)
    with Sandbox.open(env.sandbox_file, env.sandbox_store, bulk_semantics="prefix") as sandbox:
        add_clash(sandbox)
        with pytest.raises(KintoneError):
            api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
    path = project.root / "changesets" / "V0001__items.yaml"
    path.write_text(path.read_text().replace("{code: I005}", "{code: X005}"))
    with Sandbox.open(env.sandbox_file, env.sandbox_store, bulk_semantics="prefix") as sandbox:
        with pytest.raises(JournalError, match="its first 1 request\\(s\\) took effect in Kintone"):
            api.apply(
                api.Context(load_project(project.root), env), client=client_over(sandbox.transport(), ITEMS)
            )
        assert len(sandbox.records(1)) == 101  # nothing more sent


def test_a_refused_bulk_whose_answer_is_lost_under_prefix_keeps_its_prefix_journaled(tmp_path):
    project, env = clash_project(tmp_path)
    with Sandbox.open(env.sandbox_file, env.sandbox_store, bulk_semantics="prefix") as sandbox:
        writer = add_clash(sandbox)
        lossy = Faulty(sandbox.transport(), 1, lost_after_commit)
        with pytest.raises(KintoneError):  # read: call 1 applied, call 2 not; the rest sent again, refused
            api.apply(api.Context(project, env), client=client_over(lossy, ITEMS))
        assert lossy.sent.count(f"POST {BULK}") == 2
        with journal_of(env) as journal:
            (batch,) = journal.batches("0001")
            assert (batch.state, batch.done_calls) == ("failed", 1)
            (event,) = journal.events(kinds=["reconciled"])
            assert (
                event.detail["calls"][0].startswith("call 1: applied")
                and "call 2: not applied" in (event.detail["calls"][1])
            )
        writer.request("DELETE", "/k/v1/records.json", json={"app": 1, "ids": [1]}).raise_for_status()
        api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
        assert sorted(r["code"]["value"] for r in sandbox.records(1)) == [f"I{i:03d}" for i in range(150)]


# ---- seeded faults: `apply` again and again, never a person -----------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_seeded_faults_end_exact_by_rerunning_apply_alone(tmp_path, exact, seed):
    project, env, sandbox = example(tmp_path)
    profile = FaultProfile.parse(f"seed={seed},drop=0.25,slow=0.1,reset=0.1,503=0.1,429=0.1")
    with sandbox:
        client = Client(
            SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport(faults=profile), sleep=lambda s: None
        )
        for _ in range(30):
            try:
                api.apply(api.Context(project, env), client=client)
                break
            except (InDoubtError, TransportError, KintoneError) as exc:
                assert "cannot tell" not in str(exc), exc  # never a question for a person
        else:
            raise AssertionError(f"seed {seed}: not done after 30 runs")
        assert contents(sandbox) == exact[0]
    with journal_of(env) as journal:
        assert journal.refs() == exact[1]
        assert "resolved" not in [e.kind for e in journal.events()]


# ---- the pure parts -----------------------------------------------------------------------------


def v(state: str) -> Verdict:
    return Verdict(state, "why")


@pytest.mark.parametrize(
    ("states", "kept"),
    [
        ([APPLIED], 1),
        ([NOT_APPLIED], 0),
        ([UNKNOWN], None),
        ([UNKNOWN, APPLIED, UNKNOWN], 3),  # one certain verdict decides an all-or-nothing bulk
        ([UNKNOWN, NOT_APPLIED, UNKNOWN], 0),
        ([APPLIED, APPLIED, NOT_APPLIED], 2),  # a kept prefix
        ([APPLIED, UNKNOWN, NOT_APPLIED], None),  # the prefix's end cannot be told
        ([UNKNOWN, APPLIED, NOT_APPLIED, UNKNOWN], 2),
        ([NOT_APPLIED, APPLIED], None),  # no reading of a bulk explains this
    ],
)
def test_decide(states, kept):
    assert decide([v(s) for s in states]) == kept


def test_holds_compares_values_as_kintone_normalises_them():
    record = {
        "title": {"type": "SINGLE_LINE_TEXT", "value": "A"},
        "qty": {"type": "NUMBER", "value": "1.5"},
        "tags": {"type": "CHECK_BOX", "value": ["b", "a"]},
        "who": {"type": "USER_SELECT", "value": [{"code": "alice", "name": "Alice"}]},
        "at": {"type": "DATETIME", "value": "2024-01-01T00:00:00Z"},
        "file": {"type": "FILE", "value": [{"fileKey": "new"}]},
        "lines": {
            "type": "SUBTABLE",
            "value": [{"id": "9", "value": {"sku": {"type": "SINGLE_LINE_TEXT", "value": "S"}}}],
        },
    }
    sent = {
        "title": {"value": "A"},
        "qty": {"value": "1.50"},
        "tags": {"value": ["a", "b"]},
        "who": {"value": [{"code": "alice"}]},
        "at": {"value": "2024-01-01T09:00:00+09:00"},
        "file": {"value": [{"fileKey": "uploaded"}]},
        "lines": {"value": [{"value": {"sku": {"value": "S"}}}]},
        "absent": {"value": "not read"},
    }
    assert holds(sent, record)
    for code, other in [
        ("title", "B"),
        ("qty", "2"),
        ("tags", ["a"]),
        ("who", [{"code": "bob"}]),
        ("at", "2024-01-01T00:00:01Z"),
        ("lines", []),
    ]:
        assert not holds({**sent, code: {"value": other}}, record), code


# ---- each kind of request on its own: its own verdict decides ---------------------------------

# V0001 adds A, B and C (ref `abc`); V0002 holds one operation of the kind, whose bulk is lost.
SINGLE_KINDS = {
    "update by id": "update: {app: items, records: [{id: {ref: abc, index: 0}, qty: 5}]}",
    "update by key": "update: {app: items, key: code, records: [{code: B, qty: 6}]}",
    "upsert of a new key": "upsert: {app: items, key: code, ref: d, records: [{code: D, qty: 1}]}",
    "upsert of a key there": "upsert: {app: items, key: code, records: [{code: C, qty: 2}]}",
    "delete": "delete: {app: items, ids: [{ref: abc, index: 1}]}",
    "status": "status: {app: items, records: {ref: abc}, action: Check}",
    "assignees": "assignees: {app: items, id: {ref: abc, index: 2}, assignees: [alice]}",
}
VERDICT_SAYS = {
    ("update by id", True): "went from revision 1 to 2 with the values sent",
    ("update by id", False): "app 1 record 1 still has revision 1",
    ("update by key", True): "app 1 record code = 'B' went from revision 1 to 2",
    ("update by key", False): "app 1 record code = 'B' still has revision 1",
    ("upsert of a new key", True): "app 1 record code = 'D' was created by the upsert",
    ("upsert of a new key", False): "app 1 record code = 'D' (upserted) still does not exist",
    ("upsert of a key there", True): "app 1 record code = 'C' went from revision 1 to 2",
    ("upsert of a key there", False): "app 1 record code = 'C' still has revision 1",
    ("delete", True): "app 1 record 2 is gone",
    ("delete", False): "app 1 record 2 still exists",
    ("status", True): "app 1 record 1 went from status 'New' to 'Checked'",
    ("status", False): "app 1 record 1 still has revision 1",
    ("assignees", True): "app 1 record 3 has the assignees sent (alice)",
    ("assignees", False): "app 1 record 3 still has revision 1",
}


def single_kind_project(tmp_path: Path, kind: str) -> tuple[Any, Any]:
    root = items_project(tmp_path)
    sandbox_file = root / "sandbox.yaml"  # record/assignees.json needs the app's manage permission
    sandbox_file.write_text(sandbox_file.read_text().replace("edit, delete]", "edit, delete, manage]"))
    write_changeset(
        root,
        "V0001__abc.yaml",
        "operations:\n  - add: {app: items, ref: abc, records: [{code: A}, {code: B}, {code: C}]}\n",
    )
    write_changeset(root, "V0002__one.yaml", f"operations:\n  - {SINGLE_KINDS[kind]}\n")
    project = load_project(root)
    return project, project.environment()


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not applied"])
@pytest.mark.parametrize("kind", list(SINGLE_KINDS))
def test_each_kind_is_decided_by_its_own_reading(tmp_path, kind, applied):
    project, env = single_kind_project(tmp_path / "exact", kind)
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
        wanted = contents(sandbox, (1,))
    project, env = single_kind_project(tmp_path / "lossy", kind)
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        fault = lost_after_commit if applied else lost_before_handled
        lossy = Faulty(sandbox.transport(), 2, fault, down_after=True)
        with pytest.raises(InDoubtError):  # the network is gone: left for the next run
            api.apply(api.Context(project, env), client=client_over(lossy, ITEMS))
        result = api.apply(api.Context(project, env), client=client_over(sandbox.transport(), ITEMS))
        assert result.summary.reconciled_batches == 1 and result.summary.applied_batches == (
            0 if applied else 1
        )
        assert contents(sandbox, (1,)) == wanted
    with journal_of(env) as journal:
        (event,) = journal.events(kinds=["reconciled"])
        verdict = event.detail["calls"][0]
        assert verdict.startswith(f"call 1: {'applied' if applied else 'not applied'}: "), verdict
        assert VERDICT_SAYS[kind, applied] in verdict, verdict
        if kind == "upsert of a new key":
            assert journal.refs()["d"] == [4]  # the upserted record's id, read back
