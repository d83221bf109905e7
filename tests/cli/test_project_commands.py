"""The project commands through the CLI: init, new, validate, plan, schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml
from click.testing import CliRunner

from kmigrate.cli import main

from ..projects import EXAMPLE, copy_example, items_project, write_changeset


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def initialised(folder: Path) -> Path:
    """``kmigrate init`` into ``folder``, checked: every later step depends on it."""
    result = run("init", str(folder))
    assert result.exit_code == 0, result.output
    assert (folder / "kmigrate.toml").is_file() and (
        folder / "changesets" / "V0001__add_customers.yaml"
    ).is_file()
    return folder


def test_init_makes_a_project_that_validates_and_plans(tmp_path):
    target = tmp_path / "proj"
    result = run("init", str(target))
    assert result.exit_code == 0, result.output
    for rel in (
        "kmigrate.toml",
        "sandbox.yaml",
        ".gitignore",
        "changesets/V0001__add_customers.yaml",
        "changesets/data/customers.csv",
        "templates/macros.j2",
    ):
        assert (target / rel).is_file(), rel
    validated = run("-C", str(target), "validate")
    assert validated.exit_code == 0, validated.output
    assert validated.output == (
        "OK: 1 changeset, 2 operations, 4 records valid for environment 'sandbox' "
        "(apps checked against sandbox.yaml).\n"
    )
    planned = run("-C", str(target), "plan", "--format", "json")
    assert planned.exit_code == 0, planned.output
    data = json.loads(planned.stdout)
    assert data["format"] == 1 and [c["version"] for c in data["changesets"]] == ["0001"]
    # The first changeset's records: three from the CSV, one from the macro with the variable.
    assert "Welcome Corp" in planned.stdout and "Silver" in planned.stdout


def test_init_uses_the_project_folder_by_default_and_never_overwrites(tmp_path):
    assert run("-C", str(tmp_path), "init").exit_code == 0
    config = tmp_path / "kmigrate.toml"
    config.write_text(config.read_text() + "\n# mine\n")
    again = run("-C", str(tmp_path), "init")
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output
    assert config.read_text().endswith("# mine\n")


def test_init_refuses_to_overwrite_any_file_it_would_write(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "macros.j2").write_text("mine")
    result = run("init", str(tmp_path))
    assert result.exit_code == 2 and "templates/macros.j2" in result.output
    assert (tmp_path / "templates" / "macros.j2").read_text() == "mine" and not (
        tmp_path / "kmigrate.toml"
    ).exists()


def test_new_takes_the_next_version_after_the_highest(tmp_path):
    initialised(tmp_path)
    (tmp_path / "changesets" / "V0007__later.yaml").write_text("operations: []\n")
    assert run("-C", str(tmp_path), "hash").exit_code == 0  # a file written by hand: hashed before `new`
    result = run("-C", str(tmp_path), "new", "import spring orders")
    assert result.exit_code == 0, result.output
    created = tmp_path / "changesets" / "V0008__import_spring_orders.yaml"
    assert created.is_file() and "V0008__import_spring_orders.yaml" in result.output
    assert "description: import spring orders" in created.read_text()
    # The template is a placeholder to fill in: validate points at it.
    check = run("-C", str(tmp_path), "validate")
    assert check.exit_code == 2 and "V0008__import_spring_orders.yaml:6" in check.output
    assert "APP_ALIAS_OR_ID" in check.output


def test_new_keeps_a_wider_version_and_starts_at_one(tmp_path):
    initialised(tmp_path)
    for path in (tmp_path / "changesets").glob("V*.yaml"):
        path.unlink()
    assert run("-C", str(tmp_path), "hash").exit_code == 0
    first = run("-C", str(tmp_path), "new", "first")
    assert first.exit_code == 0 and first.output.endswith("changesets/V0001__first.yaml\n"), first.output
    (tmp_path / "changesets" / "V20240501__dated.yaml").write_text("operations: []\n")
    assert run("-C", str(tmp_path), "hash").exit_code == 0
    after = run("-C", str(tmp_path), "new", "next")
    assert after.exit_code == 0 and after.output.endswith("changesets/V20240502__next.yaml\n"), after.output
    assert sorted(p.name for p in (tmp_path / "changesets").glob("*.yaml")) == [
        "V0001__first.yaml",
        "V20240501__dated.yaml",
        "V20240502__next.yaml",
    ]


def test_new_rejects_a_bad_name(tmp_path):
    initialised(tmp_path)
    result = run("-C", str(tmp_path), "new", "../escape")
    assert result.exit_code == 2 and "use letters, digits" in result.output
    assert sorted(p.name for p in (tmp_path / "changesets").glob("*.yaml")) == ["V0001__add_customers.yaml"]


def test_validate_the_example_project():
    result = run("-C", str(EXAMPLE), "validate")
    assert result.exit_code == 0, result.output
    assert "3 changesets, 11 operations, 64 records" in result.output


def test_plan_formats_and_check(tmp_path):
    root = str(copy_example(tmp_path))
    text = run("-C", root, "plan")
    assert text.exit_code == 0 and "V0002__spring_orders" in text.stdout and "DESTRUCTIVE" in text.stdout
    as_json = json.loads(run("-C", root, "plan", "--format", "json").stdout)
    assert [c["name"] for c in as_json["changesets"]] == [
        "catalogue_and_customers",
        "spring_orders",
        "spring_cleanup",
    ]
    markdown = run("-C", root, "plan", "--format", "markdown")
    assert markdown.exit_code == 0 and "V0003__spring_cleanup" in markdown.stdout
    check = run("-C", root, "plan", "--check")
    assert check.exit_code == 3 and "pending" in check.output


def _welcome_record(output: str) -> dict:
    plan = json.loads(output)
    records = [
        rec
        for cs in plan["changesets"]
        for batch in cs["batches"]
        for req in batch["requests"]
        for rec in req["payload"].get("records", [])
    ]
    [welcome] = [r for r in records if r["name"]["value"] == "Welcome Corp"]
    return {**welcome, "app": plan["changesets"][0]["batches"][0]["requests"][0]["payload"]["app"]}


def test_var_overrides_and_environments_reach_the_templates(tmp_path):
    run("init", str(tmp_path))
    plain = _welcome_record(run("-C", str(tmp_path), "plan", "--format", "json").stdout)
    overridden = _welcome_record(
        run("-C", str(tmp_path), "--var", "welcome_tier=Bronze", "plan", "--format", "json").stdout
    )
    production = _welcome_record(
        run("-C", str(tmp_path), "-e", "production", "plan", "--format", "json").stdout
    )
    assert (plain["tier"]["value"], plain["app"]) == ("Silver", 1)
    assert overridden["tier"]["value"] == "Bronze"
    assert (production["tier"]["value"], production["app"]) == ("Gold", 101)


def test_schema_describes_the_format_and_rejects_what_the_loader_rejects():
    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    plain = yaml.safe_load((EXAMPLE / "changesets" / "V0003__spring_cleanup.yaml").read_text())
    validator.validate(plain)  # the example's changeset without Jinja is valid as written
    validator.validate(
        {"description": None, "operations": [{"delete": {"app": "orders", "ids": [1]}}]}
    )  # as the loader
    assert not validator.is_valid({"operations": [{"insert": {"app": 1}}]})
    assert not validator.is_valid(
        {"operations": [{"add": {"app": 1, "records": []}, "delete": {"app": 1, "ids": [1]}}]}
    )
    assert not validator.is_valid({"operations": [{"add": {"app": 1, "records": [], "colour": "red"}}]})
    assert "source" not in json.dumps(schema["$defs"]["AddOp"])


def test_validate_and_plan_refuse_plain_http_to_another_host_unless_insecure_http(tmp_path):
    """The same rule as apply's, offline: an address literal is judged without any lookup."""
    root = items_project(tmp_path, base_url="http://203.0.113.7")
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    for command in (["validate"], ["plan"], ["plan", "--check"]):
        refused = run("-C", str(root), "-e", "remote", *command)
        assert refused.exit_code == 2, refused.output
        assert "kmigrate.toml:" in refused.output and "--insecure-http" in refused.output, refused.output
    allowed = run("-C", str(root), "-e", "remote", "validate", "--insecure-http")
    assert allowed.exit_code == 0 and "OK: 1 changeset" in allowed.output, allowed.output
    planned = run("-C", str(root), "-e", "remote", "plan", "--insecure-http")
    assert planned.exit_code == 0 and "1 changeset to apply" in planned.output, planned.output


def test_plan_json_is_written_as_produced_byte_for_byte_the_document(tmp_path, monkeypatch):
    """``plan --format json`` writes ``render.iter_json``'s pieces as they come (memory flat at
    any size): the same bytes as the whole document, never joined into one string."""
    from kmigrate import api, render

    root = initialised(tmp_path / "proj")
    document = render.render_json(api.plan(api.Context.load(root)))

    def joined(plan):
        raise AssertionError("the plan was joined into one string")

    monkeypatch.setattr(render, "render_json", joined)
    pieces = []
    real = render.iter_json

    def counted(plan):
        for piece in real(plan):
            pieces.append(piece)
            yield piece

    monkeypatch.setattr(render, "iter_json", counted)
    shown = run("-C", str(root), "plan", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == document + "\n" and len(pieces) > 10
