"""``changesets/kmigrate.sum``: the changesets' checksums in version order, as Atlas's atlas.sum.

The file, written only by ``kmigrate new``, ``kmigrate init`` and ``kmigrate hash``::

    kmigrate-sum 1 sha256:<sha256 of every line below, each with its "\\n">
    V0001__catalogue_and_customers.yaml sha256:<the changeset's source checksum>
    V0002__spring_orders.yaml sha256:<...>

One line per changeset file: its file name and its *source checksum* (sha256 of the file's
text with ``\\r\\n`` made ``\\n``, the very checksum the journal's drift check compares). The
first line's total changes whenever any line does, so two branches that each add a changeset
both change line 1 and conflict in git, even when they add different versions; two branches
adding the same version conflict on that line too. A file holds the changeset's source only:
data files and templates are covered by the journal's rendered checksum (drift) and by saved
plans (``kmigrate plan --out``).

``check`` (run by ``validate``, ``plan`` and ``apply`` when the file exists) reports every
disagreement at once: an edited changeset, one added or deleted without ``kmigrate hash``, a
version listed twice (a merge that kept both sides), a total that does not add up (a hand edit).
A project without the file is not checked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .changeset_files import FILE_PATTERN, SUM_FILE, discover, display_path, source_checksum
from .errors import Location, SumFileError

SUM_FORMAT = 1
_HEAD = f"kmigrate-sum {SUM_FORMAT} sha256:"
FIX = "`kmigrate hash` rewrites kmigrate.sum from the files (commit it with them)"


@dataclass(frozen=True)
class SumEntry:
    file: str  # the changeset's file name, e.g. V0003__spring_cleanup.yaml
    checksum: str  # hex sha256 of its source
    line: int = 0  # 1-based line in kmigrate.sum (0: not read from a file)

    @property
    def version(self) -> int:
        match = FILE_PATTERN.match(self.file)
        return int(match["version"]) if match else -1


def sum_path(changesets_dir: Path) -> Path:
    return changesets_dir / SUM_FILE


def current_entries(changesets_dir: Path) -> list[SumEntry]:
    """The entries the changeset files call for now, in version order (files with bad names or
    duplicate versions are the loader's to report)."""
    items, _errors = discover(changesets_dir)
    entries = []
    for item in items:
        text = item.path.read_bytes().decode("utf-8-sig", errors="replace")
        entries.append(SumEntry(item.path.name, source_checksum(text)))
    return entries


def _body(entries: list[SumEntry]) -> str:
    return "".join(f"{e.file} sha256:{e.checksum}\n" for e in entries)


def render(entries: list[SumEntry]) -> str:
    body = _body(entries)
    return f"{_HEAD}{hashlib.sha256(body.encode('utf-8')).hexdigest()}\n{body}"


def write(changesets_dir: Path) -> tuple[Path, int]:
    """(Re)write the sum file from the files; its path and how many changesets it lists."""
    entries = current_entries(changesets_dir)
    path = sum_path(changesets_dir)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(render(entries))
    return path, len(entries)


def check(changesets_dir: Path) -> None:
    """Raise one ``SumFileError`` naming every disagreement of kmigrate.sum with the files; no
    file, no check."""
    problems = problems_of(changesets_dir)
    if problems:
        raise combined(problems)


def combined(problems: list[SumFileError]) -> SumFileError:
    if len(problems) == 1:
        return problems[0]
    body = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
    return SumFileError(f"{len(problems)} problems with kmigrate.sum:\n{body}", hint=FIX)


def problems_of(changesets_dir: Path) -> list[SumFileError]:
    path = sum_path(changesets_dir)
    if not path.exists():
        return []
    shown = display_path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [SumFileError(f"cannot read: {exc}", location=Location(file=shown), hint=FIX)]
    if any(line.startswith(("<<<<<<<", "=======", ">>>>>>>")) for line in lines):
        return [
            SumFileError(
                "holds git conflict markers: two branches changed the changesets",
                location=Location(file=shown),
                hint="merge the changeset files (give a clashing version a new number with `kmigrate new`), "
                "then " + FIX,
            )
        ]
    problems: list[SumFileError] = []
    if not lines or not lines[0].startswith(_HEAD):
        return [
            SumFileError(
                f"the first line is not `{_HEAD}<hex>`", location=Location(file=shown, line=1), hint=FIX
            )
        ]
    listed: list[SumEntry] = []
    for number, line in enumerate(lines[1:], 2):
        name, _, checksum = line.partition(" sha256:")
        if not FILE_PATTERN.match(name) or len(checksum) != 64:
            problems.append(
                SumFileError(
                    f"not `V<version>__<name>.yaml sha256:<hex>`: {line[:80]!r}",
                    location=Location(file=shown, line=number),
                    hint=FIX,
                )
            )
            continue
        listed.append(SumEntry(name, checksum, number))
    total = hashlib.sha256("".join(f"{line}\n" for line in lines[1:]).encode("utf-8")).hexdigest()
    if lines[0][len(_HEAD) :] != total:
        problems.append(
            SumFileError(
                "the total on line 1 does not match the lines below it: the file was edited by hand or "
                "merged by taking both sides",
                location=Location(file=shown, line=1),
                hint="check the changesets it lists, then " + FIX,
            )
        )
    by_version: dict[int, SumEntry] = {}
    for entry in listed:
        first = by_version.setdefault(entry.version, entry)
        if first is not entry:
            problems.append(
                SumFileError(
                    f"version {entry.version} is listed twice ({first.file} on line {first.line}, {entry.file}): "
                    "two branches added the same version",
                    location=Location(file=shown, line=entry.line, changeset=entry.file.rsplit(".", 1)[0]),
                    hint="give one of them the next free version (rename it, or `kmigrate new` and move the "
                    "content), then " + FIX,
                )
            )
    problems.extend(_compare(changesets_dir, shown, listed))
    return problems


def _compare(changesets_dir: Path, shown: str, listed: list[SumEntry]) -> list[SumFileError]:
    problems = []
    recorded = {e.file: e for e in listed}
    now = {e.file: e for e in current_entries(changesets_dir)}
    for name, entry in now.items():
        changeset = name.rsplit(".", 1)[0]
        old = recorded.get(name)
        if old is None:
            problems.append(
                SumFileError(
                    f"{name} is not listed: it was added without `kmigrate new` or `kmigrate hash`",
                    location=Location(file=shown, changeset=changeset),
                    hint=FIX,
                )
            )
        elif old.checksum != entry.checksum:
            problems.append(
                SumFileError(
                    f"{name} changed since kmigrate.sum was written (line {old.line})",
                    location=Location(file=shown, line=old.line, changeset=changeset),
                    hint="an applied changeset is history: put it back and write a new one; if it was never "
                    "applied anywhere, " + FIX,
                )
            )
    for name, entry in recorded.items():
        if name not in now:
            problems.append(
                SumFileError(
                    f"{name} is listed but its file is gone",
                    location=Location(file=shown, line=entry.line, changeset=name.rsplit(".", 1)[0]),
                    hint="restore it if it was applied anywhere; otherwise " + FIX,
                )
            )
    return problems
