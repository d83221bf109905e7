"""Commands: ``kmigrate sandbox serve | reset | records | stats`` (the embedded Kintone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ConfigError
from ..kintone import MAX_CONCURRENT_REQUESTS as MAX_IN_FLIGHT  # the sandbox's default
from . import CliContext, main, pass_cli

if TYPE_CHECKING:
    from ..sandbox import Sandbox


@main.group("sandbox")
@click.option(
    "--file",
    "sandbox_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A sandbox file to use without a project (default: the environment's `sandbox`).",
)
@click.option(
    "--store",
    "store",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the records live (default: the environment's store; with --file, in memory).",
)
@click.pass_context
def sandbox_group(ctx: click.Context, sandbox_file: Path | None, store: Path | None) -> None:
    """The embedded Kintone: serve it on localhost, reset it, look at its records."""
    ctx.meta["sandbox_args"] = (sandbox_file, store)


def _open(cli: CliContext, bulk_semantics: str = "atomic", max_in_flight: int = MAX_IN_FLIGHT) -> Sandbox:
    from ..sandbox import Sandbox

    sandbox_file, store = click.get_current_context().meta["sandbox_args"]
    if sandbox_file is None:
        env = cli.environment()
        if not env.is_sandbox:
            raise ConfigError(
                f'environment {env.name!r} is not a sandbox (it has base_url, not sandbox = "FILE")',
                hint="pass -e with a sandbox environment, or --file FILE",
            )
        assert env.sandbox_file is not None  # is_sandbox
        return Sandbox.open(
            env.sandbox_file,
            store or env.sandbox_store,
            bulk_semantics=bulk_semantics,
            max_in_flight=max_in_flight,
            project_root=env.root,
            max_bytes=env.limits.file_bytes,
        )
    return Sandbox.open(sandbox_file, store, bulk_semantics=bulk_semantics, max_in_flight=max_in_flight)


@sandbox_group.command("serve")
@click.option("--host", default="localhost", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--quiet", is_flag=True, help="Do not print a line per request.")
@click.option(
    "--bulk-semantics",
    type=click.Choice(["atomic", "prefix"]),
    default="atomic",
    show_default=True,
    help="atomic: a failed bulk request rolls back whole (Kintone's reference); "
    "prefix: the requests before the failing one stay committed.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=MAX_IN_FLIGHT,
    show_default=True,
    help="Requests handled at once; past it the sandbox answers 429 GAIA_TO04, as Kintone does.",
)
@click.option(
    "--faults",
    "fault_spec",
    default=None,
    metavar="SPEC",
    help='Seeded fault injection, e.g. "seed=7,latency=0-20,429=0.05,500=0.02,503=0.05,'
    'reset=0.05,drop=0.05,slow=0.02,slow_delay=5" (see docs/testing.md).',
)
@click.option(
    "--faults-report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the injected faults' counters (JSON) to this file on exit.",
)
@click.option(
    "--kill-client",
    "kill_point",
    default=None,
    metavar="N:PHASE",
    help="Crash testing: SIGKILL the client (pid in --client-pid-file) at its Nth request, "
    "PHASE before (not handled), commit (handled, never answered) or answer[+MS].",
)
@click.option(
    "--client-pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The file holding the pid of the client --kill-client kills (read when it fires).",
)
@pass_cli
def serve(
    cli: CliContext,
    host: str,
    port: int,
    quiet: bool,
    bulk_semantics: str,
    max_in_flight: int,
    fault_spec: str | None,
    faults_report: Path | None,
    kill_point: str | None,
    client_pid_file: Path | None,
) -> None:
    """Serve the sandbox's REST API over HTTP until Ctrl-C (or SIGTERM)."""
    import signal

    from ..sandbox.faults import FaultProfile
    from ..sandbox.server import KillSwitch, make_server

    faults = FaultProfile.parse(fault_spec) if fault_spec is not None else None
    kill = None
    if kill_point is not None:
        if client_pid_file is None:
            raise ConfigError("--kill-client needs --client-pid-file (the pid of the process to kill)")
        kill = KillSwitch.parse(kill_point, client_pid_file)
    sandbox = _open(cli, bulk_semantics, max_in_flight)
    try:
        server = make_server(
            sandbox,
            host,
            port,
            log=None if quiet else (lambda line: click.echo(line, err=True)),
            faults=faults,
            kill=kill,
        )
    except OSError as exc:
        sandbox.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint="pick another --port"
        ) from None
    apps = ", ".join(f"{a.id} ({a.name})" for a in sandbox.apps.values()) or "none"
    extra = "" if bulk_semantics == "atomic" else "; bulk semantics: prefix"
    if faults is not None:
        extra += f"; faults: {faults.spec}"
    click.echo(
        f"Kintone sandbox on http://{host}:{server.server_port}  "
        f"(apps: {apps}; store: {sandbox.store_path or 'in memory'}{extra})",
    )
    click.echo("Press Ctrl-C to stop.")

    def stop(signum: int, frame: object) -> None:  # SIGTERM: stop as Ctrl-C does (the report is written)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
        sandbox.close()
        if faults is not None and faults_report is not None:
            faults_report.write_text(json.dumps(faults.report(), indent=2) + "\n", encoding="utf-8")


@sandbox_group.command("reset")
@pass_cli
def reset(cli: CliContext) -> None:
    """Delete every record of every app; ids start again at 1."""
    sandbox = _open(cli)
    try:
        sandbox.reset()
    finally:
        sandbox.close()
    click.echo(f"sandbox reset: {sandbox.store_path or 'in-memory store'}")


@sandbox_group.command("records")
@click.argument("app")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_cli
def records(cli: CliContext, app: str, fmt: str) -> None:
    """Show an app's records (APP: an alias from kmigrate.toml or a numeric id)."""
    sandbox = _open(cli)
    try:
        if app.isdigit():
            app_id = int(app)
        else:
            app_id = cli.environment().app(app).id
        rows = sandbox.records(app_id)
        definition = sandbox.apps[app_id]
    finally:
        sandbox.close()
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    codes = ["$id", "$revision", *definition.fields]
    if definition.process_enabled:
        codes.append(definition.system_code("STATUS"))
    table = [[_cell(row.get(code, {}).get("value")) for code in codes] for row in rows]
    widths = [min(30, max([len(c), *(len(r[i]) for r in table)])) for i, c in enumerate(codes)]
    click.echo("  ".join(c.ljust(w)[:w] for c, w in zip(codes, widths, strict=False)))
    for r in table:
        click.echo("  ".join(v.ljust(w)[:w] for v, w in zip(r, widths, strict=False)))
    click.echo(f"({len(rows)} record{'s' if len(rows) != 1 else ''})")


DAILY_LIMIT = 10_000  # Kintone's standard limit of requests per app and day


@sandbox_group.command("stats")
@click.option("--day", default=None, metavar="YYYY-MM-DD", help="The UTC day to show (default: today).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_cli
def stats(cli: CliContext, day: str | None, fmt: str) -> None:
    """Requests per app on a day, against Kintone's daily limit of 10,000 per app."""
    sandbox = _open(cli)
    try:
        day = day or sandbox.api.today()
        counts = sandbox.request_counts(day)
        apps = {app_id: app.name for app_id, app in sandbox.apps.items()}
    finally:
        sandbox.close()
    rows = [
        (app_id, apps.get(app_id, "?"), counts.get(app_id, 0)) for app_id in sorted(set(apps) | set(counts))
    ]
    if fmt == "json":
        listed = [{"app": a, "name": n, "requests": c, "limit": DAILY_LIMIT} for a, n, c in rows]
        click.echo(json.dumps({"day": day, "apps": listed}, ensure_ascii=False, indent=2))
        return
    click.echo(f"requests on {day} (UTC), per app (Kintone's limit: {DAILY_LIMIT:,} a day)")
    width = max([4, *(len(name) for _, name, _ in rows)])
    for app_id, name, count in rows:
        click.echo(f"  {app_id:>5}  {name.ljust(width)}  {count:>7,}  {count / DAILY_LIMIT:>6.1%}")


def _cell(value: object) -> str:
    """One value on one line: entities by code, tables by their row count."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get("code", ""))
    if isinstance(value, list):
        if value and isinstance(value[0], dict) and "value" in value[0]:
            return f"[{len(value)} rows]"
        return ",".join(
            str(v.get("code") or v.get("name", "")) if isinstance(v, dict) else str(v) for v in value
        )
    return str(value).replace("\n", " ")


@sandbox_group.command("pull")
@click.option("-e", "--env", "source_env", default=None, help="The environment to read (e.g. production).")
@click.option(
    "--apps", default=None, help="Comma-separated aliases or ids (default: every alias of the environment)."
)
@click.option(
    "--records", type=int, default=0, show_default=True, help="Also copy this many records per app."
)
@click.option(
    "--into",
    "into_env",
    default=None,
    help="The sandbox environment whose file to update (default: the only one).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a schema file (the apps with their own ids, for `schema = FILE`) instead.",
)
@pass_cli
def pull_command(
    cli: CliContext,
    source_env: str | None,
    apps: str | None,
    records: int,
    into_env: str | None,
    out: Path | None,
) -> None:
    """Read the real apps' fields and process settings (reads only) and write them into the
    sandbox file in Kintone's own shapes, so changesets rehearse against a replica."""
    from .. import api
    from ..api import Context

    project = cli.project
    source = project.environment(source_env or cli.env_name, cli.var_overrides)
    into = None
    if out is None:
        if into_env is None:
            sandboxes = [
                name for name, cfg in project.config.env.items() if cfg.sandbox and name != source.name
            ]
            if len(sandboxes) != 1:
                raise ConfigError(
                    f"which sandbox environment to write into? ({', '.join(sandboxes) or 'none'})",
                    hint="pass --into NAME, or --out FILE",
                )
            into_env = sandboxes[0]
        into = project.environment(into_env, cli.var_overrides)
    result = api.sandbox_pull(
        Context(project, source),
        into=into,
        out=out,
        apps=[a.strip() for a in apps.split(",") if a.strip()] if apps else None,
        records=records,
    )
    for name, source_id, target_id in result.apps:
        click.echo(f"pulled {name}: app {source_id} of {source.name} -> app {target_id}")
    click.echo(
        f"wrote {result.written}" + (f"; {result.records} record(s) added to the sandbox" if records else "")
    )
