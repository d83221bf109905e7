"""A bulk refused part-way under the "prefix" reading of a failed bulk, with a journal app.

The calls before the refused one stay applied, the marker (request [0]) among them: kmigrate
makes the marker say `partial:K` (K calls applied, their hash and ids), and whichever runner
sends next sends only the rest, behind that marker made whole by revision. No person.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from kmigrate import api
from kmigrate.errors import KintoneError, TransportError
from kmigrate.journal import Journal
from kmigrate.runner import calls_hash
from kmigrate.sandbox import Sandbox

from .projects import JOURNAL_APP, item_codes, write_project
from .test_apply import Recorder, apply, client_over, runner

SEEDED = "I00120"  # already in Kintone: call 1 of the first bulk (records 100-149) is refused


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "kintone.sqlite3"


@pytest.fixture
def box(tmp_path: Path, store: Path):
    root = write_project(tmp_path / "definition", store=store)
    with Sandbox.open(root / "sandbox.yaml", store, bulk_semantics="prefix") as sandbox:
        with sandbox.client() as http:
            seeded = {"app": 1, "record": {"code": {"value": SEEDED}}}
            assert http.post("/k/v1/record.json", json=seeded).status_code == 200
        yield sandbox


def markers(box: Sandbox) -> list[dict]:
    return [r for r in box.records(JOURNAL_APP) if r["kind"]["value"] != "lease"]


def fixed(tmp_path: Path, name: str, store: Path):
    """A runner whose CSV no longer clashes with the record in Kintone (the fix a person makes
    after the refusal: only what comes after the applied calls changes)."""
    project, env = runner(tmp_path, name, store, records=150, changesets=1)
    data = project.changesets_dir / "data" / "items.csv"
    data.write_text(data.read_text().replace(SEEDED, "J00120"))
    return project, env


def refused_part_way(tmp_path: Path, store: Path, box: Sandbox, recorder: Recorder | None = None):
    project, env = runner(tmp_path, "a", store, records=150, changesets=1)
    with pytest.raises(KintoneError, match="This value already exists") as refused:
        apply(project, env, recorder or Recorder(box))
    assert "the first 1 request(s) of this batch took effect" in refused.value.message
    assert len(box.records(1)) == 1 + 100  # call 0 kept, with the marker
    return project, env


def test_the_marker_says_what_applied_and_a_fresh_runner_sends_only_the_rest(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    project, env = refused_part_way(tmp_path, store, box)
    (marker,) = markers(box)
    batch0 = api.plan(api.Context(project, env)).changesets[0].batches[0]
    assert marker["kind"]["value"] == "partial:1"
    assert marker["hash"]["value"] == calls_hash(batch0.calls[:1])  # the applied calls' hash
    kept = json.loads(marker["ids"]["value"])  # call 0's ids: the ref `first` keeps them
    assert [sorted(c) for c in kept] == [["ids"]] and len(kept[0]["ids"]) == 100
    with Journal.open(env.journal_path) as journal:
        record = journal.batch("0001", 0)
        assert record is not None and (record.state, record.done_calls) == ("failed", 1)

    b_project, b_env = fixed(tmp_path, "b", store)  # a fresh machine: no local journal
    api.status(
        api.Context(b_project, b_env), client_over(Recorder(box))
    )  # its sync learns the partial marker
    with Journal.open(b_env.journal_path) as journal:
        record = journal.batch("0001", 0)
        assert record is not None and (record.state, record.done_calls) == ("pending", 1)
        assert [e.kind for e in journal.events("0001")] == ["synced"]
    recorder = Recorder(box)
    result = apply(b_project, b_env, recorder)
    assert result.summary is not None and result.summary.applied_batches == 2
    bulks = [body["requests"] for _, path, body in recorder.sent if path.endswith("bulkRequest.json")]
    continuation = bulks[0]
    # The marker made whole by revision, then call 1 only (records 100-149, the fixed one among them).
    assert continuation[0]["method"] == "PUT" and continuation[0]["payload"]["revision"] == 2
    assert [len(r["payload"]["records"]) for r in continuation[1:]] == [50]
    codes = item_codes(box.records(1))
    assert len(codes) == 151 and len(set(codes)) == 151 and "J00120" in codes
    checked = {r["code"]["value"] for r in box.records(1) if r["Status"]["value"] == "Checked"}
    assert checked == set(codes) - {SEEDED}  # the status by ref reached call 0's records too
    (whole, _) = sorted(markers(box), key=lambda r: r["key"]["value"])
    b_batch0 = api.plan(api.Context(b_project, b_env)).changesets[0].batches[0]
    assert (whole["kind"]["value"], whole["hash"]["value"]) == ("batch", b_batch0.hash)
    assert len(json.loads(whole["ids"]["value"])["first"]) == 150

    # Sent again, the continuation fails on the marker's revision and applies nothing.
    with box.client() as http:
        again = http.post("/k/v1/bulkRequest.json", json={"requests": continuation})
    assert again.status_code == 409 and len(box.records(1)) == 151

    for name in ("c", "a"):  # another fresh runner, and the first one (its files fixed): nothing
        other_project, other_env = fixed(tmp_path, name, store) if name == "c" else (project, env)
        if name == "a":
            data = project.changesets_dir / "data" / "items.csv"
            data.write_text(data.read_text().replace(SEEDED, "J00120"))
        recorder = Recorder(box)
        assert apply(other_project, other_env, recorder).nothing_to_do
        assert recorder.data_writes() == []
    assert len(box.records(1)) == 151


def test_a_marker_that_could_not_be_made_partial_is_made_so_by_the_same_runner_first(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    recorder = Recorder(box)

    def unreachable_for_partial(method: str, path: str, body: dict) -> None:
        if method == "PUT" and "partial" in json.dumps(body.get("record", {}).get("kind", {})):
            raise httpx.ConnectError("down")

    recorder.before = unreachable_for_partial
    project, env = refused_part_way(tmp_path, store, box, recorder)
    (marker,) = markers(box)
    assert marker["kind"]["value"] == "batch"  # it claims the batch: this runner's journal knows better
    ctx = api.Context(project, env)
    statuses = api.status(ctx, client_over(Recorder(box)))
    assert statuses[0].state != "applied"  # the sync took not the marker's word for its own refused send
    data = project.changesets_dir / "data" / "items.csv"
    data.write_text(data.read_text().replace(SEEDED, "J00120"))
    result = apply(project, env, Recorder(box))
    assert result.summary is not None and result.summary.applied_batches == 2
    codes = item_codes(box.records(1))
    assert len(codes) == 151 and len(set(codes)) == 151
    assert {r["kind"]["value"] for r in markers(box)} == {"batch"}
    with Journal.open(env.journal_path) as journal:
        reasons = [e.detail.get("by") for e in journal.events(kinds=["reconciled"]) if e.detail]
    assert "the journal app: its marker stayed with the calls before the refused one" in reasons


def test_a_lost_answer_of_the_rest_is_settled_by_the_marker_made_whole(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    refused_part_way(tmp_path, store, box)
    b_project, b_env = fixed(tmp_path, "b", store)
    recorder = Recorder(box)
    lost = []

    def drop_the_answer(method: str, path: str, body: dict) -> None:
        if path.endswith("bulkRequest.json") and body["requests"][0]["method"] == "PUT" and not lost:
            lost.append(path)
            raise httpx.RemoteProtocolError("connection dropped after the commit")

    recorder.after = drop_the_answer
    result = apply(b_project, b_env, recorder)
    assert lost and result.summary is not None and result.summary.reconciled_batches == 1
    codes = item_codes(box.records(1))
    assert len(codes) == 151 and len(set(codes)) == 151
    assert sum(1 for _, path, _ in recorder.sent if path.endswith("bulkRequest.json")) == 2  # never resent
    with Journal.open(b_env.journal_path) as journal:
        assert len(journal.refs()["first"]) == 150 and 0 not in journal.refs()["first"]


def test_under_kintones_reading_a_refused_bulk_leaves_no_marker_and_no_partial_step(
    tmp_path: Path, store: Path
) -> None:
    root = write_project(tmp_path / "definition", store=store)
    with Sandbox.open(root / "sandbox.yaml", store) as atomic:
        with atomic.client() as http:
            assert http.post(
                "/k/v1/record.json", json={"app": 1, "record": {"code": {"value": SEEDED}}}
            ).is_success
        project, env = runner(tmp_path, "a", store, records=150, changesets=1)
        with pytest.raises(KintoneError, match="rolled back whole"):
            apply(project, env, Recorder(atomic))
        assert item_codes(atomic.records(1)) == [SEEDED] and markers(atomic) == []
        b_project, b_env = fixed(tmp_path, "b", store)
        recorder = Recorder(atomic)
        apply(b_project, b_env, recorder)
        first = next(body for _, path, body in recorder.sent if path.endswith("bulkRequest.json"))
        assert first["requests"][0]["method"] == "POST"  # a new marker: nothing applied before
        assert len(atomic.records(1)) == 151


@pytest.fixture
def bare_box(tmp_path: Path, store: Path):
    """Under the "prefix" reading, with nothing in Kintone yet."""
    root = write_project(tmp_path / "definition", store=store)
    with Sandbox.open(root / "sandbox.yaml", store, bulk_semantics="prefix") as sandbox:
        yield sandbox


def refused_at_its_first_call(tmp_path: Path, store: Path, box: Sandbox):
    """Runner a's first bulk refused at call 0 (records 0-99): only the marker stays,
    ``partial:0``. Returns a fresh runner b whose CSV no longer clashes."""
    with box.client() as http:
        assert http.post(
            "/k/v1/record.json", json={"app": 1, "record": {"code": {"value": "I00005"}}}
        ).is_success
    project, env = runner(tmp_path, "a", store, records=150, changesets=1)
    with pytest.raises(KintoneError, match="rolled back whole"):
        apply(project, env, Recorder(box))
    (marker,) = markers(box)
    assert marker["kind"]["value"] == "partial:0" and len(box.records(1)) == 1
    b_project, b_env = runner(tmp_path, "b", store, records=150, changesets=1)
    data = b_project.changesets_dir / "data" / "items.csv"
    data.write_text(data.read_text().replace("I00005", "J00005"))
    return b_project, b_env


def test_a_bulk_refused_at_its_first_call_keeps_only_its_marker_and_a_fresh_runner_completes_it(
    tmp_path: Path, store: Path, bare_box: Sandbox
) -> None:
    b_project, b_env = refused_at_its_first_call(tmp_path, store, bare_box)
    recorder = Recorder(bare_box)
    result = apply(b_project, b_env, recorder)
    assert result.summary is not None and result.summary.applied_batches == 2
    heads = [b["requests"][0]["method"] for _, p, b in recorder.sent if p.endswith("bulkRequest.json")]
    assert heads[0] == "PUT"  # its sync knew the marker: the batch went behind it, whole
    codes = item_codes(bare_box.records(1))
    assert len(codes) == 151 and len(set(codes)) == 151
    assert {r["kind"]["value"] for r in markers(bare_box)} == {"batch"}


def test_the_ids_of_a_batch_sent_in_two_parts_are_read_back_by_a_fresh_runner(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    refused_part_way(tmp_path, store, box)
    b_project, b_env = fixed(tmp_path, "b", store)
    recorder = Recorder(box)

    def ids_never_written(method: str, path: str, body: dict) -> None:
        ids = body.get("record", {}).get("ids", {}).get("value", "")
        if method == "PUT" and path.endswith("/record.json") and ids.startswith("{"):
            raise httpx.ConnectError("down")

    recorder.before = ids_never_written
    with pytest.raises(TransportError, match="could not be written to its marker"):
        apply(b_project, b_env, recorder)  # applied; its ids never reach the marker, so b stops there
    whole = next(r for r in markers(box) if r["key"]["value"] == "items:0001:0")
    assert whole["kind"]["value"] == "batch" and whole["ids"]["value"].startswith("[")  # call 0's only
    c_project, c_env = fixed(tmp_path, "c", store)  # fresh, with a changeset using both parts' ids
    (c_project.changesets_dir / "V0003__touch.yaml").write_text(
        "operations:\n  - update:\n      app: items\n      records:\n"
        "        - {id: {ref: first, index: 0}, qty: 7}\n        - {id: {ref: first, index: 120}, qty: 8}\n"
    )
    result = apply(c_project, c_env, Recorder(box))
    assert result.summary is not None and result.summary.applied_batches == 2  # the status batch, V0003
    qty = {r["code"]["value"]: r["qty"]["value"] for r in box.records(1)}
    assert (qty["I00000"], qty["J00120"]) == ("7", "8")
    assert {r["Status"]["value"] for r in box.records(1) if r["code"]["value"] != SEEDED} == {"Checked"}


class LateCopy(Recorder):
    """The continuation of a batch (its marker made whole by revision) is lost on the way
    without applying, the read of its marker that follows fails, reading Kintone then finds
    nothing applied; and just before the next send reads the marker, the lost copy lands."""

    def __init__(self, sandbox: Sandbox, marker_key: str):
        super().__init__(sandbox)
        self.sandbox, self.marker_key = sandbox, marker_key
        self.held: dict | None = None
        self.marker_reads_after = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if request.url.path.endswith("bulkRequest.json") and body["requests"][0]["method"] == "PUT":
            if self.held is None:
                self.held = body
                raise httpx.RemoteProtocolError("the connection dropped with the request on its way")
        if self.held is not None and self.marker_key in request.url.params.get("query", ""):
            self.marker_reads_after += 1
            if self.marker_reads_after == 1:
                raise httpx.ConnectError("down while the marker was read")
            if self.marker_reads_after == 2:
                with self.sandbox.client() as http:  # the lost copy lands late
                    assert http.post("/k/v1/bulkRequest.json", json=self.held).is_success
        return super().handle_request(request)


def test_a_late_copy_of_the_rest_found_applied_by_the_marker_is_journaled_with_its_ids(
    tmp_path: Path, store: Path, bare_box: Sandbox
) -> None:
    b_project, b_env = refused_at_its_first_call(tmp_path, store, bare_box)  # pending, done_calls 0
    recorder = LateCopy(bare_box, "items:0001:0")
    result = apply(b_project, b_env, recorder)
    assert recorder.held is not None and recorder.marker_reads_after >= 2  # the case happened
    # Batch 0 applied by its late copy (not sent again), batch 1 resolved its ref from it.
    assert result.summary is not None and result.summary.applied_batches == 2
    heads = [b["requests"][0]["method"] for _, p, b in recorder.sent if p.endswith("bulkRequest.json")]
    assert heads == ["POST"]  # batch 1's, behind its new marker: the continuation's one copy was the lost one
    codes = item_codes(bare_box.records(1))
    assert len(codes) == 151 and len(set(codes)) == 151
    with Journal.open(b_env.journal_path) as journal:
        record = journal.batch("0001", 0)
        assert record is not None and record.state == "applied"
        first = journal.refs()["first"]
    added = sorted(int(r["$id"]["value"]) for r in bare_box.records(1) if r["code"]["value"] != "I00005")
    assert first == added  # read back with the send's probe: the real ids, in order
    checked = {r["code"]["value"] for r in bare_box.records(1) if r["Status"]["value"] == "Checked"}
    assert checked == set(codes) - {"I00005"}  # batch 1 reached every record batch 0 created


def test_a_late_copy_of_the_rest_after_applied_calls_is_journaled_with_both_parts_ids(
    tmp_path: Path, store: Path, box: Sandbox
) -> None:
    refused_part_way(tmp_path, store, box)  # partial:1: call 0's 100 records applied
    b_project, b_env = fixed(tmp_path, "b", store)
    recorder = LateCopy(box, "items:0001:0")
    result = apply(b_project, b_env, recorder)
    assert recorder.held is not None and recorder.marker_reads_after >= 2
    assert result.summary is not None and result.summary.applied_batches == 2
    with Journal.open(b_env.journal_path) as journal:
        record = journal.batch("0001", 0)
        assert record is not None and record.state == "applied"
        first = journal.refs()["first"]
    added = sorted(int(r["$id"]["value"]) for r in box.records(1) if r["code"]["value"] != SEEDED)
    assert first == added and len(first) == 150
    checked = {r["code"]["value"] for r in box.records(1) if r["Status"]["value"] == "Checked"}
    assert checked == set(item_codes(box.records(1))) - {SEEDED}
