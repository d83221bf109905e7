"""Saved plans: ``kmigrate plan --out FILE`` and ``kmigrate apply FILE``.

A saved plan is one JSON document: the plan (as ``kmigrate plan --format json`` prints it) and
what it was made from, so ``apply FILE`` can hold the run to it::

    {
      "kmigrate_saved_plan": 1,
      "kmigrate": "0.1.0",
      "environment": "production",
      "target": "https://example.cybozu.com",        # the base URL, or "sandbox:sandbox.yaml"
      "apps": {"orders": [101, null], ...},           # alias -> [app id, guest space id]
      "vars_sha256": "...",                          # sha256 of the variables (values not kept)
      "journal": {"0001": {...}, ...},               # the journal's state the plan was made on
      "changesets": [{"id": ..., "source_checksum": ..., "rendered_checksum": ...,
                      "batch_hashes": [...]}, ...],
      "plan": {"format": 1, ...}
    }

``stale_reasons`` compares a saved plan with what ``apply`` finds under the journal's lock: any
difference (a changeset edited, added or removed; a data file or template changing the
rendered checksum; a variable; the apps; the target; the journal moved on; a batch compiled
differently) is a reason, and ``apply`` refuses (exit 2) before anything is sent. Secrets are
never in the file: credentials are not part of a plan, and variables are kept as a hash only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .changeset import LoadedChangeset
from .changeset_files import display_path
from .config import Environment
from .errors import InputError, Location
from .plan import JournaledChangeset, Plan, canonical_json
from .render import iter_json, render_json

SAVED_PLAN_FORMAT = 1


@dataclass(frozen=True)
class SavedPlan:
    """What a saved plan file holds (the plan itself kept as its JSON)."""

    environment: str
    target: str
    apps: dict[str, list[int | None]]
    vars_sha256: str
    journal: dict[str, dict[str, Any]]
    changesets: list[dict[str, Any]]
    plan: dict[str, Any]
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kmigrate_saved_plan": SAVED_PLAN_FORMAT,
            "kmigrate": __version__,
            "environment": self.environment,
            "target": self.target,
            "apps": self.apps,
            "vars_sha256": self.vars_sha256,
            "journal": self.journal,
            "changesets": self.changesets,
            "plan": self.plan,
        }


def _target(env: Environment) -> str:
    if env.sandbox_file is not None:
        return f"sandbox:{display_path(env.sandbox_file, env.root)}"
    return env.base_url or ""


def _apps(env: Environment) -> dict[str, list[int | None]]:
    return {alias: [app.id, app.guest_space_id] for alias, app in sorted(env.apps.items())}


def _vars_hash(env: Environment) -> str:
    return hashlib.sha256(canonical_json(_plain(dict(env.vars))).encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    """TOML dates and times as text, so the hash is of JSON."""
    return json.loads(json.dumps(value, default=str))


def _journal(state: Mapping[str, JournaledChangeset]) -> dict[str, dict[str, Any]]:
    return {
        version: {
            "source_checksum": j.source_checksum,
            "rendered_checksum": j.rendered_checksum,
            "state": j.state,
            "batch_states": {str(i): s for i, s in sorted(j.batch_states.items())},
            "batch_hashes": {str(i): h for i, h in sorted(j.batch_hashes.items())},
        }
        for version, j in sorted(state.items())
    }


def _changesets(changesets: Sequence[LoadedChangeset], plan: Plan) -> list[dict[str, Any]]:
    planned = {c.version: c for c in plan.changesets}
    return [
        {
            "id": c.id,
            "version": c.version,
            "path": display_path(c.path, plan.root),
            "source_checksum": c.source_checksum,
            "rendered_checksum": c.rendered_checksum,
            "batch_hashes": planned[c.version].batch_hashes if c.version in planned else [],
        }
        for c in changesets
    ]


def made_from(
    env: Environment,
    state: Mapping[str, JournaledChangeset],
    changesets: Sequence[LoadedChangeset],
    plan: Plan,
    *,
    with_plan: bool = True,
) -> SavedPlan:
    """The saved form of ``plan`` (``with_plan=False``: only what it was made from, to compare)."""
    return SavedPlan(
        environment=env.name,
        target=_target(env),
        apps=_apps(env),
        vars_sha256=_vars_hash(env),
        journal=_journal(state),
        changesets=_changesets(changesets, plan),
        plan=json.loads(render_json(plan)) if with_plan else {},
    )


def write_saved_plan(saved: SavedPlan, path: Path, plan: Plan | None = None) -> None:
    """Write ``saved``; with ``plan``, its ``"plan"`` is that plan written as it is produced
    (``render.iter_json``, one batch at a time), so memory stays flat at any size.

    Written beside ``path`` and renamed over it once whole: an error part-way (a data file
    unreadable while the plan is produced) leaves the old file, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="\n") as handle:
            if plan is None:
                json.dump(saved.to_json(), handle, ensure_ascii=False, indent=1, sort_keys=False)
                handle.write("\n")
            else:
                head = saved.to_json()
                del head["plan"]  # last: written after the rest, piece by piece
                text = json.dumps(head, ensure_ascii=False, indent=1, sort_keys=False)
                handle.write(text[: -len("\n}")] + ',\n "plan": ')
                for piece in iter_json(plan):
                    handle.write(piece)
                handle.write("}\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read_saved_plan(path: Path) -> SavedPlan:
    """A saved plan file, or an ``InputError`` naming it (exit 2)."""
    where = Location(file=display_path(path))
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"not a saved plan: {exc}", location=where, hint="write one with `kmigrate plan --out FILE`"
        ) from None
    if not isinstance(data, dict) or data.get("kmigrate_saved_plan") != SAVED_PLAN_FORMAT:
        raise InputError(
            f"not a saved plan of format {SAVED_PLAN_FORMAT} (no `kmigrate_saved_plan: {SAVED_PLAN_FORMAT}`)",
            location=where,
            hint="write one with `kmigrate plan --out FILE` (a `plan --format json` output is not one)",
        )
    try:
        return SavedPlan(
            environment=str(data["environment"]),
            target=str(data["target"]),
            apps={str(k): list(v) for k, v in data["apps"].items()},
            vars_sha256=str(data["vars_sha256"]),
            journal=dict(data["journal"]),
            changesets=list(data["changesets"]),
            plan=dict(data["plan"]),
            path=Path(path),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InputError(f"saved plan is incomplete ({exc!r} is wrong or missing)", location=where) from None


def stale_reasons(saved: SavedPlan, now: SavedPlan) -> list[str]:
    """Every way ``now`` (what apply found) differs from what ``saved`` was made from."""
    reasons: list[str] = []
    if saved.environment != now.environment:
        reasons.append(f"it was made for environment {saved.environment!r}, not {now.environment!r}")
    if saved.target != now.target:
        reasons.append(f"the environment's target changed ({saved.target} -> {now.target})")
    if saved.apps != now.apps:
        reasons.append("the environment's apps changed in kmigrate.toml")
    if saved.vars_sha256 != now.vars_sha256:
        reasons.append("the template variables changed (kmigrate.toml vars or --var)")
    reasons.extend(_changeset_reasons(saved.changesets, now.changesets))
    if saved.journal != now.journal:
        moved = sorted(
            set(saved.journal) ^ set(now.journal)
            | {v for v in set(saved.journal) & set(now.journal) if saved.journal[v] != now.journal[v]}
        )
        reasons.append(
            "the journal moved on since the plan was made (another run applied, resolved or repaired "
            + ", ".join(f"V{v}" for v in moved)
            + ")"
        )
    return reasons


def _changeset_reasons(saved: Iterable[dict[str, Any]], now: Iterable[dict[str, Any]]) -> list[str]:
    before = {c["version"]: c for c in saved}
    after = {c["version"]: c for c in now}
    reasons = []
    for version, cs in after.items():
        old = before.get(version)
        if old is None:
            reasons.append(f"{cs['id']} was added")
        elif old["id"] != cs["id"]:
            reasons.append(f"{old['id']} was renamed to {cs['id']}")
        elif old["source_checksum"] != cs["source_checksum"]:
            reasons.append(f"{cs['id']} was edited")
        elif old["rendered_checksum"] != cs["rendered_checksum"]:
            reasons.append(
                f"{cs['id']} renders differently (a data file, template or variable it reads changed)"
            )
        elif old["batch_hashes"] != cs["batch_hashes"]:
            reasons.append(f"{cs['id']} compiles to other bulk requests")
    reasons.extend(f"{c['id']} was removed" for v, c in before.items() if v not in after)
    return reasons


def refuse_other_environment(saved: SavedPlan, env: Environment) -> None:
    """Before anything is loaded: a plan made for another environment is not this one's."""
    if saved.environment != env.name:
        raise InputError(
            f"the saved plan was made for environment {saved.environment!r}, not {env.name!r}: nothing was sent",
            location=Location(file=display_path(saved.path)) if saved.path else None,
            hint=f"apply it with -e {saved.environment} (or leave -e out), or make a plan for {env.name}",
        )


def refuse_if_stale(saved: SavedPlan, now: SavedPlan) -> None:
    reasons = stale_reasons(saved, now)
    if reasons:
        raise InputError(
            "the saved plan is stale, nothing was sent:\n  " + "\n  ".join(reasons),
            location=Location(file=display_path(saved.path)) if saved.path else None,
            hint="make a new plan (`kmigrate plan --out FILE`), review it, and apply that",
        )
