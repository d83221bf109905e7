"""Validation against the apps' definitions: each rule with a clean case and a failing case,
and a project with one of each mistake reported all at once by `kmigrate validate`."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kmigrate import api
from kmigrate.cli import main
from kmigrate.config import load_project

ORDERS_YAML = """\
apps:
  - id: 1
    name: Orders
    api_tokens: [{token: tok-orders, permissions: [view, add, edit, delete, manage]}]
    fields:
      code: {type: SINGLE_LINE_TEXT, required: true, unique: true, maxLength: 8}
      amount: {type: NUMBER, minValue: 0, maxValue: 1000000}
      day: DATE
      at: TIME
      moment: DATETIME
      kind: {type: DROP_DOWN, options: [Retail, Wholesale]}
      channel: {type: RADIO_BUTTON, options: [Web, Shop]}
      tags: {type: CHECK_BOX, options: [gift, urgent]}
      regions: {type: MULTI_SELECT, options: [East, West]}
      title: SINGLE_LINE_TEXT
      lines:
        type: SUBTABLE
        fields:
          sku: {type: SINGLE_LINE_TEXT, required: true}
          qty: NUMBER
    process:
      enable: true
      states:
        Draft: {index: 0}
        Review: {index: 1, assignee: {type: ONE, entities: [alice, bob]}}
        Done: {index: 2}
      actions:
        - {name: Submit, from: Draft, to: Review}
        - {name: Approve, from: Review, to: Done}
  - id: 2
    name: Notes
    fields:
      text: SINGLE_LINE_TEXT
"""


def project(tmp_path: Path, *changesets: str, data: dict[str, str] | None = None) -> Path:
    root = tmp_path / "p"
    (root / "changesets" / "data").mkdir(parents=True)
    (root / "sandbox.yaml").write_text(ORDERS_YAML)
    (root / "kmigrate.toml").write_text(
        'default_env = "sandbox"\n[env.sandbox]\nsandbox = "sandbox.yaml"\napps = { orders = 1, notes = 2 }\n'
    )
    for i, text in enumerate(changesets, 1):
        (root / "changesets" / f"V{i:04d}__c{i}.yaml").write_text(textwrap.dedent(text))
    for name, text in (data or {}).items():
        (root / "changesets" / "data" / name).write_text(text)
    return root


def problems(root: Path) -> list[str]:
    p = load_project(root)
    return [str(e) for e in api.validate(api.Context(p, p.environment())).errors]


def add(record: str) -> str:
    return f"operations:\n  - add:\n      app: orders\n      records:\n        - {record}\n"


@pytest.mark.parametrize(
    "record, refused",
    [
        ("{code: A1, amount: 12000}", None),
        ("{code: A1, amount: '12,000'}", "field `amount` (NUMBER) = '12,000': Only numbers are allowed"),
        ("{code: A1, amount: -1}", "The value must be 0 or more"),
        ("{code: A1, amount: 2000000}", "The value must be 1000000 or less"),
        ("{code: A1, day: 2024-07-01}", None),
        ("{code: A1, day: 2024/07/01}", "field `day` (DATE) = '2024/07/01'"),
        ("{code: A1, at: '09:30'}", None),
        ("{code: A1, at: '25:00'}", "field `at` (TIME)"),
        ("{code: A1, moment: '2024-07-01T09:30:00Z'}", None),
        ("{code: A1, moment: '2024-07-01 09:30'}", "field `moment` (DATETIME)"),
        ("{code: A1, kind: Retail}", None),
        ("{code: A1, kind: Retial}", "did you mean 'Retail'?"),
        ("{code: A1, channel: Web}", None),
        ("{code: A1, channel: Phone}", "field `channel` (RADIO_BUTTON)"),
        ("{code: A1, tags: [gift]}", None),
        ("{code: A1, tags: [gift, rush]}", "field `tags` (CHECK_BOX)"),
        ("{code: A1, regions: [East]}", None),
        ("{code: A1, regions: [North]}", "field `regions` (MULTI_SELECT)"),
        ("{code: ABCDEFGH}", None),
        ("{code: ABCDEFGHI}", "Enter no more than 8 characters"),
        ("{code: A1, lines: [{sku: S1, qty: 2}]}", None),
        ("{code: A1, lines: [{sku: S1, qty: '2,000'}]}", "table `lines` row 1, column `qty` (NUMBER)"),
        ("{code: A1, lines: [{qty: 2}]}", "table `lines` row 1, column `sku` (SINGLE_LINE_TEXT) is required"),
        ("{title: no code}", "field `code` (SINGLE_LINE_TEXT) is required and not given"),
        ("{code: ''}", "field `code` (SINGLE_LINE_TEXT) is required and empty"),
    ],
)
def test_each_value_rule(tmp_path, record, refused):
    found = problems(project(tmp_path, add(record)))
    if refused is None:
        assert found == []
    else:
        assert len(found) == 1 and refused in found[0], found
        assert "V0001__c1.yaml:5" in found[0] and "operation 1" in found[0] and "record 1" in found[0]
        assert "hint:" in found[0]  # every refusal says what to do


def test_required_is_for_add_only(tmp_path):
    update = "operations:\n  - update:\n      app: orders\n      records:\n        - {id: 1, title: x}\n"
    assert problems(project(tmp_path, update)) == []
    empty = "operations:\n  - update:\n      app: orders\n      records:\n        - {id: 1, code: ''}\n"
    (found,) = problems(project(tmp_path / "b", empty))
    assert "`code` (SINGLE_LINE_TEXT) is required and empty" in found


def test_unique_within_what_the_project_writes(tmp_path):
    assert problems(project(tmp_path, add("{code: A1}"), add("{code: A2}"))) == []
    found = problems(project(tmp_path / "b", add("{code: A1}"), add("{code: A1}")))
    assert len(found) == 1 and "V0002__c2.yaml:5" in found[0]
    assert "field `code` is unique in the app, and 'A1' is already written by" in found[0]
    assert "V0001__c1.yaml:5" in found[0]


def test_a_duplicate_in_a_big_data_file_names_the_first_record_that_wrote_the_value(tmp_path):
    rows = "code\n" + "".join(f"C{i}\n" for i in range(3000)) + "C0007\nC7\n"
    csv_add = "operations:\n  - add: {app: orders, records_from: data/rows.csv}\n"
    (found,) = problems(project(tmp_path, csv_add, data={"rows.csv": rows}))
    assert "'C7' is already written by " in found and "rows.csv:9 (record 8): Kintone refuses" in found
    assert (
        "rows.csv:3003" in found and "record 3002" in found
    )  # where the second write is (C0..C7: lines 2-9)


def test_the_unique_values_index_tells_values_apart_and_keeps_the_first_writer():
    from kmigrate.appcheck import _Values

    values = _Values()
    assert [values.first(f"v{i}", i) for i in range(20_000)] == [None] * 20_000
    assert [values.first(f"v{i}", 50_000 + i) for i in (0, 4096, 19_999)] == [0, 4096, 19_999]
    assert values.first("v20000", 7) is None and values.first("v20000", 8) == 7
    assert values.first("ü\ud800", 1) is None and values.first("ü\ud800", 2) == 1  # any text


def test_update_key_must_be_a_unique_field(tmp_path):
    good = "operations:\n  - update:\n      app: orders\n      key: code\n      records: [{code: A1, title: x}]\n"
    assert problems(project(tmp_path, good)) == []
    bad = "operations:\n  - upsert:\n      app: orders\n      key: title\n      records: [{title: x}]\n"
    (found,) = problems(project(tmp_path / "b", bad))
    assert "`key: title`" in found and "cannot be used as updateKey" in found and "V0001__c1.yaml:2" in found


def status(action: str, assignee: str | None = None, records: str = "{ref: new}") -> str:
    extra = f", assignee: {assignee}" if assignee else ""
    return f"  - status: {{app: orders, records: {records}, action: {action}{extra}}}\n"


NEW = "operations:\n  - add: {app: orders, ref: new, records: [{code: A1}, {code: A2}]}\n"


def test_process_actions_follow_the_states_the_records_reach(tmp_path):
    clean = NEW + status("Submit", "alice") + status("Approve")
    assert problems(project(tmp_path, clean)) == []
    misspelt = NEW + status("Sumbit", "alice")
    (found,) = problems(project(tmp_path / "b", misspelt))
    assert "has no action 'Sumbit'" in found and "did you mean 'Submit'?" in found and "c1.yaml:3" in found
    unreachable = NEW + status("Approve")
    (found,) = problems(project(tmp_path / "c", unreachable))
    assert "action 'Approve' cannot run from status 'Draft'" in found and "offers: Submit" in found


def test_action_on_records_by_id_only_needs_to_exist(tmp_path):
    by_id = "operations:\n" + status("Approve", records="[5, 6]")
    assert problems(project(tmp_path, by_id)) == []
    (found,) = problems(project(tmp_path / "b", "operations:\n" + status("Aprove", records="[5]")))
    assert "has no action 'Aprove'" in found and "did you mean 'Approve'?" in found


def test_assignee_for_a_one_assignee_state(tmp_path):
    (found,) = problems(project(tmp_path, NEW + status("Submit")))
    assert "Specify the assignee: the status 'Review' takes one of alice, bob" in found
    (found,) = problems(project(tmp_path / "b", NEW + status("Submit", "carol")))
    assert "'carol' is not an assignee candidate" in found
    two = (
        NEW
        + status("Submit", "alice")
        + "  - assignees: {app: orders, id: {ref: new, index: 0}, assignees: [alice, bob]}\n"
    )
    (found,) = problems(project(tmp_path / "c", two))
    assert "The status 'Review' takes one assignee; 2 were given" in found
    one = (
        NEW
        + status("Submit", "alice")
        + "  - assignees: {app: orders, id: {ref: new, index: 0}, assignees: [bob]}\n"
    )
    assert problems(project(tmp_path / "d", one)) == []


def test_status_on_an_app_without_process(tmp_path):
    (found,) = problems(
        project(tmp_path, "operations:\n  - status: {app: notes, records: [1], action: Go}\n")
    )
    assert "no process management enabled" in found


def test_records_of_a_data_file_are_located_at_their_line(tmp_path):
    csv_text = 'code,amount,day\nA1,100,2024-07-01\nA2,"12,000",2024/07/02\n'
    root = project(
        tmp_path,
        "operations:\n  - add: {app: orders, records_from: data/orders.csv}\n",
        data={"orders.csv": csv_text},
    )
    found = problems(root)
    assert len(found) == 2
    assert all("data/orders.csv:3" in f and "record 2" in f for f in found)


ONE_OF_EACH = [
    # (changeset text, what the report must say)
    (
        "operations:\n"
        "  - add:\n"
        "      app: orders\n"
        "      ref: batch\n"
        "      records:\n"
        "        - {code: A1, amount: '12,000'}\n"  # NUMBER with a thousands separator
        "        - {code: A2, day: 2024/07/01}\n"  # DATE with slashes
        "        - {code: A3, kind: Online}\n"  # not an option
        "        - {title: no code}\n"  # required left out
        "        - {code: A1}\n"  # unique written twice
        "  - status: {app: orders, records: {ref: batch}, action: Sumbit}\n"  # no such action
        "  - update: {app: orders, key: title, records: [{title: x}]}\n",  # key not unique
        [
            "c1.yaml:6",
            "c1.yaml:7",
            "c1.yaml:8",
            "c1.yaml:9",
            "c1.yaml:10",
            "c1.yaml:11",
        ],
    ),
    (
        "operations:\n  - update: {app: orders, records: [{id: {ref: batch, index: 9}, title: y}]}\n",
        ["c2.yaml:2"],  # a ref index past the end of its producer's records
    ),
]


def test_a_project_with_one_of_each_mistake_gets_every_one_reported(tmp_path):
    root = project(tmp_path, *(text for text, _ in ONE_OF_EACH))
    result = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert result.exit_code == 2
    out = result.output
    for _, places in ONE_OF_EACH:
        for where in places:
            assert where in out, where
    for said in (
        "Only numbers are allowed",
        "Enter a date in the format YYYY-MM-DD",
        "The value must be one of the options",
        "is required and not given",
        "is unique in the app",
        "has no action 'Sumbit'",
        "cannot be used as updateKey",
        "index 9 is out of range",
    ):
        assert said in out, said
    assert "problems found; nothing was sent" in out
    assert not (root / ".kmigrate" / "sandbox.db").exists()  # nothing journaled
    sandbox_store = root / ".kmigrate" / "sandbox-sandbox.sqlite3"
    assert not sandbox_store.exists()  # the sandbox was never even opened: nothing sent


def test_every_mistake_of_one_file_is_reported_even_beside_a_ref_error(tmp_path):
    one_file = (
        ONE_OF_EACH[0][0] + "  - update: {app: orders, records: [{id: {ref: batch, index: 9}, title: y}]}\n"
    )
    result = CliRunner().invoke(main, ["-C", str(project(tmp_path, one_file)), "validate"])
    assert result.exit_code == 2
    assert "index 9 is out of range" in result.output and "c1.yaml:13" in result.output
    for where in ONE_OF_EACH[0][1]:
        assert where in result.output, where
    assert "8 problems found" in result.output


def test_apply_refuses_before_sending(tmp_path):
    root = project(tmp_path, add("{code: A1, amount: '12,000'}"))
    result = CliRunner().invoke(main, ["-C", str(root), "apply"])
    assert result.exit_code == 2 and "Only numbers are allowed" in result.output
    assert not (root / ".kmigrate" / "sandbox-sandbox.sqlite3").exists()


def test_a_ref_index_past_the_end_of_a_csv_producer_is_caught_by_validate(tmp_path):
    root = project(
        tmp_path,
        "operations:\n  - add: {app: notes, ref: n, records_from: data/n.csv}\n",
        "operations:\n  - update: {app: notes, records: [{id: {ref: n, index: 3}, text: x}]}\n",
        data={"n.csv": "text\na\nb\nc\n"},
    )
    result = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert result.exit_code == 2 and "index 3 is out of range: it names 3 records" in result.output
    ok = project(
        tmp_path / "b",
        "operations:\n  - add: {app: notes, ref: n, records_from: data/n.csv}\n",
        "operations:\n  - update: {app: notes, records: [{id: {ref: n, index: 2}, text: x}]}\n",
        data={"n.csv": "text\na\nb\nc\n"},
    )
    assert CliRunner().invoke(main, ["-C", str(ok), "validate"]).exit_code == 0


# ---- the fast path: a record's values by the rules compiled per field ----------------------

FAST_FIELDS = """\
code: {type: SINGLE_LINE_TEXT, required: true, unique: true, maxLength: 8}
amount: {type: NUMBER, minValue: 0, maxValue: 1000000}
qty: NUMBER
day: DATE
at: TIME
kind: {type: DROP_DOWN, options: [Retail, Wholesale], required: true, defaultValue: Retail}
size: {type: DROP_DOWN, options: [S, M], required: true}
channel: {type: RADIO_BUTTON, options: [Web, Shop]}
tags: {type: CHECK_BOX, options: [gift, urgent]}
title: {type: SINGLE_LINE_TEXT, minLength: 2}
memo: {type: MULTI_LINE_TEXT, minLength: 1, defaultValue: "x"}
moment: DATETIME
total: {type: CALC, expression: qty}
revision: NUMBER  # a field named as a reserved key: never written as a field
lines:
  type: SUBTABLE
  fields:
    sku: {type: SINGLE_LINE_TEXT, required: true}
"""
_FAST_CODES = ["code", "amount", "qty", "day", "at", "kind", "size", "channel", "tags", "title", "memo"]
_FAST_CODES += ["moment", "total", "lines", "id", "revision", "unknown"]
_fast_values = st.one_of(
    st.sampled_from(
        ["A1", "ABCDEFGHI", "", "42", "007", "-3", "1.5", "12,000", "2000000", "Retail", "S", "M"]
    ),
    st.sampled_from(["Web", "Phone", "2024-07-01", "2024-7-1", "2024-02-30", "09:30", "24:00", "ok", "x"]),
    st.sampled_from(["2024-07-01T09:30:00Z", "gift"]),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.integers(-5, 2_000_000),
    st.lists(st.sampled_from(["gift", "rush", "urgent"]), max_size=2),
    st.just([{"sku": "S1"}]),
    st.just([{"qty": 2}]),
)


@functools.cache  # once per process: the property below spent most of its time parsing this YAML
def _fast_schema():
    import yaml

    from kmigrate.appschema import AppSchema, parse_fields

    fields, system, _layout = parse_fields(yaml.safe_load(FAST_FIELDS))
    return AppSchema(fields=fields, system=system)


# 800 (was 3,000): every branch of kmigrate/appcheck.py and fieldrules.py the 3,000 reached is
# still reached (`coverage run --branch`, this property alone, 2026-12-02); the example pins
# the two that came up rarely (an unbounded number kept as written, a zero).
@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@example(kind="add", record={"code": "A1", "size": "S", "amount": 0, "qty": "12", "title": "ok"})
@given(
    kind=st.sampled_from(["add", "update", "upsert"]),
    record=st.one_of(
        st.dictionaries(st.sampled_from(_FAST_CODES), _fast_values, max_size=7),
        # mostly good records with a few values of any kind: near misses of the fast path
        st.builds(
            lambda good, other: {**good, **other},
            st.fixed_dictionaries(
                {"code": st.sampled_from(["A1", "B2"]), "size": st.just("S")},
                optional={"amount": st.just("12"), "qty": st.just("007"), "day": st.just("2024-07-01")},
            ),
            st.dictionaries(st.sampled_from(_FAST_CODES), _fast_values, max_size=2),
        ),
    ),
)
def test_a_record_the_fast_path_accepts_is_one_the_generic_path_finds_nothing_in(kind, record):
    from kmigrate.appcheck import _accepted, _generic_problems, _Shape

    schema = _fast_schema()
    shape = _Shape.of(schema)  # as appcheck does: once per operation, for every record of it
    accepted = _accepted(kind, record, shape)
    if accepted is not None:
        assert _generic_problems(kind, record, schema, shape) == ([], accepted), (kind, record)


def test_the_fast_path_takes_the_common_records_and_leaves_the_rest_to_the_generic_path():
    from kmigrate.appcheck import _accepted, _Shape

    shape = _Shape.of(_fast_schema())
    plain = {"code": "A1", "amount": "12", "qty": "007", "size": "S", "day": "2024-07-01", "title": "ok"}
    assert _accepted("add", plain, shape) == {**plain, "qty": "7"}
    assert _accepted("update", {"id": 3, "amount": 5}, shape) == {"amount": "5"}
    for refused in ({"amount": "12,000"}, {"size": ""}, {"code": ""}, {"lines": [{"sku": "S1"}]}):
        assert _accepted("add", {**plain, **refused}, shape) is None, refused
    assert _accepted("add", {k: v for k, v in plain.items() if k != "size"}, shape) is None  # required
    assert (
        _accepted("add", {k: v for k, v in plain.items() if k != "title"}, shape) is None
    )  # too short unsent
    assert _accepted("update", {"id": 3, "title": "x"}, shape) is None  # too short


# Runs of records that give the same fields, checked a column at a time (a data file's, read
# back by column): the verdict is each record's own fast-path verdict, and so the generic one's.
_GOOD = {"code": "A1", "amount": "12", "qty": "007", "size": "S", "day": "2024-07-01", "title": "ok"}


def _runs():
    def rows_for(codes):
        value = {c: st.one_of(st.just(_GOOD.get(c, "x")), _fast_values) for c in codes}
        return st.tuples(
            st.just(tuple(codes)), st.lists(st.tuples(*[value[c] for c in codes]), min_size=1, max_size=4)
        )

    # mostly the fields an add needs (so that whole runs pass), and a few others
    extra = st.lists(st.sampled_from(_FAST_CODES), max_size=4, unique=True)
    codes = st.one_of(
        extra, extra.map(lambda more: ["code", "size", *[c for c in more if c not in ("code", "size")]])
    )
    return codes.filter(bool).flatmap(rows_for)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@example(kind="add", run=(("code", "size"), [("A1", "S"), ("B2", "M")]))  # whole, no title: too short unsent
@example(kind="add", run=(("code", "size", "title"), [("A1", "S", "ok"), ("B2", "M", "ok")]))
@example(kind="add", run=(("code", "size", "title"), [("A1", "S", "ok"), ("", "M", "ok")]))
@example(kind="update", run=(("amount",), [("12",), ("-1",)]))
@given(kind=st.sampled_from(["add", "update", "upsert"]), run=_runs())
def test_a_run_checked_by_column_gets_each_records_own_verdict(kind, run):
    from kmigrate.appcheck import _accepted, _accepted_columns, _Shape
    from kmigrate.changeset import Columns

    shape = _Shape.of(_fast_schema())
    codes, rows = run
    records = [dict(zip(codes, row, strict=True)) for row in rows]
    chunk = Columns(tuple(codes), tuple(range(2, 2 + len(rows))), tuple(zip(*rows, strict=True)))
    each = [_accepted(kind, record, shape) for record in records]
    stored = _accepted_columns(kind, chunk, shape)
    if any(one is None for one in each):
        assert stored is None
    else:
        assert stored is not None
        assert [{code: column[i] for code, column in stored.items()} for i in range(len(rows))] == each


def test_a_data_file_read_by_column_is_checked_as_one_read_record_by_record(tmp_path, monkeypatch):
    """Every problem of a CSV file found and placed alike, whether its runs of records are
    checked by column or each record alone: bad values, required ones left empty, duplicates
    within a run and across runs, records that omit a field (empty cells) beside ones that do not."""
    from kmigrate import appcheck

    rows = ["code,amount,kind"]
    for i in range(2600):
        amount = {5: "abc", 1500: "-1"}.get(i, str(i))
        code = {7: "C2", 2100: "C1000", 2400: ""}.get(i, f"C{i}")
        rows.append(f"{code},{amount},{'' if i % 700 == 3 else 'Retail'}")
    csv_add = "operations:\n  - add: {app: orders, records_from: data/rows.csv}\n"
    root = project(tmp_path, csv_add, data={"rows.csv": "\n".join(rows) + "\n"})
    by_column = problems(root)
    monkeypatch.setattr(appcheck, "_accepted_columns", lambda kind, chunk, shape: None)
    assert problems(root) == by_column
    joined = "\n".join(by_column)
    assert len(by_column) == 5
    for expected in (
        "rows.csv:7, changeset V0001__c1, operation 1, record 6, add orders: field `amount` (NUMBER) = 'abc'",
        "rows.csv:9, changeset V0001__c1, operation 1, record 8, add orders: field `code` is unique",
        "rows.csv:1502, changeset V0001__c1, operation 1, record 1501, add orders: field `amount` (NUMBER) = '-1'",
        "'C1000' is already written by ",
        "rows.csv:2402, changeset V0001__c1, operation 1, record 2401, add orders: field `code` "
        "(SINGLE_LINE_TEXT) is required and not given",
    ):
        assert expected in joined, expected
    assert "rows.csv:1002 (record 1001)" in joined  # the first writer, in another run


def test_a_source_without_chunks_is_read_once_a_thousand_records_at_a_time():
    from kmigrate.appcheck import _chunks_of
    from kmigrate.changeset import AddOp

    class Source:  # a RecordSource of another kind: iterable, no ``chunks``
        path, passes = "data/rows.csv", 0

        def __iter__(self):
            Source.passes += 1
            return ((i + 2, {"code": f"C{i}"}) for i in range(2_500))

    body = AddOp(app="orders", records_from="data/rows.csv").model_copy(update={"source": Source()})
    chunks = list(_chunks_of(body))
    assert [(position, len(chunk)) for position, chunk in chunks] == [(0, 1000), (1000, 1000), (2000, 500)]
    assert chunks[2][1][-1] == (2501, {"code": "C2499"}) and Source.passes == 1
