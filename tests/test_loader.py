"""The loader: files -> Jinja -> YAML -> models, with lines, refs, data files and checksums."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from kmigrate import api, loader
from kmigrate.changeset import RefIds
from kmigrate.config import load_project
from kmigrate.datafiles import DataFile
from kmigrate.errors import ChangesetError

from .changeset_projects import errors, load, project

# ---- validation --------------------------------------------------------------------------------


def test_refs_work_across_changesets_and_are_parsed(tmp_path):
    files = {
        "changesets/V1__a.yaml": "operations:\n  - add: {app: orders, ref: o, records: [{t: a}, {t: b}]}\n",
        "changesets/V2__b.yaml": """\
operations:
  - status: {app: orders, records: {ref: o}, action: Submit}
  - update: {app: orders, records: [{id: {ref: o, index: 1}, t: c}]}
  - assignees: {app: orders, id: {ref: o, index: 0}, assignees: [alice]}
  - delete: {app: orders, ids: [{ref: o, index: 0}, 5]}
""",
    }
    loaded = load(tmp_path, files)
    second = loaded[1]
    assert second.operations[0].body.records == RefIds(ref="o")
    assert list(second.operations[1].iter_records())[0]["id"] == RefIds(ref="o", index=1)


def test_all_problems_of_a_file_are_reported_and_a_failed_producer_does_not_cascade(tmp_path):
    text = """\
operations:
  - add: {app: orders, ref: o, records: [{t: a}], colour: red}
  - status: {app: orders, records: {ref: o}, action: Go}
  - delete: {app: nope, ids: [1]}
  - status: {app: orders, records: {ref: ghost}, action: Go}
"""
    found = errors(tmp_path, {"changesets/V1__a.yaml": text})
    assert len(found) == 3, found
    assert "V1__a.yaml:2" in found[0] and "unknown key `colour`" in found[0]
    assert "V1__a.yaml:4" in found[1] and "unknown app alias 'nope'" in found[1]
    assert "V1__a.yaml:5" in found[2] and "'ghost'" in found[2]


def test_load_raises_one_error_listing_every_problem(tmp_path):
    proj = project(
        tmp_path,
        {
            "changesets/V1__a.yaml": "operations:\n  - delete: {app: nope, ids: [1]}\n",
            "changesets/V2__b.yaml": "operations: [}\n",
        },
    )
    with pytest.raises(ChangesetError) as info:
        loader.load_project_changesets(proj, proj.environment())
    text = str(info.value)
    assert (
        text.startswith("2 problems in the changesets:") and "V1__a.yaml:2" in text and "V2__b.yaml:1" in text
    )


# ---- data files --------------------------------------------------------------------------------


CSV = 'order_no,amount,tags[],note\nA-1,100,x|y,\nA-2,200,,"two\nlines"\n\nA-3,300,z,c\n'


def test_csv_records_stream_with_their_lines_and_the_documented_cell_rules(tmp_path):
    files = {
        "changesets/data/o.csv": CSV,
        "changesets/V1__a.yaml": "operations:\n  - add: {app: orders, ref: o, records_from: data/o.csv}\n",
    }
    [cs] = load(tmp_path, files)
    source = cs.operations[0].body.source
    assert list(source) == [
        (2, {"order_no": "A-1", "amount": "100", "tags": ["x", "y"]}),
        (3, {"order_no": "A-2", "amount": "200", "note": "two\nlines"}),
        (6, {"order_no": "A-3", "amount": "300", "tags": ["z"], "note": "c"}),
    ]
    assert list(source) == list(source)  # re-iterable: each pass re-reads the file
    assert [r["order_no"] for r in cs.operations[0].iter_records()] == ["A-1", "A-2", "A-3"]
    where = str(cs.location(0, 2))
    assert "o.csv:6" in where and "record 3" in where and "V1__a" in where


def test_decimal_numbers_in_records_keep_the_digits_written(tmp_path):
    # A float would send 1.2345678901234568e+16 to a NUMBER field and "1.5" for a code "1.50".
    (tmp_path / "a.json").write_text('[{"amount": 12345678901234567.89, "code": 1.50, "n": 7}]')
    (tmp_path / "a.jsonl").write_text('{"amount": 1e3}\n')
    assert list(DataFile(tmp_path / "a.json", "a.json")) == [
        (1, {"amount": "12345678901234567.89", "code": "1.50", "n": 7})
    ]
    assert list(DataFile(tmp_path / "a.jsonl", "a.jsonl")) == [(1, {"amount": "1e3"})]
    [cs] = load(
        tmp_path,
        {"changesets/V0001__a.yaml": "operations:\n  - add: {app: orders, records: [{amount: 0.10}]}\n"},
    )
    assert list(cs.operations[0].iter_records()) == [{"amount": "0.10"}]


def test_update_from_csv_reads_ids_as_numbers(tmp_path):
    files = {
        "changesets/data/u.csv": "id,revision,t\n5,2,a\n",
        "changesets/V1__a.yaml": "operations:\n  - update: {app: orders, records_from: data/u.csv}\n",
    }
    [cs] = load(tmp_path, files)
    assert list(cs.operations[0].iter_records()) == [{"id": 5, "revision": 2, "t": "a"}]


def _peak_memory_of_loading(folder: Path, rows: int) -> int:
    """tracemalloc's peak while loading (and iterating) a changeset whose data file has ``rows`` rows."""
    folder.mkdir()
    with open(folder / "big.csv", "w") as handle:
        handle.write("code,name,amount\n")
        for i in range(rows):
            handle.write(f"C-{i:06d},Customer number {i},{i * 3}\n")
    files = {"changesets/V1__a.yaml": "operations:\n  - add: {app: customers, records_from: ../big.csv}\n"}
    proj = project(folder, files)
    env = proj.environment()
    tracemalloc.start()
    try:
        [cs] = loader.load_project_changesets(proj, env)
        count = sum(1 for _ in cs.operations[0].iter_records())
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows and cs.operations[0].body.source.count == rows
    return peak


def test_a_big_data_file_is_streamed_not_held(tmp_path):
    # Relative, so it holds on any interpreter: ten times the rows must not take (nearly) ten
    # times the memory. Held, 20,000 rows take ~10x what 2,000 do; streamed, ~1.5x (CPython 3.11).
    small = _peak_memory_of_loading(tmp_path / "small", 2_000)
    big = _peak_memory_of_loading(tmp_path / "big", 20_000)
    assert big < 3 * small, (small, big)


# ---- checksums ---------------------------------------------------------------------------------


def test_source_checksum_ignores_line_endings_and_rendered_checksum_sees_data_and_vars(tmp_path):
    text = (
        "# {{ vars.region }}\noperations:\n  - add: {app: orders, records_from: data/o.csv}\n"
        "  - add: {app: orders, records: [{r: '{{ vars.region }}'}]}\n"
    )
    files = {"changesets/data/o.csv": "a\n1\n", "changesets/V1__a.yaml": text}
    [first] = load(tmp_path, files)
    [crlf] = load(tmp_path, {"changesets/V1__a.yaml": text.replace("\n", "\r\n").encode()})
    assert crlf.source_checksum == first.source_checksum and crlf.rendered_checksum == first.rendered_checksum

    [comment] = load(tmp_path, {"changesets/V1__a.yaml": "# a comment\n" + text})
    assert comment.source_checksum != first.source_checksum
    assert comment.rendered_checksum == first.rendered_checksum  # the operations did not change

    [other_var] = load(tmp_path, {"changesets/V1__a.yaml": text}, overrides={"region": "us"})
    assert (
        other_var.source_checksum == first.source_checksum
        and other_var.rendered_checksum != first.rendered_checksum
    )

    [other_data] = load(tmp_path, {"changesets/data/o.csv": "a\n2\n"})
    assert (
        other_data.source_checksum == first.source_checksum
        and other_data.rendered_checksum != first.rendered_checksum
    )


def test_the_rendered_checksum_is_deterministic_and_order_sensitive(tmp_path):
    a = "operations:\n  - delete: {app: orders, ids: [1]}\n  - delete: {app: orders, ids: [2]}\n"
    b = "operations:\n  - delete: {app: orders, ids: [2]}\n  - delete: {app: orders, ids: [1]}\n"
    [x] = load(tmp_path, {"changesets/V1__a.yaml": a})
    [y] = load(tmp_path, {"changesets/V1__a.yaml": a})
    [z] = load(tmp_path, {"changesets/V1__a.yaml": b})
    assert x.rendered_checksum == y.rendered_checksum != z.rendered_checksum


def test_the_example_project_loads(tmp_path):
    root = Path(__file__).resolve().parent.parent
    proj = load_project(root)
    changesets = loader.load_project_changesets(proj, proj.environment())
    kinds = {op.kind for cs in changesets for op in cs.operations}
    assert kinds == {"add", "update", "upsert", "delete", "status", "assignees", "request"}
    json.dumps([cs.rendered_checksum for cs in changesets])


def test_an_applied_unchanged_changeset_is_not_checked_record_by_record(tmp_path, monkeypatch):
    from kmigrate.plan import APPLIED, PENDING, JournaledChangeset

    rows = "order_no\n" + "".join(f"N{i}\n" for i in range(50))
    files = {
        "changesets/V0001__a.yaml": "operations:\n  - add: {app: orders, ref: a, records_from: data/a.csv}\n",
        "changesets/data/a.csv": rows,
    }
    (first,) = load(tmp_path, files)
    proj = load_project(tmp_path)
    built = []  # one per row parsed, as a record or as cells
    real = DataFile._read
    monkeypatch.setattr(
        DataFile, "_read", lambda self, rows: (built.append(1) or pair for pair in real(self, rows))
    )

    def journal(state):
        return {
            "0001": JournaledChangeset(
                "0001", first.source_checksum, first.rendered_checksum, batch_states={0: state}
            )
        }

    (trusted,) = loader.load_project_changesets(proj, proj.environment(), journal(APPLIED))
    assert built == [] and trusted.operations[0].body.source.count == 50  # counted, not built
    assert trusted.rendered_checksum == first.rendered_checksum
    loader.load_project_changesets(proj, proj.environment(), journal(PENDING))
    assert len(built) == 50  # not applied yet: every record is read and checked

    (tmp_path / "changesets/data/a.csv").write_text(rows + "N50\n")  # changed: never trusted
    built.clear()
    (changed,) = loader.load_project_changesets(proj, proj.environment(), journal(APPLIED))
    assert len(built) == 51 and changed.rendered_checksum != first.rendered_checksum


def test_an_applied_unchanged_data_file_is_counted_only_when_its_count_is_asked(tmp_path, monkeypatch):
    """A no-op re-run reads such a file once, as bytes, for its checksum: not split into rows."""
    from kmigrate.plan import APPLIED, JournaledChangeset

    files = {
        "changesets/V0001__a.yaml": "operations:\n  - add: {app: orders, records_from: data/a.csv}\n",
        "changesets/data/a.csv": "order_no\n" + "".join(f"N{i}\n" for i in range(30)),
    }
    (first,) = load(tmp_path, files)
    proj = load_project(tmp_path)
    counted = []
    real = DataFile.count
    monkeypatch.setattr(DataFile, "count", lambda self: counted.append(self.path) or real(self))
    state = {
        "0001": JournaledChangeset(
            "0001", first.source_checksum, first.rendered_checksum, batch_states={0: APPLIED}
        )
    }
    (trusted,) = loader.load_project_changesets(proj, proj.environment(), state)
    plan = api.build_plan([trusted], proj.environment(), state)
    assert plan.changesets[0].state == APPLIED and counted == []
    assert trusted.operations[0].body.record_count == 30 and len(counted) == 1  # asked: counted once
    assert trusted.operations[0].body.record_count == 30 and len(counted) == 1


SANDBOX_APPS = """\
apps:
  - id: 1
    name: Orders
    fields:
      order_no: {type: SINGLE_LINE_TEXT}
      priority: {type: DROP_DOWN, options: [High, Low]}
      lines: {type: SUBTABLE, fields: {sku: {type: SINGLE_LINE_TEXT}, qty: {type: NUMBER}}}
"""


def test_field_codes_unknown_to_the_sandbox_app_are_errors_with_a_suggestion(tmp_path):
    # Kintone drops the value of an unknown field code without a word: a typo would lose data.
    changeset = """\
operations:
  - add:
      app: orders
      records:
        - {order_no: A, Created_by: {value: {code: alice}}}
        - order_no: B
          prority: High
          lines:
            - {sku: X, qyt: 2}
        - {order_no: C, prority: Low}
  - update:
      app: orders
      key: order_no
      records_from: data/o.csv
"""
    files = {
        "sandbox.yaml": SANDBOX_APPS,
        "changesets/V0001__a.yaml": changeset,
        "changesets/data/o.csv": "order_no,Priority\nA,High\nB,Low\n",
    }
    proj = project(tmp_path, files)
    env = proj.environment()
    # The edge (api) reads the apps' fields from the sandbox file and hands them to the loader.
    _loaded, errs = loader.load_all(proj, env, known_fields=api.sandbox_fields(env))
    found = [str(e) for e in errs]
    assert len(found) == 3, found  # `prority` once for the operation, `Priority` once for the file
    assert "V0001__a.yaml:7" in found[0] and "`prority`" in found[0] and "did you mean `priority`" in found[0]
    assert (
        "V0001__a.yaml:9" in found[1]
        and "`qyt` is not a field of subtable `lines`" in found[1]
        and "`qty`" in found[1]
    )
    assert "o.csv:2" in found[2] and "`Priority`" in found[2] and "`priority`" in found[2]
    # Without the field list (a real Kintone's fields are not known offline) the same files load,
    # every field code kept as written.
    production = proj.environment("production")
    assert api.sandbox_fields(production) == {}
    [cs] = loader.load_project_changesets(proj, production, known_fields=api.sandbox_fields(production))
    assert [sorted(r) for r in cs.operations[0].body.records] == [
        ["Created_by", "order_no"],
        ["lines", "order_no", "prority"],
        ["order_no", "prority"],
    ]
    assert cs.operations[1].body.source.count == 2


def test_a_csv_add_is_checked_row_by_row_unless_its_header_proves_every_row_passes(tmp_path, monkeypatch):
    changeset = "operations:\n  - add: {app: orders, records_from: data/o.csv}\n"
    rows = "A,High\nB,Low\n"
    checked: list[Any] = []
    real = loader.record_problems
    monkeypatch.setattr(loader, "record_problems", lambda *a: checked.append(a[2]) or real(*a))

    def load_csv(header: str) -> list[str]:
        checked.clear()
        files = {
            "sandbox.yaml": SANDBOX_APPS,
            "changesets/V0001__a.yaml": changeset,
            "changesets/data/o.csv": f"{header}\n{rows}",
        }
        folder = tmp_path / header.replace(",", "_").replace("$", "d")
        folder.mkdir()
        proj = project(folder, files)
        env = proj.environment()
        _loaded, errs = loader.load_all(proj, env, known_fields=api.sandbox_fields(env))
        return [str(e) for e in errs]

    assert load_csv("order_no,priority") == [] and checked == []  # known text columns: no row looked at
    found = load_csv("order_no,$id")  # a reserved key: each row says so
    assert len(found) == 2 and all("`$id` cannot be set when adding records" in f for f in found)
    assert len(checked) == 2
    found = load_csv("order_no,Priority")  # an unknown field, reported (once, for the file)
    assert len(found) == 1 and "`Priority`" in found[0] and "o.csv:2" in found[0]


def test_a_data_files_records_are_read_back_by_column_where_they_give_the_same_fields(tmp_path):
    """The loader's pass keeps a run of records that give the same fields by column (no `id`
    among them); a run where they differ (an empty cell omits a field) as records; read back,
    either gives the very records the file holds, at their lines."""
    from kmigrate.changeset import Columns

    rows = "".join(f"N{i},{'' if i == 1500 else i}\n" for i in range(2500))
    files = {
        "changesets/V0001__a.yaml": "operations:\n  - add: {app: orders, records_from: data/a.csv}\n",
        "changesets/data/a.csv": "order_no,amount\n" + rows,
    }
    (cs,) = load(tmp_path, files)
    source = cs.operations[0].body.source
    chunks = list(source.chunks())
    assert [type(c).__name__ for c in chunks] == ["Columns", "list", "Columns"]
    assert chunks[0].codes == ("order_no", "amount") and len(chunks[0]) == 1000
    assert list(source) == list(DataFile(tmp_path / "changesets" / "data" / "a.csv", "data/a.csv"))
    assert list(source)[1500] == (1502, {"order_no": "N1500"})
    assert isinstance(chunks[2], Columns) and chunks[2].lines[-1] == 2501


def test_a_csv_file_trusted_from_its_header_is_kept_by_column_with_no_record_made(tmp_path, monkeypatch):
    """Its rows are read as cells and kept as they are (a NUL still refused, at its line)."""
    built = []
    real = DataFile._csv_record
    monkeypatch.setattr(DataFile, "_csv_record", lambda self, *a: built.append(1) or real(self, *a))
    files = {
        "changesets/V0001__a.yaml": "operations:\n  - add: {app: orders, records_from: data/a.csv}\n",
        "changesets/data/a.csv": "order_no\n" + "".join(f"N{i}\n" for i in range(1200)),
    }
    (cs,) = load(tmp_path, files)
    source = cs.operations[0].body.source
    assert built == [] and source.count == 1200
    assert [len(c) for c in source.chunks()] == [1000, 200]
    assert list(source)[1199] == (1201, {"order_no": "N1199"})
    files["changesets/data/a.csv"] = "order_no\nN1\nN\x002\n"
    (problem,) = errors(tmp_path, files)
    assert "a.csv:3" in problem and "NUL character" in problem
