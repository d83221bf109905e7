"""kmigrate lint (kmigrate/lint.py): each rule fires on its case and is silent on the example."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main

from .projects import EXAMPLE, copy_example, items_project, write_changeset


def run(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def rules_of(root) -> list[tuple[str, str, int | None]]:
    report = api.lint(api.Context.load(root))
    return [(f.rule, f.file.rsplit("/", 1)[-1], f.line) for f in report.findings if f.severity != "note"]


def test_the_repository_example_is_clean_even_under_strict():
    result = run(EXAMPLE, "lint", "--strict")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_deletes_by_raw_ids_and_unguarded_updates_are_warnings(tmp_path):
    root = copy_example(tmp_path)
    write_changeset(
        root,
        "V0004__risky.yaml",
        """\
        operations:
          - delete: {app: orders, ids: [3, 4]}
          - update:
              app: customers
              records:
                - {id: 7, tier: Gold}
          - update:
              app: customers
              records:
                - {id: 8, revision: 3, tier: Gold}
          - update:
              app: customers
              key: customer_code
              records:
                - {customer_code: C-001, tier: Gold}
        """,
    )
    assert rules_of(root) == [("K001", "V0004__risky.yaml", 2), ("K002", "V0004__risky.yaml", 3)]
    lenient = run(root, "lint")
    assert lenient.exit_code == 0
    assert "changesets/V0004__risky.yaml:2: K001 delete-by-raw-ids (warning)" in lenient.stdout
    assert "changesets/V0004__risky.yaml:3: K002 update-without-guard (warning)" in lenient.stdout
    assert run(root, "lint", "--strict").exit_code == 1


def test_a_finding_is_silenced_on_its_line_or_the_line_above(tmp_path):
    root = copy_example(tmp_path)
    write_changeset(
        root,
        "V0004__known.yaml",
        """\
        operations:
          # kmigrate: lint-ignore K001 (ids checked by hand in every environment)
          - delete: {app: orders, ids: [3]}
          - delete: {app: orders, ids: [4]}  # kmigrate: lint-ignore K002
        """,
    )
    assert rules_of(root) == [("K001", "V0004__known.yaml", 4)]  # K002 is not the rule found there


def test_an_alias_missing_from_an_environment_is_an_error(tmp_path):
    root = copy_example(tmp_path)
    toml = root / "kmigrate.toml"
    toml.write_text(toml.read_text().replace("apps = { orders = 101, customers = 102, products = 103 }",
                                             "apps = { orders = 101, customers = 102 }"))  # fmt: skip
    found = rules_of(root)
    # V0001's upsert and V0003's `request` (its payload.app) name products
    assert ("K004", "V0001__catalogue_and_customers.yaml", 5) in found
    assert [r for r in found if r[0] == "K004" and r[1] == "V0003__spring_cleanup.yaml"]
    result = run(root, "lint")
    assert result.exit_code == 2 and "'products' is not defined in environment(s) production" in result.stdout


def test_templates_drawing_randomness_are_errors(tmp_path):
    root = copy_example(tmp_path)
    (root / "templates" / "noise.j2").write_text(
        "{% macro word() %}{{ lipsum(1, false, 1, 1) }}{% endmacro %}\n"
    )
    write_changeset(
        root,
        "V0004__random.yaml",
        """\
        operations:
          - add:
              app: customers
              records:
                - {customer_code: C-900, tier: {{ ["Gold", "Silver"] | random }}}
        """,
    )
    found = rules_of(root)
    assert ("K005", "V0004__random.yaml", 5) in found and ("K005", "noise.j2", 1) in found
    assert run(root, "lint").exit_code == 2


def test_an_older_changeset_and_a_rename_after_apply_are_errors(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    write_changeset(root, "V0005__e.yaml", "operations:\n  - add: {app: items, records: [{code: E}]}\n")
    assert run(root, "apply").exit_code == 0
    assert rules_of(root) == []
    write_changeset(root, "V0003__late.yaml", "operations:\n  - add: {app: items, records: [{code: C}]}\n")
    (root / "changesets" / "V0005__e.yaml").rename(root / "changesets" / "V0005__renamed.yaml")
    assert rules_of(root) == [("K003", "V0003__late.yaml", 1), ("K006", "V0005__renamed.yaml", 1)]
    result = run(root, "lint")
    assert result.exit_code == 2
    assert "V0003__late is older than V0005, which the journal holds as applied" in result.stdout
    assert "V0005 was applied as V0005__e; renamed since to V0005__renamed" in result.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_data_file_git_ignores_is_an_error(tmp_path):
    root = copy_example(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert rules_of(root) == []
    (root / ".gitignore").write_text("*.csv\n")
    found = rules_of(root)
    assert ("K007", "V0001__catalogue_and_customers.yaml", 16) in found  # the operation's line
    assert ("K007", "V0002__spring_orders.yaml", 6) in found
    # a load_csv() in a template is followed too
    write_changeset(
        root,
        "V0004__loop.yaml",
        """\
        operations:
          - add:
              app: customers
              records:
              {% for row in load_csv("data/extra.csv") %}
                - {customer_code: {{ row.code }}}
              {% endfor %}
        """,
    )
    (root / "changesets" / "data" / "extra.csv").write_text("code\nC-950\n")
    assert ("K007", "V0004__loop.yaml", 5) in rules_of(root)


def test_without_git_the_rule_says_it_did_not_check(tmp_path, monkeypatch):
    import kmigrate.lint

    root = copy_example(tmp_path)
    subprocess.run(["git", "init", "-q"], cwd=root, check=False)
    monkeypatch.setattr(kmigrate.lint.shutil, "which", lambda name: None)
    report = api.lint(api.Context.load(root))
    assert [(f.rule, f.severity) for f in report.findings] == [("K900", "note")]
    assert "git was not found" in report.findings[0].message and report.exit_code(strict=True) == 0


def test_a_changeset_that_does_not_load_is_reported(tmp_path):
    root = copy_example(tmp_path)
    write_changeset(
        root, "V0004__bad.yaml", "operations:\n  - add: {app: orders, records: [{a: {{ nope }}}]}\n"
    )
    result = run(root, "lint")
    assert (
        result.exit_code == 2
        and "K000 invalid (error)" in result.stdout
        and "V0004__bad.yaml:2" in result.stdout
    )
