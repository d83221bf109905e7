"""One function per command: what ``kmigrate.cli`` calls, usable from Python as well.

Every function but ``init_project`` and ``schema`` takes a ``Context`` (the project and the
environment chosen). Nothing here prints; problems are ``KmigrateError``s. The project
commands (init, new, validate, plan, schema) come first, the run commands (apply, status,
history, resolve, repair, unlock) after them; each is a thin function over the rooms below
(loader, planner, runner, journal, status, drift).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import loader, sumfile
from .appcheck import Schemas, check_changesets, known_fields
from .appschema import AppSchema, SchemaProblem
from .attachments import file_fields
from .changeset import LoadedChangeset, _RecordsOp, app_written, json_schema
from .changeset_files import display_path, next_changeset_path, version_key, version_of
from .config import CONFIG_FILE, App, Credentials, Environment, Project, env_key_location, load_project
from .drift import BatchChange, accepted_hashes, drift_report, drifted, find_drift, preflight
from .errors import (
    ChangesetError,
    ConfigError,
    InputError,
    JournalError,
    KmigrateError,
    Location,
    LockedError,
)
from .journal import UNKNOWN_ID, Event, Journal, LockHolder
from .plan import SENT, ChangesetPlan, JournaledChangeset, Plan
from .planner import Limits, build_plan
from .planner.independence import check_parallel
from .records import KnownFields
from .remote.records import Markers

# Imported where used, so that a command loads only what it needs (`kmigrate plan` needs no
# HTTP client, a no-op `apply` no runner): see docs/benchmarks.md, "A cheap start".
if TYPE_CHECKING:
    from .client import Client
    from .lint import LintReport
    from .plandiff import OperationDiff
    from .remote import session as remote
    from .remote.sync import SyncReport
    from .runner import RunEvent, RunSummary
    from .sandbox import Sandbox
    from .savedplan import SavedPlan
    from .status import ChangesetStatus

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
        text = _template_text(template)
        if rel == CONFIG_FILE:
            text = text.replace("__PROJECT__", _project_name(root))
        with open(target, "x", encoding="utf-8", newline="\n") as handle:  # "x": never overwrite
            handle.write(text)
        written.append(target)
    sum_file, _count = sumfile.write(root / "changesets")
    written.append(sum_file)
    return written


def _project_name(root: Path) -> str:
    """A ``project`` name from the folder's (written into kmigrate.toml once, so it stays put)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.resolve().name).strip("-.")[:40]
    return name if name and name[0].isalnum() else "project"


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
    def schemas(self) -> dict[int, AppSchema]:
        """The apps' definitions known offline (``app_schemas``): the sandbox file, or the
        environment's ``schema`` file."""
        return app_schemas(self.env)

    @cached_property
    def known_fields(self) -> KnownFields:
        """The apps' field codes, where their definitions are known."""
        return known_fields(self.schemas)


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
    ctx: Context, state: Mapping[str, JournaledChangeset] | None = None, *, schemas: Schemas | None = None
) -> list[LoadedChangeset]:
    """Every changeset of the project, rendered for the environment and validated, in version
    order, checked against the apps' definitions when they are known (``app_schemas``).

    Raises one ``ChangesetError`` naming every problem of every file. With the journal's state,
    applied changesets that did not change skip the record-by-record checks.
    """
    changesets, errors = _load_checked(ctx, state, schemas)
    if errors:
        raise loader.combine(errors)
    return changesets


def _load_checked(
    ctx: Context, state: Mapping[str, JournaledChangeset] | None, schemas: Schemas | None
) -> tuple[list[LoadedChangeset], list[ChangesetError]]:
    """The loader's changesets and problems, then what the apps' definitions refuse."""
    schemas = ctx.schemas if schemas is None else schemas
    partial: list[LoadedChangeset] = []  # files with errors whose operations can still be checked
    changesets, errors = loader.load_all(
        ctx.project, ctx.env, state, known_fields=known_fields(schemas), partial=partial
    )
    if schemas:
        every = sorted([*changesets, *partial], key=lambda c: version_key(c.version))
        errors.extend(check_changesets(every, ctx.env, schemas, state))
    return changesets, errors


def app_schemas(env: Environment) -> dict[int, AppSchema]:
    """App id -> its definition, offline: from the environment's ``schema`` file (what
    ``sandbox pull --out`` saved), else the sandbox file; empty for a real Kintone without one
    (``validate --online`` reads them from Kintone). A sandbox file that does not load gives
    nothing here (``check_target`` reports that file's problems); a schema file that does not
    load is an error."""
    if env.schema_file is not None:
        return _schemas_from_file(env, env.schema_file, strict=True)
    if env.sandbox_file is not None:
        return _schemas_from_file(env, env.sandbox_file, strict=False)
    return {}


def _schemas_from_file(env: Environment, path: Path, *, strict: bool) -> dict[int, AppSchema]:
    from .sandbox.definition import read_definition

    root = env.root
    try:  # the path rule and the size and YAML bounds of any file a pull request may change
        definition = read_definition(path, project_root=root, max_bytes=env.limits.file_bytes)
    except KmigrateError:
        if not strict:
            return {}
        raise
    source = path.relative_to(root).as_posix() if path.is_relative_to(root) else display_path(path)
    return {
        app.id: AppSchema(fields=app.fields, system=app.system, process=app.process, source=source)
        for app in definition.apps.values()
    }


def unique_fields(schemas: Mapping[int, AppSchema]) -> dict[int, frozenset[str]]:
    """App id -> the codes of its unique fields, for the apps whose definitions are known."""
    return {
        app: frozenset(code for code, f in schema.fields.items() if f.unique)
        for app, schema in schemas.items()
    }


def lookup_sources(schemas: Mapping[int, AppSchema]) -> dict[int, frozenset[int]]:
    """App id -> the apps its lookup fields read (a table's columns' too), for the apps whose
    definitions are known."""
    return {
        app: frozenset(
            f.lookup.related_app
            for top in schema.fields.values()
            for f in (top, *top.fields.values())
            if f.lookup is not None
        )
        for app, schema in schemas.items()
    }


def online_schemas(env: Environment, apps: Sequence[App], client: Client) -> dict[int, AppSchema]:
    """The definitions of ``apps`` as Kintone has them: ``GET app/form/fields.json`` and ``GET
    app/status.json`` of each (reads only: nothing is written)."""
    out: dict[int, AppSchema] = {}
    where = env.base_url or "the sandbox"
    for app in sorted(set(apps), key=lambda a: (a.id, a.guest_space_id or 0)):
        properties = client.app_form_fields(app.id, app.guest_space_id)
        status = client.request(
            "GET", "app/status", params={"app": app.id}, guest_space_id=app.guest_space_id
        )
        try:
            out[app.id] = AppSchema.from_kintone(properties, status, source=f"{where} app {app.id}")
        except SchemaProblem as exc:
            raise InputError(f"app {app.id} on {where}: cannot read its definition: {exc}") from exc
    return out


def apps_used(env: Environment, changesets: Sequence[LoadedChangeset] = ()) -> list[App]:
    """Every app the environment names, and any other app a changeset names by id."""
    apps = dict.fromkeys(env.apps.values())
    for cs in changesets:
        for op in cs.operations:
            try:
                apps.setdefault(env.app(app_written(op.body)))
            except ConfigError:
                continue
    return list(apps)


def sandbox_fields(env: Environment) -> KnownFields:
    """App id -> field code -> its subtable's column codes (empty for other fields), for the
    sandbox environment, from its file: the loader then reports a misspelt field code."""
    return known_fields(app_schemas(env)) if env.sandbox_file is not None else {}


@dataclass(frozen=True)
class Validation:
    """The outcome of ``validate``: the changesets that loaded and every problem found."""

    changesets: list[LoadedChangeset] = field(default_factory=list)
    errors: list[KmigrateError] = field(default_factory=list)
    schemas_from: str = ""  # where the apps' definitions came from ("": none were known)

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


def validate(ctx: Context, *, online: bool = False, client: Client | None = None) -> Validation:
    """Check every changeset against the environment, and kmigrate.sum against the files: all
    errors at once, no data written anywhere (with a journal app its markers are read, and the
    sync may fill in ids a marker lacks, as every state-reading command does).

    The apps' definitions come from ``app_schemas`` or, with ``online``, from Kintone itself
    (reads only). What ``apply`` would refuse is reported too: drift, order, in-doubt batches.
    """
    env = ctx.env
    target: list[KmigrateError] = []
    if client is None:  # else the client given is the target
        try:
            check_target(env, credentials=False)
        except InputError as exc:
            target.append(exc)
    # A bad target is not asked for the journal app's state (and no journal is made for it).
    state = _local_state(ctx) if target else journal_state(ctx, client)
    schemas: Schemas = {}
    if online and not target:
        own = client is None
        active = client if client is not None else connect(ctx)
        try:
            schemas = online_schemas(env, apps_used(env), active)
            changesets, errors = _load_checked(ctx, state, schemas)
            extra = [a for a in apps_used(env, changesets) if a.id not in schemas]
            if extra:  # apps named only by id in a changeset: read them too, check again
                schemas = {**schemas, **online_schemas(env, extra, active)}
                changesets, errors = _load_checked(ctx, state, schemas)
        finally:
            if own:
                active.close()
    else:
        schemas = ctx.schemas
        changesets, errors = _load_checked(ctx, state, schemas)
    found: list[KmigrateError] = [*sumfile.problems_of(ctx.project.changesets_dir), *target, *errors]
    if not errors:
        found.extend(preflight_problems(env, changesets, state))
    sources = sorted({s.source for s in schemas.values() if s.source})
    return Validation(changesets, found, ", ".join(sources))


def preflight_problems(
    env: Environment,
    changesets: Sequence[LoadedChangeset],
    state: Mapping[str, JournaledChangeset],
    *,
    out_of_order: bool = False,
) -> list[KmigrateError]:
    """What ``apply`` would refuse after loading: the planner's problems (refs past the end
    of a data file's rows, ...), then drift and order (``drift.preflight``)."""
    try:
        the_plan = _build_plan(changesets, env, state)
    except ChangesetError as exc:
        return [exc, *preflight(changesets, state, None, out_of_order=out_of_order)]
    return preflight(changesets, state, the_plan, out_of_order=out_of_order)


_F = TypeVar("_F", bound=Callable[..., Any])


def _sparing_the_collector(command: _F) -> _F:
    """Run ``command`` with the objects alive when it starts (the modules, the project's
    settings: ~50,000 of them) out of the garbage collector's sight (``gc.freeze``), and give
    them back after. A command streaming 100,000 records starts a full collection every few
    thousand records kept a while (a bulk being built), and each one walked all of those
    objects again: 16 of them, 1.3 s of W1's apply. Nothing alive is ever collected, so this
    changes only the time. Left alone when something else froze objects already (theirs)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        if gc.get_freeze_count():
            return command(*args, **kwargs)
        gc.freeze()
        try:
            return command(*args, **kwargs)
        finally:
            gc.unfreeze()

    return run  # type: ignore[return-value]


@_sparing_the_collector
def plan(ctx: Context, state: Mapping[str, JournaledChangeset] | None = None, *, check: bool = False) -> Plan:
    """The plan ``apply`` would run: every changeset, compiled to bulk requests (the batches'
    states from ``state``, read from the journal when not given). With ``check``, refuses as
    ``apply`` would (drift, in-doubt batches, order)."""
    check_sum(ctx)
    check_target(ctx.env, credentials=False)
    if state is None:
        state = journal_state(ctx)
    changesets = load_changesets(ctx, state)
    the_plan = _build_plan(changesets, ctx.env, state)
    if check:
        _refuse(preflight(changesets, state, the_plan))
    return the_plan


def _refuse(problems: Sequence[KmigrateError]) -> None:
    """What ``apply`` refuses before sending (``drift.preflight``'s verdict), raised: the first
    problem found."""
    if problems:
        raise problems[0]


def _build_plan(
    changesets: Sequence[LoadedChangeset], env: Environment, state: Mapping[str, JournaledChangeset] | None
) -> Plan:
    """The one way a plan is built for ``env``: with a journal app, one call of every bulk is
    its marker (19 calls left), and the plan shows the marker as request [0]."""
    files = file_fields(app_schemas(env))  # which values are attachments written as paths
    markers = Markers.for_env(env)
    limits = Limits()
    if markers is not None:
        from .remote.session import limits_for

        limits = limits_for(env)
    built = build_plan(changesets, env, state, limits=limits, files=files)
    return built if markers is None else dataclasses.replace(built, markers=markers)


@dataclass(frozen=True)
class RenderedLine:
    number: int  # in the rendered text
    text: str
    source_line: int | None  # the source line it stands on, when it has one
    block_line: int | None  # else the first source line of the template block that made it


@dataclass(frozen=True)
class Rendered:
    path: Path
    changeset: str
    lines: list[RenderedLine]


def render_changeset(ctx: Context, changeset: str) -> Rendered:
    """The changeset named ``changeset`` (a version, ``V0003``, or its file name) rendered by Jinja
    for ``env``, each line with the source line it came from (``kmigrate render``)."""
    from .changeset_files import discover
    from .templating import LineMap, Templates, template_error

    items, _problems = discover(ctx.project.changesets_dir)
    wanted = changeset.removesuffix(".yaml").removesuffix(".yml")
    item = next(
        (i for i in items if wanted in (i.id, i.path.name, i.path.stem) or version_of(wanted) == i.version),
        None,
    )
    if item is None:
        known = ", ".join(i.id for i in items) or "none"
        raise InputError(f"no changeset {changeset!r} (known: {known})", hint="give its version, e.g. 0003")
    text = item.path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    try:
        rendered = Templates(ctx.project, ctx.env).render(item, text)
    except Exception as exc:  # noqa: BLE001 - every template failure becomes a located error
        raise template_error(exc, item, text.splitlines()) from exc
    lines = LineMap(text, rendered)
    return Rendered(
        item.path,
        item.id,
        [
            RenderedLine(n, line, lines.source_line(n), None if lines.source_line(n) else lines.block_line(n))
            for n, line in enumerate(rendered.splitlines(), 1)
        ],
    )


def state_source(ctx: Context) -> str:
    """Where a plan's applied state comes from, for the reviewer's view."""
    path = display_path(ctx.env.journal_path, ctx.project.root)
    markers = Markers.for_env(ctx.env)
    if markers is not None:
        apps = ", ".join(str(app.id) for app in markers.apps.values())
        return f"Applied state: the journal app in Kintone (app {apps}), read now."
    if ctx.env.journal_path.exists():
        return f"Applied state: this machine's journal ({path})."
    return f"Applied state: no journal here ({path} does not exist): every changeset is shown as pending."


def plan_diff(ctx: Context, the_plan: Plan, client: Client | None = None) -> list[OperationDiff]:
    """``plan --diff``: the records the plan's updates, upserts, deletes and status changes touch,
    read now (reads only), compared with what will be sent (kmigrate/plandiff.py)."""
    from .plandiff import diff_plan

    own = client is None
    active = client if client is not None else connect(ctx)
    try:
        with synced_journal(ctx, active) as journal:  # a fresh runner's refs too
            refs = journal.refs() if journal is not None else {}
        return diff_plan(active, the_plan, refs)
    finally:
        if own:
            active.close()


def save_plan(ctx: Context, path: Path, *, check: bool = False) -> Plan:
    """``kmigrate plan --out FILE``: the plan, written to ``path`` with what it was made from
    (the journal's state, every changeset's checksums, the environment, the variables' hash)."""
    check_sum(ctx)
    check_target(ctx.env, credentials=False)
    state = journal_state(ctx)
    changesets = load_changesets(ctx, state)
    the_plan = _build_plan(changesets, ctx.env, state)
    if check:
        _refuse(preflight(changesets, state, the_plan))
    from .savedplan import made_from, write_saved_plan

    write_saved_plan(made_from(ctx.env, state, changesets, the_plan, with_plan=False), path, the_plan)
    return the_plan


def lint(ctx: Context, client: Client | None = None) -> LintReport:
    """``kmigrate lint``: the risky-but-valid findings (kmigrate/lint.py). Nothing is sent; the
    journal read is the environment's as every state-reading command reads it: with a journal
    app, synced from it first (reads only), else the local one, when there is one."""
    from .lint import lint as run_lint

    with synced_journal(ctx, client) as journal:
        state = journal.state() if journal is not None else {}
        records = journal.changesets() if journal is not None else []
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
    from .client import Client, RetryPolicy

    env = ctx.env
    settings: dict[str, Any] = {"retry": RetryPolicy.of(env.retries, env.retry_seconds)}
    if env.timeout is not None:
        settings["timeout"] = env.timeout
    if env.sandbox_file is not None:
        from .sandbox import SANDBOX_BASE_URL, Sandbox

        sandbox = Sandbox.open(
            env.sandbox_file, env.sandbox_store, project_root=env.root, max_bytes=env.limits.file_bytes
        )
        return Client(
            SANDBOX_BASE_URL, _sandbox_credentials(sandbox), transport=sandbox.transport(), **settings
        )
    assert env.base_url is not None  # config: an environment has a sandbox file or a base URL
    return Client(
        env.base_url,
        Credentials.from_environ(),
        insecure_http=env.insecure_http,
        ca_bundle=env.ca_bundle,
        client_cert=env.client_cert,
        **settings,
    )


def check_target(env: Environment, *, credentials: bool = True) -> None:
    """What ``connect`` would refuse, checked offline before anything is read or written (by
    ``validate`` and ``plan`` too: CI runs them on pull requests): the base URL (no user name or
    password; plain http only to an address that resolves to this machine) and, with
    ``credentials``, the credentials' pairs; or the sandbox file (the project-path rule, its size
    and YAML bounds, its apps)."""
    if env.base_url is not None:
        from .client import check_base_url

        try:
            check_base_url(env.base_url, insecure_http=env.insecure_http)
        except ConfigError as exc:
            exc.location = exc.location or env_key_location(env, "base_url")
            raise
        if credentials:
            Credentials.from_environ()
    if env.sandbox_file is not None:
        from .sandbox.definition import read_definition

        read_definition(env.sandbox_file, project_root=env.root, max_bytes=env.limits.file_bytes)


def _sandbox_credentials(sandbox: Sandbox) -> Credentials:
    """The embedded Kintone needs no secrets from the user: where its file gives an app API
    tokens, kmigrate uses them (the strongest of each app's, at most 9 as Kintone allows)."""
    tokens = [
        max(app.tokens.items(), key=lambda token: (len(token[1]), token[0]))[0]
        for app in sandbox.definition.apps.values()
        if app.tokens
    ]
    return Credentials(api_tokens=tuple(tokens[:9]))


def applied_contents(ctx: Context) -> dict[str, dict[int, Any]]:
    """What each applied batch sent, as the journal keeps it (for ``repair``'s diff)."""
    if not ctx.env.journal_path.exists():
        return {}
    with Journal.open(ctx.env.journal_path) as journal:
        return journal.sent()


def _local_state(ctx: Context) -> dict[str, JournaledChangeset]:
    """What the local journal knows as it stands, without creating it."""
    if not ctx.env.journal_path.exists():
        return {}
    with Journal.open(ctx.env.journal_path) as journal:
        return journal.state()


@contextmanager
def synced_journal(ctx: Context, client: Client | None = None) -> Iterator[Journal | None]:
    """The journal every state-reading command reads: brought up to date from the journal app
    first, if the environment has one; None where there is no local journal and no journal app
    (nothing is created then)."""
    if not ctx.env.journal_path.exists() and Markers.for_env(ctx.env) is None:
        yield None
        return
    with Journal.open(ctx.env.journal_path) as journal:
        sync(ctx, journal, client)
        yield journal


def journal_state(ctx: Context, client: Client | None = None) -> dict[str, JournaledChangeset]:
    """What the journal knows (``synced_journal``)."""
    with synced_journal(ctx, client) as journal:
        return journal.state() if journal is not None else {}


@dataclass
class ApplyResult:
    plan: Plan
    summary: RunSummary | None = None  # None: nothing was run (dry run, declined)
    nothing_to_do: bool = False  # every changeset already applied: nothing was sent
    warnings: list[str] = field(default_factory=list)  # for the CLI to show once, on stderr
    synced: SyncReport | None = None  # what the journal app told this run's journal


# Said once per `apply` to an environment that keeps its journal on this machine only.
LOCAL_ONLY_WARNING = (
    "environment {env!r} has no journal_app: what was applied is known only to this machine's "
    "{path}; a fresh machine (a new CI runner) would apply everything again. "
    "Name a journal app in kmigrate.toml (`kmigrate -e {env} journal init`; docs/journal.md)"
)


@_sparing_the_collector
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
    lease_seconds: float | None = None,
    parallel: int | None = None,
) -> ApplyResult:
    """Apply every pending changeset to the environment. ``confirm`` sees the plan before anything
    is sent and may decline; a dry run only plans (it is the very plan ``apply`` would run).
    With ``saved`` (``kmigrate apply FILE``), the run is held to that plan: if anything it was
    made from changed, an ``InputError`` before anything is sent or journaled.

    With a journal app, the run takes the app's lease (``lock_wait`` seconds to queue), brings
    the local journal up to date from the markers, and sends a marker at the head of every bulk.

    ``parallel`` (else the environment's ``parallel``, else 1): bulks in flight at once where
    ``planner.independence`` proves them independent (docs/journal.md, "Bulks in flight together")."""
    from .savedplan import made_from, refuse_if_stale, refuse_other_environment

    env = ctx.env
    in_flight = check_parallel(parallel if parallel is not None else env.parallel or 1)
    if saved is not None:
        refuse_other_environment(saved, env)
    check_sum(ctx)
    if client is None:  # the target first: exit 2 before anything is read from or written to it
        check_target(env, credentials=not dry_run)
    if dry_run:
        state = journal_state(ctx, client)
        changesets = load_changesets(ctx, state)
        the_plan = _build_plan(changesets, env, state)
        _refuse(preflight(changesets, state, the_plan, out_of_order=out_of_order))
        if saved is not None:
            refuse_if_stale(saved, made_from(env, state, changesets, the_plan, with_plan=False))
        return ApplyResult(the_plan)
    markers = Markers.for_env(env)
    warnings = (
        [] if markers or env.is_sandbox else [LOCAL_ONLY_WARNING.format(env=env.name, path=env.journal_path)]
    )
    # Every input error before anything is written (exit 2: nothing journaled): the target
    # (above), then the changesets against the journal as it stands (read without creating it,
    # and without asking the journal app: that is done under its lease).
    seen = _local_state(ctx)
    changesets = load_changesets(ctx, seen)
    seen_plan = _build_plan(changesets, env, seen)
    if markers is None:  # with a journal app its word decides (a repair elsewhere): under the lease
        _refuse(preflight(changesets, seen, seen_plan, out_of_order=out_of_order))
    # Before the journal is opened, a stale plan leaves no trace; with a journal app the local
    # journal may not be synced yet (a fresh runner), so the check under its lease decides.
    if saved is not None and markers is None:
        refuse_if_stale(saved, made_from(env, seen, changesets, seen_plan, with_plan=False))
    with Journal.open(env.journal_path) as journal:
        run_id = journal.start_run(env.name)
        outcome, raised = "failed", False
        try:
            with (
                journal.locked(run_id, wait=lock_wait, take_over_stale=True),
                contextlib.ExitStack() as stack,
            ):
                # Without a journal app nothing is asked of Kintone before the plan is accepted.
                session, active = None, client
                if markers is not None:
                    from .remote.sync import publish, pull

                    active = stack.enter_context(_connected(ctx, client))
                    if lease_seconds is None:
                        from .remote.lease import LEASE_SECONDS

                        lease_seconds = LEASE_SECONDS
                    session = _open_remote(journal, active, markers, run_id, lock_wait, lease_seconds)
                    stack.callback(session.release)
                synced = pull(journal, session.app, run_id=run_id) if session else None
                state = journal.state()  # read under the lock(s): no other run can change it now
                plan = seen_plan  # the same changesets on the same state: the same plan, compiled once
                if state != seen:  # another run moved on meanwhile (or the journal app said so)
                    changesets = load_changesets(ctx, state)
                    plan = _build_plan(changesets, env, state)  # first: drift is judged per batch
                _refuse(preflight(changesets, state, plan, out_of_order=out_of_order))
                if saved is not None:
                    refuse_if_stale(saved, made_from(env, state, changesets, plan, with_plan=False))
                if session is not None and markers is not None:
                    markers.check_spaces(plan)
                    present = synced.present if synced else None
                    publish(journal, session.app, markers, plan, session.run, present)
                from .runner import Runner, RunSummary

                if not plan.pending:
                    outcome = "nothing to do"
                    summary = RunSummary(skipped_changesets=len(plan.changesets))
                    return ApplyResult(plan, summary, nothing_to_do=True, warnings=warnings, synced=synced)
                if confirm is not None and not confirm(plan):
                    outcome = "declined"
                    return ApplyResult(plan, warnings=warnings, synced=synced)
                if active is None:
                    active = stack.enter_context(_connected(ctx, None))
                runner = Runner(
                    active,
                    journal,
                    run_id=run_id,
                    locate=_locator(changesets),
                    on_event=_keeping_sent(journal, on_event),
                    remote=session,
                    parallel=in_flight,
                    unique=unique_fields(ctx.schemas) if in_flight > 1 else None,
                    lookups=lookup_sources(ctx.schemas) if in_flight > 1 else None,
                )
                summary = runner.run(plan)
                outcome = "applied"
                warnings.extend(session.warnings if session else [])
                return ApplyResult(plan, summary, warnings=warnings, synced=synced)
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


def _open_remote(
    journal: Journal, client: Client, markers: Markers, run_id: int, wait: float, lease_seconds: float
) -> remote.RemoteRun:
    """Take the journal app's lease for this run (an expired one taken over is logged)."""
    from .remote import session as remote
    from .remote.app import JournalApp

    token = remote.run_token(journal.actor, run_id)
    JournalApp(client, markers).check_fields()  # before its first write: the lease

    def taken_over(lease: Any, reason: str) -> None:
        journal.log_event(
            "unlocked", run_id=run_id, detail={"lease": dataclasses.asdict(lease), "reason": reason}
        )

    lease = remote.open_lease(
        client, markers, token, journal.actor, wait=wait, seconds=lease_seconds, on_takeover=taken_over
    )
    return remote.RemoteRun(client, markers, token, lease)


def _keeping_sent(journal: Journal, on_event: Callable[[RunEvent], None]) -> Callable[[RunEvent], None]:
    """``on_event``, after keeping each applied batch's requests for ``repair``'s diff."""

    def handle(event: RunEvent) -> None:
        if event.kind == "batch_applied" and event.batch is not None:
            journal.keep_sent(event.changeset.version, event.batch.index, event.batch.requests_json())
        on_event(event)

    return handle


def _locator(changesets: Sequence[LoadedChangeset]) -> Callable[[str, int, int | None], Location]:
    by_version = {c.version: c for c in changesets}

    def locate(version: str, operation: int, record: int | None) -> Location:
        cs = by_version[version]
        return cs.location(operation, record)

    return locate


def status(ctx: Context, client: Client | None = None) -> list[ChangesetStatus]:
    """Per changeset (files and journal together), what state it is in."""
    from .status import changeset_statuses

    # Status creates no journal, unless there is a journal app to learn from.
    if not ctx.env.journal_path.exists() and Markers.for_env(ctx.env) is None:
        return changeset_statuses(load_changesets(ctx), {}, [], [])
    with Journal.open(ctx.env.journal_path) as journal:
        sync(ctx, journal, client)
        journaled = journal.state()
        records, batches = journal.changesets(), journal.batches()
    changesets = load_changesets(ctx, journaled)
    try:
        the_plan: Plan | None = _build_plan(changesets, ctx.env, journaled)
    except ChangesetError:  # no plan can be made: any change to an applied changeset counts
        the_plan = None
    return changeset_statuses(changesets, journaled, records, batches, the_plan)


def history(ctx: Context, changeset: str | None = None, client: Client | None = None) -> list[Event]:
    """The journal's event log, oldest first; only ``changeset``'s (``V0003``, ``0003``...) if given."""
    if not ctx.env.journal_path.exists() and Markers.for_env(ctx.env) is None:
        return []
    with Journal.open(ctx.env.journal_path) as journal:
        sync(ctx, journal, client)
        return journal.events(changeset=version_of(changeset) if changeset else None)


def resolve(
    ctx: Context,
    version: str,
    batch: int,
    *,
    applied: bool,
    note: str | None = None,
    ids_key: str | None = None,
    ids_query: str | None = None,
    client: Client | None = None,
) -> list[str]:
    """Settle an in-doubt batch after checking Kintone (``applied`` or not); see
    ``runner.resolve_batch``. ``ids_key``/``ids_query`` read the ids of the records it created
    back from Kintone (also for a batch resolved earlier without them). Returns the refs left
    without ids: the journal keeps a lost-id placeholder for each of their records."""
    version = version_of(version)
    reading = ids_key is not None or ids_query is not None
    with Journal.open(ctx.env.journal_path) as journal:
        with journal.locked(take_over_stale=True):
            state = journal.state()
            planned = None
            if reading or (applied and version in state and state[version].batch_states.get(batch) == SENT):
                planned = _planned(ctx, state).get(version)
            if planned is None or not 0 <= batch < len(planned.batches):
                if reading:
                    raise InputError(
                        f"V{version} has no batch {batch} in the plan", hint="see `kmigrate status`"
                    )
                journal.resolve(version, batch, applied, note=note)
                return []
            own_client = reading and client is None
            active = connect(ctx) if own_client else client
            try:
                from .runner import resolve_batch

                return resolve_batch(
                    journal,
                    planned,
                    planned.batches[batch],
                    applied,
                    client=active,
                    ids_key=ids_key,
                    ids_query=ids_query,
                    note=note,
                )
            finally:
                if own_client and active is not None:
                    active.close()


@dataclass(frozen=True)
class RepairItem:
    """One drifted changeset ``repair`` would accept, and what changed in its applied batches."""

    changeset: str  # V0003__name
    version: str
    reason: str  # what find_drift says
    batches: list[BatchChange]  # the applied batches whose content changed, with their diffs


def repair_preview(ctx: Context, changeset: str | None = None) -> list[RepairItem]:
    """What ``repair`` would accept (only ``changeset``'s, if given), with a diff of each changed
    applied batch. Reads only."""
    state = journal_state(ctx)
    changesets = load_changesets(ctx, state)
    return _repair_items(ctx, changesets, state, changeset)


def _repair_items(
    ctx: Context,
    changesets: Sequence[LoadedChangeset],
    state: Mapping[str, JournaledChangeset],
    changeset: str | None,
) -> list[RepairItem]:
    the_plan = _build_plan(changesets, ctx.env, state)
    drift = find_drift(changesets, state, the_plan)
    wanted = version_of(changeset) if changeset else None
    if wanted is not None and wanted not in drift:
        known = ", ".join("V" + v for v in drift) or "none"
        raise InputError(f"V{wanted} has not drifted: nothing to repair there (drifted: {known})")
    planned = {c.version: c for c in the_plan.changesets}
    contents = applied_contents(ctx)
    return [
        RepairItem(
            changeset=cs.id,
            version=cs.version,
            reason=drift[cs.version],
            batches=drift_report(state[cs.version], planned[cs.version], contents.get(cs.version)),
        )
        for cs in drifted(changesets, state, the_plan)
        if wanted is None or cs.version == wanted
    ]


def repair(
    ctx: Context, changeset: str | None = None, *, note: str | None = None, client: Client | None = None
) -> list[str]:
    """Accept the current content of drifted changesets (only ``changeset``, if given), logged as
    ``repaired`` events. Kintone keeps what the applied batches wrote: repair changes only the
    journal's record of what was applied. With a journal app, under its lease: the local journal
    is synced first, and the markers of the repaired changesets take the new checksums and
    hashes (revision-checked), so every runner judges drift alike."""
    markers = Markers.for_env(ctx.env)
    with Journal.open(ctx.env.journal_path) as journal:
        run_id = journal.start_run(ctx.env.name) if markers is not None else None
        outcome = "failed"
        try:
            with journal.locked(run_id, take_over_stale=True), contextlib.ExitStack() as stack:
                session = None
                if markers is not None and run_id is not None:
                    from .remote.lease import LEASE_SECONDS
                    from .remote.sync import pull

                    active = stack.enter_context(_connected(ctx, client))
                    session = _open_remote(journal, active, markers, run_id, 0.0, LEASE_SECONDS)
                    stack.callback(session.release)
                    pull(journal, session.app, run_id=run_id)
                state = journal.state()
                changesets = load_changesets(ctx, state)
                items = _repair_items(ctx, changesets, state, changeset)
                planned = {c.version: c for c in _build_plan(changesets, ctx.env, state).changesets}
                by_version = {c.version: c for c in changesets}
                for item in items:
                    cs = by_version[item.version]
                    hashes = accepted_hashes(planned[cs.version], state[cs.version])
                    journal.repair(
                        cs.version, cs.source_checksum, cs.rendered_checksum, hashes, run_id=run_id, note=note
                    )
                if session is not None and items:
                    from .remote.sync import push_repairs

                    push_repairs(journal, session.app, [item.version for item in items])
                outcome = "repaired" if items else "nothing to do"
                return [item.changeset for item in items]
        finally:
            if run_id is not None:
                try:
                    journal.finish_run(run_id, outcome)
                except JournalError:
                    pass


def _planned(ctx: Context, state: Mapping[str, JournaledChangeset]) -> dict[str, ChangesetPlan]:
    plan = _build_plan(load_changesets(ctx, state), ctx.env, state)
    return {c.version: c for c in plan.changesets}


def unlock(ctx: Context, *, reason: str | None = None) -> LockHolder | None:
    """Free the journal's lock whoever holds it (logged). Returns the holder, or None."""
    if not ctx.env.journal_path.exists():
        return None
    with Journal.open(ctx.env.journal_path) as journal:
        return journal.force_unlock(reason)


# ---- sandbox pull: a replica of real apps ----------------------------------------------------


@dataclass(frozen=True)
class PullResult:
    written: Path
    apps: list[tuple[str, int, int]]  # (alias or id, source id, id in the file)
    records: int  # sample records added to the sandbox's store


def sandbox_pull(
    ctx: Context,
    *,
    into: Environment | None = None,
    out: Path | None = None,
    apps: Sequence[str] | None = None,
    records: int = 0,
    client: Client | None = None,
) -> PullResult:
    """Read the apps of ``ctx``'s environment (all its aliases, or ``apps``) and write their definitions into
    ``out`` (with their own ids: a schema file for ``schema = FILE``) or into the sandbox file of
    ``into`` (with the ids ``into`` gives the same aliases). With ``records``, that many records
    of each app are added to ``into``'s sandbox too. Reads only from ``source``."""
    from . import pull

    source = ctx.env
    if out is None and (into is None or into.sandbox_file is None):
        raise ConfigError(
            "sandbox pull needs a sandbox environment to write into, or --out FILE",
            hint="pass --into NAME (an environment with `sandbox = FILE`) or --out FILE",
        )
    if records and out is not None:
        raise InputError("--records fills a sandbox's store: use it with --into, not --out")
    names = list(apps) if apps else list(source.apps)
    if not names:
        raise ConfigError(f"environment {source.name!r} names no apps; pass --apps or add aliases")
    own = client is None
    active = client if client is not None else connect(ctx)
    try:
        pulled = []
        for name in names:
            app = source.app(name)
            target = app.id
            if out is None and into is not None and name in into.apps:
                target = into.apps[name].id
            pulled.append(pull.pull_app(active, app, target, records))
    finally:
        if own:
            active.close()
    target_file = out if out is not None else into.sandbox_file  # type: ignore[union-attr]
    assert target_file is not None
    import yaml

    existing = yaml.safe_load(target_file.read_text(encoding="utf-8")) if target_file.exists() else None
    content = pull.merged(existing if isinstance(existing, dict) else None, pulled)
    from .sandbox.definition import parse_definition

    parse_definition(content, target_file)  # what is written must load: refuse before writing
    target_file.parent.mkdir(parents=True, exist_ok=True)
    target_file.write_text(
        "# Written by `kmigrate sandbox pull` from environment "
        f"{source.name!r}: Kintone's own shapes (properties, process).\n"
        + yaml.safe_dump(content, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    added = 0
    if records and into is not None:
        with connect(Context(ctx.project, into)) as sandbox_client:
            for one in pulled:
                for start in range(0, len(one.records), 100):
                    chunk = one.records[start : start + 100]
                    if chunk:
                        sandbox_client.request(
                            "POST", "records", body={"app": one.target_id, "records": chunk}
                        )
                        added += len(chunk)
    return PullResult(
        target_file, [(n, p.source.id, p.target_id) for n, p in zip(names, pulled, strict=True)], added
    )


# ---- the journal app: syncing, journal init, journal baseline (kmigrate.remote) -------------


@contextmanager
def _connected(ctx: Context, client: Client | None) -> Iterator[Client]:
    own = client is None
    active = connect(ctx) if client is None else client
    try:
        yield active
    finally:
        if own:
            active.close()


def sync(ctx: Context, journal: Journal, client: Client | None = None) -> SyncReport | None:
    """Bring the local journal up to date from ``env``'s journal app (None: it has none).

    Skipped while a run on this machine holds the local lock: that run syncs for itself, and
    settling its batch in flight from here would cross its answer."""
    markers = Markers.for_env(ctx.env)
    if markers is None or journal.lock_holder() is not None:
        return None
    from .remote.app import JournalApp
    from .remote.sync import pull

    with _connected(ctx, client) as active:
        return pull(journal, JournalApp(active, markers))


def journal_init(
    ctx: Context,
    *,
    name: str = "kmigrate journal",
    space: int | None = None,
    guest_space_id: int | None = None,
    client: Client | None = None,
    credentials: Credentials | None = None,
) -> int:
    """Create ``env``'s journal app with Kintone's app admin APIs (password auth); its id."""
    from .remote.create import create_journal_app, require_password

    env = ctx.env
    if env.is_sandbox and client is None:
        raise ConfigError(
            f"environment {env.name!r} is the embedded sandbox: declare its journal app in the sandbox file",
            hint="`kmigrate journal init` creates the app in a real Kintone (or a served sandbox)",
        )
    if client is None:
        creds = credentials if credentials is not None else Credentials.from_environ()
        require_password(bool(creds.username and creds.password))
    with _connected(ctx, client) as active:
        return create_journal_app(active, name=name, space=space, guest_space_id=guest_space_id)


def _same_version(a: str, b: str) -> bool:
    return [(k[0], k[1]) for k in version_key(a)] == [(k[0], k[1]) for k in version_key(b)]


def baseline(
    ctx: Context, version: str, *, client: Client | None = None, note: str | None = None
) -> list[str]:
    """Record every changeset up to ``version`` as applied without sending anything (logged
    ``baseline`` events), in the local journal and, with one, the journal app: for a project
    whose changes reached Kintone before kmigrate (or before this environment's journal)."""
    from .remote.lease import LEASE_SECONDS
    from .remote.records import created_counts
    from .remote.sync import publish, pull

    env = ctx.env
    version = version_of(version)
    markers = Markers.for_env(env)
    with Journal.open(env.journal_path) as journal:
        run_id = journal.start_run(env.name)
        outcome = "failed"
        try:
            with journal.locked(run_id, take_over_stale=True), contextlib.ExitStack() as stack:
                session = None
                if markers is not None:
                    active = stack.enter_context(_connected(ctx, client))
                    session = _open_remote(journal, active, markers, run_id, 0.0, LEASE_SECONDS)
                    stack.callback(session.release)
                    pull(journal, session.app, run_id=run_id)
                state = journal.state()
                plan = _build_plan(load_changesets(ctx, state), env, state)
                # "9" names V0009: versions compare as numbers, as they are ordered.
                same = [i for i, cs in enumerate(plan.changesets) if _same_version(cs.version, version)]
                if not same:
                    raise InputError(
                        f"no changeset V{version} in {ctx.project.changesets_dir}",
                        hint="`kmigrate status` lists the changesets; baseline takes one of their versions",
                    )
                upto = plan.changesets[: same[0] + 1]
                done = []
                for cs in upto:
                    if cs.state == "applied":
                        continue
                    detail = {"baseline": f"V{version}", **({"note": note} if note else {})}
                    if not cs.batches:
                        journal.record_changeset(cs)
                        journal.set_changeset_state(cs.version, "applied", run_id)
                    for batch in cs.batches:
                        if batch.state == "applied":
                            continue
                        journal.import_applied(
                            version=cs.version,
                            name=cs.name,
                            path=str(cs.path),
                            source_checksum=cs.source_checksum,
                            rendered_checksum=cs.rendered_checksum,
                            batch_count=len(cs.batches),
                            index=batch.index,
                            batch_hash=batch.hash,
                            # The records exist, their ids are not known here: placeholders.
                            refs={n: [UNKNOWN_ID] * c for n, c in created_counts(batch).items()},
                            kind="baseline",
                            detail=detail,
                            run_id=run_id,
                        )
                    done.append(cs.id)
                if session is not None and markers is not None:
                    publish(journal, session.app, markers, plan, f"baseline {session.run}")
                outcome = "baseline"
                return done
        finally:
            try:
                journal.finish_run(run_id, outcome)
            except JournalError:
                pass
