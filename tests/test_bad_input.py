"""Broken changesets, data files and configs: each must exit 2 with the file and the line named.

Every case is a small project (the files below plus the case's own) run through the real CLI
(``kmigrate validate``, and ``kmigrate plan`` for some). The message must name the file and the
line as ``FILE:LINE``, carry the case's own words, and never show a Python traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from kmigrate.cli import main

CONFIG = """\
default_env = "sandbox"

[vars]
region = "eu"
items = [1, 2, 3]

[env.sandbox]
sandbox = "sandbox.yaml"
apps = { orders = 1, customers = 2 }

[env.production]
base_url = "https://example.cybozu.com"
apps = { orders = 101, customers = 102 }
"""

# The apps of the sandbox environment, with every field code the cases write (validate reads
# the sandbox file, as apply does: a project's own file, so each case's exit 2 is its own).
SANDBOX = """\
apps:
  - id: 1
    name: Orders
    fields:
      title: {type: SINGLE_LINE_TEXT}
      a: {type: SINGLE_LINE_TEXT}
      b: {type: SINGLE_LINE_TEXT}
      n: {type: NUMBER}
      note: {type: SINGLE_LINE_TEXT}
      blob: {type: SINGLE_LINE_TEXT}
      ok: {type: SINGLE_LINE_TEXT}
      region: {type: SINGLE_LINE_TEXT}
  - id: 2
    name: Customers
    fields:
      customer_code: {type: SINGLE_LINE_TEXT, unique: true}
      name: {type: SINGLE_LINE_TEXT}
"""

MACROS = """\
{% macro row(code) -%}
{customer_code: {{ code | tojson }}}
{%- endmacro %}
{% macro broken() -%}
{{ vars.not_there }}
{%- endmacro %}
"""

GOOD = """\
description: customers
operations:
  - add:
      app: customers
      ref: first
      records:
        - {customer_code: C-1}
"""


@dataclass
class Case:
    id: str
    files: dict[str, str]
    file: str  # the file the message must name
    line: int  # ... and its line
    words: str  # and these words (case-insensitive)
    args: tuple[str, ...] = ()
    commands: tuple[str, ...] = ("validate",)
    base: dict[str, str] = field(
        default_factory=lambda: {
            "kmigrate.toml": CONFIG,
            "sandbox.yaml": SANDBOX,
            "templates/macros.j2": MACROS,
        }
    )


def cs(text: str, name: str = "V0002__broken.yaml", *, with_good: bool = True, **more: str) -> dict[str, str]:
    files = {f"changesets/{name}": text}
    if with_good:
        files["changesets/V0001__good.yaml"] = GOOD
    files.update({k.replace("__SLASH__", "/"): v for k, v in more.items()})
    return files


def ops(body: str) -> str:
    return "operations:\n" + body


BROKEN = "V0002__broken.yaml"

CASES = [
    # ---- YAML -------------------------------------------------------------------------------
    Case(
        "yaml-unclosed-flow",
        cs(ops("  - add: {app: orders, records: [{title: x}]\n  - delete: {app: orders, ids: [1]}\n")),
        BROKEN,
        3,
        "YAML syntax error",
    ),
    Case("yaml-tab-indent", cs(ops("  - add:\n\t  app: orders\n")), BROKEN, 3, "tabs"),
    Case(
        "yaml-duplicate-key",
        cs(ops("  - add:\n      app: orders\n      app: customers\n      records: []\n")),
        BROKEN,
        4,
        "duplicate key 'app'",
    ),
    Case(
        "yaml-colon-in-value",
        cs(ops("  - add:\n      app: orders\n      records:\n        - {note: x}\n        - note: a: b\n")),
        BROKEN,
        6,
        "mapping values are not allowed",
    ),
    Case(
        "yaml-binary-tag",
        cs(ops("  - add:\n      app: orders\n      records:\n        - {blob: !!binary aGVsbG8=}\n")),
        BROKEN,
        5,
        "binary",
    ),
    Case(
        "yaml-error-after-loop-shows-rendered-line",
        cs(
            ops(
                "  - add:\n      app: orders\n      records:\n"
                "      {% for i in vars['items'] %}\n        - {n: {{ i }}\n"
                "      {% endfor %}\n"
            )
        ),
        BROKEN,
        5,
        "rendered line 6",
    ),
    Case(
        "yaml-two-documents",
        cs(ops("  - delete: {app: orders, ids: [1]}\n---\nmore: 1\n")),
        BROKEN,
        3,
        "single document",
    ),
    # ---- Jinja ------------------------------------------------------------------------------
    Case(
        "jinja-unclosed-for",
        cs(
            ops(
                "  - add:\n      app: orders\n      records:\n{% for i in vars['items'] %}\n"
                "        - {n: {{ i }}}\n"
            )
        ),
        BROKEN,
        6,
        "template syntax error",
    ),
    Case(
        "jinja-bad-expression",
        cs("description: x\n\noperations: {{ 1 + }}\n"),
        BROKEN,
        3,
        "template syntax error",
    ),
    Case(
        "jinja-unknown-tag", cs("description: x\n{% frobnicate %}\noperations: []\n"), BROKEN, 2, "frobnicate"
    ),
    Case(
        "jinja-undefined-var",
        cs(ops("  - add:\n      app: orders\n      records:\n        - {region: {{ vars.regoin }}}\n")),
        BROKEN,
        5,
        "undefined variable",
    ),
    Case(
        "jinja-undefined-name",
        cs("description: {{ nothing_here }}\noperations: []\n"),
        BROKEN,
        1,
        "'nothing_here' is undefined",
    ),
    Case(
        "jinja-undefined-in-macro",
        cs('{% import "macros.j2" as m %}\ndescription: "{{ m.broken() }}"\noperations: []\n'),
        "macros.j2",
        5,
        "undefined variable",
    ),
    Case(
        "jinja-syntax-in-included-template",
        cs(
            'description: x\n{% include "bad.j2" %}\noperations: []\n',
            templates__SLASH__bad_j2="ok\n{% if %}\n",
        ),
        "bad.j2",
        2,
        "template syntax error",
    ),
    Case(
        "jinja-include-missing",
        cs('description: x\n\n{% include "nowhere.j2" %}\noperations: []\n'),
        BROKEN,
        3,
        "template not found",
    ),
    Case(
        "jinja-import-missing",
        cs('{% import "nope.j2" as n %}\ndescription: x\noperations: []\n'),
        BROKEN,
        1,
        "nope.j2",
    ),
    Case(
        "jinja-sandbox-escape-mro",
        cs("description: x\noperations: {{ ''.__class__.__mro__ }}\n"),
        BROKEN,
        2,
        "not allowed in the template sandbox",
    ),
    Case(
        "jinja-sandbox-escape-globals",
        cs("description: x\n\n\noperations: {{ load_csv.__globals__ }}\n"),
        BROKEN,
        4,
        "sandbox",
    ),
    Case(
        "jinja-sandbox-escape-subclasses",
        cs("description: x\n{% set s = ().__class__.__base__.__subclasses__() %}\noperations: []\n"),
        BROKEN,
        2,
        "sandbox",
    ),
    Case(
        "jinja-zero-division",
        cs("description: x\noperations:\n  - delete: {app: orders, ids: [{{ 1 // 0 }}]}\n"),
        BROKEN,
        3,
        "ZeroDivisionError",
    ),
    Case(
        "jinja-load-csv-missing",
        cs("{% set rows = load_csv('data/none.csv') %}\noperations: []\n"),
        BROKEN,
        1,
        "not found",
    ),
    Case(
        "jinja-load-csv-outside-project",
        cs("description: x\n{% set rows = load_csv('../../../../etc/passwd') %}\noperations: []\n"),
        BROKEN,
        2,
        "outside the project",
    ),
    Case(
        "jinja-load-json-invalid",
        cs(
            "{% set d = load_json('data/d.json') %}\noperations: []\n",
            changesets__SLASH__data__SLASH__d_json="{\n\n  oops\n}\n",
        ),
        "d.json",
        3,
        "invalid JSON",
    ),
    # ---- structure --------------------------------------------------------------------------
    Case("empty-file", cs(""), BROKEN, 1, "empty"),
    Case("only-comments", cs("# nothing yet\n{# nor here #}\n"), BROKEN, 1, "empty"),
    Case(
        "top-level-list", cs("- add: {app: orders, records: []}\n"), BROKEN, 1, "a mapping with `operations:`"
    ),
    Case(
        "operations-not-a-list",
        cs("description: x\noperations:\n  add: {app: orders, records: []}\n"),
        BROKEN,
        3,
        "must be a list",
    ),
    Case("operations-missing", cs("description: just words\n"), BROKEN, 1, "`operations:` is missing"),
    Case("operations-empty", cs("description: x\noperations: []\n"), BROKEN, 2, "at least one operation"),
    Case(
        "unknown-top-level-key",
        cs("description: x\noperation:\n  - delete: {app: orders, ids: [1]}\n"),
        BROKEN,
        2,
        "unknown top-level key `operation`",
    ),
    Case(
        "unknown-operation",
        cs(ops("  - delete: {app: orders, ids: [1]}\n  - insert:\n      app: orders\n")),
        BROKEN,
        3,
        "unknown operation 'insert'",
    ),
    Case(
        "two-kinds-in-one-operation",
        cs(ops("  - add: {app: orders, records: [{a: b}]}\n    delete: {app: orders, ids: [1]}\n")),
        BROKEN,
        2,
        "exactly one key",
    ),
    Case("operation-is-text", cs(ops("  - delete\n")), BROKEN, 2, "an operation is a mapping"),
    Case(
        "unknown-key-in-body",
        cs(ops("  - add:\n      app: orders\n      recrods: [{a: b}]\n      records: [{a: b}]\n")),
        BROKEN,
        4,
        "unknown key `recrods` in add",
    ),
    Case("wrong-type-app", cs(ops("  - add:\n      app: [1]\n      records: [{a: b}]\n")), BROKEN, 3, "app"),
    Case("wrong-type-ids", cs(ops("  - delete:\n      app: orders\n      ids: abc\n")), BROKEN, 4, "ids"),
    Case(
        "wrong-type-record-id-negative",
        cs(ops("  - delete:\n      app: orders\n      ids: [5, -3]\n")),
        BROKEN,
        4,
        "greater than 0",
    ),
    Case(
        "records-and-records-from",
        cs(ops("  - add:\n      app: orders\n      records: [{a: b}]\n      records_from: d.csv\n")),
        BROKEN,
        2,
        "exactly one of `records:`",
    ),
    Case("no-records", cs(ops("  - add:\n      app: orders\n")), BROKEN, 2, "exactly one of `records:`"),
    Case(
        "status-without-action",
        cs(ops("  - status:\n      app: orders\n      records: [1, 2]\n")),
        BROKEN,
        2,
        "action",
    ),
    Case(
        "request-not-allowed-api",
        cs(
            ops("  - request:\n      method: POST\n      api: records/cursor\n      payload: {app: orders}\n")
        ),
        BROKEN,
        2,
        "not allowed in a bulk request",
    ),
    Case(
        "request-payload-without-app",
        cs(ops("  - request: {method: PUT, api: record, payload: {id: 1}}\n")),
        BROKEN,
        2,
        "payload needs `app`",
    ),
    Case(
        "too-many-assignees",
        cs(
            ops(
                "  - assignees:\n      app: orders\n      id: 1\n      assignees: ["
                + ", ".join(f"u{i}" for i in range(101))
                + "]\n"
            )
        ),
        BROKEN,
        5,
        "at most 100",
    ),
    Case(
        "delete-revisions-mismatch",
        cs(ops("  - delete: {app: orders, ids: [1, 2], revisions: [3]}\n")),
        BROKEN,
        2,
        "revisions",
    ),
    # ---- meaning ----------------------------------------------------------------------------
    Case(
        "unknown-app-alias",
        cs(ops("  - add:\n      app: ordres\n      records: [{a: b}]\n")),
        BROKEN,
        3,
        "unknown app alias 'ordres'",
    ),
    Case(
        "unknown-app-alias-in-request",
        cs(
            ops(
                "  - request:\n      method: PUT\n      api: records\n      payload: {app: nope, records: []}\n"
            )
        ),
        BROKEN,
        5,
        "unknown app alias 'nope'",
    ),
    Case(
        "ref-to-nothing",
        cs(ops("  - status:\n      app: orders\n      records: {ref: nowhere}\n      action: Submit\n")),
        BROKEN,
        4,
        "ref 'nowhere' names no records",
    ),
    Case(
        "ref-used-before-defined",
        cs(
            ops(
                "  - delete: {app: customers, ids: {ref: later}}\n"
                "  - add: {app: customers, ref: later, records: [{a: b}]}\n"
            )
        ),
        BROKEN,
        2,
        "ref 'later' names no records",
    ),
    Case(
        "duplicate-ref",
        cs(ops("  - add:\n      app: customers\n      ref: first\n      records: [{a: b}]\n")),
        BROKEN,
        4,
        "already defined at",
    ),
    Case(
        "ref-on-another-app",
        cs(ops("  - status: {app: orders, records: {ref: first}, action: Submit}\n")),
        BROKEN,
        2,
        "holds records of app 2",
    ),
    Case(
        "ref-index-out-of-range",
        cs(
            ops(
                "  - assignees:\n      app: customers\n      id: {ref: first, index: 5}\n      assignees: [a]\n"
            )
        ),
        BROKEN,
        4,
        "out of range",
    ),
    Case(
        "update-without-id-or-key",
        cs(
            ops("  - update:\n      app: orders\n      records:\n        - {id: 1, a: b}\n        - {a: c}\n")
        ),
        BROKEN,
        6,
        "has no `id`",
    ),
    Case(
        "update-by-key-record-without-key",
        cs(
            ops(
                "  - update:\n      app: customers\n      key: customer_code\n      records:\n"
                "        - {name: x}\n"
            )
        ),
        BROKEN,
        6,
        "has no `customer_code`",
    ),
    Case(
        "update-with-id-and-key",
        cs(
            ops(
                "  - update:\n      app: customers\n      key: customer_code\n      records:\n"
                "        - {id: 4, customer_code: C-1}\n"
            )
        ),
        BROKEN,
        6,
        "one or the other",
    ),
    Case(
        "upsert-record-with-id",
        cs(
            ops(
                "  - upsert:\n      app: customers\n      key: customer_code\n      records:\n"
                "        - {id: 4, customer_code: C-1}\n"
            )
        ),
        BROKEN,
        6,
        "not by `id`",
    ),
    Case(
        "add-with-id",
        cs(ops("  - add:\n      app: orders\n      records:\n        - {id: 9, title: x}\n")),
        BROKEN,
        5,
        "Kintone assigns it",
    ),
    Case(
        "boolean-value",
        cs(
            ops(
                "  - add:\n      app: orders\n      records:\n"
                "        - {title: x}\n        - {title: y, urgent: true}\n"
            )
        ),
        BROKEN,
        6,
        "quote it",
    ),
    Case(
        "record-not-a-mapping",
        cs(ops("  - add:\n      app: orders\n      records:\n        - just text\n")),
        BROKEN,
        5,
        "record",
    ),
    # ---- file names -------------------------------------------------------------------------
    Case(
        "bad-file-name-single-underscore",
        cs(GOOD, "V0002_typo.yaml"),
        "V0002_typo.yaml",
        1,
        "not a changeset file name",
    ),
    Case(
        "bad-file-name-lower-case",
        cs(GOOD, "v0002__typo.yaml"),
        "v0002__typo.yaml",
        1,
        "V<digits>__<name>.yaml",
    ),
    Case(
        "bad-file-name-extension",
        cs(GOOD, "V0002__typo.yam"),
        "V0002__typo.yam",
        1,
        "not a changeset file name",
    ),
    Case(
        "duplicate-version",
        cs(GOOD.replace("ref: first", "ref: second"), "V1__again.yaml"),
        "V1__again.yaml",
        1,
        "duplicate version 1",
    ),
    # ---- data files -------------------------------------------------------------------------
    Case(
        "csv-wrong-column-count",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv="a,b\n1,2\n3,4\n5\n",
        ),
        "o.csv",
        4,
        "row has 1 cells but the header has 2",
    ),
    Case(
        "csv-wrong-column-count-after-multiline-cell",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv='a,b\n1,"two\nlines"\n3,4,5\n',
        ),
        "o.csv",
        4,
        "row has 3 cells",
    ),
    Case(
        "csv-duplicate-header",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv="a,b,a\n1,2,3\n",
        ),
        "o.csv",
        1,
        "appears twice",
    ),
    Case(
        "csv-semicolon-separated",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv="order_no;customer_code\nA;B\n",
        ),
        "o.csv",
        1,
        "looks separated by semicolons",
    ),
    Case(
        "csv-bad-quote",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv='a,b\n1,2\n3,"4"x\n',
        ),
        "o.csv",
        3,
        "bad CSV",
    ),
    Case(
        "csv-missing-data-file",
        cs(ops("  - add:\n      app: orders\n      records_from: data/missing.csv\n")),
        BROKEN,
        4,
        "not found",
    ),
    Case(
        "csv-update-bad-id",
        cs(
            ops("  - update:\n      app: orders\n      records_from: data/u.csv\n"),
            changesets__SLASH__data__SLASH__u_csv="id,title\n1,a\nseven,b\n",
        ),
        "u.csv",
        3,
        "whole number",
    ),
    Case(
        "csv-upsert-row-without-key",
        cs(
            ops(
                "  - upsert:\n      app: customers\n      key: customer_code\n      records_from: data/c.csv\n"
            ),
            changesets__SLASH__data__SLASH__c_csv="customer_code,name\nC-1,a\n,b\n",
        ),
        "c.csv",
        3,
        "has no `customer_code`",
    ),
    Case(
        "csv-not-utf8",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv="a\nx\n",
        ),
        "o.csv",
        2,
        "UTF-8",
    ),  # the content is replaced with Shift_JIS bytes by _write
    Case(
        "json-invalid",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.json\n"),
            changesets__SLASH__data__SLASH__o_json='[\n  {"a": 1},\n  {"a": 2,}\n]\n',
        ),
        "o.json",
        3,
        "invalid JSON",
    ),
    Case(
        "json-not-a-list",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.json\n"),
            changesets__SLASH__data__SLASH__o_json='\n{"a": 1}\n',
        ),
        "o.json",
        2,
        "one array of objects",
    ),
    Case(
        "json-element-not-object",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.json\n"),
            changesets__SLASH__data__SLASH__o_json='[\n  {"a": 1},\n  [1, 2]\n]\n',
        ),
        "o.json",
        3,
        "not an object",
    ),
    Case(
        "jsonl-bad-line",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.jsonl\n"),
            changesets__SLASH__data__SLASH__o_jsonl='{"a": 1}\n\n{"a": 2\n',
        ),
        "o.jsonl",
        3,
        "invalid JSON",
    ),
    Case(
        "jsonl-boolean-value",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.jsonl\n"),
            changesets__SLASH__data__SLASH__o_jsonl='{"a": "1"}\n{"a": true}\n',
        ),
        "o.jsonl",
        2,
        "quote it",
    ),
    Case(
        "data-unknown-format",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.xlsx\n"),
            changesets__SLASH__data__SLASH__o_xlsx="x",
        ),
        BROKEN,
        4,
        "unknown format",
    ),
    Case(
        "data-outside-project",
        cs(ops("  - add:\n      app: orders\n      records_from: ../../../../etc/hosts\n")),
        BROKEN,
        4,
        "outside the project",
    ),
    Case(
        "data-ref-to-nothing",
        cs(
            ops("  - update:\n      app: orders\n      records_from: data/u.jsonl\n"),
            changesets__SLASH__data__SLASH__u_jsonl='{"id": {"ref": "ghost", "index": 0}, "a": "b"}\n',
        ),
        "u.jsonl",
        1,
        "ref 'ghost' names no records",
    ),
    # ---- config -----------------------------------------------------------------------------
    Case(
        "config-unknown-key",
        {"kmigrate.toml": CONFIG.replace('sandbox = "sandbox.yaml"', 'sandbox = "sandbox.yaml"\nsandbx = 1')},
        "kmigrate.toml",
        9,
        "unknown key `env.sandbox.sandbx`",
    ),
    Case(
        "config-unknown-top-level-key",
        {"kmigrate.toml": "changeset = 'x'\n" + CONFIG},
        "kmigrate.toml",
        1,
        "unknown key `changeset`",
    ),
    Case(
        "config-bad-toml",
        {"kmigrate.toml": CONFIG.replace("[env.production]", "[env.production")},
        "kmigrate.toml",
        11,
        "not valid TOML",
    ),
    Case(
        "config-default-env-unknown",
        {"kmigrate.toml": CONFIG.replace('default_env = "sandbox"', 'default_env = "staging"')},
        "kmigrate.toml",
        1,
        "names no [env.*] table",
    ),
    Case(
        "config-env-without-target",
        {"kmigrate.toml": CONFIG.replace('base_url = "https://example.cybozu.com"\n', "")},
        "kmigrate.toml",
        11,
        "exactly one of",
    ),
    Case(
        "config-bad-app-id",
        {"kmigrate.toml": CONFIG.replace("orders = 1,", 'orders = "one",')},
        "kmigrate.toml",
        9,
        "numeric id",
    ),
    Case(
        "config-unknown-env",
        {"changesets/V0001__good.yaml": GOOD},
        "kmigrate.toml",
        7,
        "no environment 'staging'",
        args=("-e", "staging"),
    ),
    # ---- the same problems through `plan` -----------------------------------------------------
    Case(
        "plan-jinja-undefined",
        cs("description: {{ vars.nope }}\noperations: []\n"),
        BROKEN,
        1,
        "undefined variable",
        commands=("plan",),
    ),
    Case(
        "plan-csv-wrong-column-count",
        cs(
            ops("  - add:\n      app: orders\n      records_from: data/o.csv\n"),
            changesets__SLASH__data__SLASH__o_csv="a,b\n1,2\n3\n",
        ),
        "o.csv",
        3,
        "row has 1 cells",
        commands=("plan", "plan --format json"),
    ),
    Case(
        "plan-ref-to-nothing",
        cs(ops("  - delete: {app: orders, ids: {ref: ghost}}\n")),
        BROKEN,
        2,
        "ghost",
        commands=("plan --format markdown", "plan --check"),
    ),
]


def _write(root: Path, case: Case) -> None:
    files = {**case.base, **case.files}
    for rel, text in files.items():
        if rel.endswith(("_csv", "_json", "_jsonl", "_j2", "_xlsx")):
            head, _, ext = rel.rpartition("_")
            rel = f"{head}.{ext}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if case.id == "csv-not-utf8":
        (root / "changesets/data/o.csv").write_bytes("a\n日本語\n".encode("shift_jis"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_naming_file_and_line(tmp_path: Path, case: Case) -> None:
    _write(tmp_path, case)
    runner = CliRunner()
    for command in case.commands:
        result = runner.invoke(main, ["-C", str(tmp_path), *case.args, *command.split()])
        out = result.output
        assert result.exit_code == 2, f"{command}: exit {result.exit_code}\n{out}"
        assert "Traceback" not in out, out
        assert result.exception is None or isinstance(result.exception, SystemExit), out
        assert case.file in out, out
        if case.line:
            assert f"{case.file}:{case.line}" in out, f"expected {case.file}:{case.line} in:\n{out}"
        assert case.words.lower() in out.lower(), f"expected {case.words!r} in:\n{out}"


def test_the_cases_are_distinct_and_only_their_own_files_break_the_project(tmp_path: Path) -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    # No case repeats another's input (a copied case would prove nothing new).
    inputs = {(tuple(sorted(c.files.items())), c.args, c.commands) for c in CASES}
    assert len(inputs) == len(CASES)
    # The project every case starts from is valid: each exit 2 above comes from the case's files.
    _write(tmp_path, Case("base", {"changesets/V0001__good.yaml": GOOD}, "", 0, ""))
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "validate"])
    assert result.exit_code == 0, result.output
    assert "OK: 1 changeset, 1 operation, 1 record valid for environment 'sandbox'" in result.output


def test_every_error_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    files = {
        "kmigrate.toml": CONFIG,
        "sandbox.yaml": SANDBOX,
        "changesets/V0001__a.yaml": (
            "operations:\n  - add: {app: nope, records: [{a: b}]}\n  - delete: {app: orders, ids: x}\n"
        ),
        "changesets/V0002__b.yaml": "description: {{ vars.missing }}\noperations: []\n",
        "changesets/notes.txt": "hello",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "validate"])
    assert result.exit_code == 2
    out = result.output
    for expected in (
        "V0001__a.yaml:2",
        "V0001__a.yaml:3",
        "V0002__b.yaml:1",
        "notes.txt:1",
        "4 problems found",
    ):
        assert expected in out, out
