"""Templating: the sandboxed Jinja environment, and lines traced back through the render."""

from __future__ import annotations

import pytest
from jinja2 import TemplateSyntaxError

from kmigrate.changeset_files import ChangesetFileName
from kmigrate.errors import ChangesetError
from kmigrate.templating import MAX_SHOWN, LineMap, Templates, shorten, template_error

from .changeset_projects import errors, load, project


def test_templates_see_env_vars_overrides_macros_and_data_helpers(tmp_path):
    files = {
        "templates/m.j2": "{% macro rec(sku, price) %}{sku: {{ sku | tojson }}, price: {{ price }}}{% endmacro %}",
        "changesets/data/extra.csv": "sku,price\nC,30\n",
        "changesets/data/more.json": '[{"sku": "D", "price": 40}]',
        "changesets/V0001__p.yaml": """\
{% import "m.j2" as m %}
description: "{{ env }} {{ vars.region }} {{ changeset.version }}"
operations:
  - upsert:
      app: customers
      key: sku
      records:
      {% for p in vars.products + load_csv("data/extra.csv") + load_json("data/more.json") %}
        - {{ m.rec(p.sku, p.price) }}
      {% endfor %}
""",
    }
    [cs] = load(tmp_path, files, overrides={"region": "mars"})
    assert cs.description == "sandbox mars 0001"
    records = list(cs.operations[0].iter_records())
    assert records == [
        {"sku": "A", "price": 10},
        {"sku": "B", "price": 20},
        {"sku": "C", "price": 30},
        {"sku": "D", "price": 40},
    ]
    [prod] = load(tmp_path, {}, env="production")
    assert prod.description == "production jp 0001"


def test_one_template_cannot_change_the_variables_of_the_next(tmp_path):
    files = {
        "changesets/V1__a.yaml": (
            "{% set _ = vars.products.append({'sku': 'Z'}) %}operations:\n  - delete: {app: orders, ids: [1]}\n"
        ),
        "changesets/V2__b.yaml": (
            "description: '{{ vars.products | length }}'\noperations:\n  - delete: {app: orders, ids: [1]}\n"
        ),
    }
    loaded = load(tmp_path, files)
    assert loaded[1].description == "2"


def test_lines_are_mapped_back_through_loops_to_the_source(tmp_path):
    text = """\
description: x
operations:
  - add:
      app: orders
      records:
      {% for i in range(3) %}
        - {n: {{ i }}}
      {% endfor %}
  - update:
      app: orders
      records:
        - {id: 7, n: {{ 1 + 1 }}}
"""
    [cs] = load(tmp_path, {"changesets/V1__a.yaml": text})
    assert cs.operation_lines == (3, 9)  # the update moved in the rendered text, not in the source
    assert cs.record_lines[0] == (None, None, None)  # made by the loop: no source line of their own
    assert cs.rendered_record_lines[0] == (6, 7, 8)
    assert cs.record_lines[1] == (12,)  # an in-place substitution keeps its line
    assert str(cs.location(0, 1)).endswith("operation 1, record 2, add, rendered line 7")
    assert "V1__a.yaml:12, " in str(cs.location(1, 0))


def test_a_changeset_without_jinja_has_its_own_lines(tmp_path):
    text = "operations:\n  - add:\n      app: orders\n      records:\n        - {a: 1}\n        -\n          a: 2\n"
    [cs] = load(tmp_path, {"changesets/V1__a.yaml": text})
    assert cs.operation_lines == (2,) and cs.record_lines == ((5, 7),) and not cs.rendered_text_differs


def test_jinja_runtime_error_in_a_macro_names_the_macro_file_and_the_caller(tmp_path):
    files = {
        "templates/m.j2": "{% macro bad() %}\n{{ vars.nope }}\n{% endmacro %}\n",
        "changesets/V1__a.yaml": '{% import "m.j2" as m %}\ndescription: "{{ m.bad() }}"\noperations: []\n',
    }
    [message] = errors(tmp_path, files)
    assert "m.j2:2" in message and "included from" in message and "V1__a.yaml:2" in message


def test_line_map_of_a_long_file_with_repeated_lines_and_jinja_at_both_ends():
    records = "".join(f"  - order_no: SO-{i}\n    lines:\n      - {{sku: A, qty: 1}}\n" for i in range(2000))
    source = (
        "{% if true %}\nx: 1\n{% endif %}\nops:\n"
        + records
        + "{% for i in range(3) %}\n  - {n: {{ i }}}\n{% endfor %}\n"
    )
    rendered = "x: 1\nops:\n" + records + "".join(f"  - {{n: {i}}}\n" for i in range(3))
    lines = LineMap(source, rendered)
    assert lines.source_line(1) == 2 and lines.source_line(3) == 5 and lines.source_line(6002) == 6004
    last = 6002 + 3
    assert lines.source_line(last) is None
    location, shown = lines.locate(last, file="f.yaml")
    assert location.line == 6005 and "rendered line 6005" in str(location) and "- {n: 2}" in shown


def test_a_long_line_is_shown_shortened():
    assert shorten("x" * MAX_SHOWN) == "x" * MAX_SHOWN
    assert shorten("x" * (MAX_SHOWN + 1)) == "x" * MAX_SHOWN + "..."


def test_a_template_syntax_error_names_its_line_and_shows_it(tmp_path):
    proj = project(tmp_path, {"changesets/V1__a.yaml": "operations:\n  - {% if %}\n"})
    item = ChangesetFileName("1", "a", tmp_path / "changesets" / "V1__a.yaml")
    text = item.path.read_text()
    templates = Templates(proj, proj.environment())
    with pytest.raises(TemplateSyntaxError) as info:
        templates.render(item, text)
    error = template_error(info.value, item, text.splitlines())
    assert isinstance(error, ChangesetError)
    assert error.location is not None and error.location.line == 2
    assert str(error.location.file).endswith("V1__a.yaml")
    assert "template syntax error" in error.message and "2 |   - {% if %}" in error.message


def test_the_data_helpers_refuse_a_file_outside_the_project(tmp_path):
    (tmp_path / "outside.csv").write_text("a\n1\n")
    project_dir = tmp_path / "p"
    project_dir.mkdir()
    found = errors(
        project_dir, {"changesets/V1__a.yaml": "{{ load_csv('../../outside.csv') }}\noperations: []\n"}
    )
    assert len(found) == 1 and "is outside the project folder" in found[0] and "V1__a.yaml:1" in found[0]


# ---- the render budget (issue #9) ------------------------------------------------------------


def _budgeted(seconds: float = 10, output_mb: float = 1, clock=None):
    from jinja2 import StrictUndefined

    from kmigrate.config import InputLimits
    from kmigrate.templating import BudgetedSandbox, RenderBudget

    env = BudgetedSandbox(undefined=StrictUndefined)
    limits = InputLimits(render_seconds=seconds, render_output_mb=output_mb)
    env.budget = RenderBudget("V1__a.yaml", limits, clock or (lambda: 0.0))
    return env


def test_the_deadline_is_checked_on_loop_iterations_with_an_injected_clock():
    ticks = iter(range(10**9))
    env = _budgeted(seconds=100, clock=lambda: float(next(ticks)))  # one second per reading
    with pytest.raises(ChangesetError, match="longer than the limit of 100 s") as info:
        "".join(
            env.from_string(
                "{% for a in [1] * 1000 %}{% for b in [1] * 1000 %}{% endfor %}{% endfor %}"
            ).generate()
        )
    assert "render_seconds" in (info.value.hint or "")
    # The same loops within the deadline run to the end, whatever the clock reads meanwhile.
    env = _budgeted(seconds=100)
    assert "".join(env.from_string("{% for a in range(300) %}{% endfor %}{{ 'done' }}").generate()) == "done"


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a' * 2000000 }}",
        "{{ [0] * 2000000 }}",
        "{{ 'x' | center(2000000) }}",
        "{{ '%02000000d' % 1 }}",
        "{{ '{:>2000000}'.format(1) }}",
        "{{ lipsum(n=2000000) }}",
        "{% set ns = namespace(v='x') %}{% for i in range(30) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}",
        "{% set ns = namespace(v=[0]) %}{% for i in range(30) %}{% set ns.v = ns.v + ns.v %}{% endfor %}",
        "{{ ('x ' * 200000) | wordwrap(5) }}",  # a filter's input: at most 1/16 of the budget
        "{{ ([1] * 200000).sort() }}",  # a method's object too
    ],
)
def test_values_larger_than_the_output_budget_are_refused_before_they_are_built(template):
    with pytest.raises(ChangesetError, match="render_output_mb"):
        "".join(_budgeted(output_mb=1).from_string(template).generate())


def test_small_values_of_the_same_shapes_render():
    env = _budgeted(output_mb=1)
    text = "{{ 'a' * 3 }}|{{ 'x' | center(5) }}|{{ '%03d' % 7 }}|{{ '{:>3}'.format(1) }}|{{ 'a' ~ 'b' }}|{{ 2 ** 10 }}"
    assert "".join(env.from_string(text).generate()) == "aaa|  x  |007|  1|ab|1024"


def test_counts_a_template_may_use_are_bounded():
    with pytest.raises(ChangesetError, match="slices"):
        "".join(_budgeted().from_string("{{ [1] | slice(200000) | list }}").generate())
    with pytest.raises(ChangesetError, match="values formatted"):
        "".join(_budgeted().from_string("{{ ('%s' * 200000) % ((1,) * 200000) }}").generate())


def test_a_huge_power_is_refused():
    with pytest.raises(ChangesetError, match="too large"):
        "".join(_budgeted().from_string("{{ 2 ** 100000000 }}").generate())
