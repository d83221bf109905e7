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


# ---- expansion (issue #9) ---------------------------------------------------------------------


def test_aliases_are_weighed_as_what_they_expand_to():
    import yaml

    from kmigrate.yamlio import ExpansionError, check_expansion

    lines = ["a0: &a0 [lol]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\nrecords: *a9\n"
    with pytest.raises(ExpansionError, match="aliases expanded") as info:
        compose_and_construct(bomb)
    assert info.value.problem_mark.line + 1 in range(1, 11)  # the line of an anchor that grew too big
    # A few aliases within the budget are fine; the budget is configurable.
    small = "a: &a [x, y]\nb: [*a, *a]\n"
    assert compose_and_construct(small)[1] == {"a": ["x", "y"], "b": [["x", "y"], ["x", "y"]]}
    with pytest.raises(ExpansionError):
        compose_and_construct(small, max_chars=10)
    check_expansion(yaml.compose(small), 100)


def test_an_alias_inside_its_own_anchor_is_refused():
    from kmigrate.yamlio import ExpansionError

    with pytest.raises(ExpansionError, match="refers to a node that contains it"):
        compose_and_construct("a: &a [1, *a]\n")


def test_deep_nesting_is_weighed_without_recursion():
    from kmigrate.yamlio import check_expansion

    node = yaml_chain(20_000)
    check_expansion(node, 10**9)


def yaml_chain(depth: int):
    import yaml

    node = yaml.ScalarNode("tag:yaml.org,2002:str", "x")
    for _ in range(depth):
        node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node])
    return node
