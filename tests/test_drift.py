"""Drift: applied changesets whose files changed since, or went missing; drift is per batch: a batch
Kintone never applied may change freely, an applied one may not, and `repair` shows what changed,
asks, and says Kintone keeps the old values."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.changeset import LoadedChangeset
from kmigrate.cli import main
from kmigrate.config import load_project
from kmigrate.drift import accepted_hashes, drifted, find_drift, started
from kmigrate.plan import APPLIED, FAILED, PENDING, SENT, JournaledChangeset
from kmigrate.sandbox import Sandbox

from .projects import items_project, seed_records, write_changeset, write_items_csv


def loaded(version: str, source: str = "s", rendered: str = "r") -> LoadedChangeset:
    return LoadedChangeset(
        version, f"n{version}", Path(f"V{version}__n{version}.yaml"), "", (), source, rendered
    )


def journaled(version: str, *states: str, source: str = "s", rendered: str = "r") -> JournaledChangeset:
    return JournaledChangeset(version, source, rendered, batch_states=dict(enumerate(states)))


def test_a_changeset_has_started_once_a_batch_was_sent_or_applied():
    assert started(journaled("1", APPLIED)) and started(journaled("1", PENDING, SENT))
    assert not started(journaled("1", PENDING, FAILED)) and not started(journaled("1"))


def test_drift_names_what_changed_and_what_went_missing():
    state = {
        "1": journaled("1", APPLIED, source="old"),
        "2": journaled("2", APPLIED, rendered="old"),
        "3": journaled("3", APPLIED),  # its file is gone
        "4": journaled("4", APPLIED),  # unchanged
        "5": journaled("5", FAILED, source="old"),  # never started: its new content is simply planned
    }
    files = [loaded("1"), loaded("2"), loaded("4"), loaded("5")]
    assert find_drift(files, state) == {
        "1": "V1__n1 (V1__n1.yaml): its source changed since it was applied",
        "2": "V2__n2 (V2__n2.yaml): what it renders to (variables, templates or data files) changed since it "
        "was applied",
        "3": "V3: applied, but its file is gone from the changesets folder",
    }
    # repair can only accept new content from a file that is there
    assert [c.version for c in drifted(files, state)] == ["1", "2"]


def test_repair_keeps_the_new_hash_of_each_batch_the_journal_holds():
    planned = SimpleNamespace(batches=[SimpleNamespace(index=i, hash=f"h{i}") for i in range(3)])
    held = JournaledChangeset(
        "1", "s", "r", batch_states={0: APPLIED, 1: APPLIED}, batch_hashes={0: "a", 1: "b"}
    )
    assert accepted_hashes(planned, held) == {0: "h0", 1: "h1"}


def run(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def three_thousand_rows_with_batch_1_refused(tmp_path):
    """3,000 CSV rows (two bulk requests); Kintone already holds the code of row 2500, so
    batch 0 is applied and batch 1 refused."""
    root = items_project(tmp_path)
    data = write_items_csv(root, "items.csv", range(3000))
    write_changeset(
        root, "V0001__items.yaml", "operations:\n  - add: {app: items, records_from: data/items.csv}\n"
    )
    seed_records(root, 1, [{"code": "I002500"}])
    failed = run(root, "apply")
    assert failed.exit_code == 1 and "1/2 bulk requests" in failed.output, failed.output
    (row,) = api.status(api.Context.load(root))
    assert row.batches_applied == 1 and row.batches_total == 2
    return root, data


def test_fixing_a_refused_row_in_the_data_resumes_without_repair(tmp_path):
    root, data = three_thousand_rows_with_batch_1_refused(tmp_path)
    data.write_text(data.read_text().replace("I002500,", "X002500,"))
    for verdict in (run(root, "validate"), run(root, "plan", "--check")):
        assert "changed" not in verdict.output and verdict.exit_code in (0, 3), verdict.output
    resumed = run(root, "apply")
    assert resumed.exit_code == 0, resumed.output
    (row,) = api.status(api.Context.load(root))
    assert row.state == "applied" and row.batches_applied == 2
    env = load_project(root).environment()
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as sandbox:
        codes = sorted(r["code"]["value"] for r in sandbox.records(1))
    expected = sorted([f"I{i:06d}" for i in range(3000) if i != 2500] + ["X002500", "I002500"])
    assert codes == expected  # exact: every row once, the seeded record untouched
    assert run(root, "apply").output.startswith("Nothing to do")
    assert not any(e.kind == "repaired" for e in api.history(api.Context.load(root)))


def test_changing_an_applied_batch_is_drift_everywhere(tmp_path):
    root, data = three_thousand_rows_with_batch_1_refused(tmp_path)
    data.write_text(data.read_text().replace("I000005,5", "I000005,6"))  # row 5: batch 0, applied
    for args in (("apply",), ("validate",), ("plan", "--check")):
        result = run(root, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "changed in applied batch 0" in result.output, (args, result.output)


def test_repair_shows_the_diff_asks_and_says_kintone_keeps_the_old_values(tmp_path):
    root, data = three_thousand_rows_with_batch_1_refused(tmp_path)
    data.write_text(data.read_text().replace("I000005,5", "I000005,6"))
    refused = run(root, "repair")  # no terminal here, no --yes
    assert refused.exit_code == 2 and "no terminal to confirm on" in refused.output
    assert '-  {"code":{"value":"I000005"},"qty":{"value":"5"}}' in refused.output
    assert '+  {"code":{"value":"I000005"},"qty":{"value":"6"}}' in refused.output
    assert "Kintone still holds the values the applied batches wrote" in refused.output
    assert run(root, "repair", "V0002").exit_code == 2  # not a drifted changeset
    accepted = run(root, "repair", "0001", "--yes", "--note", "qty fixed")
    assert accepted.exit_code == 0 and "Repaired: V0001__items" in accepted.output
    assert run(root, "validate").exit_code == 0


def test_validate_and_plan_check_refuse_order_as_apply_does_and_let_apply_settle_in_doubt(tmp_path):
    from kmigrate.client import NO_RETRY, Client
    from kmigrate.config import Credentials
    from kmigrate.errors import InDoubtError
    from kmigrate.sandbox import SANDBOX_BASE_URL

    from .projects import TOKEN
    from .test_runner import LoseAnswers

    root = items_project(tmp_path)
    write_changeset(root, "V0002__b.yaml", "operations:\n  - add: {app: items, records: [{code: B}]}\n")
    assert run(root, "apply").exit_code == 0
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    verdicts = [run(root, *args) for args in (("apply",), ("validate",), ("plan", "--check"))]
    assert [v.exit_code for v in verdicts] == [2, 2, 2]
    assert all("V0001__a is older than V0002, which is already applied" in v.output for v in verdicts)
    (root / "changesets" / "V0001__a.yaml").unlink()
    write_changeset(root, "V0003__c.yaml", "operations:\n  - add: {app: items, records: [{code: C}]}\n")
    ctx = api.Context.load(root)
    with Sandbox.open(ctx.env.sandbox_file, ctx.env.sandbox_store) as sandbox:
        # The answer is lost and then the network is gone: the batch stays in doubt.
        lossy = Client(
            SANDBOX_BASE_URL,
            Credentials(api_tokens=(TOKEN,)),
            transport=LoseAnswers(sandbox.transport(), 1, then_down=True),
            retry=NO_RETRY,
        )
        with pytest.raises(InDoubtError):
            api.apply(ctx, client=lossy)
    # A batch in doubt is no reason to refuse: apply settles it by reading Kintone, so validate
    # passes and plan --check reports the work left, as apply then does it.
    validated, checked = (run(root, *args) for args in (("validate",), ("plan", "--check")))
    assert validated.exit_code == 0, validated.output
    assert checked.exit_code == 3, checked.output
    applied = run(root, "apply")
    assert applied.exit_code == 0 and "1 in doubt settled by reading Kintone" in applied.output, (
        applied.output
    )
