"""A path the project may read: the one rule for every file kmigrate reads on a changeset's behalf.

Changesets come from pull requests, so a changeset, a template, a data file or the sandbox file
may be written by someone who wants to read this machine's files (``/etc/passwd`` through a
symlink, ``../../secrets``) or to stall CI (``/dev/zero``, a FIFO). Every such read goes through
here, and a path passes only when:

- resolved (symlinks followed) it lies inside the project folder, itself resolved;
- it is a regular file (not a directory, FIFO, socket or device);
- it is at most ``max_bytes`` long (checked on the open file, and again while reading).

A path that fails is an ``InputError`` of the caller's class (``ChangesetError`` for what a
changeset reads, ``ConfigError``/``SandboxDefinitionError`` for what kmigrate.toml names) naming
the path as written and what to do. ``inside_project`` is the same rule for a folder or a
file not read here (it need not exist yet).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from .errors import ChangesetError, InputError, Location

MB = 1 << 20
KEEP_INSIDE = "keep every file the project reads inside the project folder (a symlink counts where it points)"


def _display(path: Path, root: Path) -> str:
    """The path relative to the project folder, as written (symlinks not followed): where it
    points is never shown."""
    return Path(os.path.relpath(os.path.normpath(path), root)).as_posix()


def _inside(resolved: Path, root: Path) -> bool:
    return resolved == root or root in resolved.parents


def project_file(
    root: Path,
    path: Path | str,
    *,
    what: str,
    max_bytes: int,
    error: type[InputError] = ChangesetError,
    location: Location | None = None,
) -> Path:
    """``path`` (relative to ``root`` unless absolute) resolved, if the project may read it.

    ``what`` names the file in messages ("template", "data file", "the sandbox file"). The
    size is checked here too, so a caller that streams the file later need not.
    """
    root = Path(root).resolve()
    resolved = inside_project(root, path, what=what, error=error, location=location)
    shown = _display(Path(path) if Path(path).is_absolute() else root / path, root)
    where = location or Location(file=shown)
    try:
        info = os.stat(resolved)
    except FileNotFoundError:
        raise error(f"{what} {shown} not found", location=where) from None
    except OSError as exc:
        raise error(f"cannot read {what} {shown}: {exc.strerror or exc}", location=where) from None
    _check_kind(info, what, shown, max_bytes, error, where)
    return resolved


def read_project_file(
    root: Path,
    path: Path | str,
    *,
    what: str,
    max_bytes: int,
    error: type[InputError] = ChangesetError,
    location: Location | None = None,
) -> bytes:
    """The bytes of ``path`` under the rule of ``project_file``; read from the very file checked
    (opened without blocking, so a FIFO swapped in after the check cannot stall the read)."""
    resolved = project_file(root, path, what=what, max_bytes=max_bytes, error=error, location=location)
    shown = _display(resolved, Path(root).resolve())
    where = location or Location(file=shown)
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise error(f"cannot read {what} {shown}: {exc.strerror or exc}", location=where) from None
    with os.fdopen(fd, "rb") as handle:
        _check_kind(os.fstat(fd), what, shown, max_bytes, error, where)
        chunks, size = [], 0
        while size <= max_bytes:  # in chunks: no buffer of max_bytes allocated up front
            chunk = handle.read(min(MB, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    if len(data) > max_bytes:  # it grew after the check
        raise error(_too_big(what, shown, max_bytes), location=where, hint=_TOO_BIG_HINT)
    return data


def inside_project(
    root: Path,
    path: Path | str,
    *,
    what: str,
    error: type[InputError] = ChangesetError,
    location: Location | None = None,
    kind: Literal["folder", "file"] | None = None,
) -> Path:
    """``path`` resolved, if it lies inside the project folder. It need not exist (a folder
    made later, a store written later); when it does and ``kind`` is given, it must be a
    folder (``"folder"``), or anything but one (``"file"``)."""
    root = Path(root).resolve()
    given = Path(path) if Path(path).is_absolute() else root / path
    resolved = given.resolve()
    shown = path if isinstance(path, str) else _display(given, root)  # a config value: as written
    if not _inside(resolved, root):
        raise error(f"{what} {shown} is outside the project folder", location=location, hint=KEEP_INSIDE)
    if kind == "folder" and resolved.exists() and not resolved.is_dir():
        raise error(
            f"{what} {shown} is not a folder", location=location or Location(file=_display(given, root))
        )
    if kind == "file" and resolved.is_dir():
        raise error(f"{what} {shown} is a folder", location=location or Location(file=_display(given, root)))
    return resolved


_TOO_BIG_HINT = (
    "raise `file_mb` (or `data_file_mb` for data files) under [limits] in kmigrate.toml if it is meant"
)


def _too_big(what: str, shown: str, max_bytes: int) -> str:
    return f"{what} {shown} is larger than the limit of {max_bytes / MB:g} MB"


def _check_kind(
    info: os.stat_result, what: str, shown: str, max_bytes: int, error: type[InputError], where: Location
) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a folder"
            if stat.S_ISDIR(info.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "not a regular file"
        )
        raise error(
            f"{what} {shown} is {kind}, not a regular file", location=where, hint="point it at a regular file"
        )
    if info.st_size > max_bytes:
        raise error(_too_big(what, shown, max_bytes), location=where, hint=_TOO_BIG_HINT)


# ---- files kmigrate writes ----------------------------------------------------------------------


def create_private(path: Path) -> None:
    """Make ``path``'s folder (0700 when made here) and the file itself (0600 when made here),
    for state that holds error bodies, user names and host names (the journal, the sandbox's
    store). SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
