"""kmigrate.planner.independence: the proof that two bulks may be in flight together.

The property: for any two batches the proof calls independent, applying them in either order to
a model of Kintone (all-or-nothing bulks, unique fields, keys, ids, lookups) gives the same records
and the same outcome per batch; and reconciliation (``reconcile.holds``) never takes a record one of
them added for a record of the other.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kmigrate.planner.independence import MAX_PARALLEL, conflict, footprint, independent, value_keys
from kmigrate.reconcile import holds

# App 1: records {code (unique), n}. App 2: `ref` looks up app 1 by code, copying n into
# `copied`. App 3: `parent` looks up app 3 itself by code (unique), copying n into `pn`.
UNIQUE = {1: frozenset({"code"}), 2: frozenset(), 3: frozenset({"code"})}
LOOKUP_FIELDS = {2: ("ref", 1, "copied"), 3: ("parent", 3, "pn")}  # field, source app, copied into
LOOKUPS = {1: frozenset(), 2: frozenset({1}), 3: frozenset({3})}
SEED = {
    1: {1: {"code": "a", "n": "1"}, 2: {"code": "b", "n": "2"}, 3: {"code": "7", "n": "3"}, 4: {"n": "4"}},
    2: {5: {"ref": "a", "copied": "1"}},
    3: {6: {"code": "a", "n": "1"}, 7: {"code": "b", "n": "2", "parent": "a", "pn": "1"}},
}
VALUES = ["a", "b", "c", "7", "7.0", "8"]


def add(app: int, *records: dict[str, str]) -> dict[str, Any]:
    return {
        "method": "POST",
        "api": "/k/v1/records.json",
        "payload": {"app": app, "records": [{k: {"value": v} for k, v in r.items()} for r in records]},
    }


def update_id(app: int, record_id: int, **values: str) -> dict[str, Any]:
    record = {k: {"value": v} for k, v in values.items()}
    return {
        "method": "PUT",
        "api": "/k/v1/records.json",
        "payload": {"app": app, "records": [{"id": record_id, "record": record}]},
    }


def update_key(app: int, key: str, upsert: bool = False, **values: str) -> dict[str, Any]:
    record = {k: {"value": v} for k, v in values.items()}
    payload: dict[str, Any] = {
        "app": app,
        "records": [{"updateKey": {"field": "code", "value": key}, "record": record}],
    }
    if upsert:
        payload["upsert"] = True
    return {"method": "PUT", "api": "/k/v1/records.json", "payload": payload}


def delete(app: int, *ids: int) -> dict[str, Any]:
    return {"method": "DELETE", "api": "/k/v1/records.json", "payload": {"app": app, "ids": list(ids)}}


def status(app: int, record_id: int) -> dict[str, Any]:
    return {
        "method": "PUT",
        "api": "/k/v1/records/status.json",
        "payload": {"app": app, "records": [{"id": record_id, "action": "Go"}]},
    }


# ---- a model of Kintone: bulks all-or-nothing, unique fields, keys, lookups ------------------


class Refused(Exception):
    pass


def run_bulk(state: dict[int, dict[int, dict[str, str]]], requests: list[dict[str, Any]]) -> bool:
    """Apply a bulk to ``state`` (app -> id -> fields; new ids count on): True if applied,
    False (state untouched) if refused."""
    work = copy.deepcopy(state)
    try:
        for request in requests:
            _one(work, request)
    except Refused:
        return False
    state.clear()
    state.update(work)
    return True


def _unique_ok(app: int, records: dict[int, dict[str, str]]) -> None:
    if "code" not in UNIQUE.get(app, ()):
        return
    seen = [r["code"] for r in records.values() if "code" in r and not r.get("_deleted")]
    if len(seen) != len(set(seen)):
        raise Refused


def _new_id(state: dict[int, Any]) -> int:
    """Kintone never gives an id twice, deleted or not."""
    counter = state.setdefault(0, {0: {"next": "100"}})[0]
    counter["next"] = str(int(counter["next"]) + 1)
    return int(counter["next"])


def _looked_up(
    state: dict[int, dict[int, dict[str, str]]], app: int, values: dict[str, str]
) -> dict[str, str]:
    """A write's values with its lookup's copy made from the source record as it is now (Kintone
    refuses a key no record holds)."""
    if app not in LOOKUP_FIELDS or LOOKUP_FIELDS[app][0] not in values:
        return values
    code, source, into = LOOKUP_FIELDS[app]
    key = values[code]
    if key == "":
        return {**values, into: ""}
    found = [r for r in state.get(source, {}).values() if r.get("code") == key]
    if len(found) != 1:
        raise Refused
    return {**values, into: found[0].get("n", "")}


def _one(state: dict[int, dict[int, dict[str, str]]], request: dict[str, Any]) -> None:
    payload = request["payload"]
    app = payload["app"]
    records = state.setdefault(app, {})
    if request["method"] == "POST":
        for r in payload["records"]:
            records[_new_id(state)] = _looked_up(state, app, {k: c["value"] for k, c in r.items()})
    elif request["method"] == "DELETE":
        for i in payload["ids"]:
            if i not in records:
                raise Refused
            del records[i]
    elif request["api"].endswith("status.json"):
        for entry in payload["records"]:
            if entry["id"] not in records:
                raise Refused
            records[entry["id"]]["_status"] = records[entry["id"]].get("_status", "") + "+"
    else:
        for entry in payload["records"]:
            values = _looked_up(state, app, {k: c["value"] for k, c in entry["record"].items()})
            if "id" in entry:
                if entry["id"] not in records:
                    raise Refused
                records[entry["id"]].update(values)
            else:
                key = entry["updateKey"]["value"]
                found = [i for i, r in records.items() if r.get("code") == key]
                if found:
                    records[found[0]].update(values)
                elif payload.get("upsert"):
                    records[_new_id(state)] = {"code": key, **values}
                else:
                    raise Refused
    _unique_ok(app, records)


def outcome(first: list[dict[str, Any]], second: list[dict[str, Any]], flip: bool) -> tuple[Any, ...]:
    """Both bulks applied one after the other (``flip``: second first): whether each applied,
    the seeded records by id, and the records added as a multiset of contents (new ids depend
    on the order by nature)."""
    state = copy.deepcopy(SEED)
    order = [(1, second), (0, first)] if flip else [(0, first), (1, second)]
    applied = {name: run_bulk(state, requests) for name, requests in order}
    seeded = {app: {i: r for i, r in state.get(app, {}).items() if i in SEED[app]} for app in SEED}
    added = {
        app: sorted(sorted(r.items()) for i, r in state.get(app, {}).items() if i not in SEED[app])
        for app in SEED
    }
    return applied[0], applied[1], seeded, added


fields = st.fixed_dictionaries({}, optional={"code": st.sampled_from(VALUES), "n": st.sampled_from(VALUES)})
ids = st.integers(min_value=1, max_value=8)
looking_up = st.fixed_dictionaries(
    {"ref": st.sampled_from(VALUES)}, optional={"n": st.sampled_from(VALUES)}
)  # app 2's
own = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from(VALUES),
        "n": st.sampled_from(VALUES),
        "parent": st.sampled_from(VALUES),
    },
)  # app 3's
calls = st.one_of(
    st.builds(lambda rs: add(2, *rs), st.lists(looking_up, min_size=1, max_size=2)),
    st.builds(lambda i, v: update_id(2, i, **v), ids, looking_up),
    st.builds(lambda rs: add(3, *rs), st.lists(own, min_size=1, max_size=2)),
    st.builds(lambda i, v: update_id(3, i, **v), ids, own),
    st.builds(lambda rs: add(1, *rs), st.lists(fields, min_size=1, max_size=3)),
    st.builds(lambda i, v: update_id(1, i, **v), ids, fields),
    st.builds(
        lambda k, v: update_key(1, k, **{c: x for c, x in v.items() if c != "code"}),
        st.sampled_from(VALUES),
        fields,
    ),
    st.builds(lambda k, v: update_key(1, k, True, n=v), st.sampled_from(VALUES), st.sampled_from(VALUES)),
    st.builds(lambda i: delete(1, i), ids),
    st.builds(lambda i: status(1, i), ids),
)
bulks = st.lists(calls, min_size=1, max_size=3)


@settings(max_examples=600, deadline=None)
@given(bulks, bulks)
def test_independent_bulks_give_the_same_result_in_either_order(first: list[Any], second: list[Any]) -> None:
    a = footprint("0001", first, unique=UNIQUE, lookups=LOOKUPS)
    b = footprint("0001", second, unique=UNIQUE, lookups=LOOKUPS)
    assert conflict(a, b) == conflict(b, a) or (conflict(a, b) is None) == (conflict(b, a) is None)
    if independent(a, b):
        assert outcome(first, second, flip=False) == outcome(first, second, flip=True)


def _read(record: dict[str, Any], kind: str) -> dict[str, Any]:
    return {code: {"type": kind, "value": cell["value"]} for code, cell in record.items()}


@settings(max_examples=300, deadline=None)
@given(bulks, bulks, st.sampled_from(["SINGLE_LINE_TEXT", "NUMBER"]))
def test_reconciliation_never_takes_one_batchs_added_record_for_the_others(
    first: list[Any], second: list[Any], kind: str
) -> None:
    a, b = footprint("0001", first), footprint("0001", second)
    if not independent(a, b):
        return
    mine = [(q["payload"]["app"], r) for q in first if q["method"] == "POST" for r in q["payload"]["records"]]
    theirs = [
        (q["payload"]["app"], r) for q in second if q["method"] == "POST" for r in q["payload"]["records"]
    ]
    for app, sent in mine:
        for other in (r for other_app, r in theirs if other_app == app):
            assert not holds(sent, _read(other, kind))
            assert not holds(other, _read(sent, kind))


def test_adds_of_distinct_codes_go_together_and_their_reason_when_not() -> None:
    a = footprint("0001", [add(1, {"code": "a", "n": "1"}, {"code": "b", "n": "1"})])
    b = footprint("0001", [add(1, {"code": "c", "n": "1"})])
    assert independent(a, b)
    same_content = footprint("0001", [add(1, {"code": "a", "n": "1"})])
    assert conflict(a, same_content) == "app 1: both add records and no field tells them apart"
    # 7 and 7.0 may be one number in a NUMBER field: not told apart.
    assert not independent(
        footprint("0001", [add(1, {"code": "7"})]), footprint("0001", [add(1, {"code": "7.0"})])
    )


def test_what_stops_two_batches_going_together() -> None:
    base = footprint("0001", [update_id(1, 1, n="x")], unique=UNIQUE)
    assert (
        conflict(base, footprint("0002", [update_id(1, 2, n="x")])) == "they belong to different changesets"
    )
    assert conflict(base, footprint("0001", [update_id(1, 1, n="y")])) == "app 1: both write record 1"
    assert "by id, the other by key" in (conflict(base, footprint("0001", [update_key(1, "z", n="y")])) or "")
    assert independent(base, footprint("0001", [update_id(1, 2, n="y")], unique=UNIQUE))
    assert independent(
        base, footprint("0001", [update_id(4, 1, n="y")], lookups={1: frozenset(), 4: frozenset()})
    )
    # Without the unique fields, two records' values might be swapped: one order could fail.
    assert not independent(
        footprint("0001", [update_id(1, 1, n="x")]), footprint("0001", [update_id(1, 2, n="y")])
    )
    producer = footprint("0001", [add(1, {"code": "q"})], produces={"orders"})
    consumer = footprint("0001", [status(2, 5)], consumes={"orders"})
    assert conflict(producer, consumer) == "ref 'orders' is produced by one and consumed by the other"
    # Two producers of one ref may go together: its ids are kept by batch, in the order written.
    assert independent(producer, footprint("0001", [add(1, {"code": "r"})], produces={"orders"}))
    other = {"method": "POST", "api": "/k/v1/app.json", "payload": {"app": 1}}
    assert (conflict(base, footprint("0001", [other])) or "").startswith("request 0: POST /k/v1/app.json")
    unresolved = update_id(1, {"$ref": "orders", "index": 0}, n="x")  # type: ignore[arg-type]
    assert conflict(base, footprint("0001", [unresolved])) == "request 0: a record id that is not known yet"


def test_without_known_unique_fields_an_update_and_an_add_in_one_app_wait() -> None:
    up = footprint("0001", [update_id(1, 1, code="z")])
    new = footprint("0001", [add(1, {"code": "y"})])
    assert conflict(up, new) == "app 1: one may free a unique value the other may take"
    # Known: the update writes no unique field, so the add cannot meet a freed value.
    assert independent(
        footprint("0001", [update_id(1, 1, n="z")], unique=UNIQUE),
        footprint("0001", [add(1, {"code": "y"})], unique=UNIQUE),
    )


def test_value_keys_meet_where_kintone_may_hold_values_equal() -> None:
    assert value_keys("7") & value_keys(" 7.00 ")  # type: ignore[operator]
    assert value_keys("2024-01-01T09:00:00+09:00") & value_keys("2024-01-01T00:00:00Z")  # type: ignore[operator]
    assert not value_keys("a") & value_keys("b")  # type: ignore[operator]
    assert value_keys(["a"]) is None and value_keys({"code": "u"}) is None
    assert MAX_PARALLEL == 10


def test_a_write_to_an_app_another_looks_up_waits_for_the_lookups_reading_it() -> None:
    # Sequence: app 2's new record copies record 1's n as updated; at once it might copy the old.
    source = footprint("0001", [update_id(1, 1, n="9")], unique=UNIQUE, lookups=LOOKUPS)
    reader = footprint("0001", [add(2, {"ref": "a"})], unique=UNIQUE, lookups=LOOKUPS)
    assert conflict(source, reader) == "app 2 looks up app 1, which the other writes"
    assert conflict(reader, source) == conflict(source, reader)
    assert outcome([update_id(1, 1, n="9")], [add(2, {"ref": "a"})], flip=False) != outcome(
        [update_id(1, 1, n="9")], [add(2, {"ref": "a"})], flip=True
    )
    # An app looking itself up: two of its adds wait (one may name the other's record).
    first = footprint("0001", [add(3, {"code": "q", "n": "5"})], unique=UNIQUE, lookups=LOOKUPS)
    second = footprint("0001", [add(3, {"code": "r", "parent": "q"})], unique=UNIQUE, lookups=LOOKUPS)
    assert conflict(first, second) == "app 3 looks up app 3, which the other writes"
    # Known lookup-free apps go together; an app whose lookups are not known waits for any other.
    assert independent(
        footprint("0001", [update_id(1, 1, n="9")], unique=UNIQUE, lookups=LOOKUPS),
        footprint("0001", [update_id(3, 6, n="9")], unique=UNIQUE, lookups=LOOKUPS),
    )
    unknown = footprint("0001", [add(5, {"code": "q"})], lookups=LOOKUPS)
    assert conflict(unknown, reader) == (
        "app 5: its lookups are not known, and it may look up app 2, which the other writes"
    )
    assert independent(
        footprint("0001", [add(5, {"code": "q"})]), footprint("0001", [add(5, {"code": "r"})])
    )  # one app: the unique rules decide (the module's docstring says what that leaves)
