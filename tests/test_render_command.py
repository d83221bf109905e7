"""`kmigrate render CHANGESET`: the rendered YAML with source lines; the `{%-` hint."""

from __future__ import annotations

from click.testing import CliRunner

from kmigrate.cli import main

from .projects import items_project, write_changeset

LOOP = """\
operations:
  - add:
      app: items
      records:
      {% for code in ["A", "B"] %}
        - {code: "{{ code }}"}
      {% endfor %}
"""


def test_render_prints_each_rendered_line_with_its_source_line(tmp_path):
    root = items_project(tmp_path)
    write_changeset(root, "V0001__loop.yaml", LOOP)
    result = CliRunner().invoke(main, ["-C", str(root), "render", "0001"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "# changesets/V0001__loop.yaml rendered for environment 'sandbox'" or lines[
        0
    ].endswith("V0001__loop.yaml rendered for environment 'sandbox'")
    assert "     1 |        1 | operations:" in lines
    made = [line for line in lines if '- {code: "' in line]
    assert len(made) == 2 and all(line.lstrip().startswith("~") for line in made)  # made by the loop
    assert made[0].endswith('- {code: "A"}') and made[1].endswith('- {code: "B"}')
    assert CliRunner().invoke(main, ["-C", str(root), "render", "V0001__loop"]).exit_code == 0
    missing = CliRunner().invoke(main, ["-C", str(root), "render", "0009"])
    assert missing.exit_code == 2 and "no changeset '0009'" in missing.output


def test_a_yaml_error_from_a_dash_tag_says_kmigrate_trims_already(tmp_path):
    root = items_project(tmp_path)
    write_changeset(
        root, "V0001__loop.yaml", LOOP.replace("{% for", "{%- for").replace("{{ code }}", "{{- code }}")
    )
    result = CliRunner().invoke(main, ["-C", str(root), "validate"])
    assert result.exit_code == 2 and "YAML syntax error" in result.output
    assert "trim_blocks and lstrip_blocks on" in result.output
    assert '`{%- for code in ["A", "B"] %}` -> `{% for code in ["A", "B"] %}`' in result.output
    write_changeset(root, "V0001__loop.yaml", LOOP)
    assert CliRunner().invoke(main, ["-C", str(root), "validate"]).exit_code == 0
