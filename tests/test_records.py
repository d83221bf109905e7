"""The record rules: one home, used by the loader (every problem) and the planner (the first)."""

from __future__ import annotations

import pytest

from kmigrate.changeset import RefIds
from kmigrate.records import (
    RESERVED_RECORD_KEYS,
    id_problems,
    key_text,
    normalise_record,
    record_problems,
    ref_index_problem,
    selection_problems,
    text_records_pass,
    unknown_field_message,
    unknown_fields,
)


@pytest.mark.parametrize(
    "kind, key, record, expected",
    [
        ("add", None, {"t": "x"}, []),
        ("add", None, {"id": 1, "$revision": 2}, ["`id` cannot be set", "`$revision` cannot be set"]),
        ("add", None, {"flag": True}, ["field `flag` holds true/false"]),
        ("add", None, {"rows": [{"value": {"ok": False}}]}, ["field `rows` holds true/false"]),
        ("add", None, {"": 1}, ["field code '' must be text"]),
        (
            "add",
            None,
            ["not", "a", "mapping"],
            ["a record is a mapping of field codes to values, not a list"],
        ),
        ("update", None, {"id": 3, "t": "x"}, []),
        ("update", None, {"t": "x"}, ["the record has no `id`"]),
        ("update", None, {"id": 0}, ["`id` must be positive, not 0"]),
        ("update", None, {"id": "12"}, []),
        ("update", None, {"id": {"ref": "o"}}, ["`id: {ref: NAME}` names many records"]),
        ("update", None, {"id": {"ref": "o", "index": 2}}, []),
        ("update", "code", {"code": "A", "id": 1}, ["must not also have `id`"]),
        ("update", "code", {"t": "x"}, ["the record has no `code`"]),
        ("update", "code", {"code": ""}, ["the key field `code` must hold a text or number value, not text"]),
        ("update", "code", {"code": {"value": 7, "type": "NUMBER"}}, []),
        ("upsert", "code", {"code": "A", "id": 1}, ["an upsert finds records by `key: code`, not by `id`"]),
        ("upsert", "code", {"t": "x"}, ["the record has no `code`"]),
        ("update", None, {"id": 1, "revision": -1}, []),
        ("update", None, {"id": 1, "revision": None}, []),  # null: no check
        ("update", None, {"id": 1, "revision": "2"}, ["`revision` must be a whole number"]),
        ("update", None, {"id": 1, "revision": True}, ["`revision` must be a whole number"]),
        ("update", None, {"id": 1, "revision": -2}, ["`revision` must be a whole number"]),
    ],
)
def test_record_problems(kind, key, record, expected):
    problems = record_problems(kind, key, record)
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected, strict=True):
        assert words in problem, (problem, words)


def test_the_planner_s_share_of_the_rules_is_how_a_record_is_found():
    # Field-level rules (bools, reserved codes on add) are the loader's; selection is both's.
    assert selection_problems("add", None, {"flag": True, "id": 1}) == []
    assert (
        selection_problems("update", None, {"flag": True})
        == record_problems("update", None, {"flag": True})[:1]
    )
    assert RESERVED_RECORD_KEYS == ("id", "revision", "$id", "$revision")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("A-1", "A-1"),
        (7, "7"),
        (7.0, "7"),
        (1.5, "1.5"),
        ({"value": "x"}, "x"),
        ("", None),
        (True, None),
        ([1], None),
    ],
)
def test_a_key_value_is_sent_as_text(value, expected):
    assert key_text(value) == expected


def test_ids_are_normalised_for_the_planner():
    record = {"id": {"ref": "o", "index": 1}}
    normalise_record(record)
    assert record["id"] == RefIds(ref="o", index=1) and id_problems(record["id"]) == []
    digits = {"id": "42"}
    normalise_record(digits)
    assert digits == {"id": 42}
    bad = {"id": {"ref": "o", "extra": 1}}
    normalise_record(bad)  # left as written: the rules report it
    assert bad == {"id": {"ref": "o", "extra": 1}} and "is not a valid ref" in id_problems(bad["id"])[0]


def test_a_ref_index_must_name_one_of_its_records():
    assert ref_index_problem("o", 1, 2) is None
    assert (
        ref_index_problem("o", 2, 2)
        == "ref 'o' index 2 is out of range: it names 2 records (indexes start at 0)"
    )
    assert "it names 1 record (" in str(ref_index_problem("o", 1, 1))


def test_unknown_field_codes_and_subtable_columns_are_found_once_each():
    fields = {"title": frozenset(), "lines": frozenset({"sku", "qty"})}
    reported: set[str] = set()
    record = {"id": 1, "$id": 1, "titel": "x", "lines": [{"sku": "A", "qyt": 1}, {"value": {"qyt": 2}}]}
    found = list(unknown_fields(fields, record, reported))
    assert [(path, code, table) for path, code, _known, table in found] == [
        (("titel",), "titel", None),
        (("lines", 0, "qyt"), "qyt", "lines"),
    ]
    assert list(unknown_fields(fields, record, reported)) == []  # each code once per operation
    message = unknown_field_message("titel", fields, 5, None)
    assert message.startswith("field `titel` is not a field of app 5 in the sandbox file")
    assert "did you mean `title`?" in message


_CODES = ("code", "note", "", "id", "revision", "$id", "$revision")


@pytest.mark.parametrize(
    "kind, key", [("add", None), ("update", None), ("update", "code"), ("upsert", "code")]
)
def test_text_records_pass_only_when_no_text_record_under_those_columns_has_a_problem(
    kind: str, key: str | None
) -> None:
    # Every set of columns a CSV file may have, and records of text under some of them.
    for mask in range(1 << len(_CODES)):
        columns = frozenset(c for bit, c in enumerate(_CODES) if mask >> bit & 1)
        records = [{}, {c: "7" for c in columns}, {c: "" for c in columns}] + [{c: "x"} for c in columns]
        failing = [r for r in records if record_problems(kind, key, r)]
        assert text_records_pass(kind, key, columns) == (kind == "add" and not failing), (kind, columns)


def test_text_records_pass_for_an_add_of_plain_columns_only() -> None:
    assert text_records_pass("add", None, {"code", "qty"})
    assert not text_records_pass("add", None, {"code", "$id"})
    assert not text_records_pass("add", None, {"code", ""})
    assert not text_records_pass("update", None, {"code"})
    assert not text_records_pass("upsert", "code", {"code"})
