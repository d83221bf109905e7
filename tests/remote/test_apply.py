"""apply with a journal app, in-process: fresh runners, lost answers, kills, leases, plans."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from kmigrate import api
from kmigrate.client import Client, RetryPolicy
from kmigrate.config import Credentials, load_project
from kmigrate.errors import ConfigError, JournalError, KintoneError, TransportError
from kmigrate.journal import UNKNOWN_ID, Journal
from kmigrate.render import render_json, render_text
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

from .projects import JOURNAL_APP, item_codes, write_project


class Recorder(httpx.BaseTransport):
    """The sandbox's transport, keeping (method, path, body) of every request; ``fault`` may
    act on a request before (return True: the connection resets) or after it is handled."""

    def __init__(self, sandbox: Sandbox):
        self.inner = sandbox.transport()
        self.sent: list[tuple[str, str, dict]] = []
        self.before: Callable[[str, str, dict], None] = lambda m, p, b: None
        self.after: Callable[[str, str, dict], None] = lambda m, p, b: None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        entry = (request.method, request.url.path, body)
        self.sent.append(entry)
        self.before(*entry)
        response = self.inner.handle_request(request)
        response.read()
        self.after(*entry)
        return response

    def writes(self) -> list[tuple[str, str, dict]]:
        return [e for e in self.sent if e[0] != "GET"]

    def data_writes(self) -> list[tuple[str, str, dict]]:
        """Writes to anything but the journal app (the lease's PUTs are the journal app's)."""
        return [e for e in self.writes() if e[2].get("app") != JOURNAL_APP]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "kintone.sqlite3"


@pytest.fixture
def sandbox(tmp_path: Path, store: Path) -> Iterator[Sandbox]:
    write_project(tmp_path / "definition", store=store)
    with Sandbox.open(tmp_path / "definition" / "sandbox.yaml", store) as box:
        yield box


def runner(tmp_path: Path, name: str, store: Path, **kwargs: object):
    root = write_project(tmp_path / name, store=store, **kwargs)  # type: ignore[arg-type]
    project = load_project(root)
    return project, project.environment()


def client_over(recorder: Recorder) -> Client:
    return Client(SANDBOX_BASE_URL, Credentials(), transport=recorder, retry=RetryPolicy(attempts=1))


def apply(project, env, recorder: Recorder, **kwargs):
    with client_over(recorder) as client:
        return api.apply(api.Context(project, env), client=client, **kwargs)


def test_a_fresh_runner_applying_what_another_applied_sends_no_data_write(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    a_project, a_env = runner(tmp_path, "a", store)
    first = apply(a_project, a_env, Recorder(sandbox))
    assert first.summary is not None and first.summary.applied_batches == 3  # 250 adds + 250 status, then V2
    expected = item_codes(sandbox.records(1))
    assert len(expected) == 251 and len(sandbox.records(JOURNAL_APP)) == 3 + 1  # markers and the lease
    b_project, b_env = runner(tmp_path, "b", store)
    assert not b_env.journal_path.exists()
    recorder = Recorder(sandbox)
    second = apply(b_project, b_env, recorder)
    assert second.nothing_to_do
    assert recorder.data_writes() == []
    assert not any("bulkRequest" in path for _, path, _ in recorder.sent)
    assert item_codes(sandbox.records(1)) == expected
    assert {r["Status"]["value"] for r in sandbox.records(1) if r["code"]["value"].startswith("I")} == {
        "Checked"
    }
    with Journal.open(a_env.journal_path) as a, Journal.open(b_env.journal_path) as b:
        assert b.refs() == a.refs() and len(b.refs()["first"]) == 250
        assert {k: v.batch_hashes for k, v in b.state().items()} == {
            k: v.batch_hashes for k, v in a.state().items()
        }
    assert [r.state for r in api.status(api.Context(b_project, b_env), client_over(Recorder(sandbox)))] == [
        "applied"
    ] * 2


def test_every_bulk_starts_with_its_marker_and_the_plan_shows_it(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = runner(tmp_path, "a", store, records=1900, changesets=1)
    recorder = Recorder(sandbox)
    ctx = api.Context(project, env)
    plan = api.plan(ctx, api.journal_state(ctx, client_over(recorder)))
    shown = json.loads(render_json(plan))["changesets"][0]["batches"]
    # 19 adds fill a bulk with its marker; the status changes need the ids: a bulk of their own.
    assert [len(b["requests"]) for b in shown] == [20, 20]
    assert shown[0]["requests"][0]["payload"]["record"]["key"]["value"] == "items:0001:0"
    assert shown[0]["requests"][0]["payload"]["record"]["run"]["value"] == "{run}"
    assert "20 calls, 1,900 records: POST record.json (journal marker), POST records.json x19" in render_text(
        plan
    )
    apply(project, env, recorder)
    bulks = [body["requests"] for _, path, body in recorder.sent if path.endswith("bulkRequest.json")]
    assert len(bulks) == 2
    for sent, planned in zip(bulks, shown, strict=True):
        marker, shown_marker = sent[0]["payload"]["record"], planned["requests"][0]["payload"]["record"]
        placeholders = {"run": "{run}", "probe": "{probe}"}  # known only when apply runs
        assert {k: shown_marker[k]["value"] for k in placeholders} == placeholders
        assert {k: v for k, v in marker.items() if k not in placeholders} == {
            k: v for k, v in shown_marker.items() if k not in placeholders
        }
        assert marker["run"]["value"] != "{run}"
    assert bulks[0][1:] == shown[0]["requests"][1:]  # no refs in the adds: sent as planned


def test_a_lost_answer_is_settled_by_the_marker_and_the_run_goes_on(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = runner(tmp_path, "a", store)
    recorder = Recorder(sandbox)
    dropped: list[str] = []

    def drop_v2(method: str, path: str, body: dict) -> None:
        if path.endswith("bulkRequest.json") and not dropped and "LATE-1" in json.dumps(body):
            dropped.append(path)
            raise httpx.ReadError("connection dropped after the bulk was handled")

    recorder.after = drop_v2
    result = apply(project, env, recorder)
    assert dropped and result.summary is not None
    assert len(sandbox.records(1)) == 251  # applied once, not sent again
    assert sum(path.endswith("bulkRequest.json") for _, path, _ in recorder.sent) == 3
    with Journal.open(env.journal_path) as journal:
        assert journal.in_doubt() == []
        assert journal.state()["0002"].state == "applied"


def test_a_lost_send_that_never_applied_is_sent_again_once(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = runner(tmp_path, "a", store)
    recorder = Recorder(sandbox)
    resets: list[str] = []

    def reset_first_bulk(method: str, path: str, body: dict) -> None:
        if path.endswith("bulkRequest.json") and not resets:
            resets.append(path)
            raise httpx.WriteError("the request broke on its way: maybe sent, never handled")

    recorder.before = reset_first_bulk
    apply(project, env, recorder)
    assert len(sandbox.records(1)) == 251
    assert sum(path.endswith("bulkRequest.json") for _, path, _ in recorder.sent) == 4  # 3 batches, 1 resent


def test_a_run_killed_between_the_bulk_and_the_marker_ids_ends_exact(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = runner(tmp_path, "a", store, changesets=1)
    recorder = Recorder(sandbox)

    def kill_at_ids(method: str, path: str, body: dict) -> None:
        if is_ids_write(method, path, body):
            raise KeyboardInterrupt  # the process dies before writing the marker's ids

    recorder.before = kill_at_ids
    with pytest.raises(KeyboardInterrupt):
        apply(project, env, recorder)
    markers = [r for r in sandbox.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]
    assert len(markers) == 1 and markers[0]["ids"]["value"] == ""
    # A fresh runner now: no ids in the marker, but its probe: the ids are read back from
    # Kintone, written to the marker, and the status batch that needs them goes out.
    fresh_project, fresh_env = runner(tmp_path, "fresh", store, changesets=1)
    recovered = apply(fresh_project, fresh_env, Recorder(sandbox))
    assert recovered.summary is not None and recovered.summary.applied_batches == 1
    assert len(sandbox.records(1)) == 250
    assert {r["Status"]["value"] for r in sandbox.records(1)} == {"Checked"}
    (marker,) = [r for r in sandbox.records(JOURNAL_APP) if r["key"]["value"] == "items:0001:0"]
    assert json.loads(marker["ids"]["value"])["first"] == [int(r["$id"]["value"]) for r in sandbox.records(1)]
    with Journal.open(fresh_env.journal_path) as journal:
        assert UNKNOWN_ID not in journal.refs()["first"]
    # The killed runner comes back: everything is known, nothing is sent.
    again = Recorder(sandbox)
    assert apply(project, env, again).nothing_to_do and again.data_writes() == []


def test_a_runner_that_journaled_the_ids_writes_them_to_the_marker_at_its_next_start(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = runner(tmp_path, "a", store, changesets=1)
    recorder = Recorder(sandbox)

    def kill_at_ids(method: str, path: str, body: dict) -> None:
        if is_ids_write(method, path, body):
            raise KeyboardInterrupt  # the process dies before writing the marker's ids

    recorder.before = kill_at_ids
    with pytest.raises(KeyboardInterrupt):
        apply(project, env, recorder)
    result = apply(project, env, Recorder(sandbox))  # the same runner comes back first
    assert result.synced is not None and result.synced.ids_written == 1
    assert len(sandbox.records(1)) == 250
    assert {r["Status"]["value"] for r in sandbox.records(1)} == {"Checked"}
    later_project, later_env = runner(tmp_path, "later", store, changesets=1)
    assert apply(later_project, later_env, Recorder(sandbox)).nothing_to_do
    with Journal.open(later_env.journal_path) as journal:
        assert UNKNOWN_ID not in journal.refs()["first"]


# V0001 adds the items (ref `first`), V0002 changes one of them by key (no ref), V0003 needs
# the ref's ids. Reading the ids back by content works only while the records are as V0001
# left them: V0002 must not be sent while V0001's marker lacks them.
BY_KEY = """\
description: one item's quantity, by key
operations:
  - update:
      app: items
      key: code
      records:
        - {code: I00001, qty: 77}
"""
BY_REF = """\
description: the first item's quantity, by ref
operations:
  - update:
      app: items
      records:
        - {id: {ref: first, index: 0}, qty: 99}
"""


def ids_then_edits(tmp_path: Path, name: str, store: Path):
    project, env = runner(tmp_path, name, store, changesets=1)
    (project.changesets_dir / "V0001__items.yaml").write_text(
        "operations:\n  - add:\n      app: items\n      ref: first\n      records_from: data/items.csv\n"
    )
    (project.changesets_dir / "V0002__by_key.yaml").write_text(BY_KEY)
    (project.changesets_dir / "V0003__by_ref.yaml").write_text(BY_REF)
    return runner_reloaded(project.root)


def runner_reloaded(root: Path):
    project = load_project(root)
    return project, project.environment()


def losing_ids_writes(sandbox: Sandbox, times: int | None = None) -> tuple[Recorder, list[dict]]:
    """A recorder whose PUTs of a marker's ids fail to connect (the first ``times``, or all);
    the list gathers the bodies of those that failed."""
    recorder, lost = Recorder(sandbox), []

    def lose(method: str, path: str, body: dict) -> None:
        if is_ids_write(method, path, body) and (times is None or len(lost) < times):
            lost.append(body)
            raise httpx.ConnectError("the journal app is unreachable")

    recorder.before = lose
    return recorder, lost


def is_ids_write(method: str, path: str, body: dict) -> bool:
    """The PUT that writes a marker's ids after its batch applied."""
    return method == "PUT" and path == "/k/v1/record.json" and "ids" in body.get("record", {})


def test_ids_that_could_not_reach_their_marker_stop_the_run_and_a_fresh_runner_reads_them_back(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = ids_then_edits(tmp_path, "a", store)
    recorder, ids_writes = losing_ids_writes(sandbox)
    with pytest.raises(
        TransportError, match="V0001 batch 0: the ids it created could not be written"
    ) as stop:
        apply(project, env, recorder)
    assert "nothing more was sent" in stop.value.message and "apply` again" in (stop.value.hint or "")
    assert len(ids_writes) == 1 + 3  # right after the answer, then the tries before the next bulk
    # V0002 was not sent: the items are as V0001 left them, and its marker has no ids.
    assert [path for _, path, _ in recorder.data_writes()] == ["/k/v1/bulkRequest.json"]
    assert {r["qty"]["value"] for r in sandbox.records(1) if r["code"]["value"] == "I00001"} == {"1"}
    (marker,) = [r for r in sandbox.records(JOURNAL_APP) if r["key"]["value"] == "items:0001:0"]
    assert marker["ids"]["value"] == ""

    # A fresh machine (the first one is gone): it reads the ids back before it sends V0002.
    fresh_project, fresh_env = ids_then_edits(tmp_path, "fresh", store)
    fresh = Recorder(sandbox)
    result = apply(fresh_project, fresh_env, fresh)
    assert result.summary is not None and result.summary.applied_batches == 2
    by_code = {r["code"]["value"]: r for r in sandbox.records(1)}
    assert len(by_code) == 250 and by_code["I00001"]["qty"]["value"] == "77"
    assert by_code["I00000"]["qty"]["value"] == "99"  # V0003 found the ref's first id
    (marker,) = [r for r in sandbox.records(JOURNAL_APP) if r["key"]["value"] == "items:0001:0"]
    assert json.loads(marker["ids"]["value"])["first"] == sorted(
        int(r["$id"]["value"]) for r in by_code.values()
    )
    with Journal.open(fresh_env.journal_path) as journal:
        assert UNKNOWN_ID not in journal.refs()["first"]


def test_ids_kintone_cannot_tell_after_a_hand_edit_stop_the_batch_that_needs_them_naming_why(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = ids_then_edits(tmp_path, "a", store)
    recorder, _ = losing_ids_writes(sandbox)
    with pytest.raises(TransportError):
        apply(project, env, recorder)
    first = min(sandbox.records(1), key=lambda r: int(r["$id"]["value"]))
    with sandbox.client() as http:  # someone edits a record by hand: its content no longer tells
        edit = {"app": 1, "id": first["$id"]["value"], "record": {"qty": {"value": "42"}}}
        assert http.put("/k/v1/record.json", json=edit).status_code == 200
    fresh_project, fresh_env = ids_then_edits(tmp_path, "fresh", store)
    with pytest.raises(JournalError) as stop:
        apply(fresh_project, fresh_env, Recorder(sandbox))
    assert (
        "changeset V0003__by_ref batch 0 needs ids that were never journaled (ref 'first': V0001__items "
        "batch 0 applied, but the ids it created could not be read back from Kintone); nothing was sent"
    ) in stop.value.message
    qty = {r["code"]["value"]: r["qty"]["value"] for r in sandbox.records(1)}
    assert (qty["I00000"], qty["I00001"]) == ("42", "77")  # V0002 went out, V0003 did not


def test_an_ids_write_that_fails_once_is_made_before_the_next_bulk_and_the_run_goes_on(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = ids_then_edits(tmp_path, "a", store)
    recorder, _ = losing_ids_writes(sandbox, times=1)
    result = apply(project, env, recorder)
    assert result.summary is not None and result.summary.applied_batches == 3 and result.warnings == []
    (marker,) = [r for r in sandbox.records(JOURNAL_APP) if r["key"]["value"] == "items:0001:0"]
    assert len(json.loads(marker["ids"]["value"])["first"]) == 250
    bulks = [i for i, (_, path, _) in enumerate(recorder.sent) if "bulkRequest" in path]
    ids_puts = [i for i, (m, p, b) in enumerate(recorder.sent) if m == "PUT" and "ids" in b.get("record", {})]
    assert len(ids_puts) == 2 and bulks[0] < ids_puts[0] < ids_puts[1] < bulks[1]


def test_the_last_batchs_ids_that_cannot_be_written_are_a_warning_and_read_back_by_the_next_runner(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    project, env = ids_then_edits(tmp_path, "a", store)
    for later in ("V0002__by_key.yaml", "V0003__by_ref.yaml"):
        (project.changesets_dir / later).unlink()
    recorder, _ = losing_ids_writes(sandbox)
    result = apply(project, env, recorder)
    assert result.summary is not None and result.summary.applied_batches == 1
    (warning,) = result.warnings
    assert "V0001 batch 0: its ids could not be written to its marker" in warning
    fresh_project, fresh_env = ids_then_edits(tmp_path, "fresh", store)  # V0002 and V0003 come with it
    assert apply(fresh_project, fresh_env, Recorder(sandbox)).summary is not None
    by_code = {r["code"]["value"]: r["qty"]["value"] for r in sandbox.records(1)}
    assert (by_code["I00000"], by_code["I00001"], len(by_code)) == ("99", "77", 250)


def test_an_expired_lease_is_taken_over_logged_and_the_run_ends_exact(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    dead = {
        "key": {"value": "items:lease"},
        "kind": {"value": "lease"},
        "project": {"value": "items"},
        "holder": {"value": "ci"},
        "host": {"value": "runner-9"},
        "run": {"value": "ci@runner-9#4.dead"},
        "expires": {"value": "2000-01-01T00:00:00.000Z"},
    }
    with sandbox.client() as http:
        assert http.post("/k/v1/record.json", json={"app": JOURNAL_APP, "record": dead}).status_code == 200
    project, env = runner(tmp_path, "a", store)
    apply(project, env, Recorder(sandbox))
    assert len(sandbox.records(1)) == 251
    with Journal.open(env.journal_path) as journal:
        (event,) = journal.events(kinds=["unlocked"])
    assert event.detail is not None and event.detail["lease"]["run"] == "ci@runner-9#4.dead"
    (lease,) = [r for r in sandbox.records(JOURNAL_APP) if r["kind"]["value"] == "lease"]
    assert lease["run"]["value"] == ""  # released at the end


def test_a_live_lease_stops_a_second_runner_naming_the_holder(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    held = {
        "key": {"value": "items:lease"},
        "kind": {"value": "lease"},
        "project": {"value": "items"},
        "holder": {"value": "ci"},
        "host": {"value": "runner-9"},
        "run": {"value": "ci@runner-9#4.live"},
        "expires": {"value": "2999-01-01T00:00:00.000Z"},
    }
    with sandbox.client() as http:
        http.post("/k/v1/record.json", json={"app": JOURNAL_APP, "record": held})
    project, env = runner(tmp_path, "a", store)
    recorder = Recorder(sandbox)
    with pytest.raises(JournalError, match="ci@runner-9"):
        apply(project, env, recorder)
    assert recorder.data_writes() == [] and sandbox.records(1) == []


def test_an_environment_without_a_journal_app_says_once_that_a_fresh_machine_would_apply_again(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    root = write_project(tmp_path / "plain", base_url="https://example.cybozu.com", journal_app=False)
    project = load_project(root)
    env = project.environment()
    result = apply(project, env, Recorder(sandbox), confirm=lambda plan: False)
    assert len(result.warnings) == 1 and "a fresh machine" in result.warnings[0]


def test_an_environment_that_gains_a_journal_app_publishes_what_it_applied_as_it_was_cut(
    tmp_path: Path, store: Path, sandbox: Sandbox
) -> None:
    # 3,900 adds are 39 calls: 2 bulks of 20 calls without a journal app, 3 of 19 with one.
    project, env = runner(tmp_path, "a", store, records=3900, changesets=1, journal_app=False)
    (project.changesets_dir / "V0001__items.yaml").write_text(
        "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    apply(project, env, Recorder(sandbox))
    assert len(sandbox.records(1)) == 3900
    toml = project.config_file.read_text() + f"journal_app = {JOURNAL_APP}\n"
    project.config_file.write_text(toml)
    project = load_project(project.root)
    env = project.environment()
    recorder = Recorder(sandbox)
    assert apply(project, env, recorder).nothing_to_do
    assert recorder.data_writes() == []
    markers = sorted(
        (r["key"]["value"], r["batches"]["value"])
        for r in sandbox.records(JOURNAL_APP)
        if r["kind"]["value"] == "batch"
    )
    assert markers == [("items:0001:0", "2"), ("items:0001:1", "2")]  # as applied, not as planned now
    fresh_project, fresh_env = runner(tmp_path, "fresh", store, records=3900, changesets=1)
    (fresh_project.changesets_dir / "V0001__items.yaml").write_text(
        "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    recorder = Recorder(sandbox)
    assert apply(fresh_project, fresh_env, recorder).nothing_to_do
    assert recorder.data_writes() == [] and len(sandbox.records(1)) == 3900


def test_a_journal_app_without_a_unique_key_is_refused_before_anything_is_written(
    tmp_path: Path, store: Path
) -> None:
    root = write_project(tmp_path / "definition", store=store)
    definition = (root / "sandbox.yaml").read_text()
    assert definition.count("unique: true") == 2  # the items' code, the journal's key
    (root / "sandbox.yaml").write_text(
        definition.replace("unique: true", "unique: false").replace("    refs:\n", "    refz:\n")
    )
    with Sandbox.open(root / "sandbox.yaml", store) as box:
        project, env = runner(tmp_path, "a", store)
        recorder = Recorder(box)
        with pytest.raises(
            ConfigError, match="not a kmigrate journal app: refs is missing; key does not"
        ) as err:
            apply(project, env, recorder)
        assert err.value.exit_code == 2 and recorder.writes() == []


def test_a_journal_app_that_refuses_the_marker_stops_the_run_with_nothing_applied(
    tmp_path: Path, store: Path
) -> None:
    root = write_project(tmp_path / "definition", store=store)
    definition = yaml.safe_load((root / "sandbox.yaml").read_text())
    definition["apps"][1]["fields"]["name"]["maxLength"] = 2  # markers carry the changeset's name
    (root / "sandbox.yaml").write_text(yaml.safe_dump(definition))
    with Sandbox.open(root / "sandbox.yaml", store) as box:
        project, env = runner(tmp_path, "a", store)
        with pytest.raises(KintoneError, match="journal app refused this batch's marker") as err:
            apply(project, env, Recorder(box))
        assert err.value.bulk_index is None and "docs/journal.md" in (err.value.hint or "")
        assert box.records(1) == []
        with Journal.open(env.journal_path) as journal:
            assert journal.state()["0001"].batch_states == {0: "failed", 1: "pending"}
