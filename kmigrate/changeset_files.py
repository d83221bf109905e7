"""Changeset files on disk: the ``V<version>__<name>.yaml`` naming, discovery in version order,
the version sort key, the next version for ``kmigrate new``, and paths as the user sees them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePath

from .errors import ChangesetError, InputError, Location

FILE_PATTERN = re.compile(r"^V(?P<version>\d+)__(?P<name>[\w.-]+)\.ya?ml$")
FILE_HINT = "changeset files are named V<digits>__<name>.yaml, e.g. V0003__import_orders.yaml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][\w-]*$")  # what `kmigrate new NAME` accepts
SUM_FILE = "kmigrate.sum"  # the integrity file in the changesets folder (kmigrate/sumfile.py)


def source_checksum(text: str) -> str:
    """A changeset's source checksum: sha256 of its text with ``\\r\\n`` made ``\\n`` (the
    journal's drift check and ``kmigrate.sum`` both compare it)."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def display_path(path: Path | str, root: Path | None = None) -> str:
    """A path as the user should see it: relative to ``root`` (default: the working directory)
    when it lies inside it, with forward slashes."""
    p = PurePath(path)
    base = Path.cwd() if root is None else root
    if p.is_absolute():
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """The order of versions: "0010" after "0009" and "2" before "10" (digit runs compare as numbers)."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


def version_of(changeset: str) -> str:
    """The version a command names: ``V0003__import_orders``, ``V0003`` and ``0003`` -> ``0003``."""
    return changeset.lstrip("V").split("__")[0]


# ---- finding the files ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChangesetFileName:
    version: str  # as written: "0003"
    name: str
    path: Path

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def id(self) -> str:
        return f"V{self.version}__{self.name}"


def discover(directory: Path) -> tuple[list[ChangesetFileName], list[ChangesetError]]:
    """The changeset files of ``directory`` in version order, and the problems with the names.

    Hidden files and sub-folders (e.g. ``data/``) are left alone; any other file that does not
    match the pattern is an error, so a typo in a name is never silently skipped.
    """
    errors: list[ChangesetError] = []
    if not directory.is_dir():
        errors.append(
            ChangesetError(
                "the changesets folder does not exist",
                location=Location(file=display_path(directory)),
                hint='create it, or set `changesets = "..."` in kmigrate.toml; `kmigrate init` makes a project',
            )
        )
        return [], errors
    found: list[ChangesetFileName] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.name == SUM_FILE:
            continue
        match = FILE_PATTERN.match(path.name)
        if not match:
            errors.append(
                ChangesetError(
                    "not a changeset file name",
                    location=Location(file=display_path(path), line=1),
                    hint=FILE_HINT + "; move other files into a sub-folder",
                )
            )
            continue
        found.append(ChangesetFileName(match["version"], match["name"], path))
    found.sort(key=lambda f: (f.number, f.path.name))
    by_number: dict[int, ChangesetFileName] = {}
    unique: list[ChangesetFileName] = []
    for item in found:
        first = by_number.get(item.number)
        if first is not None:
            errors.append(
                ChangesetError(
                    f"duplicate version {item.number}: {first.path.name} has it too",
                    location=Location(file=display_path(item.path), line=1),
                    hint="every changeset needs its own version; rename one (`kmigrate new` picks the next)",
                )
            )
            continue
        by_number[item.number] = item
        unique.append(item)
    return unique, errors


def next_changeset_path(directory: Path, name: str) -> Path:
    """Where ``kmigrate new NAME`` writes: ``V<highest + 1>__<name>.yaml`` in ``directory``.

    Four digits zero-padded (wider when the highest is wider); files with bad names are not
    counted, but neither do they stop this.
    """
    name = name.strip().replace(" ", "_")
    if name.endswith((".yaml", ".yml")):
        name = name.rsplit(".", 1)[0]
    if not NAME_PATTERN.match(name):
        raise InputError(
            f"changeset name {name!r}: use letters, digits, _ and -", hint="e.g. `kmigrate new import_orders`"
        )
    items, _errors = discover(directory)
    highest = max((item.number for item in items), default=0)
    width = max([4] + [len(item.version) for item in items])
    return directory / f"V{highest + 1:0{width}d}__{name}.yaml"
