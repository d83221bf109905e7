"""The marker request and the records read back: pure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmigrate.config import App
from kmigrate.errors import ConfigError
from kmigrate.plan import Batch, Call, ChangesetPlan, OperationSummary, Plan, Segment
from kmigrate.remote.records import (
    FIELDS,
    RUN_PLACEHOLDER,
    LeaseRecord,
    Marker,
    Markers,
    created_counts,
    lease_fields,
    marker_key,
    query_text,
)


def batch(index: int = 0, guest: int | None = None, ref: str | None = "new_items") -> Batch:
    add = Call(
        "POST",
        "/k/v1/records.json" if guest is None else f"/k/guest/{guest}/v1/records.json",
        {"app": 1, "records": [{"code": {"value": f"A{index}"}}, {"code": {"value": f"B{index}"}}]},
        (Segment(0, 0, 2, ref),),
    )
    delete = Call("DELETE", "/k/v1/records.json", {"app": 1, "ids": [5]}, (Segment(1, 0, 1, ref),))
    return Batch(index, (add, delete), guest)


def changeset(*batches: Batch, guest: int | None = None) -> ChangesetPlan:
    return ChangesetPlan(
        version="0002",
        name="items",
        path=Path("changesets/V0002__items.yaml"),
        source_checksum="s" * 64,
        rendered_checksum="r" * 64,
        operations=(OperationSummary(0, "add", "items", 1, 2, guest_space_id=guest),),
        batches=batches,
    )


MARKERS = Markers("shop", {None: App(90), 3: App(91, 3)})


def test_the_marker_request_names_the_batch_and_carries_its_hash_and_the_run() -> None:
    b = batch(1)
    request = MARKERS.request(changeset(batch(0), b), b, run="alice@ci-7/12")
    assert request["method"] == "POST" and request["api"] == "/k/v1/record.json"
    assert request["payload"]["app"] == 90
    record = {k: v["value"] for k, v in request["payload"]["record"].items()}
    assert record["key"] == "shop:0002:1" == marker_key("shop", "0002", 1)
    assert record["hash"] == b.hash and record["batch"] == "1" and record["batches"] == "2"
    assert record["run"] == "alice@ci-7/12" and record["kind"] == "batch"
    assert (record["source_checksum"], record["rendered_checksum"]) == ("s" * 64, "r" * 64)
    # Only the add creates records a ref names; the delete's segment does not count.
    assert json.loads(record["refs"]) == {"new_items": 2} == created_counts(b)
    assert record["ids"] == ""  # written after the answer
    assert set(record) <= set(FIELDS)


def test_a_batch_creating_nothing_named_has_its_ids_complete_from_the_start() -> None:
    b = batch(0, ref=None)
    record = MARKERS.record(changeset(b), b, RUN_PLACEHOLDER)
    assert record["ids"]["value"] == "{}" and record["refs"]["value"] == "{}"
    assert record["run"]["value"] == RUN_PLACEHOLDER


def test_a_guest_space_batch_writes_its_marker_to_that_spaces_journal_app() -> None:
    b = batch(0, guest=3)
    request = MARKERS.request(changeset(b, guest=3), b)
    assert request["api"] == "/k/guest/3/v1/record.json" and request["payload"]["app"] == 91


def test_a_space_without_a_journal_app_is_refused_before_anything_is_sent() -> None:
    only_default = Markers("shop", {None: App(90)})
    b = batch(0, guest=4)
    with pytest.raises(ConfigError, match="guest space 4") as err:
        only_default.check_spaces(Plan("prod", (changeset(b, guest=4),)))
    assert err.value.exit_code == 2
    only_default.check_spaces(Plan("prod", (changeset(batch(0)),)))  # no guest space: fine


def test_a_marker_reads_back_from_kintones_record_shape() -> None:
    record = {
        "key": {"value": "shop:0002:1"},
        "version": {"value": "0002"},
        "name": {"value": "items"},
        "batch": {"value": "1"},
        "batches": {"value": "2"},
        "hash": {"value": "h"},
        "source_checksum": {"value": "s"},
        "rendered_checksum": {"value": "r"},
        "run": {"value": "run"},
        "refs": {"value": '{"new_items":2}'},
        "ids": {"value": ""},
        "$id": {"value": "4"},
        "$revision": {"value": "1"},
    }
    marker = Marker.from_record(record, 3)
    assert (marker.version, marker.index, marker.batches, marker.record_id, marker.guest_space_id) == (
        "0002",
        1,
        2,
        4,
        3,
    )
    assert marker.refs == {"new_items": 2} and marker.ids is None
    record["ids"] = {"value": '{"new_items":["11","12"]}'}
    assert Marker.from_record(record).ids == {"new_items": [11, 12]}


def test_lease_fields_and_reading_them_back() -> None:
    fields = lease_fields("shop", "alice", "ci-7", "run-1", "2026-01-01T00:00:00.000Z")
    assert fields["key"]["value"] == "shop:lease" and fields["kind"]["value"] == "lease"
    lease = LeaseRecord.from_record({**fields, "$id": {"value": "3"}, "$revision": {"value": "5"}})
    assert (lease.holder, lease.host, lease.run, lease.record_id, lease.revision) == (
        "alice",
        "ci-7",
        "run-1",
        3,
        5,
    )
    assert "alice@ci-7" in str(lease)


def test_query_text_escapes_quotes() -> None:
    assert query_text('a"b\\c') == '"a\\"b\\\\c"'
