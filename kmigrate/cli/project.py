"""Commands about the project's files: init, new, validate, plan, schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..changeset_files import display_path
from ..errors import PendingWork
from . import CliContext, api, insecure_http_option, main, pass_cli


def _shown(path: Path) -> str:
    return display_path(path.resolve())


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_cli
def init(cli: CliContext, directory: Path | None) -> None:
    """Make a working project in DIRECTORY (default: the -C folder).

    Writes kmigrate.toml (a sandbox environment and a placeholder production one), the sandbox
    file, a first changeset with its data file, and a template with a macro. Refuses to touch an
    existing kmigrate.toml.
    """
    target = directory if directory is not None else cli.project_dir
    written = api.init_project(target)
    for path in written:
        click.echo(f"created {_shown(path)}")
    where = "" if target.resolve() == Path.cwd().resolve() else f" -C {_shown(target)}"
    click.echo(f"next: kmigrate{where} validate && kmigrate{where} plan")


@main.command()
@click.argument("name")
@pass_cli
def new(cli: CliContext, name: str) -> None:
    """Create the next changeset, changesets/V<next>__NAME.yaml, from a template."""
    path = api.new_changeset(cli.context(), name)
    click.echo(f"created {_shown(path)}")


@main.command()
@click.option(
    "--online",
    is_flag=True,
    help="Read the apps' fields and process from Kintone (GET only) and check the records against them.",
)
@insecure_http_option
@pass_cli
def validate(cli: CliContext, online: bool, insecure_http: bool) -> None:
    """Check every changeset (Jinja, YAML, schema, apps, refs, data files, and the values against
    the apps' fields and process when they are known); what `apply` would refuse (drift, order,
    batches in doubt) too; all errors at once.

    Exits 2 when anything is wrong. Nothing is sent to Kintone (--online only reads).
    """
    ctx = cli.context(insecure_http=insecure_http)
    result = api.validate(ctx, online=online)
    if not result.ok:
        for error in result.errors:
            click.echo(f"Error: {error}", err=True)
        count = len(result.errors)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found; nothing was sent.", err=True)
        click.get_current_context().exit(2)
    records = result.record_count
    n = len(result.changesets)
    click.echo(
        f"OK: {n} changeset{'s' if n != 1 else ''}, {result.operation_count} operation"
        f"{'s' if result.operation_count != 1 else ''}, {records} record{'s' if records != 1 else ''} "
        f"valid for environment {ctx.env.name!r}"
        + (f" (apps checked against {result.schemas_from})." if result.schemas_from else ".")
    )


@main.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="text for a person, json for tools, markdown for a pull-request comment.",
)
@click.option(
    "--check",
    is_flag=True,
    help="For CI: exit 2 where `apply` would refuse (drift, order, in doubt), 3 when there is work to do.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Also save the plan with what it was made from: `kmigrate apply FILE` applies exactly it.",
)
@click.option(
    "--diff",
    is_flag=True,
    help="Read the records updates, upserts, deletes and status changes touch; show before -> after "
    "(needs read access to Kintone; sends no write).",
)
@insecure_http_option
@pass_cli
def plan(cli: CliContext, fmt: str, check: bool, out: Path | None, diff: bool, insecure_http: bool) -> None:
    """Show the bulk requests `apply` would send, changeset by changeset. Sends nothing."""
    from .. import plandiff, render

    ctx = cli.context(insecure_http=insecure_http)
    the_plan = api.save_plan(ctx, out, check=check) if out is not None else api.plan(ctx, check=check)
    diffs = api.plan_diff(ctx, the_plan) if diff else None
    if out is not None:
        click.echo(
            f"saved the plan to {_shown(out)}: `kmigrate -e {ctx.env.name} apply {_shown(out)}`", err=True
        )
    if fmt == "json":
        for piece in render.iter_json(the_plan):  # as produced: memory stays flat at any size
            click.echo(piece, nl=False)
        click.echo()
    elif fmt == "markdown":
        click.echo(
            render.render_markdown(
                the_plan,
                plandiff.iter_diff_markdown(diffs) if diffs is not None else (),
                api.state_source(ctx),
            )
        )
    else:
        click.echo(render.render_text(the_plan))
        if diffs is not None:
            click.echo("".join(plandiff.iter_diff_text(diffs)), nl=False)
    if check and the_plan.batch_count:
        raise PendingWork(
            f"{the_plan.batch_count} bulk request{'s' if the_plan.batch_count != 1 else ''} pending"
        )


@main.command()
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings (errors always exit 2).")
@pass_cli
def lint(cli: CliContext, strict: bool) -> None:
    """Checks for what is valid but risky: deletes by raw ids, unguarded updates, order, app
    aliases, random templates, renames, data files git ignores. Each finding: file:line rule.
    Nothing is sent; with a journal app its markers are read, as status and plan do.
    """
    report = api.lint(cli.context())
    for finding in report.findings:
        click.echo(str(finding))
    errors, warnings = len(report.errors), len(report.warnings)
    if report.findings:
        click.echo(f"{errors} error(s), {warnings} warning(s)", err=True)
    else:
        click.echo("lint: no findings", err=True)
    code = report.exit_code(strict)
    if code:
        click.get_current_context().exit(code)


@main.command(name="hash")
@pass_cli
def hash_command(cli: CliContext) -> None:
    """Rewrite changesets/kmigrate.sum from the changeset files (commit it with them).

    `validate`, `plan` and `apply` refuse (exit 2) when the sum file and the files disagree: an
    edited, added or deleted changeset, or a version two branches both added.
    """
    path, count = api.hash_changesets(cli.context())
    click.echo(f"wrote {_shown(path)}: {count} changeset{'s' if count != 1 else ''}")


@main.command()
def schema() -> None:
    """Print the JSON Schema of the changeset format (for editors: yaml-language-server)."""
    click.echo(json.dumps(api.schema(), indent=2, ensure_ascii=False))


@main.command("render")
@click.argument("changeset")
@pass_cli
def render_command(cli: CliContext, changeset: str) -> None:
    """Print CHANGESET (a version such as 0003, or its file name) as Jinja renders it for the
    environment, each line with its source line (`~N`: made by the template block at line N)."""
    ctx = cli.context()
    result = api.render_changeset(ctx, changeset)
    click.echo(f"# {_shown(result.path)} rendered for environment {ctx.env.name!r}")
    click.echo("# source | rendered | text")
    for line in result.lines:
        if line.source_line is not None:
            where = f"{line.source_line:>6}"
        elif line.block_line is not None:
            where = f"{'~' + str(line.block_line):>6}"
        else:
            where = " " * 6
        click.echo(f"{where} | {line.number:>8} | {line.text}")
