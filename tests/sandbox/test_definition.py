"""The sandbox file: shorthand and Kintone shapes, and errors that name the file, app and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmigrate.errors import SandboxDefinitionError
from kmigrate.sandbox import Sandbox
from kmigrate.sandbox.definition import parse_definition


def app(**overrides):
    return {"apps": [{"id": 1, "name": "Orders", "fields": {"title": "SINGLE_LINE_TEXT"}, **overrides}]}


def test_shorthand_and_defaults():
    d = parse_definition(
        app(
            api_tokens=["t1", {"token": "t2", "permissions": ["view"]}],
            fields={
                "r": {"type": "RADIO_BUTTON", "options": ["x", "y"]},
                "n": {"type": "NUMBER", "maxValue": "9"},
            },
        )
    )
    a = d.apps[1]
    assert a.tokens == {
        "t1": frozenset({"view", "add", "edit", "delete", "manage"}),
        "t2": frozenset({"view"}),
    }
    assert a.fields["r"].default == "x"  # a radio button always has a choice
    assert str(a.fields["n"].max_value) == "9"
    assert a.system_code("RECORD_NUMBER") == "Record_number" and a.process is None


@pytest.mark.parametrize(
    "data, words",
    [
        ({"apps": [{"name": "no id"}]}, ["app #1", "id"]),
        (app(fields={"title": {"type": "TEXTY"}}), ["app 1 (Orders)", "field 'title'", "TEXTY"]),
        (app(fields={"p": {"type": "DROP_DOWN"}}), ["field 'p'", "options"]),
        (
            app(fields={"p": {"type": "DROP_DOWN", "options": ["a"], "defaultValue": "b"}}),
            ["field 'p'", "default"],
        ),
        (app(fields={"t": {"type": "SUBTABLE"}}), ["field 't'", "fields"]),
        (app(fields={"t": {"type": "CHECK_BOX", "options": ["a"], "unique": True}}), ["field 't'", "unique"]),
        (app(fields={"title": {"type": "SINGLE_LINE_TEXT", "requird": True}}), ["field 'title'", "requird"]),
        (
            app(fields={"n": {"type": "NUMBER", "minValue": "ten"}}),
            ["field 'n'", "`minValue` must be a number, not 'ten'"],
        ),
        (
            app(fields={"t": {"type": "SINGLE_LINE_TEXT", "maxLength": "1.5"}}),
            ["field 't'", "`maxLength` must be an integer, not '1.5'"],
        ),
        (app(process={"states": ["A"], "actions": [{"name": "Go", "from": "A", "to": "B"}]}), ["Go", "B"]),
        (app(process={"states": [{"name": "A", "assignee": {"type": "SOME"}}]}), ["state 'A'", "ONE"]),
        (app(api_tokens=[{"token": "t", "permissions": ["fly"]}]), ["permissions"]),
        ({"apps": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}, ["twice"]),
        ({"aps": []}, ["aps"]),
    ],
)
def test_definition_errors_say_where(data, words):
    with pytest.raises(SandboxDefinitionError) as info:
        parse_definition(data, "sandbox.yaml")
    text = str(info.value)
    assert text.startswith("sandbox.yaml")
    for word in words:
        assert word in text


def test_open_reports_yaml_errors_with_the_line(tmp_path: Path):
    file = tmp_path / "sandbox.yaml"
    file.write_text("apps:\n  - id: 1\n    name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SandboxDefinitionError) as info:
        Sandbox.open(file)
    assert f"{file}:" in str(info.value) and info.value.exit_code == 2
    with pytest.raises(SandboxDefinitionError, match="cannot read"):
        Sandbox.open(tmp_path / "missing.yaml")
