"""Property tests of the loader and the planner (issue #9): whatever a changeset holds (any
text, any YAML, any records), loading and planning it ends in success or in a ``KmigrateError``
with exit 2, never in another exception. Derandomized (tests/conftest.py): the same examples on
every run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmigrate import api
from kmigrate.config import Project, load_project
from kmigrate.errors import KmigrateError

CONFIG = """\
[limits]
render_seconds = 2
render_output_mb = 4
yaml_mb = 4

[env.sandbox]
sandbox = "sandbox.yaml"
apps = { customers = 1, orders = 2 }
"""

SANDBOX = """\
apps:
  - id: 1
    name: Customers
    fields:
      code: {type: SINGLE_LINE_TEXT, unique: true}
      name: {type: SINGLE_LINE_TEXT}
  - id: 2
    name: Orders
    fields:
      no: {type: SINGLE_LINE_TEXT}
      lines:
        type: SUBTABLE
        fields: {sku: {type: SINGLE_LINE_TEXT}, qty: {type: NUMBER}}
"""

CHANGESET = "changesets/V0001__prop.yaml"
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def project_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "changesets").mkdir()
        (root / "kmigrate.toml").write_text(CONFIG)
        (root / "sandbox.yaml").write_text(SANDBOX)
        yield root


def _check(root: Path, text: str | bytes) -> None:
    path = root / CHANGESET
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    project: Project = load_project(root)
    env = project.environment()
    ctx = api.Context(project, env)
    validation = api.validate(ctx)
    for error in validation.errors:
        assert error.exit_code == 2 and str(error)
    try:
        plan = api.plan(ctx)
    except KmigrateError as exc:
        assert exc.exit_code == 2, exc
        assert not validation.ok or "drift" in str(exc).lower(), exc
    else:
        assert validation.ok
        assert plan.changesets


# Scalars as YAML and JSON hold them, and values nested from them.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
field_codes = st.one_of(
    st.sampled_from(["code", "name", "no", "lines", "id", "revision", "$id"]), st.text(max_size=6)
)
records = st.lists(st.dictionaries(field_codes, values, max_size=5), max_size=4)
kinds = st.sampled_from(["add", "update", "upsert", "delete", "status", "assignees", "request", "other"])
apps = st.one_of(st.sampled_from(["customers", "orders", 1, 2, 999, "nope"]), values)


@st.composite
def operations(draw: Any) -> dict[str, Any]:
    kind = draw(kinds)
    body: dict[str, Any] = {"app": draw(apps)}
    choice = draw(st.integers(0, 3))
    if choice == 0:
        body["records"] = draw(records)
    elif choice == 1:
        body["records"] = draw(values)
    elif choice == 2:
        body.update(
            draw(st.dictionaries(st.sampled_from(["key", "ref", "ids", "action", "id", "payload"]), values))
        )
    if draw(st.booleans()):
        body["key"] = draw(st.sampled_from(["code", "no", "missing"]))
    return {kind: body}


changesets = st.one_of(
    st.builds(lambda ops: {"operations": ops}, st.lists(operations(), max_size=3)),
    st.builds(
        lambda d, ops: {"description": d, "operations": ops}, values, st.lists(operations(), max_size=2)
    ),
    values,
)


@SETTINGS
@given(st.text(max_size=400))
def test_any_text_loads_or_is_an_input_error(project_root: Path, text: str) -> None:
    _check(project_root, text)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_load_or_are_an_input_error(project_root: Path, data: bytes) -> None:
    _check(project_root, data)


@SETTINGS
@given(changesets)
def test_any_yaml_loads_or_is_an_input_error(project_root: Path, document: Any) -> None:
    _check(project_root, yaml.safe_dump(document, allow_unicode=True))


@SETTINGS
@given(st.sampled_from(["add", "update", "upsert"]), st.sampled_from(["customers", "orders"]), records)
def test_any_records_load_and_plan_or_are_an_input_error(
    project_root: Path, kind: str, app: str, rows: list[dict[str, Any]]
) -> None:
    body: dict[str, Any] = {"app": app, "records": rows}
    if kind == "upsert":
        body["key"] = "code"
    _check(project_root, yaml.safe_dump({"operations": [{kind: body}]}, allow_unicode=True))


@SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                "{{",
                "}}",
                "{%",
                "%}",
                "{#",
                "#}",
                "for x in range(3)",
                "endfor",
                "if",
                "endif",
                "operations:",
                "- add:",
                "app: customers",
                "records:",
                "  ",
                "\n",
                "x",
                "*a",
                "&a",
                "vars",
                "loop.index",
                "include 'x'",
                "|tojson",
                "~",
                "'",
            ]
        ),
        max_size=40,
    )
)
def test_any_template_soup_loads_or_is_an_input_error(project_root: Path, pieces: list[str]) -> None:
    _check(project_root, "".join(pieces))


def test_the_properties_run_the_same_bounded_examples_everywhere() -> None:
    """CI runs these as they are (no mark keeps them out): derandomized, so a failure
    reproduces as is on any machine, with a bounded number of examples and no database."""
    properties = [f for name, f in globals().items() if name.startswith("test_any_")]
    assert len(properties) == 5
    for test in properties:
        chosen = test._hypothesis_internal_use_settings
        assert chosen.derandomize and chosen.database is None, test.__name__
        assert chosen.max_examples == SETTINGS.max_examples == 120, test.__name__
        assert not getattr(test, "pytestmark", []), test.__name__
