"""The command line: a thin click layer over ``kmigrate.api``.

This package is the only place that prints, prompts or exits. Commands live in submodules by
theme (``project``: init/new/validate/plan/schema; ``run``: apply/status/history/resolve/
repair/unlock; ``sandbox``: the embedded Kintone). Each ``KmigrateError`` becomes
``Error: <message>`` on stderr and the error's exit code; nothing else reaches the user as a
traceback unless ``KMIGRATE_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ..errors import KmigrateError

if TYPE_CHECKING:
    from .. import api as api
    from ..api import Context
    from ..config import Environment, Project
else:

    class _OnFirstUse:
        """A module imported when one of its names is first used: `kmigrate --help` (and every
        command until it runs) does not pay for the library's imports."""

        def __init__(self, name: str):
            self._name = name

        def __getattr__(self, attr: str) -> Any:
            return getattr(importlib.import_module(self._name), attr)

    api = _OnFirstUse("kmigrate.api")


@dataclass
class CliContext:
    """What the global options say, with the project loaded on first use."""

    project_dir: Path
    env_name: str | None
    var_args: tuple[str, ...] = ()
    _project: Project | None = field(default=None, repr=False)

    @property
    def project(self) -> Project:
        if self._project is None:
            from ..config import load_project

            self._project = load_project(self.project_dir)
        return self._project

    @property
    def var_overrides(self) -> dict[str, Any]:
        from ..config import parse_var_overrides

        return parse_var_overrides(self.var_args)

    def environment(self) -> Environment:
        return self.project.environment(self.env_name, self.var_overrides)

    def context(self, *, insecure_http: bool = False) -> Context:
        """The library's context for this command: the project and the environment chosen
        (``--insecure-http`` allowing a plain http base URL that is not this machine)."""
        env = self.environment()
        if insecure_http:
            env = replace(env, insecure_http=True)
        return api.Context(self.project, env)


pass_cli = click.make_pass_decorator(CliContext)

# On validate and plan as on apply: all three refuse a plain http base URL to another machine.
insecure_http_option = click.option(
    "--insecure-http", is_flag=True, help="Allow a plain http:// base URL that is not localhost."
)


class KmigrateGroup(click.Group):
    """Turns every ``KmigrateError`` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KmigrateError as exc:
            if os.environ.get("KMIGRATE_DEBUG"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=KmigrateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--project",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder holding kmigrate.toml.",
)
@click.option("-e", "--env", "env_name", default=None, help="The environment ([env.NAME] in kmigrate.toml).")
@click.option(
    "--var", "var_args", multiple=True, metavar="KEY=VALUE", help="Override a template variable (repeatable)."
)
@click.version_option(__version__, prog_name="kmigrate")
@click.pass_context
def main(ctx: click.Context, project_dir: Path, env_name: str | None, var_args: tuple[str, ...]) -> None:
    """Declarative, journaled, crash-safe migrations of Kintone record data."""
    ctx.obj = CliContext(project_dir=project_dir, env_name=env_name, var_args=var_args)


def fail(message: str, code: int = 2) -> None:
    """Stop a command with a message that is not a ``KmigrateError`` (bad CLI arguments)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


# Commands register themselves on ``main`` when their module is imported.
from . import journal as _journal_commands  # noqa: E402,F401
from . import project as _project_commands  # noqa: E402,F401
from . import run as _run_commands  # noqa: E402,F401
from . import sandbox as _sandbox_commands  # noqa: E402,F401
