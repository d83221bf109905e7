"""kmigrate sandbox reset | records, found through the project (-C, -e) or --file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kmigrate.cli import main
from kmigrate.sandbox import Sandbox

from .conftest import DEFINITION, rec


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "sandbox.yaml").write_text(yaml.safe_dump(DEFINITION, sort_keys=False), encoding="utf-8")
    (tmp_path / "kmigrate.toml").write_text(
        'default_env = "dev"\n'
        '[env.dev]\nsandbox = "sandbox.yaml"\napps = { orders = 1, plain = 4 }\n'
        '[env.prod]\nbase_url = "https://example.cybozu.com"\n',
        encoding="utf-8",
    )
    return tmp_path


def seed(project: Path) -> None:
    with (
        Sandbox.open(project / "sandbox.yaml", project / ".kmigrate" / "sandbox-dev.sqlite3") as sb,
        sb.client() as client,
    ):
        client.post(
            "/k/v1/records.json",
            json={"app": 1, "records": [rec(title="first", tags=["a", "b"]), rec(title="second")]},
        )


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_records_table_and_json_through_the_project(project: Path):
    seed(project)
    table = run("-C", str(project), "sandbox", "records", "orders")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:3] == ["$id", "$revision", "title"]
    assert "first" in lines[1] and "a,b" in lines[1] and "Draft" in lines[1]
    assert lines[-1] == "(2 records)"
    as_json = run("-C", str(project), "-e", "dev", "sandbox", "records", "1", "--format", "json")
    assert [r["title"]["value"] for r in json.loads(as_json.output)] == ["first", "second"]


def test_reset_through_the_project(project: Path):
    seed(project)
    result = run("-C", str(project), "sandbox", "reset")
    assert result.exit_code == 0 and "sandbox reset" in result.output
    assert run("-C", str(project), "sandbox", "records", "orders").output.strip().endswith("(0 records)")


def test_file_without_a_project(project: Path, tmp_path: Path):
    store = tmp_path / "other" / "store.sqlite3"
    result = run("sandbox", "--file", str(project / "sandbox.yaml"), "--store", str(store), "records", "4")
    assert result.exit_code == 0 and "(0 records)" in result.output
    assert store.exists()


def test_errors_are_one_line_and_exit_2(project: Path):
    result = run("-C", str(project), "-e", "prod", "sandbox", "records", "1")
    assert result.exit_code == 2 and "not a sandbox" in result.output
    result = run("-C", str(project), "sandbox", "records", "nosuchalias")
    assert result.exit_code == 2 and "unknown app alias" in result.output
    result = run("-C", str(project), "sandbox", "records", "99")
    assert result.exit_code == 2 and "no app 99" in result.output


def test_stats_shows_each_apps_requests_against_the_daily_limit(project: Path):
    seed(project)
    runner = CliRunner()
    table = runner.invoke(main, ["-C", str(project), "sandbox", "stats"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert "(Kintone's limit: 10,000 a day)" in lines[0]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["1", "Orders", "1"],
        ["2", "Customers", "0"],
        ["3", "Guest", "tasks"],
        ["4", "Plain", "0"],
    ]
    as_json = runner.invoke(
        main, ["-C", str(project), "sandbox", "stats", "--format", "json", "--day", "2000-01-01"]
    )
    body = json.loads(as_json.output)
    assert body["day"] == "2000-01-01" and {a["app"]: a["requests"] for a in body["apps"]} == {
        1: 0,
        2: 0,
        3: 0,
        4: 0,
    }
