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
import functools
import math
import os
import posixpath
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplatesNotFound,
    TemplateSyntaxError,
    nodes,
)
from jinja2 import Environment as JinjaEnvironment
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.loaders import split_template_path
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .changeset_files import ChangesetFileName, display_path
from .config import Environment, InputLimits, Project
from .datafiles import encoding_name, read_json, read_table
from .errors import ChangesetError, KmigrateError, Location
from .paths import project_file, read_project_file

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


class ProjectLoader(BaseLoader):
    """Jinja's loader over ``paths``' rule: a template is found in the search folders, and read
    only if it is a regular file inside the project (``{% include 'pw.j2' %}`` through a symlink
    to ``/etc/passwd`` is refused), of bounded size."""

    def __init__(self, root: Path, searchpath: list[Path], max_bytes: int):
        self.root = root
        self.searchpath = searchpath
        self.max_bytes = max_bytes

    def get_source(self, environment: JinjaEnvironment, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)  # refuses ".." in the name
        for folder in self.searchpath:
            candidate = Path(posixpath.normpath(posixpath.join(str(folder), *pieces)))
            if not os.path.lexists(candidate):
                continue
            data = read_project_file(self.root, candidate, what="template", max_bytes=self.max_bytes)
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ChangesetError(
                    "not UTF-8 text; save the template as UTF-8",
                    location=Location(file=display_path(candidate)),
                ) from None
            mtime = os.path.getmtime(candidate)  # as FileSystemLoader: compiled once while unchanged
            return text, str(candidate), functools.partial(_unchanged, candidate, mtime)
        raise TemplateNotFound(template)


def _unchanged(path: Path, mtime: float) -> bool:
    try:
        return os.path.getmtime(path) == mtime
    except OSError:
        return False


# ---- the render budget ------------------------------------------------------------------------

_LOOP = "_kmigrate_loop"  # every {% for %} iterates through this (see BudgetedSandbox._parse)
_CONCAT = "_kmigrate_concat"  # every `~` joins through this
_MAX_INT_BITS = 1 << 20  # an integer a template computes: at most ~315,000 digits
# Filters and str methods whose integer arguments size their result ("x"|center(10**10)).
_SIZING_FILTERS = frozenset({"center", "indent", "wordwrap", "format", "truncate", "slice", "batch"})
_MAX_ITEMS = 100_000  # arguments of one call or `%`, slices of `| slice`: Jinja's own range bound
# A filter or method works on at most 1/16 of the output budget (4 MB by default): one call of
# wordwrap, indent, sort or a key macro over more would run long with no loop to check the clock.
_INPUT_SHARE = 16
_SIZING_STR_METHODS = frozenset({"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs"})
_DIGITS = re.compile(r"\d+")


class RenderBudget:
    """Work one changeset file's render may do: a deadline (checked every few steps: loop
    iterations, calls) and a size for every string or list it builds and for its output."""

    def __init__(self, file: str, limits: InputLimits, clock: Callable[[], float] = time.monotonic):
        self.file = file
        self.seconds = limits.render_seconds
        self.max_chars = limits.render_output_chars
        self.max_input = max(self.max_chars // _INPUT_SHARE, 1)
        self.clock = clock
        self.deadline = clock() + self.seconds
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps % 256 == 0 and self.clock() > self.deadline:
            raise ChangesetError(
                f"rendering took longer than the limit of {self.seconds:g} s "
                f"({self.steps} loop iterations and calls so far)",
                hint="make the loops smaller, or raise `render_seconds` under [limits] in kmigrate.toml",
            )

    def size(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple)) and len(value) > self.max_chars:
            raise self.too_big(len(value))
        return value

    def too_big(self, size: int | float) -> ChangesetError:
        return ChangesetError(
            f"the template builds a value of {size:.0f} characters or items, "
            f"more than the limit of {self.max_chars} (render_output_mb)",
            hint="raise `render_output_mb` under [limits] in kmigrate.toml if it is meant",
        )

    def check_input(self, value: Any, what: str) -> None:
        """A value a filter or a method works on, and the count of a call's arguments."""
        if isinstance(value, (str, list, tuple, dict)) and len(value) > self.max_input:
            raise ChangesetError(
                f"{what} is given a value of {len(value)} characters or items, more than the limit of "
                f"{self.max_input} (1/{_INPUT_SHARE} of render_output_mb)",
                hint="raise `render_output_mb` under [limits] in kmigrate.toml if it is meant",
            )

    def check_count(self, count: int, what: str) -> None:
        if count > _MAX_ITEMS:
            raise ChangesetError(f"{what}: {count} is more than {_MAX_ITEMS}, the most a template may use")

    def check_ints(self, args: Iterable[Any]) -> None:
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool) and arg > self.max_chars:
                raise self.too_big(arg)
            if isinstance(arg, str):
                self.check_format(arg)

    def check_format(self, text: str) -> None:
        """A format string's widths and precisions (``%099999999999d``, ``{:>99999999999}``)."""
        for digits in _DIGITS.findall(text):
            if len(digits) >= len(str(self.max_chars)) and int(digits) > self.max_chars:
                raise self.too_big(int(digits))


class BudgetedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with a ``RenderBudget``: loops, calls and the operators and filters that
    can build big values count against it, so no template hangs a CI run or fills its memory."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.budget: RenderBudget | None = None
        self.filters = {name: self._checked_filter(name, f) for name, f in self.filters.items()}
        self.globals[_LOOP] = self._loop
        self.globals[_CONCAT] = self._concat

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Budgeted().visit(super()._parse(source, name, filename))
        assert isinstance(tree, nodes.Template)
        return tree

    def _active(self) -> RenderBudget:
        if self.budget is None:  # compiled outside a render: an empty budget
            raise RuntimeError("BudgetedSandbox used without a budget")
        return self.budget

    def _loop(self, iterable: Any) -> Iterator[Any]:
        budget = self._active()
        for item in iterable:
            budget.step()
            yield item

    def _concat(self, *parts: Any) -> str:
        budget = self._active()
        texts = [str(p) for p in parts]
        if sum(len(t) for t in texts) > budget.max_chars:
            raise budget.too_big(sum(len(t) for t in texts))
        return "".join(texts)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = __self._active()
        budget.step()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        budget.check_count(len(args) + len(kwargs), "arguments of one call")
        if owner is not None and not isinstance(owner, type):
            budget.check_input(owner, f"the method {getattr(target, '__name__', '?')}")
        if (isinstance(owner, str) and getattr(target, "__name__", "") in _SIZING_STR_METHODS) or getattr(
            __obj, "__name__", ""
        ) == "generate_lorem_ipsum":
            budget.check_ints((*args, *kwargs.values()))
            if isinstance(owner, str):
                budget.check_format(owner)
        return budget.size(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = self._active()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(times, int)
                    and len(seq) * times > budget.max_chars
                ):
                    raise budget.too_big(len(seq) * times)
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise budget.too_big(math.inf)
        elif operator == "**" and _is_int(left) and _is_int(right) and abs(left) > 1:
            if right * max(abs(left).bit_length(), 1) > _MAX_INT_BITS:
                raise ChangesetError(f"the template computes {left} ** {right}: a number too large to use")
        elif (
            operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple))
        ):
            if len(left) + len(right) > budget.max_chars:
                raise budget.too_big(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            if isinstance(right, (tuple, dict)):
                budget.check_count(len(right), "values formatted by `%`")
            budget.check_format(left)
            budget.check_ints(right if isinstance(right, tuple) else (right,))
        return budget.size(super().call_binop(context, operator, left, right))

    def _checked_filter(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        sizing = name in _SIZING_FILTERS
        # @pass_context / @pass_environment filters get that first: the value comes after it.
        first = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            budget = self._active()
            budget.step()
            value, rest = args[first : first + 1], args[first + 1 :]
            if value:
                budget.check_input(value[0], f"the filter {name}")
            if name == "slice" and rest and _is_int(rest[0]):
                budget.check_count(rest[0], "slices")
            if sizing:
                budget.check_ints((*rest, *kwargs.values()))
                if name == "format":
                    budget.check_ints(value)
            return budget.size(function(*args, **kwargs))

        return checked


class _Budgeted(NodeTransformer):
    """Every ``{% for %}`` iterates through the budget's loop, every ``~`` joins through its
    checked join (Jinja has no hook for either)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        loop = nodes.Name(_LOOP, "load", lineno=node.lineno)
        node.iter = nodes.Call(loop, [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        join = nodes.Name(_CONCAT, "load", lineno=node.lineno)
        return nodes.Call(join, list(node.nodes), [], None, None, lineno=node.lineno)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Templates:
    """One sandboxed Jinja environment per load: ``templates/`` first, then the changesets folder."""

    def __init__(self, project: Project, env: Environment, clock: Callable[[], float] = time.monotonic):
        self.project = project
        self.env = env
        self.limits = env.limits
        self.clock = clock
        self.root = project.root.resolve()
        self.changesets_dir = project.changesets_dir.resolve()
        self.templates_dir = project.templates_dir.resolve()
        search = [d for d in (self.templates_dir, self.changesets_dir) if d.is_dir()]
        self.jinja = BudgetedSandbox(
            loader=ProjectLoader(self.root, search, self.limits.file_bytes),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,  # a line holding only {% ... %} leaves no blank line in the YAML
            lstrip_blocks=True,
            autoescape=False,
        )
        self.jinja.globals.update(load_csv=self._load_csv, load_json=self._load_json, env=env.name)

    def _data_path(self, relative: str) -> Path:
        return project_file(
            self.root, self.changesets_dir / relative, what="data file", max_bytes=self.limits.data_file_bytes
        )

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
        budget = RenderBudget(display_path(item.path), self.limits, self.clock)
        self.jinja.budget = budget
        try:
            code = self.jinja.compile(text, name=item.path.name, filename=str(item.path))
            template = self.jinja.template_class.from_code(
                self.jinja, code, self.jinja.make_globals(None), None
            )
            chunks: list[str] = []
            size = 0
            for chunk in template.generate():  # streamed: the output is bounded as it grows
                size += len(chunk)
                if size > budget.max_chars:
                    raise budget.too_big(size)
                chunks.append(chunk)
            return "".join(chunks)
        finally:
            self.jinja.budget = None


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
