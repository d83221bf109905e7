"""The journal kept in the target Kintone: `journal init`, `journal baseline`."""

from __future__ import annotations

import click

from . import CliContext, api, main, pass_cli


@main.group()
def journal() -> None:
    """The journal app in the target Kintone (docs/journal.md)."""


@journal.command("init")
@click.option("--name", default="kmigrate journal", show_default=True, help="The new app's name.")
@click.option("--space", type=int, default=None, help="Create it in this space.")
@click.option("--guest-space", type=int, default=None, help="Create it in this guest space.")
@pass_cli
def init(cli: CliContext, name: str, space: int | None, guest_space: int | None) -> None:
    """Create the environment's journal app (needs KINTONE_USERNAME/KINTONE_PASSWORD).

    Prints the line to add to kmigrate.toml on stderr, and the new app's id alone on the last
    line of stdout (`APP=$(kmigrate -e prod journal init | tail -n 1)`)."""
    ctx = cli.context()
    env = ctx.env
    app = api.journal_init(ctx, name=name, space=space, guest_space_id=guest_space)
    setting = (
        f'journal_app = {{ "{guest_space}" = {app} }}' if guest_space is not None else f"journal_app = {app}"
    )
    click.echo(
        f"Created the journal app {app}. Add to [env.{env.name}] in kmigrate.toml:\n  {setting}", err=True
    )
    if env.project is None:
        click.echo('and, at the top of kmigrate.toml, name the project: project = "NAME"', err=True)
    click.echo(str(app))


@journal.command("baseline")
@click.argument("version")
@click.option("--note", default=None, help="Why: kept in the event log.")
@pass_cli
def baseline(cli: CliContext, version: str, note: str | None) -> None:
    """Record the changesets up to VERSION as applied, sending nothing (logged).

    For a project whose changes reached Kintone before kmigrate did: `apply` then sends only
    what comes after VERSION."""
    done = api.baseline(cli.context(), version, note=note)
    if done:
        click.echo("Baselined (recorded as applied, nothing sent): " + ", ".join(done))
    else:
        click.echo(f"Nothing to baseline: every changeset up to V{version.lstrip('V')} is already applied.")
