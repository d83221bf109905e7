"""The planner: hand-written cases for every packing rule, then generated workloads checked
against the invariants and against an exhaustive minimum number of bulk requests."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmigrate.changeset import AddOp, LoadedChangeset, Operation, to_kintone_record
from kmigrate.config import App, Environment
from kmigrate.errors import ChangesetError, JournalError
from kmigrate.plan import (
    APPLIED,
    FAILED,
    PARTIAL,
    PENDING,
    SENT,
    Batch,
    Call,
    EncodedPayload,
    JournaledChangeset,
    canonical_json,
    is_ref_marker,
    records_request_json,
    ref_marker,
    ref_uses,
    resolve_refs,
    text_records_json,
)
from kmigrate.planner import BatchSequence, Limits, build_plan
from kmigrate.render import render_json

ROOT = Path("/project")
APPS = {"orders": App(1), "customers": App(2), "hr": App(3, 7), "payroll": App(4, 8)}


def env(**apps: App) -> Environment:
    return Environment(
        name="test", root=ROOT, apps={**APPS, **apps}, vars={}, journal_path=ROOT / ".kmigrate/test.db"
    )


def changeset(
    ops: list[dict[str, Any]], version: str = "0001", name: str = "change", lines: tuple[int, ...] = ()
) -> LoadedChangeset:
    return LoadedChangeset(
        version=version,
        name=name,
        path=ROOT / "changesets" / f"V{version}__{name}.yaml",
        description="",
        operations=tuple(Operation.model_validate(o) for o in ops),
        source_checksum="s" + version,
        rendered_checksum="r" + version,
        operation_lines=lines,
    )


def plan(*ops: dict[str, Any], limits: Limits = Limits(), journal: Any = None):
    return build_plan([changeset(list(ops))], env(), journal, limits=limits)


def calls_of(p) -> list[list[Any]]:
    return [[c for c in b.calls] for cs in p.changesets for b in cs.batches]


def recs(n: int, start: int = 0, field: str = "title") -> list[dict[str, Any]]:
    return [{field: f"r{i}"} for i in range(start, start + n)]


class ListSource:
    """A records_from source that counts how often it is read."""

    def __init__(self, records: list[dict[str, Any]], path: str = "data/rows.csv"):
        self.records, self.path, self.passes = records, path, 0

    def __iter__(self):
        self.passes += 1
        for i, rec in enumerate(self.records):
            yield i + 2, rec  # line 1 is the CSV header


def add_from(source: ListSource, app: str = "orders", ref: str | None = None) -> Operation:
    body = AddOp(app=app, records_from=source.path, ref=ref).model_copy(update={"source": source})
    return Operation(add=body)


# ---- compiling each kind ---------------------------------------------------------------------


def test_add_uses_the_plural_api_and_kintone_record_form():
    p = plan({"add": {"app": "orders", "records": [{"title": "A", "amount": 3}, {"title": {"value": "B"}}]}})
    [[call]] = calls_of(p)
    assert (call.method, call.api) == ("POST", "/k/v1/records.json")
    assert call.payload == {
        "app": 1,
        "records": [
            {"title": {"value": "A"}, "amount": {"value": 3}},
            {"title": {"value": "B"}},
        ],
    }


def test_update_by_id_moves_id_and_revision_out_of_the_record():
    p = plan(
        {
            "update": {
                "app": "orders",
                "records": [{"id": 5, "revision": 2, "title": "x"}, {"id": "6", "title": "y"}],
            }
        }
    )
    [[call]] = calls_of(p)
    assert (call.method, call.api) == ("PUT", "/k/v1/records.json")
    assert call.payload == {
        "app": 1,
        "records": [
            {"id": 5, "revision": 2, "record": {"title": {"value": "x"}}},
            {"id": 6, "record": {"title": {"value": "y"}}},
        ],
    }


def test_update_by_key_sends_update_key_and_drops_the_key_from_the_record():
    p = plan(
        {
            "update": {
                "app": "customers",
                "key": "code",
                "records": [{"code": "C-1", "tier": "Gold"}, {"code": {"value": 42}, "tier": "x"}],
            }
        }
    )
    [[call]] = calls_of(p)
    assert call.payload["records"] == [
        {"updateKey": {"field": "code", "value": "C-1"}, "record": {"tier": {"value": "Gold"}}},
        {"updateKey": {"field": "code", "value": "42"}, "record": {"tier": {"value": "x"}}},
    ]
    assert "upsert" not in call.payload


def test_upsert_sets_upsert_true():
    p = plan({"upsert": {"app": "customers", "key": "sku", "records": [{"sku": "S1", "price": 3}]}})
    [[call]] = calls_of(p)
    assert call.payload == {
        "app": 2,
        "upsert": True,
        "records": [{"updateKey": {"field": "sku", "value": "S1"}, "record": {"price": {"value": 3}}}],
    }


def test_delete_status_assignees_and_request():
    p = plan(
        {"delete": {"app": "orders", "ids": [3, 4], "revisions": [1, 2]}},
        {
            "status": {
                "app": "orders",
                "records": [{"id": 3}, {"id": 4, "action": "Back", "assignee": "bob", "revision": 9}],
                "action": "Go",
            }
        },
        {"assignees": {"app": "orders", "id": 4, "assignees": ["alice"], "revision": 3}},
        {
            "request": {
                "method": "PUT",
                "api": "record/status",
                "payload": {"app": "orders", "id": 3, "action": "Go"},
            }
        },
    )
    [[delete, status, assignees, request]] = calls_of(p)
    assert (delete.method, delete.api, delete.payload) == (
        "DELETE",
        "/k/v1/records.json",
        {"app": 1, "ids": [3, 4], "revisions": [1, 2]},
    )
    assert (status.method, status.api) == ("PUT", "/k/v1/records/status.json")
    assert status.payload["records"] == [
        {"id": 3, "action": "Go"},
        {"id": 4, "action": "Back", "assignee": "bob", "revision": 9},
    ]
    assert (assignees.api, assignees.payload) == (
        "/k/v1/record/assignees.json",
        {"app": 1, "id": 4, "assignees": ["alice"], "revision": 3},
    )
    assert (request.method, request.api, request.payload) == (
        "PUT",
        "/k/v1/record/status.json",
        {"app": 1, "id": 3, "action": "Go"},
    )
    summary = p.changesets[0].operations
    assert [o.destructive for o in summary] == [True, False, False, False]
    assert [o.records for o in summary] == [2, 2, 1, 1]


def test_numeric_app_ids_and_canonical_request_api():
    p = plan(
        {
            "request": {
                "method": "POST",
                "api": "/k/v1/record.json",
                "payload": {"app": 9, "record": {"t": {"value": 1}}},
            }
        }
    )
    [[call]] = calls_of(p)
    assert (call.api, call.payload["app"]) == ("/k/v1/record.json", 9)


# ---- merging and splitting -------------------------------------------------------------------


def test_records_split_at_100_per_call():
    [[a, b, c]] = calls_of(plan({"add": {"app": "orders", "records": recs(250)}}))
    assert [a.record_count, b.record_count, c.record_count] == [100, 100, 50]
    assert c.payload["records"][0] == {"title": {"value": "r200"}}


def test_adjacent_same_kind_same_app_merge_and_others_do_not():
    p = plan(
        {"add": {"app": "orders", "records": recs(2)}},
        {"add": {"app": "orders", "ref": "x", "records": recs(3, 2)}},  # merges, keeps its own ref segment
        {"add": {"app": "customers", "records": recs(1)}},
        {"add": {"app": "orders", "records": recs(1)}},
        {"update": {"app": "orders", "records": [{"id": 1, "t": 1}]}},
        {"update": {"app": "orders", "key": "code", "records": [{"code": "a", "t": 1}]}},
        {"upsert": {"app": "orders", "key": "code", "records": [{"code": "b", "t": 1}]}},
        {"upsert": {"app": "orders", "key": "sku", "records": [{"sku": "b", "t": 1}]}},
    )
    [calls] = calls_of(p)
    assert [c.record_count for c in calls] == [5, 1, 1, 1, 1, 1, 1]
    assert [(s.operation, s.start, s.count, s.ref) for s in calls[0].segments] == [
        (0, 0, 2, None),
        (1, 0, 3, "x"),
    ]


def test_merged_deletes_fill_missing_revisions_with_minus_one():
    [[call]] = calls_of(
        plan(
            {"delete": {"app": "orders", "ids": [1, 2]}},
            {"delete": {"app": "orders", "ids": [3], "revisions": [7]}},
        )
    )
    assert call.payload == {"app": 1, "ids": [1, 2, 3], "revisions": [-1, -1, 7]}


@pytest.mark.parametrize(
    "ops, expected",
    [
        (
            [
                {"update": {"app": "orders", "records": [{"id": 1, "t": 1}, {"id": 2, "t": 1}]}},
                {"update": {"app": "orders", "records": [{"id": 1, "t": 2}]}},
            ],
            [2, 1],
        ),
        ([{"delete": {"app": "orders", "ids": [5, 6, 5, 7]}}], [2, 2]),
        ([{"status": {"app": "orders", "records": [1, 1, 1], "action": "Go"}}], [1, 1, 1]),
        (
            [{"upsert": {"app": "orders", "key": "k", "records": [{"k": "a"}, {"k": "b"}, {"k": "a"}]}}],
            [2, 1],
        ),
        (
            [{"update": {"app": "orders", "key": "k", "records": [{"k": 1}, {"k": "1"}]}}],
            [1, 1],
        ),  # both are "1" to Kintone
    ],
)
def test_a_repeated_record_starts_a_new_call(ops, expected):
    [calls] = calls_of(plan(*ops))
    assert [c.record_count for c in calls] == expected


def test_calls_fill_bulks_of_20_in_order():
    p = plan({"add": {"app": "orders", "records": recs(2001)}})
    batches = p.changesets[0].batches
    assert [len(b.calls) for b in batches] == [20, 1]
    assert [b.record_count for b in batches] == [2000, 1]
    assert batches[1].calls[0].payload["records"] == [{"title": {"value": "r2000"}}]


@pytest.mark.parametrize("n", [1, 99, 100, 101, 1999, 2000, 2001, 4000, 4001, 10_000])
def test_n_adds_to_one_app_take_ceil_n_over_2000_bulks(n):
    p = plan({"add": {"app": "orders", "records": recs(n)}})
    assert len(p.changesets[0].batches) == math.ceil(n / 2000)
    assert sum(len(b.calls) for b in p.changesets[0].batches) == math.ceil(n / 100)


# ---- refs ------------------------------------------------------------------------------------


def test_a_consumer_of_a_ref_made_in_the_current_bulk_starts_a_new_bulk():
    p = plan(
        {"add": {"app": "orders", "ref": "new", "records": recs(3)}},
        {"status": {"app": "orders", "records": {"ref": "new"}, "action": "Submit"}},
        {"delete": {"app": "orders", "ids": {"ref": "new"}}},
    )
    first, second = p.changesets[0].batches
    assert first.produces == {"new"} and second.consumes == {"new"}
    status, delete = second.calls
    # every id of the ref, in one call: the whole-ref markers
    assert status.payload["records"] == {"$ref": "new", "each": {"action": "Submit"}}
    assert delete.payload["ids"] == {"$ref": "new"}
    assert resolve_refs(status.payload, {"new": [7, 8, 9]})["records"] == [
        {"id": 7, "action": "Submit"},
        {"id": 8, "action": "Submit"},
        {"id": 9, "action": "Submit"},
    ]


def test_a_ref_too_big_for_one_call_is_split_into_indexed_markers():
    p = plan(
        {"add": {"app": "orders", "ref": "big", "records": recs(250)}},
        {"status": {"app": "orders", "records": {"ref": "big"}, "action": "Go"}},
    )
    status_calls = p.changesets[0].batches[1].calls
    assert [c.record_count for c in status_calls] == [100, 100, 50]
    assert status_calls[2].payload["records"][0] == {"id": {"$ref": "big", "index": 200}, "action": "Go"}
    ids = list(range(1000, 1250))
    resolved = [r["id"] for c in status_calls for r in resolve_refs(c.payload, {"big": ids})["records"]]
    assert resolved == ids


def test_only_the_bulk_holding_the_needed_record_forces_a_break():
    # 2,500 adds fill bulk 0 and half of bulk 1; record 0 of the ref was made in bulk 0, so the
    # status change may share bulk 1 with the rest of the adds.
    p = plan(
        {"add": {"app": "orders", "ref": "x", "records": recs(2500)}},
        {"status": {"app": "orders", "records": [{"ref": "x", "index": 0}], "action": "Go"}},
        {"status": {"app": "customers", "records": [{"ref": "x", "index": 2499}], "action": "Go"}},
    )
    batches = p.changesets[0].batches
    assert [len(b.calls) for b in batches] == [20, 6, 1]
    assert batches[1].calls[-1].payload["records"] == [{"id": {"$ref": "x", "index": 0}, "action": "Go"}]


def test_refs_across_changesets_do_not_break_bulks():
    first = changeset([{"add": {"app": "orders", "ref": "x", "records": recs(2)}}], "0001", "a")
    second = changeset(
        [
            {"add": {"app": "orders", "records": recs(1)}},
            {"assignees": {"app": "orders", "id": {"ref": "x", "index": 1}, "assignees": ["a"]}},
            {"update": {"app": "orders", "records": [{"id": {"ref": "x", "index": 0}, "t": 1}]}},
        ],
        "0002",
        "b",
    )
    p = build_plan([second, first], env())  # given out of order: planned in version order
    assert [c.version for c in p.changesets] == ["0001", "0002"]
    [only] = p.changesets[1].batches
    assert len(only.calls) == 3 and only.consumes == {"x"}


def test_request_payload_refs_become_markers():
    p = plan(
        {"add": {"app": "orders", "ref": "x", "records": recs(2)}},
        {
            "request": {
                "method": "DELETE",
                "api": "records",
                "payload": {"app": "orders", "ids": {"ref": "x"}},
            }
        },
        {
            "request": {
                "method": "PUT",
                "api": "record",
                "payload": {"app": "orders", "id": {"ref": "x", "index": 1}, "record": {}},
            }
        },
    )
    _, second = p.changesets[0].batches
    assert second.calls[0].payload == {"app": 1, "ids": {"$ref": "x"}}
    assert second.calls[1].payload["id"] == {"$ref": "x", "index": 1}
    assert p.changesets[0].operations[1].destructive


def test_upsert_produces_a_ref():
    p = plan(
        {"upsert": {"app": "orders", "key": "k", "ref": "u", "records": [{"k": "a"}, {"k": "b"}]}},
        {"status": {"app": "orders", "records": {"ref": "u"}, "action": "Go"}},
    )
    assert [b.produces for b in p.changesets[0].batches] == [{"u"}, set()]


# ---- guest spaces and changesets -------------------------------------------------------------


def test_guest_space_apps_get_their_own_bulks_and_prefix():
    p = plan(
        {"add": {"app": "orders", "records": recs(1)}},
        {"add": {"app": "hr", "records": recs(1)}},
        {"update": {"app": "hr", "records": [{"id": 1, "t": 1}]}},
        {"add": {"app": "payroll", "records": recs(1)}},
        {"add": {"app": "orders", "records": recs(1)}},
    )
    batches = p.changesets[0].batches
    assert [(b.guest_space_id, [c.api for c in b.calls]) for b in batches] == [
        (None, ["/k/v1/records.json"]),
        (7, ["/k/guest/7/v1/records.json", "/k/guest/7/v1/records.json"]),
        (8, ["/k/guest/8/v1/records.json"]),
        (None, ["/k/v1/records.json"]),
    ]


def test_batches_never_span_changesets():
    a = changeset([{"add": {"app": "orders", "records": recs(1)}}], "0001", "a")
    b = changeset([{"add": {"app": "orders", "records": recs(1)}}], "0002", "b")
    p = build_plan([a, b], env())
    assert [len(c.batches) for c in p.changesets] == [1, 1]
    assert p.changesets[1].batches[0].index == 0


# ---- segments --------------------------------------------------------------------------------


def test_segments_map_every_record_back_to_its_operation():
    p = plan(
        {"delete": {"app": "orders", "ids": [1]}},
        {"add": {"app": "orders", "records": recs(150)}},
        {"add": {"app": "orders", "ref": "r", "records": recs(10)}},
    )
    delete, first, second = p.changesets[0].batches[0].calls  # adds: 100, then 50 + 10 merged
    assert delete.locate(0) == (0, 0)
    assert first.locate(99) == (1, 99)
    assert second.locate(0) == (1, 100) and second.locate(49) == (1, 149)
    assert second.locate(50) == (2, 0) and second.locate(59) == (2, 9) and second.locate(60) is None
    assert [s.ref for s in second.segments] == [None, "r"]


# ---- journal state ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "states, expected",
    [
        ({}, PENDING),
        ({0: APPLIED, 1: APPLIED}, APPLIED),
        ({0: APPLIED}, PARTIAL),
        ({0: SENT}, PARTIAL),
        ({0: FAILED}, PENDING),
        ({0: APPLIED, 1: FAILED}, PARTIAL),
    ],
)
def test_changeset_state_from_the_journal(states, expected):
    journal = {"0001": JournaledChangeset("0001", "s", "r", batch_states=states)}
    p = plan({"add": {"app": "orders", "records": recs(2001)}}, journal=journal)
    cs = p.changesets[0]
    assert cs.state == expected
    assert [b.state for b in cs.batches] == [states.get(i, PENDING) for i in range(2)]
    assert [b.index for b in cs.pending_batches] == [i for i in range(2) if states.get(i) != APPLIED]
    assert (cs in p.pending) == (expected != APPLIED)


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ops, message",
    [
        ([{"add": {"app": "nowhere", "records": recs(1)}}], "unknown app alias 'nowhere'"),
        (
            [{"delete": {"app": "orders", "ids": {"ref": "ghost"}}}],
            "ref 'ghost' is not created by any earlier operation",
        ),
        (
            [
                {"status": {"app": "orders", "records": {"ref": "later"}, "action": "Go"}},
                {"add": {"app": "orders", "ref": "later", "records": recs(1)}},
            ],
            "ref 'later' is not created",
        ),
        (
            [
                {"add": {"app": "orders", "ref": "x", "records": recs(1)}},
                {"add": {"app": "orders", "ref": "x", "records": recs(1)}},
            ],
            "ref 'x' is already defined",
        ),
        (
            [
                {"add": {"app": "orders", "ref": "x", "records": recs(2)}},
                {"assignees": {"app": "orders", "id": {"ref": "x", "index": 2}, "assignees": []}},
            ],
            "index 2 is out of range",
        ),
        (
            [
                {"add": {"app": "orders", "ref": "x", "records": recs(2)}},
                {"assignees": {"app": "orders", "id": {"ref": "x"}, "assignees": []}},
            ],
            "stands for one record",
        ),
        ([{"update": {"app": "orders", "records": [{"t": 1}]}}], "the record has no `id`"),
        (
            [{"update": {"app": "orders", "key": "code", "records": [{"t": 1}]}}],
            "the record has no `code`",
        ),
        (
            [{"update": {"app": "orders", "key": "code", "records": [{"code": [1]}]}}],
            "the key field `code` must hold a text or number value, not a list",
        ),
        ([{"update": {"app": "orders", "records": [{"id": -3}]}}], "`id` must be positive, not -3"),
        (
            [{"update": {"app": "orders", "records": [{"id": 1, "revision": "x"}]}}],
            "`revision` must be a whole number",
        ),
        (
            [
                {
                    "upsert": {
                        "app": "orders",
                        "key": "k",
                        "ref": "u",
                        "records": [{"k": "a", "id": {"ref": "u", "index": 0}}],
                    }
                }
            ],
            "an upsert finds records by `key: k`, not by `id`",
        ),
        (
            [
                {
                    "request": {
                        "method": "POST",
                        "api": "records",
                        "payload": {"app": "orders", "records": recs(101)},
                    }
                }
            ],
            "at most 100",
        ),
    ],
)
def test_planning_errors_name_the_changeset_and_operation(ops, message):
    cs = changeset(ops, lines=tuple(range(3, 3 + 2 * len(ops), 2)))
    with pytest.raises(ChangesetError) as info:
        build_plan([cs], env())
    text = str(info.value)
    assert message in text
    # the line is the one of the operation named
    where = re.search(r"V0001__change\.yaml:(\d+), operation (\d+)", text)
    assert where and int(where[1]) == 3 + 2 * (int(where[2]) - 1), text


def test_duplicate_versions_are_an_error():
    with pytest.raises(ChangesetError, match="version 0001 is used twice"):
        build_plan(
            [changeset([{"add": {"app": "orders", "records": recs(1)}}], name=n) for n in ("a", "b")], env()
        )


def test_a_bad_record_in_a_data_file_names_the_data_file_line():
    src = ListSource([{"id": 1, "t": 1}, {"t": 2}])
    cs = changeset([{"add": {"app": "orders", "records": recs(1)}}])
    op = Operation.model_validate({"update": {"app": "orders", "records_from": src.path}})
    op = Operation(update=op.update.model_copy(update={"source": src}))
    cs = LoadedChangeset(**{**cs.__dict__, "operations": (op,)})
    with pytest.raises(ChangesetError) as info:
        build_plan([cs], env())
    assert str(info.value).startswith("data/rows.csv:3, changeset V0001__change, operation 1, record 2")


# ---- determinism, streaming, laziness --------------------------------------------------------


def mixed_changesets(source: ListSource | None = None) -> list[LoadedChangeset]:
    first = [
        {"add": {"app": "orders", "ref": "x", "records": recs(230)}},
        {"status": {"app": "orders", "records": {"ref": "x"}, "action": "Go"}},
        {"update": {"app": "hr", "key": "code", "records": [{"code": "A", "n": "ä"}]}},
        {"delete": {"app": "orders", "ids": [1, 2, {"ref": "x", "index": 4}]}},
    ]
    cs1 = changeset(first, "0001", "one")
    if source is not None:
        cs1 = LoadedChangeset(**{**cs1.__dict__, "operations": (add_from(source, ref="y"), *cs1.operations)})
    cs2 = changeset(
        [{"assignees": {"app": "orders", "id": {"ref": "x", "index": 0}, "assignees": ["a"]}}], "0002", "two"
    )
    return [cs1, cs2]


def test_plans_are_deterministic():
    a = render_json(build_plan(mixed_changesets(), env()))
    b = render_json(build_plan(list(reversed(mixed_changesets())), env()))
    assert a == b
    data = json.loads(a)
    assert list(data)[0] == "format" and data["format"] == 1


def test_a_data_file_is_read_once_per_plan_when_held_in_memory():
    source = ListSource(recs(500))
    p = build_plan(mixed_changesets(source), env())
    assert source.passes == 1
    assert isinstance(p.changesets[0].batches, tuple)


def test_big_changesets_are_lazy_and_plan_the_same():
    eager_source, lazy_source = ListSource(recs(2500)), ListSource(recs(2500))
    eager = build_plan(mixed_changesets(eager_source), env())
    lazy = build_plan(mixed_changesets(lazy_source), env(), limits=Limits(eager_records=1000))
    batches = lazy.changesets[0].batches
    assert isinstance(batches, BatchSequence) and lazy_source.passes == 1
    assert len(batches) == len(eager.changesets[0].batches)
    assert render_json(lazy) == render_json(eager)
    assert batches[2] == eager.changesets[0].batches[2]
    assert batches[-1] == eager.changesets[0].batches[-1]
    assert list(batches[1:3]) == list(eager.changesets[0].batches[1:3])
    with pytest.raises(IndexError):
        batches[len(batches)]


def test_lazy_pending_batches_skip_applied_ones():
    source = ListSource(recs(4500))
    cs = LoadedChangeset(
        **{
            **changeset([{"add": {"app": "orders", "records": recs(1)}}]).__dict__,
            "operations": (add_from(source),),
        }
    )
    journal = {"0001": JournaledChangeset("0001", "s", "r", batch_states={0: APPLIED, 1: APPLIED})}
    p = build_plan([cs], env(), journal, limits=Limits(eager_records=0))
    pending = p.changesets[0].pending_batches
    assert len(pending) == 1 and [b.index for b in pending] == [2]
    assert p.changesets[0].state == PARTIAL and p.batch_count == 1


def _from_source(source: ListSource) -> LoadedChangeset:
    return LoadedChangeset(
        **{
            **changeset([{"add": {"app": "orders", "records": recs(1)}}]).__dict__,
            "operations": (add_from(source),),
        }
    )


def test_a_big_changeset_is_compiled_once_and_read_back_as_planned():
    # Each record is compiled once: sending (or printing) a big changeset reads its batches
    # back as they were compiled and hashed, never the data file again.
    source = ListSource(recs(2500))
    eager = build_plan([_from_source(ListSource(recs(2500)))], env()).changesets[0]
    [planned] = build_plan([_from_source(source)], env(), limits=Limits(eager_records=1000)).changesets
    assert isinstance(planned.batches, BatchSequence) and source.passes == 1
    assert list(planned.batches) == list(eager.batches) and list(planned.batches) == list(eager.batches)
    assert [b.hash for b in planned.batches] == planned.batch_hashes == eager.batch_hashes
    assert source.passes == 1


def test_an_edit_after_planning_is_never_sent_and_hashes_need_no_second_pass():
    # What was reviewed is what is sent: a value edited in the data file while `apply` waited
    # for confirmation (same number of records, same layout) changes nothing that is sent.
    source = ListSource(recs(300))
    [planned] = build_plan([_from_source(source)], env(), limits=Limits(eager_records=0)).changesets
    before = [b.requests() for b in planned.batches]
    assert len(planned.batch_hashes) == 1 and source.passes == 1  # the journal reads these
    source.records[150] = {"title": "edited"}
    source.records.append({"title": "late"})
    after = list(planned.batches)
    assert [b.requests() for b in after] == before and after[0].hash == planned.batch_hashes[0]
    assert (
        after[0].hash
        == build_plan([_from_source(ListSource(recs(300)))], env()).changesets[0].batch_hashes[0]
    )
    assert "edited" not in canonical_json(before) and source.passes == 1


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(payloads=st.lists(st.dictionaries(st.text(max_size=4), _JSON, max_size=3), min_size=1, max_size=4))
def test_a_batch_hash_is_the_one_journals_hold_and_its_parts_are_each_calls_canonical_json(payloads):
    # Batch.hash was sha256(canonical_json(requests)): journals hold it for applied batches, so
    # computing it from the parts must give the very same digest (else drift for applied work).
    batch = Batch(0, tuple(Call("POST", "/k/v1/records.json", p) for p in payloads))
    old = hashlib.sha256(canonical_json(batch.requests()).encode()).hexdigest()
    assert batch.hash == old
    assert batch.requests_json() == canonical_json(batch.requests()).encode()
    assert batch.parts == tuple(canonical_json(c.request()).encode() for c in batch.calls)


_CODES = st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=4, unique=True)


@given(codes=_CODES, data=st.data())
def test_records_made_as_json_are_byte_for_byte_the_canonical_json_of_their_dicts(codes, data):
    # The text path writes each CSV row's record (and its call) as JSON with no dict: it must be
    # the very bytes canonical_json gives the dicts, or the hash and what is sent would change.
    rows = data.draw(st.lists(st.tuples(*[st.text(max_size=6) for _ in codes]), min_size=1, max_size=5))
    columns = [[row[i] for row in rows] for i in range(len(codes))]
    records = [{c: {"value": v} for c, v in zip(codes, row, strict=True)} for row in rows]
    made = text_records_json(codes, columns)
    assert made == [canonical_json(r) for r in records]
    mixed = [*made, {"x": {"value": 1.5}}]  # a record of another shape, in the same call
    request = {
        "method": "POST",
        "api": "/k/v1/records.json",
        "payload": {"app": 7, "records": [*records, mixed[-1]]},
    }
    assert records_request_json("POST", "/k/v1/records.json", 7, mixed) == canonical_json(request).encode()


def test_a_spooled_batch_comes_back_with_the_json_it_was_hashed_as_and_sends_those_bytes():
    from kmigrate.client import encode_bulk

    [planned] = build_plan(
        [_from_source(ListSource(recs(2500)))], env(), limits=Limits(eager_records=0)
    ).changesets
    for batch in planned.batches:
        parts = batch.__dict__["parts"]  # read back from the spool, not encoded again
        assert parts == tuple(canonical_json(c.request()).encode() for c in batch.calls)
        sent = encode_bulk([c.resolved({}) for c in batch.calls], None, parts=batch.sendable_parts())
        assert all(a is b for a, b in zip(sent.parts, parts, strict=True))  # the very bytes
        assert sent.body() == canonical_json({"requests": batch.requests()}).encode()


def test_a_call_with_a_ref_to_resolve_is_encoded_as_resolved_not_as_planned():
    from kmigrate.client import encode_bulk

    ids = Call("DELETE", "/k/v1/records.json", {"app": 1, "ids": [ref_marker("a", 0)]}, refs=frozenset({"a"}))
    plain = Call("POST", "/k/v1/records.json", {"app": 1, "records": []}, refs=frozenset())
    batch = Batch(0, (plain, ids))
    assert batch.sendable_parts() == (batch.parts[0], None)
    sent = encode_bulk([c.resolved({"a": [7]}) for c in batch.calls], None, parts=batch.sendable_parts())
    assert sent.parts[0] is batch.parts[0]
    assert json.loads(sent.body())["requests"][1]["payload"]["ids"] == [7]


class _TextSource(ListSource):
    """A source that says its values are all text (as a CSV file of text columns does)."""

    text_columns = frozenset({"title", "note"})


def test_an_add_from_a_text_only_source_compiles_as_the_generic_path_does(monkeypatch):
    from kmigrate.planner.compile import OpCompiler

    rows = [{"title": f"r{i}", **({"note": "n"} if i % 2 else {})} for i in range(250)]
    fast, generic = _TextSource(rows), ListSource(rows)
    generic_records: list[Any] = []
    real = OpCompiler._kintone_record
    monkeypatch.setattr(
        OpCompiler,
        "_kintone_record",
        lambda self, rec, *a: generic_records.append(rec) or real(self, rec, *a),
    )
    got = build_plan([_from_source(fast)], env()).changesets[0].batches
    assert generic_records == []  # each record made {"value": ...} per field, with no scan
    expected = build_plan([_from_source(generic)], env()).changesets[0].batches
    assert len(generic_records) == 250
    assert [b.requests() for b in got] == [b.requests() for b in expected]
    assert [b.hash for b in got] == [b.hash for b in expected]


class _Text(str):
    """A str subclass: JSON takes it, marshal does not."""


def test_the_spool_keeps_json_so_any_payload_json_takes_is_read_back_without_a_second_pass():
    source = ListSource([{"title": _Text(f"t{i}")} for i in range(300)])
    [planned] = build_plan([_from_source(source)], env(), limits=Limits(eager_records=0)).changesets
    [batch] = list(planned.batches)
    assert source.passes == 1 and batch.hash == planned.batch_hashes[0]
    assert [r["title"]["value"] for c in batch.calls for r in c.payload["records"]] == [
        f"t{i}" for i in range(300)
    ]


def test_an_encoded_payload_is_the_mapping_its_json_holds():
    request = {
        "method": "POST",
        "api": "/k/v1/records.json",
        "payload": {"app": 3, "records": [{"t": {"value": "é"}}]},
    }
    payload = EncodedPayload(canonical_json(request).encode(), 3)
    assert payload["app"] == 3 and payload and payload._value is None  # no decoding for these
    assert (
        payload == request["payload"]
        and request["payload"] == payload
        and dict(payload) == request["payload"]
    )
    assert canonical_json({"payload": payload}) == canonical_json({"payload": request["payload"]})
    assert EncodedPayload(payload.part, None)["app"] == 3  # not told: read from the JSON
    assert payload != {"app": 3} and payload != EncodedPayload(
        canonical_json({**request, "payload": {"app": 4}}).encode(), 4
    )
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"x": object()})


def test_a_spooled_call_is_sent_as_its_json_and_decoded_only_when_looked_into():
    [planned] = build_plan(
        [_from_source(ListSource(recs(250)))], env(), limits=Limits(eager_records=0)
    ).changesets
    [batch] = list(planned.batches)
    payloads = [c.payload for c in batch.calls]
    assert all(isinstance(p, EncodedPayload) for p in payloads)
    assert [c.payload["app"] for c in batch.calls] == [1, 1, 1]  # the app, without decoding
    from kmigrate.client import encode_bulk
    from kmigrate.reconcile import kind_of

    # What the runner does to send it: encode the bulk from the parts, and the probe's reading.
    sent = encode_bulk(batch.requests(), batch.guest_space_id, parts=batch.sendable_parts())
    assert sent.parts == batch.parts and [kind_of(r) for r in batch.requests()] == ["add"] * 3
    assert all(p._value is None for p in payloads)  # none of that decoded a payload
    eager = build_plan([_from_source(ListSource(recs(250)))], env()).changesets[0].batches[0]
    assert batch.hash == eager.hash and batch.parts == eager.parts  # the bytes the dicts encode to
    assert batch.requests() == eager.requests()  # and the same content once decoded


# ---- resolve_refs ----------------------------------------------------------------------------


def test_resolve_refs_expands_every_marker_and_leaves_the_input_alone():
    payload = {
        "app": 1,
        "ids": [{"$ref": "a", "index": 1}, 5],
        "all": {"$ref": "a"},
        "records": {"$ref": "b", "each": {"action": "Go"}},
        "$notref": {"x": [1]},
    }
    before = json.dumps(payload)
    out = resolve_refs(payload, {"a": [10, 11], "b": [20]})
    assert out == {
        "app": 1,
        "ids": [11, 5],
        "all": [10, 11],
        "records": [{"id": 20, "action": "Go"}],
        "$notref": {"x": [1]},
    }
    assert json.dumps(payload) == before
    with pytest.raises(JournalError, match="no ids are journaled for ref 'c'"):
        resolve_refs({"id": {"$ref": "c", "index": 0}}, {})
    with pytest.raises(JournalError, match="has 2 ids journaled"):
        resolve_refs({"id": {"$ref": "a", "index": 2}}, {"a": [1, 2]})


# ---- generated workloads ---------------------------------------------------------------------

GEN_APPS = {"orders": (1, None), "customers": (2, None), "hr": (3, 7), "payroll": (4, 8)}


@st.composite
def workloads(
    draw: Any, max_changesets: int = 3, max_ops: int = 7, max_records: int = 14
) -> list[list[dict[str, Any]]]:
    """Changesets of random operations on random apps (two in guest spaces), with refs used
    whole or by index, and repeated ids and keys."""
    refs: dict[str, int] = {}
    latest: list[str] = []
    out = []
    for _ in range(draw(st.integers(1, max_changesets))):
        ops = []
        for _ in range(draw(st.integers(1, max_ops))):
            app = draw(st.sampled_from(sorted(GEN_APPS)))
            kinds = ["add", "update", "update_key", "upsert", "delete", "status", "assignees", "request"]
            kind = draw(st.sampled_from(kinds))
            n = draw(st.integers(1, max_records))

            def a_ref() -> str:  # mostly the newest: its records may still be in the current bulk
                return latest[-1] if draw(st.booleans()) else draw(st.sampled_from(sorted(refs)))

            def an_id() -> Any:
                if refs and draw(st.booleans()):
                    name = a_ref()
                    return {"ref": name, "index": draw(st.integers(0, refs[name] - 1))}
                return draw(st.integers(1, 6))

            def ids() -> Any:
                if refs and draw(st.integers(0, 3)) == 0:
                    return {"ref": a_ref()}
                return [an_id() for _ in range(n)]  # noqa: B023 (called within this iteration)

            new_ref = f"r{len(refs)}" if draw(st.booleans()) else None
            if kind == "add":
                op = {"add": {"app": app, "records": [{"f": draw(st.integers(0, 3))} for _ in range(n)]}}
            elif kind == "update":
                op = {"update": {"app": app, "records": [{"id": an_id(), "f": 1} for _ in range(n)]}}
            elif kind == "update_key":
                op = {
                    "update": {
                        "app": app,
                        "key": "k",
                        "records": [{"k": draw(st.sampled_from("abcde")), "f": 1} for _ in range(n)],
                    }
                }
            elif kind == "upsert":
                op = {
                    "upsert": {
                        "app": app,
                        "key": draw(st.sampled_from(["k", "j"])),
                        "records": [
                            {"k": draw(st.sampled_from("abcde")), "j": draw(st.sampled_from("abcde"))}
                            for _ in range(n)
                        ],
                    }
                }
            elif kind == "delete":
                op = {"delete": {"app": app, "ids": ids()}}
            elif kind == "status":
                op = {
                    "status": {"app": app, "records": ids(), "action": draw(st.sampled_from(["Go", "Stop"]))}
                }
            elif kind == "assignees":
                op = {"assignees": {"app": app, "id": an_id(), "assignees": ["a"]}}
            else:
                op = {
                    "request": {
                        "method": "PUT",
                        "api": "record",
                        "payload": {"app": app, "id": an_id(), "record": {}},
                    }
                }
            if kind in ("add", "upsert") and new_ref:
                body = next(iter(op.values()))
                body["ref"] = new_ref
                refs[new_ref] = n
                latest.append(new_ref)
            ops.append(op)
        out.append(ops)
    return out


def gen_env() -> Environment:
    return env(**{name: App(i, g) for name, (i, g) in GEN_APPS.items()})


def build(workload: list[list[dict[str, Any]]], limits: Limits):
    css = [changeset(ops, f"{i + 1:04d}", f"w{i}") for i, ops in enumerate(workload)]
    return build_plan(css, gen_env(), limits=limits)


def expand(workload: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """The workload as items, independently of the planner: one per record the plan must carry.

    Each item: ``merge`` (which items may share a call; ``None``: a call of its own), ``dedupe``
    (what may not repeat in one call), ``uses`` and ``makes`` (ref ids), ``guest``, ``op``.
    """
    sizes: dict[str, int] = {}
    out = []
    for ops in workload:
        items = []
        for o, op in enumerate(ops):
            kind, body = next(iter(op.items()))
            app, guest = GEN_APPS[body["app"] if kind != "request" else body["payload"]["app"]]

            def id_use(value: Any) -> tuple[Any, list[tuple[str, int | None]]]:
                if isinstance(value, dict):
                    return (value["ref"], value["index"]), [(value["ref"], value["index"])]
                return value, []

            def id_items(ids: Any) -> list[tuple[Any, list[Any]]]:
                if isinstance(ids, dict):
                    return [id_use({"ref": ids["ref"], "index": i}) for i in range(sizes[ids["ref"]])]
                return [id_use(v) for v in ids]

            def item(merge: Any, dedupe: Any, uses: list[Any], makes: Any = None) -> None:
                items.append(  # noqa: B023 (called within this iteration)
                    {"merge": merge, "dedupe": dedupe, "uses": uses, "makes": makes, "guest": guest, "op": o}  # noqa: B023
                )

            ref = body.get("ref")
            if kind == "add":
                for i in range(len(body["records"])):
                    item(("add", app), None, [], (ref, i) if ref else None)
            elif kind == "update" and "key" not in body:
                for rec in body["records"]:
                    key, uses = id_use(rec["id"])
                    item(("update", app, None), key, uses)
            elif kind in ("update", "upsert"):
                for i, rec in enumerate(body["records"]):
                    item((kind, app, body["key"]), rec[body["key"]], [], (ref, i) if ref else None)
            elif kind in ("delete", "status"):
                for key, uses in id_items(body["ids"] if kind == "delete" else body["records"]):
                    item((kind, app), key, uses)
            else:
                target = body["id"] if kind == "assignees" else body["payload"]["id"]
                item(None, None, id_use(target)[1])
            if ref:
                sizes[ref] = len(body["records"])
        out.append(items)
    return out


def min_bulks(items: list[dict[str, Any]], limits: Limits) -> int:
    """The fewest bulk requests for these items in this order, by exhaustive search over every
    way to cut them into bulks and every bulk into calls (dynamic programming)."""

    def call_ok(lo: int, hi: int) -> bool:
        group = items[lo:hi]
        merge = group[0]["merge"]
        if merge is None:
            return len(group) == 1
        keys = [it["dedupe"] for it in group if it["dedupe"] is not None]
        return (
            len(group) <= limits.records_per_call
            and all(it["merge"] == merge for it in group)
            and len(keys) == len(set(keys))
        )

    def bulk_ok(lo: int, hi: int) -> bool:
        group = items[lo:hi]
        if len({it["guest"] for it in group}) > 1:
            return False
        made = {it["makes"] for it in group if it["makes"]}
        made_names = {name for name, _ in made}
        if any(
            (name, i) in made if i is not None else name in made_names
            for it in group
            for name, i in it["uses"]
        ):
            return False
        fewest = [0] + [math.inf] * (hi - lo)  # fewest calls covering items[lo:lo+k]
        for k in range(1, hi - lo + 1):
            for m in range(max(0, k - limits.records_per_call), k):
                if fewest[m] + 1 < fewest[k] and call_ok(lo + m, lo + k):
                    fewest[k] = fewest[m] + 1
        return fewest[hi - lo] <= limits.calls_per_bulk

    best = [0] + [math.inf] * len(items)
    for hi in range(1, len(items) + 1):
        for lo in range(hi - 1, -1, -1):
            if not bulk_ok(lo, hi):
                break  # a bulk that cannot hold items[lo:hi] cannot hold items[lo-1:hi] either
            best[hi] = min(best[hi], best[lo] + 1)
    return int(best[len(items)])


def check_invariants(workload: list[list[dict[str, Any]]], p: Any, limits: Limits) -> None:
    expanded = expand(workload)
    made_at: dict[tuple[str, int], tuple[int, int]] = {}
    sizes: dict[str, int] = {}
    assert len(p.changesets) == len(workload)
    for c, (cs, items) in enumerate(zip(p.changesets, expanded, strict=False)):
        order = []
        for b, batch in enumerate(cs.batches):
            assert batch.index == b
            assert 1 <= len(batch.calls) <= limits.calls_per_bulk
            prefix = "/k/v1/" if batch.guest_space_id is None else f"/k/guest/{batch.guest_space_id}/v1/"
            for call in batch.calls:
                assert call.api.startswith(prefix)
                op_apps = {next(iter(workload[c][s.operation].values())).get("app") for s in call.segments}
                assert all(
                    GEN_APPS.get(a, (0, batch.guest_space_id))[1] == batch.guest_space_id for a in op_apps
                )
                for s in call.segments:
                    order += [(s.operation, s.start + i) for i in range(s.count)]
                    if s.ref:
                        for i in range(s.start, s.start + s.count):
                            made_at[(s.ref, i)] = (c, b)
                        sizes[s.ref] = max(sizes.get(s.ref, 0), s.start + s.count)
                # every used id was made in an earlier bulk
                for name, index in ref_uses(call.payload):
                    needed = range(sizes[name]) if index is None else [index]
                    assert all(made_at[(name, i)] < (c, b) for i in needed), (name, index, c, b)
                # resolved, no call exceeds the limit and no id repeats
                fake = {
                    name: [10_000 * (k + 1) + i for i in range(n)]
                    for k, (name, n) in enumerate(sorted(sizes.items()))
                }
                # the refs the planner says a call needs are exactly those in its payload: the
                # runner resolves only calls that say they need something
                assert call.refs == frozenset(name for name, _ in ref_uses(call.payload))
                assert call.resolved(fake)["payload"] == resolve_refs(call.payload, fake)
                resolved = resolve_refs(call.payload, fake)
                listed = resolved.get("records", resolved.get("ids"))
                if isinstance(listed, list):
                    assert len(listed) == call.record_count <= limits.records_per_call
                    keys = [
                        r if not isinstance(r, dict) else r.get("id", json.dumps(r.get("updateKey")))
                        for r in listed
                    ]
                    if call.method != "POST":
                        assert len(keys) == len(set(keys)), keys
                assert not any(is_ref_marker(v) for v in _walk(resolved))
        # order kept: the plan's records are the workload's, in written order
        assert order == [(it["op"], i) for it, i in _numbered(items)]
    # adds carry exactly the written records
    for c, cs in enumerate(p.changesets):
        for batch in cs.batches:
            for call in batch.calls:
                if call.method == "POST":
                    written = [
                        rec
                        for s in call.segments
                        for rec in workload[c][s.operation]["add"]["records"][s.start : s.start + s.count]
                    ]
                    assert call.payload["records"] == [to_kintone_record(r) for r in written]


def _numbered(items: list[dict[str, Any]]):
    counts: dict[int, int] = {}
    for it in items:
        counts[it["op"]] = counts.get(it["op"], -1) + 1
        yield it, counts[it["op"]]


def _walk(value: Any):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


SMALL = Limits(calls_per_bulk=3, records_per_call=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.booleans())
def test_generated_workloads_keep_every_rule_and_use_the_fewest_bulks(workload, lazy):
    limits = Limits(SMALL.calls_per_bulk, SMALL.records_per_call, eager_records=0 if lazy else 10_000)
    p = build(workload, limits)
    check_invariants(workload, p, limits)
    for cs, items in zip(p.changesets, expand(workload), strict=False):
        assert len(cs.batches) == min_bulks(items, limits)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(max_changesets=2, max_ops=6, max_records=260))
def test_generated_workloads_at_kintone_limits(workload):
    p = build(workload, Limits())
    check_invariants(workload, p, Limits())
    assert render_json(p) == render_json(build(workload, Limits(eager_records=0)))


def test_the_reference_minimum_is_not_trivially_equal():
    # The exhaustive minimum must see what greedy must respect: here a consumer forces a break.
    workload = [
        [
            {"add": {"app": "orders", "ref": "r0", "records": [{"f": 1}]}},
            {"delete": {"app": "orders", "ids": {"ref": "r0"}}},
        ]
    ]
    assert min_bulks(expand(workload)[0], SMALL) == 2
    assert (
        min_bulks(expand([[{"add": {"app": "orders", "records": [{"f": 1}] * 13}}]])[0], SMALL) == 2
    )  # 13 > 3 * 4


def test_an_applied_unchanged_changeset_is_not_compiled_but_its_refs_serve_later_ones():
    source = ListSource(recs(250))
    source.count = 250  # the loader counts a trusted data file without building its records
    first = LoadedChangeset(
        version="0001",
        name="a",
        path=ROOT / "changesets" / "V0001__a.yaml",
        description="",
        operations=(add_from(source, ref="big"),),
        source_checksum="s0001",
        rendered_checksum="r0001",
    )
    second = changeset([{"delete": {"app": "orders", "ids": [{"ref": "big", "index": 249}]}}], "0002", "b")
    journal = {"0001": JournaledChangeset("0001", "s0001", "r0001", batch_states={0: APPLIED})}
    p = build_plan([first, second], env(), journal)
    assert source.passes == 0  # nothing of the applied changeset was read
    assert p.changesets[0].state == APPLIED and len(p.changesets[0].batches) == 1
    [batch] = p.changesets[1].batches
    assert batch.calls[0].payload["ids"] == [{"$ref": "big", "index": 249}]
    # Read on demand (plan --format json), its batches are compiled as before.
    assert [b.record_count for b in p.changesets[0].batches] == [250] and source.passes == 1

    with pytest.raises(ChangesetError, match="index 250"):  # the ref's size still bounds its users
        build_plan(
            [
                first,
                changeset(
                    [{"delete": {"app": "orders", "ids": [{"ref": "big", "index": 250}]}}], "0002", "b"
                ),
            ],
            env(),
            journal,
        )

    changed = {"0001": JournaledChangeset("0001", "s0001", "other", batch_states={0: APPLIED})}
    build_plan([first, second], env(), changed)
    assert source.passes == 2  # a changed changeset is compiled again, whatever the journal says


def test_the_journal_s_word_decides_for_a_changeset_with_nothing_to_send():
    empty = changeset([{"add": {"app": "orders", "records": []}}])
    assert build_plan([empty], env()).changesets[0].batches == ()
    applied = {"0001": JournaledChangeset("0001", "s0001", "r0001", state=APPLIED)}
    [planned] = build_plan([empty], env(), applied).changesets
    assert planned.state == APPLIED and len(planned.batches) == 0
    [again] = build_plan(
        [empty], env(), {"0001": JournaledChangeset("0001", "s0001", "r0001", state=PENDING)}
    ).changesets
    assert again.state != APPLIED


def test_a_request_may_name_its_api_by_any_of_its_paths():
    for written in ("records", "/k/v1/records.json", "/k/guest/7/v1/records.json"):
        p = plan(
            {
                "request": {
                    "method": "PUT",
                    "api": written,
                    "payload": {"app": "hr", "records": [{"id": 1, "record": {}}]},
                }
            }
        )
        [[call]] = calls_of(p)
        assert call.api == "/k/guest/7/v1/records.json"  # hr lives in guest space 7


@pytest.mark.parametrize("records", [10, 2_345])
def test_an_add_compiled_from_runs_by_column_plans_as_one_compiled_record_by_record(
    tmp_path, monkeypatch, records
):
    """A CSV add read back by column (``OpCompiler.text_items``) gives the very plan the
    record-by-record way gives: calls, segments, refs and hashes, across runs that give
    different fields (empty cells) and calls that straddle runs; a status action on one of its
    records starts the next bulk, as it must (the ids are not known before)."""
    from kmigrate import api
    from kmigrate.planner import compile as compiled

    from .projects import items_project, write_changeset

    root = items_project(tmp_path)
    rows = "".join(f"I{i:06d},{'' if i in (1500, 1501, 2100) else i % 7}\n" for i in range(records))
    (root / "changesets" / "data" / "items.csv").write_text("code,qty\n" + rows)
    write_changeset(
        root,
        "V0001__big.yaml",
        "operations:\n"
        "  - add: {app: items, records: [{code: X1}]}\n"
        "  - add: {app: items, records_from: data/items.csv, ref: made}\n"
        f"  - status: {{app: items, action: Check, records: [{{ref: made, index: {records // 2}}}]}}\n",
    )

    def planned() -> tuple[str, list[tuple[int, ...]]]:
        ctx = api.Context.load(root)
        the_plan = api.plan(ctx)
        segments = [
            (b.index, *[(s.operation, s.start, s.count) for c in b.calls for s in c.segments])
            for cs in the_plan.changesets
            for b in cs.batches
        ]
        return render_json(the_plan), segments

    taken: list[bool] = []
    real = compiled.OpCompiler.text_items

    def text_items(self):
        items = real(self)
        taken.append(items is not None)
        return items

    monkeypatch.setattr(compiled.OpCompiler, "text_items", text_items)
    by_column = planned()
    assert taken == [False, True]  # the inline add record by record, the data file by column
    monkeypatch.setattr(compiled.OpCompiler, "text_items", lambda self: None)
    assert planned() == by_column
    printed = json.loads(by_column[0])["changesets"][0]["batches"]
    added = [
        r["code"]["value"]
        for b in printed
        for q in b["requests"]
        if q["api"].endswith("/records.json")
        for r in q["payload"]["records"]
    ]
    assert added == ["X1", *[f"I{i:06d}" for i in range(records)]]
    # the status needs the id of a record added before it (2,000 records a bulk, X1 first): it
    # goes in the bulk after that record's, not in the same one
    status_bulk = next(
        i for i, b in enumerate(printed) for q in b["requests"] if q["api"].endswith("status.json")
    )
    assert status_bulk == (records // 2 + 1) // 2000 + 1
