"""YAML as changesets read it: the 1.2 core schema, lines kept, duplicate keys refused."""

from __future__ import annotations

import pytest

from kmigrate.yamlio import compose_and_construct


@pytest.mark.parametrize(
    "text, value",
    [
        ("yes", "yes"),
        ("No", "No"),
        ("on", "on"),
        ("12:30", "12:30"),
        ("2024-03-01", "2024-03-01"),
        ("0123", "0123"),
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        (".nan", ".nan"),
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("42", 42),
        ("-7", -7),
        ("0", 0),
        ("1.50", "1.50"),
        ("2e3", "2e3"),
        ("12345678901234567.89", "12345678901234567.89"),
        ("'yes'", "yes"),
        ("99999999999999999999", 99999999999999999999),
    ],
)
def test_yaml_reads_the_1_2_core_schema(text, value):
    _node, data = compose_and_construct(f"v: {text}\n")
    assert data["v"] == value and type(data["v"]) is type(value)


def test_yaml_refuses_duplicate_keys():
    import yaml

    with pytest.raises(yaml.YAMLError, match="duplicate key 'a' \\(first on line 1\\)"):
        compose_and_construct("a: 1\nb: 2\na: 3\n")
