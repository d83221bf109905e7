"""``kmigrate lint``: offline checks of the changesets for what is valid but risky.

Each rule has an id, a name and a severity; a finding names ``file:line``, the rule and what to
do. Errors make ``lint`` exit 2; warnings exit 1 under ``--strict`` (0 otherwise); notes say
what could not be checked and never change the exit code.

    K001 delete-by-raw-ids       warning  a delete names literal record ids (not a ref)
    K002 update-without-guard    warning  an update by id with no `revision` and no `key`
    K003 older-than-applied      error    a pending changeset older than one the journal applied
    K004 app-alias-missing       error    an app alias some environment of kmigrate.toml lacks
    K005 unfixed-template-value  error    a template draws randomness (`random` filter, `lipsum`)
    K006 renamed-after-applied   error    the journal applied this version under another name
    K007 data-file-ignored       error    a data file git ignores (`git check-ignore`)

Changesets are rendered for one environment (the default, or ``-e``), the journal read is that
environment's local one (nothing is sent anywhere). The templating offers no clock: the only
values not fixed by the environment are Jinja's ``random`` filter and ``lipsum()`` global (a
changeset rendering differently each run would be reported as drift by every later apply).

A finding is silenced by ``# kmigrate: lint-ignore K002`` (ids separated by commas) on the
line it names or the line above, with the reason next to it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import nodes

from . import loader
from .changeset import DataFileRef, DeleteOp, LoadedChangeset, RefIds, UpdateOp, _RecordsOp, app_written
from .changeset_files import ChangesetFileName, discover, display_path, version_key
from .config import CONFIG_FILE, Environment, Project
from .drift import started
from .journal import ChangesetRecord
from .plan import JournaledChangeset
from .templating import Templates

ERROR, WARNING, NOTE = "error", "warning", "note"

RULES: dict[str, tuple[str, str]] = {
    "K000": ("invalid", ERROR),
    "K001": ("delete-by-raw-ids", WARNING),
    "K002": ("update-without-guard", WARNING),
    "K003": ("older-than-applied", ERROR),
    "K004": ("app-alias-missing", ERROR),
    "K005": ("unfixed-template-value", ERROR),
    "K006": ("renamed-after-applied", ERROR),
    "K007": ("data-file-ignored", ERROR),
    "K900": ("not-checked", NOTE),
}

_IGNORE = re.compile(r"#\s*kmigrate:\s*lint-ignore\s+([A-Z0-9, ]+)")
_RANDOM_GLOBALS = {"lipsum"}
_RANDOM_FILTERS = {"random"}
_DATA_LOADERS = {"load_csv", "load_json"}


@dataclass(frozen=True)
class Finding:
    rule: str
    file: str
    line: int | None
    message: str

    @property
    def name(self) -> str:
        return RULES[self.rule][0]

    @property
    def severity(self) -> str:
        return RULES[self.rule][1]

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.rule} {self.name} ({self.severity}): {self.message}"


@dataclass(frozen=True)
class LintReport:
    findings: list[Finding]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    def exit_code(self, strict: bool = False) -> int:
        if self.errors:
            return 2
        return 1 if strict and self.warnings else 0


def lint(
    project: Project,
    env: Environment,
    state: Mapping[str, JournaledChangeset],
    journaled: Iterable[ChangesetRecord] = (),
    *,
    git: str | None = None,
) -> LintReport:
    """Every finding for the project's changesets (rendered for ``env``), in file order.

    ``state``/``journaled``: the environment's journal (empty without one); ``git``: the git
    executable (default: found on PATH; none, and K007 is a note saying it was not checked).
    """
    items, _name_errors = discover(project.changesets_dir)
    changesets, errors = loader.load_all(project, env, state)
    findings = [
        Finding("K000", display_path(e.location.file) if e.location and e.location.file else "?",
                e.location.line if e.location else None, e.message + " (`kmigrate validate` says more)")
        for e in errors
    ]  # fmt: skip
    for cs in changesets:
        findings.extend(_operation_findings(cs, project))
    findings.extend(_journal_findings(items, state, list(journaled)))
    templates = Templates(project, env)
    data_files: list[tuple[Path, str, int | None]] = [
        (cs.path.parent / _data_path(op.body.records_from), display_path(cs.path), cs.location(i).line)
        for cs in changesets
        for i, op in enumerate(cs.operations)
        if isinstance(op.body, _RecordsOp) and op.body.records_from
    ]
    for path in _template_files(project, items):
        template_findings, loaded = _template_findings(templates, path, project)
        findings.extend(template_findings)
        data_files.extend(loaded)
    findings.extend(_ignored_data_files(project.root, data_files, git))
    return LintReport([f for f in findings if not _suppressed(f)])


def _data_path(records_from: str | DataFileRef) -> str:
    return records_from if isinstance(records_from, str) else records_from.path


# ---- per operation ---------------------------------------------------------------------------


def _operation_findings(cs: LoadedChangeset, project: Project) -> Iterator[Finding]:
    file = display_path(cs.path)
    environments = project.config.env
    for i, op in enumerate(cs.operations):
        line = cs.location(i).line
        body = op.body
        if isinstance(body, DeleteOp):
            ids = [] if isinstance(body.ids, RefIds) else body.ids
            raw = [x for x in ids if isinstance(x, int)]
            if raw:
                yield Finding(
                    "K001",
                    file,
                    line,
                    f"delete of {len(raw)} record(s) by literal id ({', '.join(map(str, raw[:5]))}"
                    f"{', ...' if len(raw) > 5 else ''}): an id names another record in each environment; "
                    "use a ref to the records a changeset made, or find them by a key",
                )
        if isinstance(body, UpdateOp) and body.key is None:
            unguarded = sum(1 for rec in body.iter_records() if "revision" not in rec)
            if unguarded:
                yield Finding(
                    "K002",
                    file,
                    line,
                    f"update of {unguarded} record(s) by id without `revision` or `key`: it overwrites "
                    "whatever was edited since; give each record its `revision`, or update by a unique `key`",
                )
        app = app_written(body)
        if isinstance(app, str) and not app.isdigit():
            missing = sorted(name for name, cfg in environments.items() if app not in cfg.apps)
            if missing:
                yield Finding(
                    "K004",
                    file,
                    line,
                    f"app alias {app!r} is not defined in environment(s) {', '.join(missing)}: applying there fails; "
                    f"add it under [env.NAME] apps in {CONFIG_FILE}",
                )


# ---- against the journal --------------------------------------------------------------------


def _journal_findings(
    items: list[ChangesetFileName], state: Mapping[str, JournaledChangeset], journaled: list[ChangesetRecord]
) -> Iterator[Finding]:
    applied = [v for v, j in state.items() if started(j)]
    newest = max(applied, key=version_key) if applied else None
    names = {r.version: r.name for r in journaled}
    for item in items:
        file = display_path(item.path)
        if (
            newest is not None
            and item.version not in applied
            and version_key(item.version) < version_key(newest)
        ):
            yield Finding(
                "K003",
                file,
                1,
                f"{item.id} is older than V{newest}, which the journal holds as applied: `apply` refuses it "
                "without --out-of-order; give it the next version (`kmigrate new`)",
            )
        old = names.get(item.version)
        if old is not None and old != item.name and item.version in applied:
            yield Finding(
                "K006",
                file,
                1,
                f"V{item.version} was applied as V{item.version}__{old}; renamed since to {item.id}: "
                "the journal knows the old name; rename it back",
            )


# ---- templates --------------------------------------------------------------------------------


def _template_files(project: Project, items: list[ChangesetFileName]) -> list[Path]:
    own = [item.path for item in items]
    shared = sorted(project.templates_dir.rglob("*")) if project.templates_dir.is_dir() else []
    return own + [p for p in shared if p.is_file() and not p.name.startswith(".")]


def _template_findings(
    templates: Templates, path: Path, project: Project
) -> tuple[list[Finding], list[tuple[Path, str, int | None]]]:
    file = display_path(path)
    try:
        tree = templates.jinja.parse(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a template that does not parse is K000's (validate's) to report
        return [], []
    findings = []
    data: list[tuple[Path, str, int | None]] = []
    for node in tree.find_all((nodes.Filter, nodes.Call)):
        if isinstance(node, nodes.Filter) and node.name in _RANDOM_FILTERS:
            findings.append(
                Finding(
                    "K005", file, node.lineno,
                    f"the `{node.name}` filter picks differently on every render: the changeset would drift "
                    "after its first apply; choose the value in the changeset or a variable",
                )
            )  # fmt: skip
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            name = node.node.name
            if name in _RANDOM_GLOBALS:
                findings.append(
                    Finding(
                        "K005", file, node.lineno,
                        f"`{name}()` is random text: the changeset would drift after its first apply; "
                        "write the text out",
                    )
                )  # fmt: skip
            if name in _DATA_LOADERS and node.args and isinstance(node.args[0], nodes.Const):
                relative = str(node.args[0].value)
                data.append((project.changesets_dir / relative, file, node.lineno))
    return findings, data


# ---- version control --------------------------------------------------------------------------


def _ignored_data_files(
    root: Path, files: list[tuple[Path, str, int | None]], git: str | None
) -> Iterator[Finding]:
    if not files:
        return
    executable = git or shutil.which("git")
    if executable is None:
        yield Finding(
            "K900", CONFIG_FILE, None, "git was not found: K007 (data files ignored by git) not checked"
        )
        return
    inside = subprocess.run(
        [executable, "rev-parse", "--is-inside-work-tree"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if inside.returncode != 0:
        yield Finding(
            "K900", CONFIG_FILE, None, "not a git work tree: K007 (data files ignored by git) not checked"
        )
        return
    seen: set[Path] = set()
    for path, file, line in files:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        ignored = subprocess.run(
            [executable, "check-ignore", "-q", "--", str(resolved)],
            cwd=root,
            capture_output=True,
            check=False,
        )
        if ignored.returncode == 0:
            yield Finding(
                "K007",
                file,
                line,
                f"data file {display_path(resolved)} is ignored by git (`git check-ignore -v` says which rule): "
                "the pull request and CI would not have it; commit it or change .gitignore",
            )


# ---- suppression ------------------------------------------------------------------------------


def _suppressed(finding: Finding) -> bool:
    if not finding.line:
        return False
    path = Path(finding.file)
    if not path.is_absolute():
        path = Path.cwd() / path
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for number in (finding.line, finding.line - 1):
        if 1 <= number <= len(lines):
            match = _IGNORE.search(lines[number - 1])
            if match and finding.rule in {r.strip() for r in match.group(1).split(",")}:
                return True
    return False
