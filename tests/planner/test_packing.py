"""The packer alone: items into calls, calls into bulk requests, by the rule of its docstring."""

from __future__ import annotations

from kmigrate.planner.packing import CallSpec, Limits, Packer
from kmigrate.planner.refs import RefRegistry


def spec(
    kind: str = "add", app: int = 1, guest: int | None = None, op: int = 0, ref: str | None = None
) -> CallSpec:
    shape = {"add": "records", "delete": "ids"}[kind]
    method = {"add": "POST", "delete": "DELETE"}[kind]
    return CallSpec((kind, app), method, "/k/v1/records.json", app, shape, guest, op, ref=ref)


def packed(packer: Packer) -> list[list[list]]:
    """Bulks -> calls -> their items."""
    return [
        [call.payload.get("records", call.payload.get("ids")) for call in calls]
        for calls, _g in packer.finish()
    ]


def test_items_fill_a_call_then_a_bulk():
    packer = Packer(Limits(calls_per_bulk=2, records_per_call=2), RefRegistry())
    for n in range(5):
        packer.item(spec(), {"n": n}, None, (), n)
    assert packed(packer) == [[[{"n": 0}, {"n": 1}], [{"n": 2}, {"n": 3}]], [[{"n": 4}]]]


def test_a_repeated_id_or_another_kind_starts_a_new_call():
    packer = Packer(Limits(), RefRegistry())
    deletes = spec("delete")
    packer.item(deletes, 7, ("id", 7), (), 0)
    packer.item(deletes, 8, ("id", 8), (), 1)
    packer.item(deletes, 7, ("id", 7), (), 2)  # Kintone refuses an id twice in one call
    packer.item(spec("add", op=1), {"t": 1}, None, (), 0)
    [bulk] = packed(packer)
    assert bulk == [[7, 8], [7], [{"t": 1}]]


def test_an_item_needing_a_record_created_in_this_bulk_waits_for_the_next():
    refs = RefRegistry()
    packer = Packer(Limits(), refs)
    producer = spec("add", ref="o")
    packer.item(producer, {"t": 1}, None, (), 0)
    packer.item(producer, {"t": 2}, None, (), 1)
    refs.count["o"] = 2
    packer.item(spec("delete", op=1), {"$ref": "o", "index": 1}, ("id", ("o", 1)), (("o", 1),), 0)
    bulks = packer.finish()
    assert [len(calls) for calls, _g in bulks] == [1, 1]
    assert bulks[1][0][0].refs == frozenset({"o"}) and bulks[0][0][0].segments[0].ref == "o"


def test_revisions_pair_with_ids_one_to_one():
    packer = Packer(Limits(), RefRegistry())
    deletes = spec("delete")
    packer.item(deletes, 1, ("id", 1), (), 0)
    packer.item(deletes, 2, ("id", 2), (), 1, revision=5)
    [[call]] = [calls for calls, _g in packer.finish()]
    assert call.payload == {"app": 1, "ids": [1, 2], "revisions": [-1, 5]}  # -1: no check


def test_another_guest_space_starts_a_new_bulk():
    packer = Packer(Limits(), RefRegistry())
    packer.item(spec(app=1), {"t": 1}, None, (), 0)
    packer.item(spec(app=2, guest=3, op=1), {"t": 2}, None, (), 0)
    assert [guest for _calls, guest in packer.finish()] == [None, 3]
