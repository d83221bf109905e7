"""Commands that apply and inspect: apply, status, history, resolve, repair, unlock."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from .. import api
from ..errors import InputError, KmigrateError, PendingWork
from ..plan import PENDING, Plan
from ..runner import RunEvent, RunSummary
from . import CliContext, main, pass_cli


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


@main.command()
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
    help="Wait this long for another run's lock instead of stopping at once.",
)
@click.option("--insecure-http", is_flag=True, help="Allow a plain http:// base URL that is not localhost.")
@click.option(
    "--timeout",
    "timeout",
    default=None,
    metavar="SECONDS",
    help="How long to wait for each answer from Kintone (wins over KMIGRATE_TIMEOUT and "
    "`timeout` in kmigrate.toml; default 120).",
)
@pass_cli
def apply(
    cli: CliContext,
    dry_run: bool,
    yes: bool,
    out_of_order: bool,
    lock_wait: float,
    insecure_http: bool,
    timeout: str | None,
) -> None:
    """Apply pending changesets, batch by batch, journaling every step."""
    from ..config import parse_timeout
    from ..render import render_text

    ctx = cli.context()
    if insecure_http:
        ctx = api.Context(ctx.project, dataclasses.replace(ctx.env, insecure_http=True))
    if timeout is not None:
        ctx = api.Context(
            ctx.project, dataclasses.replace(ctx.env, timeout=parse_timeout(timeout, "--timeout"))
        )
    env = ctx.env
    if dry_run:
        result = api.apply(ctx, dry_run=True, out_of_order=out_of_order)
        click.echo(render_text(result.plan), nl=False)
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
            click.echo(render_text(plan), nl=False)
            if not click.confirm(
                f"Apply {plan.batch_count} bulk request(s) to {env.name} ({env.base_url})?", default=False
            ):
                return False
        progress.append(_Progress(plan))
        return True

    try:
        result = api.apply(
            ctx,
            out_of_order=out_of_order,
            confirm=confirm,
            on_event=lambda e: progress[0](e),
            lock_wait=lock_wait,
        )
    except (KmigrateError, KeyboardInterrupt) as exc:
        for p in progress:
            p.close()
            click.echo(p.stopped(), err=True)
        if isinstance(exc, KeyboardInterrupt):  # outside a send: every journaled step is whole
            raise KmigrateError(
                "interrupted (Ctrl-C): each batch the journal holds as applied stays applied; the rest was not sent",
                hint="`kmigrate apply` resumes where this run stopped",
            ) from exc
        raise
    finally:
        for p in progress:
            p.close()
    if result.summary is None:
        click.echo("Declined: nothing was sent.")
        return
    if result.nothing_to_do:
        click.echo(
            f"Nothing to do: {len(result.plan.changesets)} changeset(s) already applied to {env.name}."
        )
        return
    click.echo(_summary_line(result.summary))


@main.command()
@click.option("--check", is_flag=True, help="Exit 3 when any changeset is not applied.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_cli
def status(cli: CliContext, check: bool, fmt: str) -> None:
    """Show each changeset's state: applied, partial, pending, in doubt, drifted."""
    ctx = cli.context()
    rows = api.status(ctx)
    if fmt == "json":
        click.echo(
            json.dumps([{**r.__dict__, "path": str(r.path) if r.path else None} for r in rows], indent=2)
        )
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
    if check and any(r.state != "applied" for r in rows):
        raise PendingWork(
            f"{sum(r.state != 'applied' for r in rows)} changeset(s) not applied to {ctx.env.name}"
        )


@main.command()
@click.option("--changeset", default=None, help="Only this changeset's events (e.g. 0003 or V0003).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_cli
def history(cli: CliContext, changeset: str | None, fmt: str) -> None:
    """Show the journal's event log (applied, failed, resolved, repaired, unlocked...)."""
    events = api.history(cli.context(), changeset)
    if fmt == "json":
        click.echo(json.dumps([e.__dict__ for e in events], indent=2, default=str))
        return
    if not events:
        click.echo("No events yet.")
    for e in events:
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
