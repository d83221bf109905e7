"""Data files in other encodings: `records_from: {path, encoding}`, `load_csv(..., encoding=)`,
Shift_JIS names, and a hint naming the encoding a non-UTF-8 file looks like."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.config import load_project
from kmigrate.datafiles import encoding_name

from .projects import items_project, write_changeset

ROWS = "code,qty\n品番-001,1\n～全角～,2\n"  # ～ (U+FF5E) is where strict shift_jis and cp932 differ


def sjis_project(tmp_path, records_from: str):
    root = items_project(tmp_path)
    (root / "changesets" / "data" / "items.csv").write_bytes(ROWS.encode("cp932"))
    write_changeset(
        root, "V0001__items.yaml", f"operations:\n  - add: {{app: items, records_from: {records_from}}}\n"
    )
    return root


@pytest.mark.parametrize("name", ["cp932", "shift_jis", "sjis", "Shift-JIS"])
def test_records_from_with_an_encoding(tmp_path, name):
    root = sjis_project(tmp_path, f"{{path: data/items.csv, encoding: {name}}}")
    project = load_project(root)
    result = api.validate(api.Context(project, project.environment()))
    assert result.ok, [str(e) for e in result.errors]
    (op,) = result.changesets[0].operations
    assert [r["code"] for r in op.body.iter_records()] == ["品番-001", "～全角～"]


def test_a_shift_jis_file_without_its_encoding_says_what_it_looks_like(tmp_path):
    root = sjis_project(tmp_path, "data/items.csv")
    result = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert result.exit_code == 2
    assert "data/items.csv:2" in result.output and "looks like Shift_JIS (cp932" in result.output
    assert "encoding: cp932" in result.output


def test_an_unknown_encoding_is_refused(tmp_path):
    root = sjis_project(tmp_path, "{path: data/items.csv, encoding: klingon}")
    result = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert result.exit_code == 2 and "unknown encoding 'klingon'" in result.output
    assert "V0001__items.yaml:2" in result.output


def test_load_csv_with_an_encoding(tmp_path):
    root = items_project(tmp_path)
    (root / "changesets" / "data" / "items.csv").write_bytes(ROWS.encode("cp932"))
    write_changeset(
        root,
        "V0001__items.yaml",
        """\
        operations:
          - add:
              app: items
              records:
              {% for row in load_csv("data/items.csv", encoding="sjis") %}
                - {code: "{{ row.code }}", qty: {{ row.qty }}}
              {% endfor %}
        """,
    )
    project = load_project(root)
    result = api.validate(api.Context(project, project.environment()))
    assert result.ok, [str(e) for e in result.errors]
    assert [r["code"] for r in result.changesets[0].operations[0].body.iter_records()] == [
        "品番-001",
        "～全角～",
    ]
    plain = root / "changesets" / "V0001__items.yaml"
    plain.write_text(plain.read_text().replace(', encoding="sjis"', ""))
    refused = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert refused.exit_code == 2 and "looks like Shift_JIS" in refused.output


def test_encoding_names():
    assert encoding_name(None) == "utf-8-sig" and encoding_name("UTF-8") == "utf-8-sig"
    assert encoding_name("sjis") == encoding_name("shift_jis") == "cp932"
    with pytest.raises(ValueError, match="unknown encoding"):
        encoding_name("nope")
