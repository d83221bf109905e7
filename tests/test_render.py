"""The plan's three renderings: JSON for tools, text for a person, Markdown for a PR comment."""

from __future__ import annotations

import json
from pathlib import Path

from kmigrate.changeset import LoadedChangeset, Operation
from kmigrate.config import App, Environment
from kmigrate.plan import APPLIED, PENDING, JournaledChangeset
from kmigrate.planner import Limits, build_plan
from kmigrate.render import iter_json, render_json, render_markdown, render_text

ROOT = Path("/project")


def env() -> Environment:
    return Environment(
        name="staging",
        root=ROOT,
        apps={"orders": App(1), "hr": App(3, 7)},
        vars={},
        journal_path=ROOT / "j.db",
    )


def changeset(version: str, name: str, ops: list[dict], description: str = "") -> LoadedChangeset:
    return LoadedChangeset(
        version=version,
        name=name,
        path=ROOT / "changesets" / f"V{version}__{name}.yaml",
        description=description,
        operations=tuple(Operation.model_validate(o) for o in ops),
        source_checksum="src" + version,
        rendered_checksum="ren" + version,
        operation_lines=tuple(range(3, 3 + 4 * len(ops), 4)),
    )


def sample(journal=None, limits: Limits = Limits()):
    first = changeset(
        "0001",
        "import_orders",
        [
            {"add": {"app": "orders", "ref": "spring", "records": [{"title": f"o{i}"} for i in range(120)]}},
            {"status": {"app": "orders", "records": {"ref": "spring"}, "action": "Submit"}},
        ],
        "Import spring orders | and submit them",
    )
    second = changeset(
        "0002",
        "cleanup",
        [
            {"delete": {"app": "orders", "ids": [{"ref": "spring", "index": 0}, 55]}},
            {"update": {"app": "hr", "key": "code", "records": [{"code": "E1", "grade": "B"}]}},
        ],
    )
    return build_plan([first, second], env(), journal, limits=limits)


def test_json_has_the_documented_shape():
    plan = sample()
    text = render_json(plan)
    assert text.startswith('{\n  "format": 1,')
    data = json.loads(text)
    assert list(data) == ["format", "environment", "changesets"]
    assert data["environment"] == "staging"
    first, second = data["changesets"]
    assert first["path"] == "changesets/V0001__import_orders.yaml"
    assert {
        k: first[k] for k in ("id", "version", "name", "source_checksum", "rendered_checksum", "state")
    } == {
        "id": "V0001__import_orders",
        "version": "0001",
        "name": "import_orders",
        "source_checksum": "src0001",
        "rendered_checksum": "ren0001",
        "state": "pending",
    }
    assert [op["kind"] for op in first["operations"]] == ["add", "status"]
    assert first["operations"][0]["line"] == 3 and first["operations"][0]["ref"] == "spring"
    assert [op["destructive"] for op in second["operations"]] == [True, False]
    assert second["operations"][1]["guest_space_id"] == 7 and second["operations"][1]["overwrites"]
    # every batch: index, state, hash and the exact requests, the same as the plan holds
    for cs_json, cs in zip(data["changesets"], plan.changesets, strict=False):
        assert [b["index"] for b in cs_json["batches"]] == [b.index for b in cs.batches]
        for b_json, batch in zip(cs_json["batches"], cs.batches, strict=False):
            assert b_json["requests"] == batch.requests()
            assert b_json["hash"] == batch.hash and b_json["state"] == batch.state
            assert b_json["records"] == batch.record_count
    status_request = first["batches"][1]["requests"][0]
    assert status_request == {
        "method": "PUT",
        "api": "/k/v1/records/status.json",
        "payload": {
            "app": 1,
            "records": [{"id": {"$ref": "spring", "index": i}, "action": "Submit"} for i in range(100)],
        },
    }
    assert second["batches"][1]["guest_space_id"] == 7


def test_json_is_streamed_in_pieces_and_byte_identical_across_runs():
    pieces = list(iter_json(sample()))
    assert len(pieces) > 20
    assert "".join(pieces) == render_json(sample())


def test_json_of_a_lazy_plan_is_the_same():
    assert render_json(sample(limits=Limits(eager_records=0))) == render_json(sample())


def test_text_shows_operations_records_per_app_bulks_and_destructive_operations():
    text = render_text(sample())
    assert (
        text.splitlines()[0]
        == "Plan for environment staging: 2 changesets to apply, 4 bulk requests, 243 records"
    )
    assert "V0001__import_orders  [pending]  changesets/V0001__import_orders.yaml" in text
    assert "Import spring orders" in text
    assert "records per app: orders (app 1): 240" in text
    assert "destructive: operation 1 (delete 2 records of orders)" in text
    assert "hr (app 3) [guest space 7]" in text and "overwrites" in text
    assert "#1 [pending] 2 calls, 120 records: PUT records/status.json x2" in text
    line = next(ln for ln in text.splitlines() if " delete " in ln)
    assert "DESTRUCTIVE" in line and "line 3" in line


def test_applied_changesets_are_summarised_and_not_counted():
    journal = {
        "0001": JournaledChangeset("0001", "src0001", "ren0001", batch_states={0: APPLIED, 1: APPLIED})
    }
    text = render_text(sample(journal))
    assert text.splitlines()[0].startswith(
        "Plan for environment staging: 1 changeset to apply, 2 bulk requests, 3 records"
    )
    assert (
        "V0001__import_orders  [applied]" in text
        and "already applied: 2 bulk requests, nothing to do" in text
    )


def test_partial_changesets_count_only_batches_left():
    # The journal knows every batch of a changeset it started: the applied one and the pending one.
    journal = {
        "0001": JournaledChangeset("0001", "src0001", "ren0001", batch_states={0: APPLIED, 1: PENDING})
    }
    text = render_text(sample(journal))
    assert (
        text.splitlines()[0]
        == "Plan for environment staging: 2 changesets to apply, 3 bulk requests, 123 records"
    )
    assert "bulk requests: 2 (1 to send)" in text


def test_markdown_has_a_summary_table_and_details():
    md = render_markdown(sample())
    assert "| Changeset | State | Operations | Records | Bulk requests | Destructive |" in md
    assert "| `V0001__import_orders` | pending | 2 | 240 | 2 | no |" in md
    assert "| `V0002__cleanup` | pending | 2 | 3 | 2 | **yes**: delete 2 in orders |" in md
    # per changeset one <details> of tables, and one per operation with its first records
    assert md.count("<details>") == md.count("</details>") == 2 + 4
    assert md.count("<details><summary><code>") == 2
    assert "Import spring orders \\| and submit them" in md  # a pipe does not break the table
    assert "| 1 | delete | orders (app 1) | 2 | deletes records **DESTRUCTIVE** | 3 |" in md
