"""Commands that apply and inspect: apply, status, history, resolve, repair, unlock."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import events
from ..errors import InputError, KmigrateError, PendingWork
from ..events import JsonLines
from ..plan import PENDING, Plan
from . import CliContext, api, insecure_http_option, main, pass_cli

if TYPE_CHECKING:
    from ..runner import RunEvent, RunSummary


def _is_terminal(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class _Progress:
    """A progress bar on a terminal; one plain line per batch otherwise (CI logs)."""

    def __init__(self, plan: Plan):
        self.total_batches = plan.batch_count
        self.done_batches = 0
        self.done_records = 0
        self.bar = None
        total_records = _records_to_apply(plan) if _is_terminal(sys.stderr) else 0
        if total_records:
            self.bar = click.progressbar(
                length=total_records, label="applying", file=sys.stderr, show_pos=True
            )
            self.bar.__enter__()

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "batch_applied" and event.batch is not None:
            self.done_batches += 1
            self.done_records += event.records
            if self.bar is not None:
                self.bar.update(event.records)
            else:  # `#index` as in `kmigrate plan`, errors and `kmigrate resolve`
                click.echo(
                    f"{event.changeset.id}: batch #{event.batch.index} applied "
                    f"({event.records} records; {self.done_batches}/{self.total_batches} bulk requests)",
                    err=True,
                )
        elif event.kind == "changeset_skipped" and self.bar is None:
            pass  # summarised at the end; one line per applied changeset would drown a long history
        elif event.kind == "changeset_applied" and self.bar is None:
            click.echo(f"{event.changeset.id}: applied", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def stopped(self) -> str:
        left = self.total_batches - self.done_batches
        return (
            f"Stopped: this run applied {self.done_batches} batch(es), {self.done_records} record(s) (journaled, "
            f"they stay applied); {left} batch(es) not applied. `kmigrate status` shows where each changeset stands."
        )


def _records_to_apply(plan: Plan) -> int:
    # A changeset with nothing applied sends every record: its operations say how many, so a
    # big (lazy) changeset is not compiled once more just to size the bar.
    return sum(
        sum(op.records for op in cs.operations)
        if cs.state == PENDING
        else sum(b.record_count for b in cs.pending_batches)
        for cs in plan.pending
    )


def _summary_line(summary: RunSummary) -> str:
    parts = [
        f"applied {summary.applied_batches} batch(es), {summary.applied_records} record(s) "
        f"in {len(summary.applied_changesets)} changeset(s)",
        f"skipped {summary.skipped_changesets} already applied",
    ]
    if summary.reconciled_batches:
        parts.append(f"{summary.reconciled_batches} in doubt settled by reading Kintone")
    parts.append(f"{summary.requests_sent} request(s) sent")
    return "; ".join(parts)


_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: JSON lines on stdout (format first, events, summary last); messages go to stderr.",
)


@main.command()
@click.argument("saved_plan", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan that would be applied; send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before writing to a non-sandbox environment.")
@click.option(
    "--out-of-order", is_flag=True, help="Allow pending changesets older than the newest applied one."
)
@click.option(
    "--wait",
    "lock_wait",
    type=float,
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for another run's lock (or the journal app's lease) instead of stopping at once.",
)
@click.option(
    "--lease",
    "lease_seconds",
    type=click.FloatRange(min=1),
    default=None,
    metavar="SECONDS",
    help="How long the journal app's lease lasts unrenewed (default 300): a runner that dies "
    "holds it that long.",
)
@insecure_http_option
@click.option(
    "--timeout",
    "timeout",
    default=None,
    metavar="SECONDS",
    help="How long to wait for each answer from Kintone (wins over KMIGRATE_TIMEOUT and "
    "`timeout` in kmigrate.toml; default 120).",
)
@click.option(
    "--parallel",
    type=int,
    default=None,
    metavar="N",
    help="Send up to N bulk requests at once (1-10) where they are proved independent: same changeset, "
    "no ref between them, no record or unique value touched by two (wins over `parallel` in kmigrate.toml; "
    "default 1).",
)
@_FORMAT
@pass_cli
def apply(
    cli: CliContext,
    saved_plan: Path | None,
    dry_run: bool,
    yes: bool,
    out_of_order: bool,
    lock_wait: float,
    lease_seconds: float | None,
    insecure_http: bool,
    timeout: str | None,
    parallel: int | None,
    fmt: str,
) -> None:
    """Apply pending changesets, batch by batch, journaling every step.

    With SAVED_PLAN (written by `kmigrate plan --out FILE`), apply exactly that plan, or refuse
    (exit 2, nothing sent) if a changeset, data file, variable or the journal changed since.
    """
    from ..config import parse_timeout
    from ..render import render_text

    saved = None
    if saved_plan is not None:
        from ..savedplan import read_saved_plan

        saved = read_saved_plan(saved_plan)
        if cli.env_name is None:  # the saved plan names its environment
            cli.env_name = saved.environment
    ctx = cli.context(insecure_http=insecure_http)
    if timeout is not None:
        ctx = api.Context(
            ctx.project, dataclasses.replace(ctx.env, timeout=parse_timeout(timeout, "--timeout"))
        )
    env = ctx.env
    machine = fmt == "json"
    lines = JsonLines(sys.stdout) if machine else None
    if lines is not None:
        lines.write(events.header("apply", env.name))
    if dry_run:
        try:
            result = api.apply(ctx, dry_run=True, out_of_order=out_of_order, saved=saved)
        except KmigrateError as exc:
            if lines is not None:
                lines.write(events.failure(events.run_summary(None, "dry run"), exc))
            raise
        if lines is None:
            click.echo(render_text(result.plan), nl=False)
        else:
            for cs in result.plan.changesets:
                lines.write(events.planned(cs))
            lines.write(events.run_summary(None, "dry run"))
        return

    progress: list[_Progress] = []  # made once the plan is known and accepted

    def confirm(plan: Plan) -> bool:
        if not (env.is_sandbox or yes):
            if not (_is_terminal(sys.stdin) and _is_terminal(sys.stdout)):
                raise InputError(
                    f"environment {env.name!r} is not a sandbox and there is no terminal to confirm on: "
                    "nothing was sent",
                    hint="review `kmigrate plan`, then pass --yes",
                )
            # Only what this run will send: no applied changeset, no applied batch.
            click.echo(render_text(plan, pending_only=True), nl=False, err=machine)
            if not click.confirm(
                f"Apply {plan.batch_count} bulk request(s) to {env.name} ({env.base_url})?",
                default=False,
                err=machine,
            ):
                return False
        progress.append(_Progress(plan))
        return True

    def on_event(event: RunEvent) -> None:
        progress[0](event)
        if lines is not None:
            lines.write(events.run_event(event))

    try:
        result = api.apply(
            ctx,
            out_of_order=out_of_order,
            confirm=confirm,
            on_event=on_event,
            lock_wait=lock_wait,
            saved=saved,
            lease_seconds=lease_seconds,
            parallel=parallel,
        )
    except (KmigrateError, KeyboardInterrupt) as exc:
        for p in progress:
            p.close()
            click.echo(p.stopped(), err=True)
        error = exc
        if isinstance(exc, KeyboardInterrupt):  # outside a send: every journaled step is whole
            error = KmigrateError(
                "interrupted (Ctrl-C): each batch the journal holds as applied stays applied; the rest was not sent",
                hint="`kmigrate apply` resumes where this run stopped",
            )
        if lines is not None:
            assert isinstance(error, KmigrateError)
            lines.write(events.failure(events.run_summary(None, "failed"), error))
        if error is not exc:
            raise error from exc
        raise
    finally:
        for p in progress:
            p.close()
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if result.summary is None:
        declined = PendingWork(
            f"declined: nothing was sent; {result.plan.batch_count} bulk request(s) still pending for {env.name}"
        )
        if lines is not None:
            lines.write(events.failure(events.run_summary(None, "declined"), declined, "declined"))
        raise declined
    if result.nothing_to_do:
        message = f"Nothing to do: {len(result.plan.changesets)} changeset(s) already applied to {env.name}."
        if lines is None:
            click.echo(message)
        else:
            click.echo(message, err=True)
            lines.write(events.run_summary(result.summary, "nothing to do"))
        return
    if lines is None:
        click.echo(_summary_line(result.summary))
    else:
        click.echo(_summary_line(result.summary), err=True)
        lines.write(events.run_summary(result.summary, "applied"))


@main.command()
@click.option("--check", is_flag=True, help="Exit 3 when any changeset is not applied.")
@_FORMAT
@pass_cli
def status(cli: CliContext, check: bool, fmt: str) -> None:
    """Show each changeset's state: applied, partial, pending, in doubt, drifted."""
    ctx = cli.context()
    lines = JsonLines(sys.stdout) if fmt == "json" else None
    if lines is not None:
        lines.write(events.header("status", ctx.env.name))
    try:
        rows = api.status(ctx)
    except KmigrateError as exc:
        if lines is not None:
            lines.write(events.failure(events.status_summary([]), exc))
        raise
    pending = sum(r.state != "applied" for r in rows)
    if lines is not None:
        for r in rows:
            lines.write(events.status_event(r))
        summary = events.status_summary(rows)
        if check and pending:
            summary["exit_code"] = PendingWork.exit_code
        lines.write(summary)
    else:
        if not rows:
            click.echo("No changesets.")
        for r in rows:
            total = "?" if r.batches_total is None else r.batches_total
            line = f"V{r.version}__{r.name:<32} {r.state:<9} batches {r.batches_applied}/{total}"
            if r.last_applied:
                line += f"  last applied {r.last_applied}"
            if r.note:
                line += f"  ({r.note})"
            click.echo(line)
    if check and pending:
        raise PendingWork(f"{pending} changeset(s) not applied to {ctx.env.name}")


@main.command()
@click.option("--changeset", default=None, help="Only this changeset's events (e.g. 0003 or V0003).")
@_FORMAT
@pass_cli
def history(cli: CliContext, changeset: str | None, fmt: str) -> None:
    """Show the journal's event log (applied, failed, resolved, repaired, unlocked...)."""
    ctx = cli.context()
    if fmt == "json":
        lines = JsonLines(sys.stdout)
        lines.write(events.header("history", ctx.env.name))
        try:
            logged = api.history(ctx, changeset)
        except KmigrateError as exc:
            lines.write(events.failure(events.history_summary(0), exc))
            raise
        for e in logged:
            lines.write(events.history_event(e))
        lines.write(events.history_summary(len(logged)))
        return
    logged = api.history(ctx, changeset)
    if not logged:
        click.echo("No events yet.")
    for e in logged:
        where = (
            f"V{e.changeset}" + (f" batch {e.batch}" if e.batch is not None else "") if e.changeset else ""
        )
        detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True) if e.detail else ""
        click.echo(
            f"{e.time}  {e.kind:<9} {where:<16} {e.user}@{e.host} kmigrate {e.kmigrate_version}  {detail}".rstrip()
        )


@main.command()
@click.argument("changeset")
@click.argument("batch", type=int)
@click.option(
    "--applied", "applied", flag_value=True, default=None, help="Kintone holds this batch's changes."
)
@click.option(
    "--not-applied", "applied", flag_value=False, help="Kintone does not hold them: send the batch again."
)
@click.option(
    "--ids-key",
    default=None,
    metavar="FIELD",
    help="With --applied: read the ids of the records it created back from Kintone by this unique field.",
)
@click.option(
    "--ids-query",
    default=None,
    metavar="QUERY",
    help="With --applied: read them back among the records this Kintone query selects (matched by content).",
)
@click.option("--note", default=None, help="Why: kept in the event log.")
@pass_cli
def resolve(
    cli: CliContext,
    changeset: str,
    batch: int,
    applied: bool | None,
    ids_key: str | None,
    ids_query: str | None,
    note: str | None,
) -> None:
    """Settle an in-doubt batch after checking Kintone (see `kmigrate status`).

    `kmigrate apply` settles most by reading Kintone itself; this is for what it cannot tell."""
    if applied is None:
        raise InputError("say what you found: --applied or --not-applied")
    orphaned = api.resolve(
        cli.context(), changeset, batch, applied=applied, note=note, ids_key=ids_key, ids_query=ids_query
    )
    click.echo(f"Resolved {changeset} batch {batch} as {'applied' if applied else 'not applied'}.")
    if orphaned:
        click.echo(
            f"Warning: this batch created records for ref {', '.join(orphaned)}; their ids were in the lost "
            "answer. A later operation that needs those ids stops before sending anything: read them back with "
            "`--ids-key FIELD` (a unique field) or `--ids-query QUERY` on this same command.",
            err=True,
        )


@main.command()
@click.argument("changeset", required=False)
@click.option("--note", default=None, help="Why: kept in the event log.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (needed without a terminal).")
@pass_cli
def repair(cli: CliContext, changeset: str | None, note: str | None, yes: bool) -> None:
    """Accept the current content of changed (drifted) applied changesets (only CHANGESET, if
    given), after showing what changed; logged. Kintone keeps the old values."""
    ctx = cli.context()
    items = api.repair_preview(ctx, changeset)
    if not items:
        click.echo("Nothing to repair.")
        return
    for item in items:
        click.echo(f"{item.reason}")
        for change in item.batches:
            click.echo(f"--- batch {change.index} ---")
            click.echo(change.diff or "(what it sent was not kept: only its hash is journaled)")
    click.echo(
        "Kintone still holds the values the applied batches wrote: repair changes only the journal's record "
        "of what was applied, not the records. To change the records, write a new changeset."
    )
    if not yes:
        if not (_is_terminal(sys.stdin) and _is_terminal(sys.stdout)):
            raise InputError(
                "repair accepts changed history and there is no terminal to confirm on: nothing was changed",
                hint="review the changes above, then pass --yes",
            )
        names = ", ".join(item.changeset for item in items)
        if not click.confirm(f"Accept the new content of {names} as applied?", default=False):
            click.echo("Nothing repaired.")
            return
    repaired = api.repair(ctx, changeset, note=note)
    click.echo("Repaired: " + ", ".join(repaired) if repaired else "Nothing to repair.")


@main.command()
@click.option("--reason", default=None, help="Why: kept in the event log.")
@pass_cli
def unlock(cli: CliContext, reason: str | None) -> None:
    """Free the journal's lock (after a run died); logged."""
    holder = api.unlock(cli.context(), reason=reason)
    click.echo(f"Freed the lock held by {holder}." if holder else "The journal was not locked.")
