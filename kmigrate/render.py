"""A ``Plan`` as text (for a person), JSON (for tools and CI) and Markdown (for a PR comment).

Pure: each renderer returns a string and the ``iter_*`` forms yield it in pieces, so a plan of
100,000 records can be written out without holding its JSON twice. Same plan, same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .changeset_files import display_path
from .plan import APPLIED, PENDING, Batch, ChangesetPlan, OperationSummary, Plan, plain

JSON_FORMAT = 1


# ---- JSON -----------------------------------------------------------------------------------


def _dump(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=sort_keys, default=plain)


def _request_json(request: Mapping[str, Any]) -> str:
    """An inner request, its payload's keys in canonical order (as it is hashed and sent): the
    same text whether the plan kept the payload as a dict or as its JSON (a big changeset)."""
    return (
        "{" + ", ".join(f"{_dump(k)}: {_dump(v, sort_keys=k == 'payload')}" for k, v in request.items()) + "}"
    )


def _operation_json(op: OperationSummary) -> dict[str, Any]:
    return {
        "index": op.index,
        "kind": op.kind,
        "app": op.app,
        "app_id": op.app_id,
        "guest_space_id": op.guest_space_id,
        "records": op.records,
        "line": op.line,
        "ref": op.ref,
        "destructive": op.destructive,
        "overwrites": op.overwrites,
        "description": op.description,
    }


def iter_json(plan: Plan) -> Iterator[str]:
    """The JSON form in pieces: structure indented, one request per line."""
    yield "{\n"
    yield f'  "format": {JSON_FORMAT},\n'
    yield f'  "environment": {_dump(plan.environment)},\n'
    yield '  "changesets": ['
    for n, cs in enumerate(plan.changesets):
        yield ("," if n else "") + "\n    {\n"
        head = {
            "id": cs.id,
            "version": cs.version,
            "name": cs.name,
            "path": display_path(cs.path, plan.root),
            "description": cs.description,
            "source_checksum": cs.source_checksum,
            "rendered_checksum": cs.rendered_checksum,
            "state": cs.state,
        }
        for key, value in head.items():
            yield f"      {_dump(key)}: {_dump(value)},\n"
        yield '      "operations": ['
        yield ",".join(f"\n        {_dump(_operation_json(op))}" for op in cs.operations)
        yield "\n      ],\n" if cs.operations else "],\n"
        yield '      "batches": ['
        count = 0
        for count, batch in enumerate(cs.batches, 1):
            marker = plan.markers.request(cs, batch) if plan.markers is not None else None
            yield from _batch_json(batch, first=count == 1, marker=marker)
        yield "\n      ]\n" if count else "]\n"
        yield "    }"
    yield "\n  ]\n" if plan.changesets else "]\n"
    yield "}\n"


def _batch_json(batch: Batch, first: bool, marker: dict[str, Any] | None = None) -> Iterator[str]:
    yield ("" if first else ",") + "\n        {\n"
    head = {
        "index": batch.index,
        "state": batch.state,
        "hash": batch.hash,
        "guest_space_id": batch.guest_space_id,
        "records": batch.record_count,
    }
    for key, value in head.items():
        yield f"          {_dump(key)}: {_dump(value)},\n"
    yield '          "requests": ['
    requests = ([marker] if marker is not None else []) + [call.request() for call in batch.calls]
    for i, request in enumerate(requests):
        yield ("," if i else "") + "\n            " + _request_json(request)
    yield "\n          ]\n        }"


def render_json(plan: Plan) -> str:
    return "".join(iter_json(plan))


# ---- text -----------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _app_label(op: OperationSummary) -> str:
    label = op.app if op.app == str(op.app_id) else f"{op.app} (app {op.app_id})"
    if op.guest_space_id is not None:
        label += f" [guest space {op.guest_space_id}]"
    return label


def _flag(op: OperationSummary) -> str:
    if op.destructive:
        return "DESTRUCTIVE"
    if op.overwrites:
        return "overwrites"
    return ""


def _call_summary(batch: Batch, marker: bool = False) -> str:
    kinds = Counter(f"{c.method} {c.api.rsplit('/v1/', 1)[-1]}" for c in batch.calls)
    lead = ["POST record.json (journal marker)"] if marker else []
    return ", ".join(lead + [f"{k} x{n}" if n > 1 else k for k, n in kinds.items()])


def _totals(plan: Plan) -> tuple[int, int, int]:
    """Changesets, bulk requests and records still to apply."""
    pending = plan.pending
    records = 0
    for cs in pending:
        if cs.state == PENDING:  # every batch is to send: no need to compile a lazy sequence
            records += sum(op.records for op in cs.operations)
        else:
            records += sum(b.record_count for b in cs.pending_batches)
    return len(pending), sum(len(c.pending_batches) for c in pending), records


def iter_text(plan: Plan, *, pending_only: bool = False) -> Iterator[str]:
    """The plan for a person; ``pending_only``: only what will be sent (apply's confirmation),
    no applied changeset and no applied batch."""
    n_cs, n_batches, n_records = _totals(plan)
    yield (
        f"Plan for environment {plan.environment}: {_plural(n_cs, 'changeset')} to apply, "
        f"{_plural(n_batches, 'bulk request')}, {_plural(n_records, 'record')}\n"
    )
    for cs in plan.pending if pending_only else plan.changesets:
        yield "\n" + _changeset_text(cs, plan.root, plan.markers is not None, pending_only=pending_only)


def _changeset_text(
    cs: ChangesetPlan, root: Path | None, markers: bool = False, *, pending_only: bool = False
) -> str:
    lines = [f"{cs.id}  [{cs.state}]  {display_path(cs.path, root)}"]
    if cs.description:
        lines.append(f"  {cs.description}")
    if cs.state == APPLIED:
        lines.append(f"  already applied: {_plural(len(cs.batches), 'bulk request')}, nothing to do")
        return "\n".join(lines) + "\n"
    lines.append("  operations:")
    width = max((len(_app_label(op)) for op in cs.operations), default=0)
    for op in cs.operations:
        where = f"  line {op.line}" if op.line is not None else ""
        flag = _flag(op)
        lines.append(
            f"    {op.index + 1:>3}. {op.kind:<9} {_app_label(op):<{width}}  {_plural(op.records, 'record'):>14}"
            f"  {op.description}{'  ' + flag if flag else ''}{where}".rstrip()
        )
    per_app: Counter[str] = Counter()
    for op in cs.operations:
        per_app[_app_label(op)] += op.records
    lines.append("  records per app: " + ", ".join(f"{app}: {n:,}" for app, n in per_app.items()))
    destructive = [op for op in cs.operations if op.destructive]
    if destructive:
        lines.append(
            "  destructive: "
            + ", ".join(
                f"operation {op.index + 1} ({op.kind} {_plural(op.records, 'record')} of {op.app})"
                for op in destructive
            )
        )
    pending = len(cs.pending_batches)
    lines.append(
        f"  bulk requests: {len(cs.batches)}"
        + (f" ({pending} to send)" if pending != len(cs.batches) else "")
    )
    for batch in cs.pending_batches if pending_only else cs.batches:
        guest = f" guest space {batch.guest_space_id}," if batch.guest_space_id is not None else ""
        lines.append(
            f"    #{batch.index} [{batch.state}]{guest} {_plural(len(batch.calls) + markers, 'call')}, "
            f"{_plural(batch.record_count, 'record')}: {_call_summary(batch, markers)}"
        )
    return "\n".join(lines) + "\n"


def render_text(plan: Plan, *, pending_only: bool = False) -> str:
    return "".join(iter_text(plan, pending_only=pending_only))


# ---- Markdown -------------------------------------------------------------------------------


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


MANY_RECORDS = 100  # a status change on more records than this is called out
FIRST_RECORDS = 3  # records shown per operation in the reviewer's view


def _callouts(cs: ChangesetPlan, samples: dict[int, Any]) -> list[str]:
    """What a reviewer must not miss: deletes, updates by id without revision, mass status changes."""
    out = []
    for op in cs.operations:
        sample = samples.get(op.index)
        if op.destructive:
            out.append(f"operation {op.index + 1}: **deletes {op.records:,} record(s)** of {_md(op.app)}")
        if op.kind == "update" and sample is not None and sample.unguarded:
            out.append(
                f"operation {op.index + 1}: updates {sample.unguarded:,} record(s) of {_md(op.app)} by id "
                "**without key or revision** (overwrites edits made meanwhile)"
            )
        if op.kind == "status" and op.records > MANY_RECORDS:
            out.append(
                f"operation {op.index + 1}: **status change on {op.records:,} records** of {_md(op.app)}"
            )
    return out


def iter_markdown(plan: Plan, diff: Iterable[str] = (), state_note: str = "") -> Iterator[str]:
    """The reviewer's view, for a pull-request comment; ``diff``: the before -> after section
    (``plandiff.iter_diff_markdown``) when it was read; ``state_note``: where the applied state
    came from (a pull request's runner often has no journal)."""
    from .plandiff import operation_samples

    n_cs, n_batches, n_records = _totals(plan)
    yield f"### kmigrate plan: `{_md(plan.environment)}`\n\n"
    if state_note:
        yield f"_{_md(state_note)}_\n\n"
    totals = f"{_plural(n_cs, 'changeset')} to apply, {_plural(n_batches, 'bulk request')}"
    yield f"{totals}, {_plural(n_records, 'record')}.\n\n"
    if not plan.changesets:
        return
    yield "| Changeset | State | Operations | Records | Bulk requests | Destructive |\n"
    yield "| --- | --- | ---: | ---: | ---: | --- |\n"
    for cs in plan.changesets:
        records = sum(op.records for op in cs.operations)
        destructive = [op for op in cs.operations if op.destructive]
        flag = (
            "**yes**: " + ", ".join(f"{op.kind} {op.records:,} in {_md(op.app)}" for op in destructive)
            if destructive
            else "no"
        )
        yield f"| `{cs.id}` | {cs.state} | {len(cs.operations)} | {records:,} | {len(cs.batches)} | {flag} |\n"
    for cs in plan.pending:
        samples = operation_samples(cs)
        callouts = _callouts(cs, samples)
        yield f"\n#### `{cs.id}`\n\n"
        if callouts:
            yield "".join(f"- :warning: {line}\n" for line in callouts) + "\n"
        for op in cs.operations:
            sample = samples.get(op.index)
            if sample is None or not sample.items:
                continue
            first = sample.items[:FIRST_RECORDS]
            yield (
                f"<details><summary>operation {op.index + 1} ({op.kind} {_md(op.app)}): first "
                f"{len(first)} of {op.records:,}</summary>\n\n```json\n"
            )
            # keys in canonical order, as in the plan's JSON: the same for a spooled changeset
            yield "".join(_dump(item, sort_keys=True) + "\n" for item in first)
            yield "```\n\n</details>\n"
    yield from diff
    for cs in plan.changesets:
        yield f"\n<details><summary><code>{cs.id}</code> ({cs.state})</summary>\n\n"
        if cs.description:
            yield f"{_md(cs.description)}\n\n"
        yield f"`{display_path(cs.path, plan.root)}`\n\n"
        yield "| # | Operation | App | Records | Details | Line |\n| ---: | --- | --- | ---: | --- | ---: |\n"
        for op in cs.operations:
            flag = _flag(op)
            details = _md(op.description) + (f" **{flag}**" if flag else "")
            yield (
                f"| {op.index + 1} | {op.kind} | {_md(_app_label(op))} | {op.records:,} | {details.strip()} | "
                f"{op.line if op.line is not None else ''} |\n"
            )
        yield "\n| Bulk | State | Calls | Records | Requests |\n| ---: | --- | ---: | ---: | --- |\n"
        for batch in cs.batches:
            marked = plan.markers is not None
            cells = (
                batch.index,
                batch.state,
                len(batch.calls) + marked,
                f"{batch.record_count:,}",
                _md(_call_summary(batch, marked)),
            )
            yield "| " + " | ".join(str(c) for c in cells) + " |\n"
        yield "\n</details>\n"


def render_markdown(plan: Plan, diff: Iterable[str] = (), state_note: str = "") -> str:
    return "".join(iter_markdown(plan, diff, state_note))


__all__ = [
    "render_text",
    "render_json",
    "render_markdown",
    "iter_text",
    "iter_json",
    "iter_markdown",
]
