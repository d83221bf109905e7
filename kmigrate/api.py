"""One function per command: what ``kmigrate.cli`` calls, usable from Python as well.

Nothing here prints; problems are ``KmigrateError``s. The project commands (init, new,
validate, plan, schema) come first; the run commands (apply, status, ...) follow in their own
section at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from . import loader
from .changeset import LoadedChangeset, json_schema
from .config import CONFIG_FILE, Environment, Project
from .errors import ChangesetError, ConfigError, InputError, Location
from .plan import JournaledChangeset, Plan

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][\w-]*$")

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
    return written


def new_changeset(project: Project, name: str) -> Path:
    """Create the next changeset, ``V<next>__<name>.yaml``, from the template; its path.

    The version is the highest existing one plus one, four digits zero-padded (wider when the
    highest is wider); files with bad names are not counted, but neither do they stop this.
    """
    name = name.strip().replace(" ", "_")
    if name.endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    if not NAME_PATTERN.match(name):
        raise InputError(f"changeset name {name!r}: use letters, digits, _ and -", hint="e.g. `kmigrate new import_orders`")
    directory = project.changesets_dir
    directory.mkdir(parents=True, exist_ok=True)
    items, _errors = loader.discover(directory)
    highest = max((item.number for item in items), default=0)
    width = max([4] + [len(item.version) for item in items])
    path = directory / f"V{highest + 1:0{width}d}__{name}.yaml"
    text = _template_text("changeset.yaml").replace("__NAME__", name.replace("_", " "))
    with open(path, "x", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return path


def load_changesets(project: Project, env: Environment) -> list[LoadedChangeset]:
    """Every changeset of the project, rendered for ``env`` and validated, in version order.

    Raises one ``ChangesetError`` naming every problem of every file.
    """
    return loader.load_project_changesets(project, env)


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


def validate(project: Project, env: Environment) -> Validation:
    """Check every changeset against ``env``: all errors at once, nothing sent anywhere."""
    changesets, errors = loader.load_all(project, env)
    return Validation(changesets, errors)


def plan(project: Project, env: Environment, journal_state: Mapping[str, JournaledChangeset] | None = None) -> Plan:
    """The plan ``apply`` would run: every changeset, compiled to bulk requests."""
    from .planner import build_plan  # the planner is pure; imported here so `validate` works without it

    return build_plan(load_changesets(project, env), env, journal_state)


def schema() -> dict[str, Any]:
    """The JSON Schema of the changeset format (``kmigrate schema``), for editors."""
    return json_schema()


# ---- run commands (apply, status, history, resolve, repair, unlock) -------------------------
# Appended by the run work below this line.
