"""Changeset templates: the sandboxed Jinja environment, and lines traced back through the render.

One ``Templates`` per load: ``templates/`` first, then the changesets folder, on the search
path; ``env``, ``vars``, ``changeset``, ``load_csv`` and ``load_json`` in scope; undefined
names are errors. ``LineMap`` maps a rendered line back to its source line where the render
kept it; ``template_error`` turns any failure of a render into an error naming the template
file and line.
"""

from __future__ import annotations

import copy
import difflib
import re
import traceback
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, TemplatesNotFound, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from .changeset_files import ChangesetFileName, display_path
from .config import Environment, Project
from .datafiles import encoding_name, read_json, read_table
from .errors import ChangesetError, KmigrateError, Location

MAX_SHOWN = 120  # characters of a rendered line shown in a message


def shorten(line: str) -> str:
    """A line as a message shows it: at most ``MAX_SHOWN`` characters."""
    return line if len(line) <= MAX_SHOWN else line[:MAX_SHOWN] + "..."


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

    def block_line(self, rendered_line: int) -> int | None:
        """The first source line of the template block that made ``rendered_line`` (a loop, an
        include, a macro), when it has no source line of its own."""
        return self._block.get(rendered_line)

    def text(self, rendered_line: int) -> str:
        if 1 <= rendered_line <= len(self.rendered_lines):
            return shorten(self.rendered_lines[rendered_line - 1])
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

_TRIMMING = re.compile(r"\{%-|-%\}|\{\{-|-\}\}")


def trim_hint(source: str) -> str | None:
    """For a YAML error in a file whose tags carry ``-`` (the dbt/Ansible idiom): kmigrate trims
    blocks already, and ``-`` then joins YAML lines. None when no tag has one."""
    for number, line in enumerate(source.splitlines(), 1):
        if _TRIMMING.search(line):
            fixed = _TRIMMING.sub(lambda m: m.group(0).replace("-", ""), line).strip()
            return (
                "kmigrate renders with trim_blocks and lstrip_blocks on: a `{% ... %}` line leaves no blank "
                "line or indentation already, and a `-` in a tag also eats the line break next to it, "
                f"joining YAML lines; drop the `-`: line {number} `{line.strip()}` -> `{fixed}` "
                "(`kmigrate render CHANGESET` shows the rendered text)"
            )
    return None


class Templates:
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

    def _load_csv(self, relative: str, encoding: str | None = None) -> list[dict[str, Any]]:
        path = self._data_path(str(relative))
        try:
            name = encoding_name(encoding)
        except ValueError as exc:
            raise ChangesetError(f"load_csv({relative!r}): {exc}") from None
        return read_table(path, display_path(path), encoding=name)

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


def template_error(exc: BaseException, item: ChangesetFileName, source_lines: list[str]) -> ChangesetError:
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
        shown = f"\n    {line} | {shorten(source_lines[line - 1])}"
    detail = f"included from {display_path(Path(own))}:{included_from}" if included_from else None
    return ChangesetError(
        message + shown, location=Location(file=display_path(Path(file)), line=line, detail=detail)
    )
