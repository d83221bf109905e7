"""Attachments end to end: FILE values written as project paths, uploaded right before their bulk."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.attachments import AttachmentPaths, file_markers
from kmigrate.cli import main
from kmigrate.client import Client
from kmigrate.config import Credentials
from kmigrate.errors import ChangesetError, DriftError, Location, TransportError
from kmigrate.journal import Journal
from kmigrate.reconcile import holds
from kmigrate.runner import Runner
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

TOKEN = "tok-files-1234"
SANDBOX_YAML = f"""\
apps:
  - id: 1
    name: Contracts
    api_tokens: [{{token: "{TOKEN}", permissions: [view, add, edit, delete]}}]
    fields:
      code: {{type: SINGLE_LINE_TEXT, required: true, unique: true}}
      contract: {{type: FILE}}
"""
INLINE = """\
operations:
  - add:
      app: contracts
      records:
        - {code: C-001, contract: [data/files/C-001.pdf]}
        - {code: C-002, contract: [data/files/C-001.pdf, data/files/notes.txt]}
"""


def project(tmp_path: Path, changeset: str = INLINE, *, schema: bool = True) -> Path:
    root = tmp_path / "p"
    (root / "changesets").mkdir(parents=True)
    (root / "data" / "files").mkdir(parents=True)
    (root / "data" / "files" / "C-001.pdf").write_bytes(b"%PDF-1.4 contract one\x00\xff")
    (root / "data" / "files" / "notes.txt").write_bytes(b"notes\n")
    (root / "sandbox.yaml").write_text(SANDBOX_YAML)
    (root / "kmigrate.toml").write_text(
        'default_env = "sandbox"\n[env.sandbox]\nsandbox = "sandbox.yaml"\napps = { contracts = 1 }\n'
    )
    (root / "changesets" / "V0001__contracts.yaml").write_text(textwrap.dedent(changeset))
    return root


def open_sandbox(root: Path) -> Sandbox:
    env = api.Context.load(root).env
    assert env.sandbox_file is not None
    return Sandbox.open(env.sandbox_file, env.sandbox_store)


class CountingClient(Client):
    """Counts the uploads (every other request is counted by ``request_count``)."""

    uploads = 0

    def upload_file(self, name: str, content: bytes, guest_space_id: int | None = None) -> str:
        CountingClient.uploads += 1
        return super().upload_file(name, content, guest_space_id)


def client_of(sandbox: Sandbox) -> Client:
    return CountingClient(SANDBOX_BASE_URL, Credentials(api_tokens=(TOKEN,)), transport=sandbox.transport())


def apply(root: Path, sandbox: Sandbox) -> api.ApplyResult:
    with client_of(sandbox) as client:
        return api.apply(api.Context.load(root), client=client)


@pytest.fixture(autouse=True)
def _no_uploads_yet():
    CountingClient.uploads = 0


def files_of(sandbox: Sandbox, code: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file the record ``code`` holds, downloaded by GET file.json."""
    record = next(r for r in sandbox.records(1) if r["code"]["value"] == code)
    with client_of(sandbox) as client:
        out = []
        for entry in record["contract"]["value"]:
            response = client._http.get("/k/v1/file.json", params={"fileKey": entry["fileKey"]})
            assert response.status_code == 200, response.text
            out.append((entry["name"], response.content))
        return out


PDF = ("C-001.pdf", b"%PDF-1.4 contract one\x00\xff")
NOTES = ("notes.txt", b"notes\n")


def test_client_uploads_a_file_as_multipart_and_gets_a_file_key(tmp_path):
    with Sandbox.from_definition({"apps": []}) as sandbox, client_of(sandbox) as client:
        key = client.upload_file("a.txt", b"abc")
        assert isinstance(key, str) and key
        stored = sandbox._store.get_file(key)
        assert stored is not None and stored.name == "a.txt" and sandbox._store.file_data(key) == b"abc"


def test_inline_paths_are_uploaded_before_their_bulk_and_a_rerun_uploads_nothing(tmp_path):
    root = project(tmp_path)
    with open_sandbox(root) as sandbox:
        result = apply(root, sandbox)
        assert result.summary is not None and result.summary.applied_records == 2
        assert files_of(sandbox, "C-001") == [PDF]
        assert files_of(sandbox, "C-002") == [PDF, NOTES]
        assert CountingClient.uploads == 3  # one per file of each record: a key is good for one record
        with Journal.open(api.Context.load(root).env.journal_path) as journal:
            [event] = journal.events(kinds=["uploaded"])
        assert (event.changeset, event.batch) == ("0001", 0)
        assert [(f["path"], f["sha256"][:8]) for f in event.detail["files"]] == [
            ("data/files/C-001.pdf", "6648d5f7"),
            ("data/files/C-001.pdf", "6648d5f7"),
            ("data/files/notes.txt", "444e0fff"),
        ]
        assert all(f["fileKey"] for f in event.detail["files"])
        before = sandbox.request_count
        again = apply(root, sandbox)
        assert again.nothing_to_do and sandbox.request_count == before and CountingClient.uploads == 3


def test_a_csv_column_names_files_split_on_the_list_separator(tmp_path):
    changeset = """\
    operations:
      - add: {app: contracts, records_from: data/contracts.csv}
    """
    root = project(tmp_path, changeset)
    (root / "changesets" / "data").mkdir()
    (root / "changesets" / "data" / "contracts.csv").write_text(
        "code,contract[]\nC-001,data/files/C-001.pdf\nC-002,data/files/C-001.pdf|data/files/notes.txt\nC-003,\n"
    )
    with open_sandbox(root) as sandbox:
        apply(root, sandbox)
        assert files_of(sandbox, "C-001") == [PDF]
        assert files_of(sandbox, "C-002") == [PDF, NOTES]
        assert files_of(sandbox, "C-003") == []


def test_explicit_markers_need_no_app_definitions(tmp_path):
    root = project(
        tmp_path,
        'operations:\n  - add: {app: contracts, records: [{code: A, contract: [{"$file": data/files/notes.txt}]}]}\n',
    )
    plan = api.plan(api.Context.load(root))
    payload = plan.changesets[0].batches[0].calls[0].payload
    [marker] = list(file_markers(payload))
    assert marker["$file"] == "data/files/notes.txt" and len(marker["sha256"]) == 64
    with open_sandbox(root) as sandbox:
        apply(root, sandbox)
        assert files_of(sandbox, "A") == [NOTES]


def test_a_path_outside_the_project_is_refused_and_nothing_is_sent(tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    root = project(
        tmp_path, "operations:\n  - add: {app: contracts, records: [{code: A, contract: [../secret.txt]}]}\n"
    )
    result = CliRunner().invoke(main, ["-C", str(root), "apply"])
    assert result.exit_code == 2, result.output
    assert "secret.txt" in result.output and "inside the project" in result.output
    with open_sandbox(root) as sandbox:
        assert sandbox.records(1) == [] and not sandbox._store.request_counts(sandbox.api.today())


def test_a_missing_file_is_refused_at_validate_with_its_file_and_line(tmp_path):
    changeset = INLINE.replace("notes.txt", "gone.txt")
    root = project(tmp_path, changeset)
    result = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert result.exit_code == 2, result.output
    assert "attachment data/files/gone.txt not found" in result.output
    assert "V0001__contracts.yaml:6" in result.output


def test_a_changed_file_after_apply_is_drift_and_repair_accepts_it(tmp_path):
    root = project(tmp_path)
    with open_sandbox(root) as sandbox:
        apply(root, sandbox)
        (root / "data" / "files" / "notes.txt").write_bytes(b"other notes\n")
        before = sandbox.request_count
        with pytest.raises(DriftError, match="an attachment it sends changed in applied batch 0"):
            apply(root, sandbox)
        assert sandbox.request_count == before and CountingClient.uploads == 3
    repaired = CliRunner().invoke(main, ["-C", str(root), "repair", "--yes"])
    assert repaired.exit_code == 0 and '"sha256"' in repaired.output, repaired.output  # the diff shows it
    with open_sandbox(root) as sandbox:
        assert apply(root, sandbox).nothing_to_do and CountingClient.uploads == 3


def test_a_file_changed_between_plan_and_send_is_refused_before_any_upload(tmp_path):
    root = project(tmp_path)
    ctx = api.Context.load(root)
    plan = api.plan(ctx)
    (root / "data" / "files" / "C-001.pdf").write_bytes(b"changed")
    with (
        open_sandbox(root) as sandbox,
        client_of(sandbox) as client,
        Journal.open(ctx.env.journal_path) as journal,
    ):
        with pytest.raises(ChangesetError, match="changed since the plan was made"):
            Runner(client, journal).run(plan)
        assert sandbox.records(1) == [] and CountingClient.uploads == 0


def test_marking_leaves_a_record_without_paths_as_it_is(tmp_path):
    paths = AttachmentPaths(tmp_path, {1: frozenset({"contract"})})
    record = {"code": "A", "tags": ["x"]}
    assert paths.mark(record, frozenset({"contract"}), Location) is record


def test_a_single_csv_column_names_one_file(tmp_path):
    root = project(tmp_path, "operations:\n  - add: {app: contracts, records_from: data/c.csv}\n")
    (root / "changesets" / "data").mkdir()
    (root / "changesets" / "data" / "c.csv").write_text("code,contract\nC-001,data/files/notes.txt\n")
    with open_sandbox(root) as sandbox:
        apply(root, sandbox)
        assert files_of(sandbox, "C-001") == [NOTES]


def test_reconciliation_does_not_compare_a_file_value_with_the_stored_one():
    sent = {"contract": {"value": [{"fileKey": "TEMPORARY"}]}, "code": {"value": "A"}}
    stored = {
        "contract": {"type": "FILE", "value": [{"fileKey": "PERMANENT", "name": "a.pdf", "size": "3"}]},
        "code": {"type": "SINGLE_LINE_TEXT", "value": "A"},
    }
    assert holds(sent, stored)
    assert not holds({**sent, "code": {"value": "B"}}, stored)


class LosingClient(CountingClient):
    """The first bulk: Kintone applies it and the answer is lost (``lost``), or it is never
    sent (``unsent``); later bulks go through."""

    fault = "lost"
    bulks = 0

    def bulk(self, requests, guest_space_id=None):
        type(self).bulks += 1
        if type(self).bulks > 1:
            return super().bulk(requests, guest_space_id)
        if self.fault == "lost":
            super().bulk(requests, guest_space_id)
            raise TransportError("the answer was lost", sent_maybe=True)
        raise TransportError("connection refused", sent_maybe=False)


def apply_losing(root: Path, sandbox: Sandbox, fault: str) -> api.ApplyResult:
    LosingClient.fault, LosingClient.bulks = fault, 0
    with LosingClient(
        SANDBOX_BASE_URL, Credentials(api_tokens=(TOKEN,)), transport=sandbox.transport()
    ) as client:
        return api.apply(api.Context.load(root), client=client)


def test_a_lost_answer_is_settled_by_reading_kintone_and_nothing_is_uploaded_again(tmp_path):
    root = project(tmp_path)
    with open_sandbox(root) as sandbox:
        result = apply_losing(root, sandbox, "lost")
        assert result.summary is not None and result.summary.reconciled_batches == 1
        assert LosingClient.bulks == 1 and CountingClient.uploads == 3
        assert files_of(sandbox, "C-002") == [PDF, NOTES]
        assert apply(root, sandbox).nothing_to_do and CountingClient.uploads == 3


def test_a_bulk_never_sent_after_its_uploads_uploads_again_on_the_next_run(tmp_path):
    root = project(tmp_path)
    with open_sandbox(root) as sandbox:
        with pytest.raises(TransportError):
            apply_losing(root, sandbox, "unsent")
        assert sandbox.records(1) == [] and CountingClient.uploads == 3  # the uploads were not used
        apply(root, sandbox)
        assert CountingClient.uploads == 6  # fresh keys: the first three stay unused (Kintone drops them)
        assert files_of(sandbox, "C-001") == [PDF] and files_of(sandbox, "C-002") == [PDF, NOTES]


def test_a_saved_plan_is_stale_when_an_attachment_changed_since(tmp_path):
    root = project(tmp_path)
    saved = tmp_path / "plan.json"
    made = CliRunner().invoke(main, ["-C", str(root), "plan", "--out", str(saved)])
    assert made.exit_code == 0, made.output
    (root / "data" / "files" / "notes.txt").write_bytes(b"edited after review\n")
    refused = CliRunner().invoke(main, ["-C", str(root), "apply", str(saved)])
    assert refused.exit_code == 2 and "compiles to other bulk requests" in refused.output, refused.output
    with open_sandbox(root) as sandbox:
        assert sandbox.records(1) == []
