"""Changeset files -> ``LoadedChangeset``s: find, render (Jinja), parse (YAML), validate, checksum.

The pipeline for each file, in version order:

1. the source text; its checksum is sha256 of the text with ``\\r\\n`` made ``\\n``;
2. Jinja renders the whole file in a sandbox (``StrictUndefined``; ``templates/`` and the
   changesets folder on the search path; ``env``, ``vars``, ``changeset``, ``load_csv`` and
   ``load_json`` in scope);
3. the rendered text is parsed as YAML (1.2 core schema, see ``yamlio``) keeping each node's line;
4. each operation is validated by the pydantic models of ``changeset``, then checked against
   the environment (app aliases) and the project (refs: defined once, used after their
   producer, on the producer's app); records from data files are streamed once here, to be
   checked and hashed into the rendered checksum, and again later by the planner.

Every problem becomes a ``ChangesetError`` whose location names the file and the line: in the
source when the line can be traced back through the render, otherwise "rendered line N" with
that line shown. ``load_project_changesets`` collects every error of every file before raising.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
import re
import traceback
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, TemplatesNotFound, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import ValidationError

from . import yamlio
from .changeset import (
    KINDS,
    AddOp,
    AssigneesOp,
    DeleteOp,
    LoadedChangeset,
    Operation,
    RefIds,
    RequestOp,
    StatusOp,
    StatusRecord,
    UpdateOp,
    UpsertOp,
    _RecordsOp,
)
from .config import App, Environment, Project
from .datafiles import DataFile, data_format, read_json, read_table
from .errors import ChangesetError, ConfigError, KmigrateError, Location
from .plan import JournaledChangeset, canonical_json

FILE_PATTERN = re.compile(r"^V(?P<version>\d+)__(?P<name>[\w.-]+)\.ya?ml$")
FILE_HINT = "changeset files are named V<digits>__<name>.yaml, e.g. V0003__import_orders.yaml"
MAX_SHOWN = 120  # characters of a rendered line shown in a message


def display_path(path: Path) -> str:
    """A path as the user should see it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


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
        if path.name.startswith(".") or path.is_dir():
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


# ---- line numbers through the render -------------------------------------------------------


class LineMap:
    """Maps lines of the rendered text back to the source, where the render kept them.

    Lines the render left alone or changed in place (``{{ x }}``) map one to one; lines made
    by a loop, an include or a macro map to no single source line, only to the block of source
    lines that produced them.
    """

    def __init__(self, source: str, rendered: str):
        self.rendered_lines = rendered.splitlines()
        self.identity = source == rendered
        self._line: dict[int, int] = {}
        self._block: dict[int, int] = {}
        if self.identity:
            return
        src = source.splitlines()
        matcher = difflib.SequenceMatcher(None, src, self.rendered_lines)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            # Equal-sized changed blocks are expressions substituted in place, unless a block
            # tag is among them: then the sizes matching is a coincidence (a loop, an if).
            in_place = (
                tag == "replace"
                and i2 - i1 == j2 - j1
                and not any("{%" in line or "{#" in line for line in src[i1:i2])
            )
            if tag == "equal" or in_place:
                for k in range(j2 - j1):
                    self._line[j1 + k + 1] = i1 + k + 1
            else:
                for j in range(j1, j2):
                    self._block[j + 1] = i1 + 1 if i2 > i1 else max(i1, 1)

    def source_line(self, rendered_line: int | None) -> int | None:
        if rendered_line is None:
            return None
        if self.identity:
            return rendered_line
        return self._line.get(rendered_line)

    def text(self, rendered_line: int) -> str:
        if 1 <= rendered_line <= len(self.rendered_lines):
            line = self.rendered_lines[rendered_line - 1]
            return line if len(line) <= MAX_SHOWN else line[:MAX_SHOWN] + "..."
        return ""

    def locate(self, rendered_line: int | None, **where: Any) -> tuple[Location, str]:
        """A location for ``rendered_line``, and a suffix for the message showing the line
        when it has no source line of its own."""
        file = where.pop("file")
        line = self.source_line(rendered_line)
        if line is not None or rendered_line is None:
            return Location(file=file, line=line, **where), ""
        block = self._block.get(rendered_line)
        detail = f"rendered line {rendered_line}"
        if block is not None:
            detail += f" (made by the template from line {block})"
        extra = where.pop("detail", None)
        location = Location(file=file, line=block, detail=f"{extra}, {detail}" if extra else detail, **where)
        return location, f"\n    {rendered_line} | {self.text(rendered_line)}"


# ---- Jinja ----------------------------------------------------------------------------------


class _Templates:
    """One sandboxed Jinja environment per load: ``templates/`` first, then the changesets folder."""

    def __init__(self, project: Project, env: Environment):
        self.project = project
        self.env = env
        self.changesets_dir = project.changesets_dir.resolve()
        self.templates_dir = project.templates_dir.resolve()
        search = [str(d) for d in (self.templates_dir, self.changesets_dir) if d.is_dir()]
        self.jinja = SandboxedEnvironment(
            loader=FileSystemLoader(search),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,  # a line holding only {% ... %} leaves no blank line in the YAML
            lstrip_blocks=True,
            autoescape=False,
        )
        self.jinja.globals.update(load_csv=self._load_csv, load_json=self._load_json, env=env.name)

    def _data_path(self, relative: str) -> Path:
        path = (self.changesets_dir / relative).resolve()
        root = self.project.root.resolve()
        if root not in path.parents:
            raise ChangesetError(f"data file {relative!r} is outside the project folder {display_path(root)}")
        return path

    def _load_csv(self, relative: str) -> list[dict[str, Any]]:
        path = self._data_path(str(relative))
        return read_table(path, display_path(path))

    def _load_json(self, relative: str) -> Any:
        path = self._data_path(str(relative))
        return read_json(path, display_path(path))

    def render(self, item: ChangesetFileName, text: str) -> str:
        # A fresh copy of the variables for every file: one template cannot change another's.
        self.jinja.globals["vars"] = copy.deepcopy(dict(self.env.vars))
        self.jinja.globals["changeset"] = {"version": item.version, "name": item.name, "id": item.id}
        code = self.jinja.compile(text, name=item.path.name, filename=str(item.path))
        template = self.jinja.template_class.from_code(self.jinja, code, self.jinja.make_globals(None), None)
        return template.render()


def _template_error(exc: BaseException, item: ChangesetFileName, source_lines: list[str]) -> ChangesetError:
    """A Jinja failure as an error naming the template file and line."""
    own = str(item.path)
    if isinstance(exc, TemplateSyntaxError) and not isinstance(exc, (TemplateNotFound, TemplatesNotFound)):
        file = exc.filename or own
        frames = _template_frames(exc)
        included_from = next((line for f, line in frames if f == own), None) if file != own else None
        return _located(
            f"template syntax error: {exc.message}",
            file,
            exc.lineno,
            own,
            source_lines if file == own else None,
            included_from=included_from,
        )
    frames = _template_frames(exc)
    file, line = frames[-1] if frames else (own, None)
    included_from = next((ln for f, ln in frames if f == own), None) if file != own else None
    hint: str | None
    if isinstance(exc, UndefinedError):
        message = f"undefined variable: {exc.message}"
        hint = "define it under vars in kmigrate.toml, pass --var KEY=VALUE, or use `x | default(...)`"
    elif isinstance(exc, SecurityError):
        message = f"not allowed in the template sandbox: {exc.message}"
        hint = "changeset templates may only use data, filters and macros"
    elif isinstance(exc, (TemplateNotFound, TemplatesNotFound)):
        message = f"template not found: {exc.message}"
        hint = "templates are looked up in the templates folder and the changesets folder"
    elif isinstance(exc, KmigrateError):
        message = exc.message
        if exc.location is not None and exc.location.file:
            message = f"{exc.location}: {message}"
        hint = exc.hint
    else:
        message = f"template error: {type(exc).__name__}: {exc}"
        hint = None
    err = _located(
        message, file, line, own, source_lines if file == own else None, included_from=included_from
    )
    err.hint = hint
    return err


def _template_frames(exc: BaseException) -> list[tuple[str, int]]:
    """(template file, line) of every template frame in the traceback, outermost first.

    Jinja rewrites tracebacks so that frames of compiled templates carry the template's file
    name and line; Python modules end in ``.py`` and are skipped.
    """
    frames = []
    for frame in traceback.extract_tb(exc.__traceback__):
        if not frame.filename.endswith(".py") and not frame.filename.startswith("<") and frame.lineno:
            frames.append((frame.filename, frame.lineno))
    return frames


def _located(
    message: str,
    file: str,
    line: int | None,
    own: str,
    source_lines: list[str] | None,
    included_from: int | None = None,
) -> ChangesetError:
    shown = ""
    if source_lines is not None and line is not None and 1 <= line <= len(source_lines):
        text = source_lines[line - 1]
        shown = f"\n    {line} | {text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + '...'}"
    detail = f"included from {display_path(Path(own))}:{included_from}" if included_from else None
    return ChangesetError(
        message + shown, location=Location(file=display_path(Path(file)), line=line, detail=detail)
    )


# ---- validation of one file -----------------------------------------------------------------


@dataclass
class _Producer:
    name: str
    changeset: str
    operation: int  # 1-based
    app_id: int
    guest_space_id: int | None
    count: int | None  # records created; None when unknown (a data file that failed)
    where: str  # "file:line" of the ref, for messages


RECORD_KEYS = {"add": set(), "update": {"id", "revision"}, "upsert": {"revision"}}


class _FileLoader:
    """Loads one changeset file; problems go to ``errors`` rather than stopping at the first."""

    def __init__(
        self,
        item: ChangesetFileName,
        env: Environment,
        templates: _Templates,
        state: _ProjectState,
        journaled: JournaledChangeset | None = None,
    ):
        self.item = item
        self.journaled = journaled
        # Set once the checksums are known: an applied changeset that did not change is not
        # checked record by record again (its data files were checked before it was applied).
        self.trusted = False
        self.env = env
        self.templates = templates
        self.state = state
        self.producers = state.producers
        self.file = display_path(item.path)
        self.errors: list[ChangesetError] = []
        self.lines: LineMap | None = None
        self.root: yaml.Node | None = None
        self.reached_operations = False

    # -- reporting ----

    def fail(
        self,
        message: str,
        path: tuple[Any, ...] = (),
        *,
        operation: int | None = None,
        record: int | None = None,
        detail: str | None = None,
        hint: str | None = None,
        key: bool = False,
    ) -> None:
        node = yamlio.key_node_at(self.root, path) if key else None
        node = node or yamlio.node_at(self.root, path)
        rendered_line = node.start_mark.line + 1 if node is not None else None
        assert self.lines is not None
        location, shown = self.lines.locate(
            rendered_line, file=self.file, operation=operation, record=record, detail=detail
        )
        self.errors.append(ChangesetError(message + shown, location=location, hint=hint))

    # -- the pipeline ----

    def load(self) -> LoadedChangeset | None:
        item = self.item
        try:
            raw = item.path.read_bytes()
        except OSError as exc:
            self.errors.append(
                ChangesetError(f"cannot read: {exc.strerror or exc}", location=Location(file=self.file))
            )
            return None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self.errors.append(
                ChangesetError(
                    "not UTF-8 text; save the file as UTF-8", location=Location(file=self.file, line=line)
                )
            )
            return None
        text = text.replace("\r\n", "\n")
        source_checksum = hashlib.sha256(text.encode("utf-8")).hexdigest()
        source_lines = text.splitlines()

        try:
            rendered = self.templates.render(item, text)
        except Exception as exc:  # noqa: BLE001 - every template failure becomes a located error
            self.errors.append(_template_error(exc, item, source_lines))
            return None
        self.lines = LineMap(text, rendered)

        try:
            self.root, data = yamlio.compose_and_construct(rendered)
        except yaml.YAMLError as exc:
            self._yaml_error(exc)
            return None

        if data is None:
            self.errors.append(
                ChangesetError(
                    "the changeset is empty" + (" after rendering" if text.strip() else ""),
                    location=Location(file=self.file, line=1),
                    hint="a changeset holds `operations:`, a list of at least one operation",
                )
            )
            return None
        if not isinstance(data, dict):
            self.fail(
                f"a changeset is a mapping with `operations:` (and an optional `description:`), not {_kind_of(data)}"
            )
            return None
        for key in data:
            if key not in ("description", "operations"):
                self.fail(
                    f"unknown top-level key `{key}`; a changeset has `description:` and `operations:`",
                    (key,),
                    key=True,
                )
        description = data.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            self.fail(f"`description` must be text, not {_kind_of(description)}", ("description",))
        operations = data.get("operations")
        if "operations" not in data:
            self.fail("`operations:` is missing; it lists the changeset's operations", ())
            return None
        if not isinstance(operations, list):
            self.fail(
                f"`operations` must be a list of operations, not {_kind_of(operations)}", ("operations",)
            )
            return None
        if not operations:
            self.fail("`operations` is empty; a changeset needs at least one operation", ("operations",))
            return None

        self.reached_operations = True
        digest = hashlib.sha256()
        not_json: set[int] = set()
        for index, raw_op in enumerate(operations):
            digest.update(b"\x1e")
            try:
                digest.update(canonical_json(raw_op).encode("utf-8"))
            except (TypeError, ValueError) as exc:
                self.fail(
                    f"operation {index + 1} holds a value that is not JSON: {exc}",
                    ("operations", index),
                    operation=index + 1,
                )
                not_json.add(index)
                continue
            data_file = self._data_file_of(raw_op)
            if data_file is not None:
                digest.update(b"\x1f" + _file_digest(data_file))
        rendered_checksum = digest.hexdigest()
        j = self.journaled
        self.trusted = (
            j is not None
            and j.fully_applied
            and (j.source_checksum, j.rendered_checksum) == (source_checksum, rendered_checksum)
        )
        models: list[Operation] = []
        op_lines: list[int | None] = []
        rec_lines: list[tuple[int | None, ...] | None] = []
        rendered_op_lines: list[int | None] = []
        rendered_rec_lines: list[tuple[int, ...] | None] = []
        failed_before = len(self.errors)
        for index, raw_op in enumerate(operations):
            if index in not_json:
                continue
            op = self._operation(index, raw_op)
            op_node = yamlio.node_at(self.root, ("operations", index))
            op_rendered = op_node.start_mark.line + 1 if op_node is not None else None
            rendered_op_lines.append(op_rendered)
            op_lines.append(self.lines.source_line(op_rendered))
            records_node = None
            if isinstance(raw_op, dict) and len(raw_op) == 1:
                records_node = yamlio.node_at(self.root, ("operations", index, next(iter(raw_op)), "records"))
            if isinstance(records_node, yaml.SequenceNode):
                record_rendered = tuple(n.start_mark.line + 1 for n in records_node.value)
                rendered_rec_lines.append(record_rendered)
                rec_lines.append(tuple(self.lines.source_line(n) for n in record_rendered))
            else:
                rendered_rec_lines.append(None)
                rec_lines.append(None)
            if op is not None:
                models.append(op)
        if len(self.errors) > failed_before or len(models) != len(operations):
            return None
        return LoadedChangeset(
            version=item.version,
            name=item.name,
            path=item.path,
            description=description if isinstance(description, str) else "",
            operations=tuple(models),
            source_checksum=source_checksum,
            rendered_checksum=rendered_checksum,
            operation_lines=tuple(op_lines),
            record_lines=tuple(rec_lines),
            rendered_operation_lines=tuple(rendered_op_lines),
            rendered_record_lines=tuple(rendered_rec_lines),
            rendered_text_differs=not self.lines.identity,
        )

    def _yaml_error(self, exc: yaml.YAMLError) -> None:
        assert self.lines is not None
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"YAML syntax error: {problem}"
        if context and "duplicate key" not in problem:
            message += f" ({context})"
        rendered_line = mark.line + 1 if mark is not None else None
        location, shown = self.lines.locate(rendered_line, file=self.file)
        if not shown and rendered_line is not None:
            shown = f"\n    {location.line} | {self.lines.text(rendered_line)}"
        hint = None
        if rendered_line is not None and "\t" in self.lines.text(rendered_line) and "token" in problem:
            hint = "YAML indents with spaces, not tabs"
        elif "mapping values are not allowed" in problem:
            hint = "quote a value that contains ': '"
        self.errors.append(ChangesetError(message + shown, location=location, hint=hint))

    # -- one operation ----

    def _operation(self, index: int, raw: Any) -> Operation | None:
        number = index + 1
        path = ("operations", index)
        if not isinstance(raw, dict):
            self.fail(
                f"an operation is a mapping `KIND: {{...}}` with KIND one of {', '.join(KINDS)}; found {_kind_of(raw)}",
                path,
                operation=number,
            )
            return None
        kind = next(iter(raw)) if len(raw) == 1 else None
        detail = kind if kind in KINDS else None
        try:
            op = Operation.model_validate(raw)
        except ValidationError as exc:
            self._pydantic_errors(exc, index, raw, kind)
            self._forget_ref(raw)
            return None
        body = op.body
        detail = f"{op.kind} {_app_label(body)}"
        before = len(self.errors)
        app = self._resolve_app(body, path + (op.kind,), number, detail)

        if isinstance(body, _RecordsOp):
            with_records = self._records_op(op, body, index, app, detail)
            if with_records is None:
                self._forget_ref(raw)
                return None
            op = with_records
        self._check_refs(op, index, app, detail)
        if isinstance(body, (AddOp, UpsertOp)) and body.ref:
            self._define_ref(body, op, index, app)
        if len(self.errors) != before:
            self._forget_ref(raw)
            return None
        return op

    def _forget_ref(self, raw: dict[str, Any]) -> None:
        """A failed producer's ref is remembered, so its consumers are not reported too."""
        for body in raw.values():
            if isinstance(body, dict) and isinstance(body.get("ref"), str):
                self.state.failed_refs.add(body["ref"])

    def _pydantic_errors(
        self, exc: ValidationError, index: int, raw: dict[str, Any], kind: str | None
    ) -> None:
        number = index + 1
        detail = kind if kind in KINDS else None
        if kind in KINDS and isinstance(raw.get(kind), dict):
            detail = f"{kind} {_app_label_raw(raw[kind])}"
        seen: set[tuple[Any, ...]] = set()
        for err in _simplify(exc.errors()):
            loc = tuple(err["loc"])
            record = None
            if len(loc) >= 3 and loc[1] == "records" and isinstance(loc[2], int):
                record = loc[2] + 1
            where = ".".join(str(p) for p in loc[1:]) if len(loc) > 1 else ""
            if err["type"] == "extra_forbidden":
                model = _BODY_FIELDS.get(loc[0], []) if loc else []
                field = loc[-1]
                known = f"; known keys: {', '.join(model)}" if len(loc) == 2 and model else ""
                message = (
                    f"unknown key `{field}`"
                    + (f" in {loc[0]}" if len(loc) == 2 else f" at `{where}`")
                    + known
                )
                key_path = ("operations", index) + loc
                marker = (key_path, message)
                if marker in seen:
                    continue
                seen.add(marker)
                self.fail(message, key_path, operation=number, record=record, detail=detail, key=True)
                continue
            msg = err["msg"].removeprefix("Value error, ")
            message = f"`{where}`: {msg}" if where else msg
            if (
                err["type"] not in ("value_error", "assertion_error")
                and "input" in err
                and not isinstance(err["input"], (dict, list))
            ):
                message += f" (got {err['input']!r})"
            marker = (loc, message)
            if marker in seen:
                continue
            seen.add(marker)
            # A problem with the whole body (a model check) is shown at the operation's line.
            path = ("operations", index) + (loc if len(loc) > 1 else ())
            self.fail(message, path, operation=number, record=record, detail=detail)

    def _resolve_app(self, body: Any, path: tuple[Any, ...], number: int, detail: str) -> Any:
        app_name = body.payload.get("app") if hasattr(body, "payload") else body.app
        app_path = path + (("payload", "app") if hasattr(body, "payload") else ("app",))
        if isinstance(app_name, bool) or not isinstance(app_name, (str, int)):
            self.fail(
                f"`app` must be an alias or a numeric app id, not {_kind_of(app_name)}",
                app_path,
                operation=number,
                detail=detail,
            )
            return None
        try:
            return self.env.app(app_name)
        except ConfigError as exc:
            self.fail(exc.message, app_path, operation=number, detail=detail, hint=exc.hint)
            return None

    # -- records ----

    def _records_op(
        self, op: Operation, body: _RecordsOp, index: int, app: App | None, detail: str
    ) -> Operation | None:
        number = index + 1
        base = ("operations", index, op.kind)
        if body.records is not None:
            reported: set[str] = set()
            for position, record in enumerate(body.records):
                for problem in _record_problems(op.kind, body, record):
                    self.fail(
                        problem,
                        base + ("records", position),
                        operation=number,
                        record=position + 1,
                        detail=detail,
                    )
                for code_path, problem in self._unknown_fields(app, record, reported):
                    self.fail(
                        problem,
                        base + ("records", position) + code_path,
                        operation=number,
                        record=position + 1,
                        detail=detail,
                        hint=_UNKNOWN_FIELD_HINT,
                        key=True,
                    )
                _normalise_record(record)
            return op
        relative = body.records_from
        assert relative is not None
        path = (self.item.path.parent / relative).resolve()
        root = self.templates.project.root.resolve()
        if root not in path.parents:
            self.fail(
                f"records_from {relative!r} is outside the project folder",
                base + ("records_from",),
                operation=number,
                detail=detail,
            )
            return None
        if data_format(path) is None:
            self.fail(
                f"records_from {relative!r}: unknown format; use .csv, .json, .jsonl or .ndjson",
                base + ("records_from",),
                operation=number,
                detail=detail,
            )
            return None
        if not path.is_file():
            self.fail(
                f"records_from: data file {display_path(path)} not found (paths are relative to the changeset file)",
                base + ("records_from",),
                operation=number,
                detail=detail,
            )
            return None
        source = _NormalisedSource(
            DataFile(path, display_path(path), changeset=self.item.id, operation=number)
        )
        if self.trusted:
            source.count = source.raw.count()
            return op.model_copy(update={op.kind: body.model_copy(update={"source": source})})
        count = 0
        reported_columns: set[str] = set()  # an unknown column is reported once, not on every row
        try:
            for line, record in source.raw:
                count += 1
                where = Location(
                    file=source.raw.path,
                    line=line,
                    changeset=self.item.id,
                    operation=number,
                    record=count,
                    detail=detail,
                )
                for problem in _record_problems(op.kind, body, record):
                    self.errors.append(ChangesetError(problem, location=where))
                for _code_path, problem in self._unknown_fields(app, record, reported_columns):
                    self.errors.append(ChangesetError(problem, location=where, hint=_UNKNOWN_FIELD_HINT))
                rid = record.get("id")
                if isinstance(rid, dict) and "ref" in rid and not _id_problems(rid):
                    self._check_ref(RefIds.model_validate(rid), app, number, detail, location=where)
                    if len(self.errors) > 200:
                        raise ChangesetError(
                            "too many errors in this data file; stopping here",
                            location=Location(file=source.raw.path, line=line, changeset=self.item.id),
                        )
        except ChangesetError as exc:
            self.errors.append(exc)
            return None
        source.count = count
        new_body = body.model_copy(update={"source": source})
        return op.model_copy(update={op.kind: new_body})

    def _unknown_fields(
        self, app: Any, record: Any, reported: set[str]
    ) -> Iterator[tuple[tuple[Any, ...], str]]:
        """Field codes the sandbox's app does not have (Kintone would drop their values silently).

        Only the sandbox environment knows its apps' fields offline; ``reported`` keeps each
        code to one message per operation.
        """
        fields = self.state.sandbox_fields.get(app.id) if app is not None else None
        if fields is None or not isinstance(record, dict):
            return
        for code, value in record.items():
            if code in RESERVED_RECORD_KEYS or not isinstance(code, str):
                continue
            if code not in fields:
                if code not in reported:
                    reported.add(code)
                    yield (code,), _unknown_field_message(code, fields, app.id, self.env)
                continue
            columns = fields[code]
            rows = (
                value.get("value") if isinstance(value, dict) and set(value) <= {"value", "type"} else value
            )
            if not columns or not isinstance(rows, list):
                continue
            for row_index, row in enumerate(rows):
                cells = (
                    row.get("value") if isinstance(row, dict) and isinstance(row.get("value"), dict) else row
                )
                if not isinstance(cells, dict):
                    continue
                for sub in cells:
                    name = f"{code}.{sub}"
                    if sub not in columns and name not in reported:
                        reported.add(name)
                        yield (
                            (code, row_index, sub),
                            _unknown_field_message(sub, columns, app.id, self.env, table=code),
                        )

    # -- refs ----

    def _check_refs(self, op: Operation, index: int, app: Any, detail: str) -> None:
        for ref, path in _refs_of(op):
            self._check_ref(ref, app, index + 1, detail, path=("operations", index, op.kind) + path)

    def _check_ref(
        self,
        ref: RefIds,
        app: Any,
        number: int,
        detail: str,
        *,
        path: tuple[Any, ...] = (),
        location: Location | None = None,
    ) -> None:
        def report(message: str, hint: str | None = None) -> None:
            if location is not None:
                self.errors.append(ChangesetError(message, location=location, hint=hint))
            else:
                self.fail(message, path, operation=number, detail=detail, hint=hint)

        producer = self.producers.get(ref.ref)
        if producer is None:
            if self.state.opaque_failure or ref.ref in self.state.failed_refs:
                return  # its producer failed to load and was reported: do not pile on
            report(
                f"ref {ref.ref!r} names no records: no earlier `add` or `upsert` has `ref: {ref.ref}`",
                hint="refs are defined by `ref:` on an add or upsert in this or an earlier changeset",
            )
            return
        if app is not None and (producer.app_id, producer.guest_space_id) != (app.id, app.guest_space_id):
            report(
                f"ref {ref.ref!r} holds records of app {producer.app_id} (defined at {producer.where}), "
                f"but this operation works on app {app.id}"
            )
        if ref.index is not None and producer.count is not None and ref.index >= producer.count:
            report(
                f"ref {ref.ref!r} index {ref.index} is out of range: it names {producer.count} "
                f"record{'s' if producer.count != 1 else ''} (indexes start at 0)"
            )

    def _define_ref(self, body: Any, op: Operation, index: int, app: Any) -> None:
        number = index + 1
        path = ("operations", index, op.kind, "ref")
        node = yamlio.node_at(self.root, path)
        assert self.lines is not None
        line = self.lines.source_line(node.start_mark.line + 1) if node is not None else None
        where = f"{self.file}:{line}" if line else self.file
        first = self.producers.get(body.ref)
        if first is not None:
            self.fail(
                f"ref {body.ref!r} is already defined at {first.where}; refs are unique in a project",
                path,
                operation=number,
                detail=f"{op.kind} {_app_label(body)}",
            )
            return
        if app is None:
            return
        source = getattr(body, "source", None)
        count = len(body.records) if body.records is not None else getattr(source, "count", None)
        self.producers[body.ref] = _Producer(
            body.ref, self.item.id, number, app.id, app.guest_space_id, count, where
        )

    def _data_file_of(self, raw_op: Any) -> Path | None:
        """The data file a records op reads, if it names one that exists (else: checked later)."""
        if not (isinstance(raw_op, dict) and len(raw_op) == 1):
            return None
        body = next(iter(raw_op.values()))
        relative = body.get("records_from") if isinstance(body, dict) else None
        if not isinstance(relative, str):
            return None
        path = (self.item.path.parent / relative).resolve()
        return path if path.is_file() else None


RESERVED_RECORD_KEYS = frozenset({"id", "revision", "$id", "$revision"})
_UNKNOWN_FIELD_HINT = "fix the field code, or add the field to the app in the sandbox file"


def _unknown_field_message(
    code: str, known: Collection[str], app_id: int, env: Environment, table: str | None = None
) -> str:
    where = f"subtable `{table}`" if table else f"app {app_id}"
    close = difflib.get_close_matches(code, list(known), n=1)
    guess = f"; did you mean `{close[0]}`?" if close else ""
    sandbox = display_path(env.sandbox_file) if env.sandbox_file else "the sandbox file"
    return (
        f"field `{code}` is not a field of {where} in {sandbox}: Kintone ignores unknown field codes, "
        f"so this value would be lost{guess}"
    )


def _sandbox_fields(env: Environment) -> dict[int, dict[str, frozenset[str]]]:
    """App id -> field code -> its subtable's column codes (empty for other fields), for the
    sandbox environment; empty when the environment is a real Kintone or the file does not
    load (``apply`` reports that file's problems itself)."""
    if not env.is_sandbox or env.sandbox_file is None:
        return {}
    from .sandbox.definition import parse_definition  # the sandbox file: a project file like any other

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


def _file_digest(path: Path) -> bytes:
    """sha256 of a data file's bytes: a data file changes the rendered checksum without being parsed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


class _NormalisedSource:
    """A data file's records as the planner reads them: ``{ref: ...}`` ids made ``RefIds``."""

    def __init__(self, raw: DataFile):
        self.raw = raw
        self.path = raw.path
        self.count: int | None = None

    def __repr__(self) -> str:
        return f"records_from({self.path!r})"

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for line, record in self.raw:
            _normalise_record(record)
            yield line, record


_BODY_FIELDS = {
    kind: [name for name in model.model_fields if name != "source"]
    for kind, model in (("add", AddOp), ("update", UpdateOp), ("upsert", UpsertOp))
}
for _kind in ("delete", "status", "assignees", "request"):
    _BODY_FIELDS[_kind] = list(Operation.model_fields[_kind].annotation.__args__[0].model_fields)  # type: ignore[union-attr]


def _record_problems(kind: str, body: Any, record: Any) -> list[str]:
    """What is wrong with one record beyond its shape (both inline and from data files)."""
    if not isinstance(record, dict):
        return [f"a record is a mapping of field codes to values, not {_kind_of(record)}"]
    problems = []
    key = getattr(body, "key", None)
    if kind == "add":
        for reserved in ("id", "revision", "$id", "$revision"):
            if reserved in record:
                problems.append(f"`{reserved}` cannot be set when adding records: Kintone assigns it")
    elif kind == "update":
        if key is not None:
            if "id" in record:
                problems.append(
                    f"a record of an update by `key: {key}` must not also have `id`: give one or the other"
                )
            if key not in record:
                problems.append(
                    f"the record has no `{key}`: an update by `key: {key}` finds each record by that field"
                )
        elif "id" not in record:
            problems.append("the record has no `id`: give `id:` per record, or `key: FIELD` on the operation")
        else:
            problems.extend(_id_problems(record["id"]))
    elif kind == "upsert":
        if "id" in record:
            problems.append(f"an upsert finds records by `key: {key}`, not by `id`")
        if key not in record:
            problems.append(f"the record has no `{key}`: an upsert finds or creates each record by its `key`")
    if key is not None and key in record:
        value = record[key]
        if isinstance(value, dict) and set(value) <= {"value"}:
            value = value.get("value")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value == "":
            problems.append(f"the key field `{key}` must hold a text or number value, not {_kind_of(value)}")
    revision = record.get("revision")
    if revision is not None and (
        not isinstance(revision, int) or isinstance(revision, bool) or revision < -1
    ):
        problems.append(f"`revision` must be a whole number (or -1 to skip the check), not {revision!r}")
    for code, value in record.items():
        if not isinstance(code, str) or not code:
            problems.append(f"field code {code!r} must be text")
        elif code not in ("id", "revision") and _has_bool(value):
            problems.append(f"field `{code}` holds true/false; Kintone values are text or numbers: quote it")
    return problems


def _id_problems(value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"`id` must be a record id or {{ref: NAME, index: I}}, not {value!r}"]
    if isinstance(value, int):
        return [] if value > 0 else [f"`id` must be positive, not {value}"]
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return []
    if isinstance(value, RefIds):
        return [] if value.index is not None else ["`id: {ref: ...}` of one record needs an `index`"]
    if isinstance(value, dict) and "ref" in value:
        try:
            ref = RefIds.model_validate(value)
        except ValidationError:
            return [f"`id` {value!r} is not a valid ref: write {{ref: NAME, index: I}}"]
        if ref.index is None:
            return ["`id: {ref: NAME}` names many records; one record needs {ref: NAME, index: I}"]
        return []
    return [f"`id` must be a record id or {{ref: NAME, index: I}}, not {value!r}"]


def _normalise_record(record: Any) -> None:
    if isinstance(record, dict):
        rid = record.get("id")
        if isinstance(rid, dict) and "ref" in rid:
            try:
                record["id"] = RefIds.model_validate(rid)
            except ValidationError:
                pass
        elif isinstance(rid, str) and rid.isdigit():
            record["id"] = int(rid)


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return False


def _refs_of(op: Operation) -> Iterator[tuple[RefIds, tuple[Any, ...]]]:
    """Every ``{ref: ...}`` an operation consumes, with its path inside the operation body."""
    body = op.body
    if isinstance(body, DeleteOp):
        yield from _refs_in_ids(body.ids, ("ids",))
    elif isinstance(body, StatusOp):
        if isinstance(body.records, RefIds):
            yield body.records, ("records",)
        else:
            for i, rec in enumerate(body.records):
                if isinstance(rec, RefIds):
                    yield rec, ("records", i)
                elif isinstance(rec, StatusRecord) and isinstance(rec.id, RefIds):
                    yield rec.id, ("records", i, "id")
    elif isinstance(body, AssigneesOp):
        if isinstance(body.id, RefIds):
            yield body.id, ("id",)
    elif isinstance(body, UpdateOp):
        if body.records is not None:
            for i, fields in enumerate(body.records):
                rid = fields.get("id")
                if isinstance(rid, RefIds):
                    yield rid, ("records", i, "id")
        # refs in a data file's records are checked while the file is streamed
    elif isinstance(body, RequestOp):
        yield from _refs_in_payload(body.payload, ("payload",))


def _refs_in_ids(ids: Any, path: tuple[Any, ...]) -> Iterator[tuple[RefIds, tuple[Any, ...]]]:
    if isinstance(ids, RefIds):
        yield ids, path
    elif isinstance(ids, list):
        for i, item in enumerate(ids):
            if isinstance(item, RefIds):
                yield item, path + (i,)


def _refs_in_payload(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[RefIds, tuple[Any, ...]]]:
    if isinstance(value, dict):
        if "ref" in value and isinstance(value["ref"], str) and set(value) <= {"ref", "index"}:
            try:
                yield RefIds.model_validate(value), path
            except ValidationError:
                pass
            return
        for k, v in value.items():
            yield from _refs_in_payload(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _refs_in_payload(v, path + (i,))


_UNION_TAG = re.compile(
    r"^(list\[|dict\[|union\[|function-|tagged-union|int$|str$|float$|bool$|[A-Z]\w*$|constrained-)"
)


_EXPECTED = {
    "list_type": "a list",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "text",
    "bool_type": "true/false",
    "float_type": "a number",
    "literal_error": None,
}


def _simplify(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors made readable: no union-branch names in the paths; where a union failed
    in several branches, the deepest explanation, or one "expected A or B" for type mismatches."""
    out = []
    for err in errors:
        branch = [p for p in err["loc"] if isinstance(p, str) and _UNION_TAG.match(p) and p not in KINDS]
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p) and p not in KINDS)
        )
        out.append({**err, "loc": loc, "branch": branch})
    kept: list[dict[str, Any]] = []
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in out:
        is_type = err["type"] in _EXPECTED and err["type"] != "literal_error"
        deeper = any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"] for o in out
        )
        if is_type and deeper:
            continue
        if is_type:
            words = _EXPECTED[err["type"]]
            if err["type"] in ("model_type", "dict_type") and any("RefIds" in b for b in err["branch"]):
                words = "{ref: NAME}"
            first = merged.get(err["loc"])
            if first is not None:
                if words not in first["expected"]:
                    first["expected"].append(words)
                continue
            err = {**err, "expected": [words]}
            merged[err["loc"]] = err
        kept.append(err)
    for err in kept:
        if "expected" in err and len(err["expected"]) > 1:
            err["msg"] = f"expected {' or '.join(err['expected'])}"
    return kept


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        dict: "a mapping",
        list: "a list",
        str: "text",
        int: "a number",
        float: "a number",
        bool: "true/false",
    }.get(type(value), type(value).__name__)


def _app_label(body: Any) -> str:
    if hasattr(body, "payload"):
        return f"{body.method} {body.api} app {body.payload.get('app')}"
    return str(body.app)


def _app_label_raw(body: dict[str, Any]) -> str:
    app = body.get("app")
    if app is None and isinstance(body.get("payload"), dict):
        app = body["payload"].get("app")
    return "" if app is None else str(app)


# ---- the whole project ----------------------------------------------------------------------


@dataclass
class _ProjectState:
    """What loading one file leaves for the next: the refs defined so far."""

    producers: dict[str, _Producer]
    failed_refs: set[str]
    opaque_failure: bool = False  # a file failed before its operations could be read
    sandbox_fields: Mapping[int, Mapping[str, frozenset[str]]] = _field(default_factory=dict)


def load_all(
    project: Project,
    env: Environment,
    journal: Mapping[str, JournaledChangeset] | None = None,
) -> tuple[list[LoadedChangeset], list[ChangesetError]]:
    """Every changeset of the project, and every problem found (empty when all is well).

    ``journal`` (version -> what the journal knows) lets an applied changeset whose checksums
    did not change skip the record-by-record checks of its data files: a no-op re-run of a
    100,000-record history then reads each data file once, as bytes, for its checksum.
    """
    items, errors = discover(project.changesets_dir)
    templates = _Templates(project, env)
    state = _ProjectState({}, set(), sandbox_fields=_sandbox_fields(env))
    loaded: list[LoadedChangeset] = []
    for item in items:
        file_loader = _FileLoader(item, env, templates, state, (journal or {}).get(item.version))
        result = file_loader.load()
        errors.extend(file_loader.errors)
        if result is not None and not file_loader.errors:
            loaded.append(result)
        elif file_loader.root is None or not file_loader.reached_operations:
            state.opaque_failure = True
    return loaded, errors


def combine(errors: Iterable[ChangesetError]) -> ChangesetError:
    """One error for many: the first alone, or a numbered list of all of them."""
    errors = list(errors)
    if len(errors) == 1:
        return errors[0]
    body = "\n".join(f"  {i}. " + str(e).replace("\n", "\n     ") for i, e in enumerate(errors, 1))
    return ChangesetError(f"{len(errors)} problems in the changesets:\n{body}")


def load_project_changesets(
    project: Project,
    env: Environment,
    journal: Mapping[str, JournaledChangeset] | None = None,
) -> list[LoadedChangeset]:
    """Every changeset, or one ``ChangesetError`` listing every problem of every file."""
    loaded, errors = load_all(project, env, journal)
    if errors:
        raise combine(errors)
    return loaded
