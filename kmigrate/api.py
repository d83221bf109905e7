"""One function per command: what ``kmigrate.cli`` calls, usable from Python as well.

Every function but ``init_project`` and ``schema`` takes a ``Context`` (the project and the
environment chosen). Nothing here prints; problems are ``KmigrateError``s. The project
commands (init, new, validate, plan, schema) come first, the run commands (apply, status,
history, resolve, repair, unlock) after them; each is a thin function over the rooms below
(loader, planner, runner, journal, status, drift).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import loader, sumfile
from .changeset import LoadedChangeset, _RecordsOp, json_schema
from .changeset_files import next_changeset_path, version_of
from .client import Client, RetryPolicy
from .config import CONFIG_FILE, Credentials, Environment, Project, load_project
from .drift import accepted_hashes, drifted
from .errors import (
    ChangesetError,
    ConfigError,
    InputError,
    JournalError,
    KmigrateError,
    Location,
    LockedError,
)
from .journal import Event, Journal, LockHolder
from .lint import LintReport
from .lint import lint as run_lint
from .plan import SENT, ChangesetPlan, JournaledChangeset, Plan
from .plandiff import OperationDiff, diff_plan
from .planner import build_plan
from .records import KnownFields
from .runner import RunEvent, Runner, RunSummary, check_preconditions, lost_ids
from .savedplan import SavedPlan, made_from, refuse_if_stale, refuse_other_environment, write_saved_plan
from .status import ChangesetStatus, changeset_statuses

if TYPE_CHECKING:
    from .sandbox import Sandbox

# What `kmigrate init` writes: template file in the package -> path in the new project.
_PROJECT_FILES = {
    "project/kmigrate.toml": CONFIG_FILE,
    "project/sandbox.yaml": "sandbox.yaml",
    "project/gitignore": ".gitignore",
    "project/changesets/V0001__add_customers.yaml": "changesets/V0001__add_customers.yaml",
    "project/changesets/data/customers.csv": "changesets/data/customers.csv",
    "project/templates/macros.j2": "templates/macros.j2",
}


def _template_text(name: str) -> str:
    return resources.files("kmigrate").joinpath("templates", name).read_text(encoding="utf-8")


def init_project(directory: Path | str) -> list[Path]:
    """Write a working project into ``directory`` (made if missing); the files written.

    Refuses when a ``kmigrate.toml`` is already there, and never overwrites any file.
    """
    root = Path(directory)
    if (root / CONFIG_FILE).exists():
        raise ConfigError(
            f"{CONFIG_FILE} already exists; not overwriting it",
            location=Location(file=str(root / CONFIG_FILE)),
            hint="run `kmigrate init` in an empty folder, or pass another DIR",
        )
    existing = [rel for rel in _PROJECT_FILES.values() if (root / rel).exists()]
    if existing:
        raise InputError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in {root}; not overwriting",
            hint="run `kmigrate init` in an empty folder",
        )
    written = []
    for template, rel in _PROJECT_FILES.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8", newline="\n") as handle:  # "x": never overwrite
            handle.write(_template_text(template))
        written.append(target)
    sum_file, _count = sumfile.write(root / "changesets")
    written.append(sum_file)
    return written


@dataclass(frozen=True)
class Context:
    """What every command works on, as alembic's ``Config``: the project and the environment
    chosen (its variables with ``--var`` applied). The CLI builds one per command; from Python,
    ``Context.load(".", "sandbox")``."""

    project: Project
    env: Environment

    @classmethod
    def load(
        cls, directory: Path | str = ".", env: str | None = None, vars: Mapping[str, Any] | None = None
    ) -> Context:
        project = load_project(Path(directory))
        return cls(project, project.environment(env, dict(vars or {})))

    @cached_property
    def known_fields(self) -> KnownFields:
        """The apps' field codes when the environment is the sandbox (see ``sandbox_fields``)."""
        return sandbox_fields(self.env)


def new_changeset(ctx: Context, name: str) -> Path:
    """Create the next changeset, ``V<next>__<name>.yaml``, from the template; its path.

    The version is the highest existing one plus one (``changeset_files.next_changeset_path``).
    ``changesets/kmigrate.sum`` is checked first (as Atlas's ``migrate new`` does: a changed
    changeset is not blessed by accident) and rewritten with the new file.
    """
    sumfile.check(ctx.project.changesets_dir)
    path = next_changeset_path(ctx.project.changesets_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = path.stem.split("__", 1)[1].replace("_", " ")
    text = _template_text("changeset.yaml").replace("__NAME__", title)
    with open(path, "x", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    sumfile.write(ctx.project.changesets_dir)
    return path


def hash_changesets(ctx: Context) -> tuple[Path, int]:
    """Rewrite ``changesets/kmigrate.sum`` from the changeset files (``kmigrate hash``): its path
    and how many changesets it lists."""
    return sumfile.write(ctx.project.changesets_dir)


def check_sum(ctx: Context) -> None:
    """Raise a ``SumFileError`` (exit 2) when kmigrate.sum disagrees with the files; nothing
    to check in a project without one."""
    sumfile.check(ctx.project.changesets_dir)


def load_changesets(
    ctx: Context, state: Mapping[str, JournaledChangeset] | None = None
) -> list[LoadedChangeset]:
    """Every changeset of the project, rendered for the environment and validated, in version order.

    Raises one ``ChangesetError`` naming every problem of every file. With the journal's state,
    applied changesets that did not change skip the record-by-record checks.
    """
    return loader.load_project_changesets(ctx.project, ctx.env, state, known_fields=ctx.known_fields)


def sandbox_fields(env: Environment) -> KnownFields:
    """App id -> field code -> its subtable's column codes (empty for other fields), for the
    sandbox environment, from its file: the loader then reports a misspelt field code. Empty for
    a real Kintone (its fields are not known offline) and when the file does not load (``apply``
    reports that file's problems itself)."""
    if env.sandbox_file is None:
        return {}
    from .sandbox.definition import parse_definition

    try:
        definition = parse_definition(
            yaml.safe_load(env.sandbox_file.read_text(encoding="utf-8")), env.sandbox_file
        )
    except (OSError, yaml.YAMLError, KmigrateError):
        return {}
    out: dict[int, dict[str, frozenset[str]]] = {}
    for app in definition.apps.values():
        codes = {code: frozenset(f.fields) for code, f in app.fields.items()}
        codes.update({f.code: frozenset() for f in app.system.values()})
        out[app.id] = codes
    return out


@dataclass(frozen=True)
class Validation:
    """The outcome of ``validate``: the changesets that loaded and every problem found."""

    changesets: list[LoadedChangeset] = field(default_factory=list)
    errors: list[ChangesetError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def operation_count(self) -> int:
        return sum(len(c.operations) for c in self.changesets)

    @property
    def record_count(self) -> int:
        """Records written by add, update and upsert (inline, or counted while streaming a data file)."""
        return sum(
            op.body.record_count or 0
            for cs in self.changesets
            for op in cs.operations
            if isinstance(op.body, _RecordsOp)
        )


def validate(ctx: Context) -> Validation:
    """Check every changeset against the environment, and kmigrate.sum against the files: all
    errors at once, nothing sent anywhere."""
    changesets, errors = loader.load_all(ctx.project, ctx.env, known_fields=ctx.known_fields)
    return Validation(changesets, [*sumfile.problems_of(ctx.project.changesets_dir), *errors])


def plan(ctx: Context, state: Mapping[str, JournaledChangeset] | None = None) -> Plan:
    """The plan ``apply`` would run: every changeset, compiled to bulk requests (the batches'
    states from ``state``, read from the journal when not given)."""
    check_sum(ctx)
    if state is None:
        state = journal_state(ctx)
    return build_plan(load_changesets(ctx, state), ctx.env, state)


def plan_diff(ctx: Context, the_plan: Plan, client: Client | None = None) -> list[OperationDiff]:
    """``plan --diff``: the records the plan's updates, upserts, deletes and status changes touch,
    read now (reads only), compared with what will be sent (kmigrate/plandiff.py)."""
    refs: dict[str, list[int]] = {}
    if ctx.env.journal_path.exists():
        with Journal.open(ctx.env.journal_path) as journal:
            refs = journal.refs()
    own = client is None
    active = client if client is not None else connect(ctx)
    try:
        return diff_plan(active, the_plan, refs)
    finally:
        if own:
            active.close()


def save_plan(ctx: Context, path: Path) -> Plan:
    """``kmigrate plan --out FILE``: the plan, written to ``path`` with what it was made from
    (the journal's state, every changeset's checksums, the environment, the variables' hash)."""
    check_sum(ctx)
    state = journal_state(ctx)
    changesets = load_changesets(ctx, state)
    the_plan = build_plan(changesets, ctx.env, state)
    write_saved_plan(made_from(ctx.env, state, changesets, the_plan), path)
    return the_plan


def lint(ctx: Context) -> LintReport:
    """``kmigrate lint``: the risky-but-valid findings (kmigrate/lint.py), offline; the journal
    read is the environment's local one, when there is one."""
    if not ctx.env.journal_path.exists():
        return run_lint(ctx.project, ctx.env, {}, [])
    with Journal.open(ctx.env.journal_path) as journal:
        state, records = journal.state(), journal.changesets()
    return run_lint(ctx.project, ctx.env, state, records)


def schema() -> dict[str, Any]:
    """The JSON Schema of the changeset format (``kmigrate schema``), for editors."""
    return json_schema()


# ---- applying: apply, status, history, resolve, repair, unlock ---------------------------------
# The runner's commands. Each opens what it needs (journal, client) and closes it again; tests
# inject a client (e.g. over a sandbox they hold) through ``client=``.


def connect(ctx: Context) -> Client:
    """The client for the environment: the embedded sandbox through an in-process transport, or
    Kintone; with the environment's timeout and retry settings."""
    env = ctx.env
    settings: dict[str, Any] = {"retry": RetryPolicy.of(env.retries, env.retry_seconds)}
    if env.timeout is not None:
        settings["timeout"] = env.timeout
    if env.sandbox_file is not None:
        from .sandbox import SANDBOX_BASE_URL, Sandbox

        sandbox = Sandbox.open(env.sandbox_file, env.sandbox_store)
        return Client(
            SANDBOX_BASE_URL, _sandbox_credentials(sandbox), transport=sandbox.transport(), **settings
        )
    assert env.base_url is not None  # config: an environment has a sandbox file or a base URL
    return Client(env.base_url, Credentials.from_environ(), insecure_http=env.insecure_http, **settings)


def _sandbox_credentials(sandbox: Sandbox) -> Credentials:
    """The embedded Kintone needs no secrets from the user: where its file gives an app API
    tokens, kmigrate uses them (the strongest of each app's, at most 9 as Kintone allows)."""
    tokens = [
        max(app.tokens.items(), key=lambda token: (len(token[1]), token[0]))[0]
        for app in sandbox.definition.apps.values()
        if app.tokens
    ]
    return Credentials(api_tokens=tuple(tokens[:9]))


def journal_state(ctx: Context) -> dict[str, JournaledChangeset]:
    """What the journal knows, without creating a journal where there is none yet."""
    if not ctx.env.journal_path.exists():
        return {}
    with Journal.open(ctx.env.journal_path) as journal:
        return journal.state()


@dataclass
class ApplyResult:
    plan: Plan
    summary: RunSummary | None = None  # None: nothing was run (dry run, declined)
    nothing_to_do: bool = False  # every changeset already applied: nothing was sent


def apply(
    ctx: Context,
    *,
    dry_run: bool = False,
    out_of_order: bool = False,
    confirm: Callable[[Plan], bool] | None = None,
    on_event: Callable[[RunEvent], None] = lambda event: None,
    client: Client | None = None,
    lock_wait: float = 0.0,
    saved: SavedPlan | None = None,
) -> ApplyResult:
    """Apply every pending changeset to the environment. ``confirm`` sees the plan before anything
    is sent and may decline; a dry run only plans (it is the very plan ``apply`` would run).
    With ``saved`` (``kmigrate apply FILE``), the run is held to that plan: if anything it was
    made from changed, an ``InputError`` before anything is sent or journaled."""
    env = ctx.env
    if saved is not None:
        refuse_other_environment(saved, env)
    check_sum(ctx)
    if dry_run:
        state = journal_state(ctx)
        changesets = load_changesets(ctx, state)
        check_preconditions(changesets, state, out_of_order=out_of_order)
        dry_plan = build_plan(changesets, env, state)
        if saved is not None:
            refuse_if_stale(saved, made_from(env, state, changesets, dry_plan, with_plan=False))
        return ApplyResult(dry_plan)
    with Journal.open(env.journal_path) as journal:
        run_id = journal.start_run(env.name)
        outcome, raised = "failed", False
        try:
            with journal.locked(run_id, wait=lock_wait, take_over_stale=True):
                state = journal.state()  # read under the lock: no other run can change it now
                changesets = load_changesets(ctx, state)
                check_preconditions(changesets, state, out_of_order=out_of_order)
                plan = build_plan(changesets, env, state)
                if saved is not None:
                    refuse_if_stale(saved, made_from(env, state, changesets, plan, with_plan=False))
                if not plan.pending:
                    outcome = "nothing to do"
                    return ApplyResult(
                        plan, RunSummary(skipped_changesets=len(plan.changesets)), nothing_to_do=True
                    )
                if confirm is not None and not confirm(plan):
                    outcome = "declined"
                    return ApplyResult(plan)
                own_client = client is None
                active = client if client is not None else connect(ctx)
                try:
                    runner = Runner(
                        active, journal, run_id=run_id, locate=_locator(changesets), on_event=on_event
                    )
                    summary = runner.run(plan)
                finally:
                    if own_client:
                        active.close()
                outcome = "applied"
                return ApplyResult(plan, summary)
        except BaseException as exc:
            if isinstance(exc, LockedError):
                outcome = "locked out"
            elif isinstance(exc, KeyboardInterrupt) or isinstance(exc.__cause__, KeyboardInterrupt):
                outcome = "interrupted"
            # The error in flight says what happened; if the journal is what failed, closing
            # the run fails too and must not hide it (the run is left without an outcome).
            raised = True
            try:
                journal.finish_run(run_id, outcome)
            except JournalError:
                pass
            raise
        finally:
            if not raised:
                journal.finish_run(run_id, outcome)


def _locator(changesets: Sequence[LoadedChangeset]) -> Callable[[str, int, int | None], Location]:
    by_version = {c.version: c for c in changesets}

    def locate(version: str, operation: int, record: int | None) -> Location:
        cs = by_version[version]
        return cs.location(operation, record)

    return locate


def status(ctx: Context) -> list[ChangesetStatus]:
    """Per changeset (files and journal together), what state it is in."""
    if not ctx.env.journal_path.exists():  # status never creates a journal
        return changeset_statuses(load_changesets(ctx), {}, [], [])
    with Journal.open(ctx.env.journal_path) as journal:
        journaled = journal.state()
        records, batches = journal.changesets(), journal.batches()
    return changeset_statuses(load_changesets(ctx, journaled), journaled, records, batches)


def history(ctx: Context, changeset: str | None = None) -> list[Event]:
    """The journal's event log, oldest first; only ``changeset``'s (``V0003``, ``0003``...) if given."""
    if not ctx.env.journal_path.exists():
        return []
    with Journal.open(ctx.env.journal_path) as journal:
        return journal.events(changeset=version_of(changeset) if changeset else None)


def resolve(ctx: Context, version: str, batch: int, *, applied: bool, note: str | None = None) -> list[str]:
    """Settle an in-doubt batch after checking Kintone (``applied`` or not).

    Returns the refs the batch created records for when it is resolved as applied: their ids
    were in the lost answer, so the journal keeps a lost-id placeholder for each of those
    records (later ids keep their positions) and a later operation that needs them stops.
    """
    version = version_of(version)
    with Journal.open(ctx.env.journal_path) as journal:
        with journal.locked(take_over_stale=True):
            state = journal.state()
            lost: dict[str, list[int]] = {}
            if applied and version in state and state[version].batch_states.get(batch) == SENT:
                planned = _planned(ctx, state).get(version)
                if planned is not None and 0 <= batch < len(planned.batches):
                    lost = lost_ids(planned.batches[batch])
            journal.resolve(version, batch, applied, refs=lost, note=note)
    return sorted(lost)


def repair(ctx: Context, *, note: str | None = None) -> list[str]:
    """Accept the current content of drifted changesets (logged as ``repaired`` events)."""
    with Journal.open(ctx.env.journal_path) as journal:
        with journal.locked(take_over_stale=True):
            state = journal.state()
            changesets = load_changesets(ctx, state)
            changed = drifted(changesets, state)
            if not changed:
                return []
            planned = {c.version: c for c in build_plan(changesets, ctx.env, state).changesets}
            for cs in changed:
                hashes = accepted_hashes(planned[cs.version], state[cs.version])
                journal.repair(cs.version, cs.source_checksum, cs.rendered_checksum, hashes, note=note)
            return [c.id for c in changed]


def _planned(ctx: Context, state: Mapping[str, JournaledChangeset]) -> dict[str, ChangesetPlan]:
    plan = build_plan(load_changesets(ctx, state), ctx.env, state)
    return {c.version: c for c in plan.changesets}


def unlock(ctx: Context, *, reason: str | None = None) -> LockHolder | None:
    """Free the journal's lock whoever holds it (logged). Returns the holder, or None."""
    if not ctx.env.journal_path.exists():
        return None
    with Journal.open(ctx.env.journal_path) as journal:
        return journal.force_unlock(reason)
