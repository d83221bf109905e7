"""plan --diff (kmigrate/plandiff.py) against the sandbox, and the reviewer's markdown (render.py)."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.plandiff import FieldChange

from .projects import copy_example, write_changeset


def run(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def example_up_to_v0002(tmp_path):
    """The example with V0001 and V0002 applied to its sandbox; V0003 pending."""
    root = copy_example(tmp_path)
    v3 = root / "changesets" / "V0003__spring_cleanup.yaml"
    shutil.move(v3, tmp_path / v3.name)
    assert run(root, "apply").exit_code == 0
    shutil.move(tmp_path / v3.name, v3)
    return root


def by_operation(diffs):
    return {d.index + 1: d for d in diffs}


def test_the_diff_reads_what_v0003_touches_and_shows_before_and_after(tmp_path):
    root = example_up_to_v0002(tmp_path)
    ctx = api.Context.load(root)
    diffs = by_operation(api.plan_diff(ctx, api.plan(ctx)))
    assert sorted(diffs) == [
        1,
        2,
        3,
        5,
    ]  # update by key, update by id, status, delete (not assignees/request)
    by_key = {r.label: r for r in diffs[1].records}
    assert by_key["customer_code = C-007"].changes == [FieldChange("tier", "Silver", "Gold")]
    assert by_key["customer_code = C-012"].changes == [FieldChange("email", "", "orders@quartz.example.com")]
    assert by_key["customer_code = C-001"].changes == [] and by_key["customer_code = C-001"].unchanged == 1
    (phone,) = diffs[2].records  # phone_orders index 1: the 32nd order added
    assert phone.label == "id 32"
    assert FieldChange("priority", "Normal", "High") in phone.changes
    assert [(r.label, r.changes[0].before) for r in diffs[3].records] == [
        ("id 1", "In review"),
        ("id 2", "In review"),
        ("id 3", "In review"),
    ]
    assert diffs[3].records[2].changes[0].after == "(action Send back)"
    (deleted,) = diffs[5].records
    assert deleted.label == "id 30" and FieldChange("order_no", "SO-2024-030", None) in deleted.changes
    assert all(d.not_found == 0 and d.made_by_plan == 0 for d in diffs.values())


def test_records_that_match_nothing_are_counted(tmp_path):
    root = example_up_to_v0002(tmp_path)
    write_changeset(
        root,
        "V0004__misses.yaml",
        """\
        operations:
          - update: {app: customers, key: customer_code, records: [{customer_code: C-999, tier: Gold}]}
          - upsert: {app: customers, key: customer_code, records: [{customer_code: C-998, tier: Gold}, {customer_code: C-001, tier: Bronze}]}
          - delete: {app: orders, ids: [9999]}
        """,  # noqa: E501
    )
    ctx = api.Context.load(root)
    diffs = [d for d in api.plan_diff(ctx, api.plan(ctx)) if d.changeset == "V0004__misses"]
    assert [(d.kind, d.not_found, len(d.records)) for d in diffs] == [
        ("update", 1, 0),
        ("upsert", 1, 1),
        ("delete", 1, 0),
    ]
    assert diffs[1].records[0].changes == [FieldChange("tier", "Gold", "Bronze")]
    text = run(root, "plan", "--diff").output
    assert "1 match nothing (the request would fail)" in text and "1 will be added" in text
    assert '    tier: "Gold" -> "Bronze"' in text


def test_records_made_earlier_in_the_same_plan_are_not_read(tmp_path):
    root = copy_example(tmp_path)  # nothing applied: V0003's ids come from V0002, not made yet
    ctx = api.Context.load(root)
    diffs = by_operation(
        [d for d in api.plan_diff(ctx, api.plan(ctx)) if d.changeset == "V0003__spring_cleanup"]
    )
    assert diffs[2].made_by_plan == 1 and diffs[3].made_by_plan == 3 and diffs[5].made_by_plan == 1
    assert diffs[1].not_found == 3  # the customers are added by V0001, not there yet either


def test_the_markdown_calls_out_what_is_destructive_and_shows_first_records(tmp_path):
    root = example_up_to_v0002(tmp_path)
    write_changeset(
        root,
        "V0004__mass.yaml",
        """\
        operations:
          - status: {app: orders, records: [{% for i in range(1, 31) %}{{ i }}, {% endfor %}], action: Approve}
          - update: {app: orders, records: [{id: 31, priority: Low}, {id: 32, revision: 9, priority: Low}]}
        """,
    )
    markdown = run(root, "plan", "--format", "markdown", "--diff")
    assert markdown.exit_code == 0, markdown.output
    text = markdown.stdout
    assert "_Applied state: this machine's journal (.kmigrate/sandbox.db)._" in text
    assert "#### `V0003__spring_cleanup`" in text and "#### `V0001" not in text  # only what is pending
    assert "operation 5: **deletes 1 record(s)** of orders" in text
    assert "operation 2: updates 1 record(s) of orders by id **without key or revision**" in text
    assert "status change on" not in text  # 30 records is not many
    assert "<details><summary>operation 1 (update customers): first 3 of 3</summary>" in text
    assert '"updateKey": {"field": "customer_code", "value": "C-007"}}' in text  # keys in canonical order
    assert '| customer_code = C-007 | `tier` | "Silver" | "Gold" |' in text
    assert '| id 30 | `order_no` | "SO-2024-030" | *(deleted)* |' in text


def test_a_status_change_on_many_records_is_called_out(tmp_path):
    root = copy_example(tmp_path)
    write_changeset(
        root,
        "V0004__many.yaml",
        "operations:\n  - status: {app: orders, action: Approve,\n"
        "      records: [{% for i in range(1, 151) %}{{ i }}, {% endfor %}]}\n",
    )
    text = run(root, "plan", "--format", "markdown").stdout
    assert "operation 1: **status change on 150 records** of orders" in text
    assert (
        "no journal here (.kmigrate/sandbox.db does not exist): every changeset is shown as pending" in text
    )
