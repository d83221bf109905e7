"""Changeset files -> ``LoadedChangeset``s: the pipeline that runs the other rooms in order.

For each file found by ``changeset_files.discover``, in version order:

1. the source text; its checksum is sha256 of the text with ``\\r\\n`` made ``\\n``;
2. ``templating`` renders the whole file in a Jinja sandbox;
3. the rendered text is parsed as YAML (1.2 core schema, see ``yamlio``) keeping each node's line;
4. each operation is validated by the pydantic models of ``changeset`` (messages shaped by
   ``validation_messages``), its records by the rules of ``records``, then checked against the
   environment (app aliases, and the apps' field codes when the caller hands them in) and the
   project (refs: defined once, used after their producer, on the producer's app); a data file
   is hashed as bytes into the rendered checksum and parsed once, here: its records are checked
   and kept compressed (``_NormalisedSource``) for the apps' checks and the planner.

Every problem becomes a ``ChangesetError`` whose location names the file and the line: in the
source when the line can be traced back through the render, otherwise "rendered line N" with
that line shown. ``load_project_changesets`` collects every error of every file before raising.
"""

from __future__ import annotations

import hashlib
import marshal
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import yamlio
from .changeset import (
    KINDS,
    AddOp,
    AssigneesOp,
    Columns,
    DeleteOp,
    LoadedChangeset,
    Operation,
    OperationBody,
    RecordChunk,
    RefIds,
    RequestOp,
    StatusOp,
    StatusRecord,
    UpdateOp,
    UpsertOp,
    _RecordsOp,
    app_written,
)
from .changeset_files import ChangesetFileName, discover, display_path, source_checksum
from .config import App, Environment, Project
from .datafiles import DEFAULT_ENCODING, DataFile, data_format, encoding_name, text_record
from .errors import ChangesetError, ConfigError, Location
from .paths import project_file, read_project_file
from .plan import JournaledChangeset, canonical_json
from .records import (
    RESERVED_RECORD_KEYS,
    UNKNOWN_FIELD_HINT,
    KnownFields,
    id_problems,
    normalise_record,
    record_problems,
    ref_index_problem,
    text_records_pass,
    unknown_field_message,
    unknown_fields,
)
from .templating import LineMap, Templates, template_error, trim_hint
from .validation_messages import kind_of, operation_problems

MAX_ERRORS_PER_DATA_FILE = 200


# ---- what one file leaves for the next ------------------------------------------------------


@dataclass
class _Producer:
    name: str
    changeset: str
    operation: int  # 1-based
    app_id: int
    guest_space_id: int | None
    count: int | None  # records created; None when unknown (a data file that failed)
    where: str  # "file:line" of the ref, for messages


@dataclass
class _ProjectState:
    """What loading one file leaves for the next: the refs defined so far."""

    producers: dict[str, _Producer]
    failed_refs: set[str]
    opaque_failure: bool = False  # a file failed before its operations could be read
    known_fields: KnownFields = _field(default_factory=dict)


@dataclass(frozen=True)
class _Lines:
    """Where each operation and inline record was written: in the source and in the rendered text."""

    operations: tuple[int | None, ...]
    records: tuple[tuple[int | None, ...] | None, ...]
    rendered_operations: tuple[int | None, ...]
    rendered_records: tuple[tuple[int, ...] | None, ...]


# ---- one file -------------------------------------------------------------------------------


class _FileLoader:
    """Loads one changeset file; problems go to ``errors`` rather than stopping at the first."""

    def __init__(
        self,
        item: ChangesetFileName,
        env: Environment,
        templates: Templates,
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
        self.source_text = ""
        self.parsed: dict[int, Operation] = {}  # operations that passed the format's models
        self.partial: LoadedChangeset | None = None  # well formed, with errors: see load()

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

    def _rendered_line(self, path: tuple[Any, ...]) -> int | None:
        node = yamlio.node_at(self.root, path)
        return node.start_mark.line + 1 if node is not None else None

    # -- the pipeline ----

    def load(self) -> LoadedChangeset | None:
        text = self._read_source()
        if text is None:
            return None
        checksum = source_checksum(text)
        data = self._render_and_parse(text)
        if data is None:
            return None
        top = self._top_level(data)
        if top is None:
            return None
        description, operations = top
        self.reached_operations = True
        rendered_checksum, not_json = self._rendered_checksum(operations)
        j = self.journaled
        self.trusted = (
            j is not None
            and j.fully_applied
            and (j.source_checksum, j.rendered_checksum) == (checksum, rendered_checksum)
        )
        failed_before = len(self.errors)
        models = [self._operation(i, raw) for i, raw in enumerate(operations) if i not in not_json]
        failed = len(self.errors) > failed_before or not_json or any(op is None for op in models)
        if failed and (not_json or len(self.parsed) != len(operations)):
            return None
        lines = self._lines(operations, not_json)
        assert self.lines is not None
        changeset = LoadedChangeset(
            version=self.item.version,
            name=self.item.name,
            path=self.item.path,
            description=description,
            operations=tuple(self.parsed[i] for i in range(len(operations))),
            source_checksum=checksum,
            rendered_checksum=rendered_checksum,
            operation_lines=lines.operations,
            record_lines=lines.records,
            rendered_operation_lines=lines.rendered_operations,
            rendered_record_lines=lines.rendered_records,
            rendered_text_differs=not self.lines.identity,
        )
        if failed:
            # Every operation is well formed but some broke a project rule (a ref, a record):
            # kept aside, so the checks against the apps still report the rest of the file.
            self.partial = changeset
            return None
        return changeset

    def _read_source(self) -> str | None:
        """The file as UTF-8 text with ``\\n`` line endings."""
        try:
            raw = read_project_file(
                self.env.root,
                self.item.path,
                what="changeset",
                max_bytes=self.env.limits.file_bytes,
                location=Location(file=self.file),
            )
        except ChangesetError as exc:
            self.errors.append(exc)
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
        return text.replace("\r\n", "\n")

    def _render_and_parse(self, text: str) -> Any:
        """The rendered text's YAML (None when it failed, or when there is nothing)."""
        self.source_text = text
        try:
            rendered = self.templates.render(self.item, text)
        except Exception as exc:  # noqa: BLE001 - every template failure becomes a located error
            self.errors.append(template_error(exc, self.item, text.splitlines()))
            return None
        self.lines = LineMap(text, rendered)
        try:
            self.root, data = yamlio.compose_and_construct(rendered, self.env.limits.yaml_chars)
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
        return data

    def _top_level(self, data: Any) -> tuple[str, list[Any]] | None:
        """``description`` and ``operations``, checked; None when there are no operations to read."""
        if not isinstance(data, dict):
            self.fail(
                "a changeset is a mapping with `operations:` (and an optional `description:`), "
                f"not {kind_of(data)}"
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
            self.fail(f"`description` must be text, not {kind_of(description)}", ("description",))
            description = ""
        operations = data.get("operations")
        if "operations" not in data:
            self.fail("`operations:` is missing; it lists the changeset's operations", ())
            return None
        if not isinstance(operations, list):
            self.fail(
                f"`operations` must be a list of operations, not {kind_of(operations)}", ("operations",)
            )
            return None
        if not operations:
            self.fail("`operations` is empty; a changeset needs at least one operation", ("operations",))
            return None
        return description, operations

    def _rendered_checksum(self, operations: list[Any]) -> tuple[str, set[int]]:
        """sha256 of the rendered operations and their data files' bytes; the operations that are
        not JSON (reported here, and not validated further)."""
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
        return digest.hexdigest(), not_json

    def _lines(self, operations: list[Any], not_json: set[int]) -> _Lines:
        assert self.lines is not None
        op_lines: list[int | None] = []
        rec_lines: list[tuple[int | None, ...] | None] = []
        rendered_op_lines: list[int | None] = []
        rendered_rec_lines: list[tuple[int, ...] | None] = []
        for index, raw_op in enumerate(operations):
            if index in not_json:
                continue
            op_rendered = self._rendered_line(("operations", index))
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
        return _Lines(tuple(op_lines), tuple(rec_lines), tuple(rendered_op_lines), tuple(rendered_rec_lines))

    def _yaml_error(self, exc: yaml.YAMLError) -> None:
        assert self.lines is not None
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = problem if isinstance(exc, yamlio.ExpansionError) else f"YAML syntax error: {problem}"
        if context and "duplicate key" not in problem:
            message += f" ({context})"
        rendered_line = mark.line + 1 if mark is not None else None
        location, shown = self.lines.locate(rendered_line, file=self.file)
        if not shown and rendered_line is not None:
            shown = f"\n    {location.line} | {self.lines.text(rendered_line)}"
        hint = trim_hint(self.source_text)  # the dbt/Ansible `{%-` idiom joins lines here
        if hint is not None:
            pass  # the most likely cause, said first
        elif rendered_line is not None and "\t" in self.lines.text(rendered_line) and "token" in problem:
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
                f"an operation is a mapping `KIND: {{...}}` with KIND one of {', '.join(KINDS)}; "
                f"found {kind_of(raw)}",
                path,
                operation=number,
            )
            return None
        try:
            op = Operation.model_validate(raw)
        except ValidationError as exc:
            self._pydantic_errors(exc, index, raw)
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
        self.parsed[index] = op  # well formed, whatever the project rules below say
        self._check_refs(op, index, app, detail)
        if isinstance(body, (AddOp, UpsertOp)) and body.ref:
            self._define_ref(op, index, app)
        if len(self.errors) != before:
            self._forget_ref(raw)
            return None
        return op

    def _forget_ref(self, raw: dict[str, Any]) -> None:
        """A failed producer's ref is remembered, so its consumers are not reported too."""
        for body in raw.values():
            if isinstance(body, dict) and isinstance(body.get("ref"), str):
                self.state.failed_refs.add(body["ref"])

    def _pydantic_errors(self, exc: ValidationError, index: int, raw: dict[str, Any]) -> None:
        kind = next(iter(raw)) if len(raw) == 1 else None
        detail = kind if kind in KINDS else None
        if kind in KINDS and isinstance(raw.get(kind), dict):
            detail = f"{kind} {_app_label_raw(raw[kind])}"
        for problem in operation_problems(exc):
            self.fail(
                problem.message,
                ("operations", index) + problem.path,
                operation=index + 1,
                record=problem.record,
                detail=detail,
                key=problem.key,
            )

    def _resolve_app(
        self, body: OperationBody, path: tuple[Any, ...], number: int, detail: str
    ) -> App | None:
        app_path = path + (("payload", "app") if isinstance(body, RequestOp) else ("app",))
        try:
            return self.env.app(app_written(body))
        except ConfigError as exc:
            self.fail(exc.message, app_path, operation=number, detail=detail, hint=exc.hint)
            return None

    # -- records ----

    def _records_op(
        self, op: Operation, body: _RecordsOp, index: int, app: App | None, detail: str
    ) -> Operation | None:
        """The operation with its records checked; a data file's records as a ``_NormalisedSource``."""
        number = index + 1
        base = ("operations", index, op.kind)
        key = getattr(body, "key", None)
        fields = self.state.known_fields.get(app.id) if app is not None else None
        if body.records is not None:
            reported: set[str] = set()
            for position, record in enumerate(body.records):
                where = base + ("records", position)
                for problem in record_problems(op.kind, key, record):
                    self.fail(problem, where, operation=number, record=position + 1, detail=detail)
                for code_path, message in self._unknown_fields(app, fields, record, reported):
                    self.fail(
                        message,
                        where + code_path,
                        operation=number,
                        record=position + 1,
                        detail=detail,
                        hint=UNKNOWN_FIELD_HINT,
                        key=True,
                    )
                normalise_record(record)
            return op
        source = self._data_source(body, base, number, detail)
        if source is None:
            return None
        if self.trusted:
            pass  # checked when it was applied; counted only if asked (``_NormalisedSource.count``)
        elif not self._check_data_file(source, op.kind, key, app, fields, number, detail):
            return None
        return op.model_copy(update={op.kind: body.model_copy(update={"source": source})})

    @staticmethod
    def _text_rows_pass(
        source: _NormalisedSource, kind: str, key: str | None, app: App | None, plain: set[str] | None
    ) -> bool:
        """Whether every record of ``source`` passes the per-record checks below, known from its
        header alone: a CSV file of text columns only, none of them an unknown field, for an add
        (``records.text_records_pass``); no record of it holds an ``id``, so no ref either."""
        columns = source.raw.text_columns
        if columns is None or not text_records_pass(kind, key, columns):
            return False
        return app is None or plain is None or columns <= plain

    def _data_source(
        self, body: _RecordsOp, base: tuple[Any, ...], number: int, detail: str
    ) -> _NormalisedSource | None:
        """The data file ``records_from`` names, if it is one the loader can read."""
        relative = body.data_path
        assert relative is not None
        problem = None
        try:
            path = project_file(
                self.env.root,
                self.item.path.parent / relative,
                what=f"records_from {relative!r}: data file",
                max_bytes=self.env.limits.data_file_bytes,
            )
        except ChangesetError as exc:
            problem = exc.message
            if "not found" in problem:
                problem += " (paths are relative to the changeset file)"
        else:
            if data_format(path) is None:
                problem = f"records_from {relative!r}: unknown format; use .csv, .json, .jsonl or .ndjson"
        encoding = DEFAULT_ENCODING
        if problem is None:
            try:
                encoding = encoding_name(body.data_encoding)
            except ValueError as exc:
                problem = f"records_from {relative!r}: {exc}"
        if problem is not None:
            self.fail(problem, base + ("records_from",), operation=number, detail=detail, hint=None)
            return None
        data = DataFile(path, display_path(path), changeset=self.item.id, operation=number, encoding=encoding)
        return _NormalisedSource(data)

    def _check_data_file(
        self,
        source: _NormalisedSource,
        kind: str,
        key: str | None,
        app: App | None,
        fields: Mapping[str, frozenset[str]] | None,
        number: int,
        detail: str,
    ) -> bool:
        """Every record of the data file checked (and counted); False when reading it failed."""
        count = 0
        reported: set[str] = set()  # an unknown column is reported once, not on every row
        # The codes a record may hold with nothing more to check (known, no subtable's columns):
        # most rows are only these, tested at once.
        plain = (
            None
            if fields is None
            else {c for c, cols in fields.items() if not cols} | set(RESERVED_RECORD_KEYS)
        )
        try:
            for line, record in source.checked(lambda: self._text_rows_pass(source, kind, key, app, plain)):
                count += 1
                problems = record_problems(kind, key, record)
                unknown = (
                    []
                    if app is None or fields is None or (plain is not None and record.keys() <= plain)
                    else list(self._unknown_fields(app, fields, record, reported))
                )
                rid = record.get("id")
                ref = isinstance(rid, dict) and "ref" in rid and not id_problems(rid)
                if not (problems or unknown or ref):
                    continue
                where = Location(
                    file=source.raw.path,
                    line=line,
                    changeset=self.item.id,
                    operation=number,
                    record=count,
                    detail=detail,
                )
                for problem in problems:
                    self.errors.append(ChangesetError(problem, location=where))
                for _code_path, message in unknown:
                    self.errors.append(ChangesetError(message, location=where, hint=UNKNOWN_FIELD_HINT))
                if ref:
                    assert isinstance(rid, dict)
                    self._check_ref(RefIds.model_validate(rid), app, number, detail, location=where)
                if len(self.errors) > MAX_ERRORS_PER_DATA_FILE:
                    raise ChangesetError(
                        "too many errors in this data file; stopping here",
                        location=Location(file=source.raw.path, line=line, changeset=self.item.id),
                    )
        except ChangesetError as exc:
            self.errors.append(exc)
            return False
        return True

    def _unknown_fields(
        self, app: App | None, fields: Mapping[str, frozenset[str]] | None, record: Any, reported: set[str]
    ) -> Iterator[tuple[tuple[Any, ...], str]]:
        """(path, message) for each field code the app does not have (Kintone would drop its
        value silently). Only known when the caller handed the apps' fields in (the sandbox)."""
        if app is None or fields is None:
            return
        for path, code, known, table in unknown_fields(fields, record, reported):
            yield path, unknown_field_message(code, known, app.id, self.env.sandbox_file, table=table)

    # -- refs ----

    def _check_refs(self, op: Operation, index: int, app: App | None, detail: str) -> None:
        for ref, path in _refs_of(op):
            self._check_ref(ref, app, index + 1, detail, path=("operations", index, op.kind) + path)

    def _check_ref(
        self,
        ref: RefIds,
        app: App | None,
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
        if ref.index is not None and producer.count is not None:
            problem = ref_index_problem(ref.ref, ref.index, producer.count)
            if problem is not None:
                report(problem)

    def _define_ref(self, op: Operation, index: int, app: App | None) -> None:
        body = op.body
        assert isinstance(body, (AddOp, UpsertOp)) and body.ref
        number = index + 1
        path = ("operations", index, op.kind, "ref")
        assert self.lines is not None
        line = self.lines.source_line(self._rendered_line(path))
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
        self.producers[body.ref] = _Producer(
            body.ref, self.item.id, number, app.id, app.guest_space_id, body.record_count, where
        )

    def _data_file_of(self, raw_op: Any) -> Path | None:
        """The data file a records op reads, if it names one that exists (else: checked later)."""
        if not (isinstance(raw_op, dict) and len(raw_op) == 1):
            return None
        body = next(iter(raw_op.values()))
        relative = body.get("records_from") if isinstance(body, dict) else None
        if isinstance(relative, dict):
            relative = relative.get("path")
        if not isinstance(relative, str):
            return None
        try:  # one that the project may not read is reported by _data_source
            return project_file(
                self.env.root,
                self.item.path.parent / relative,
                what="data file",
                max_bytes=self.env.limits.data_file_bytes,
            )
        except ChangesetError:
            return None


def _file_digest(path: Path) -> bytes:
    """sha256 of a data file's bytes: a data file changes the rendered checksum without being parsed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


class _NormalisedSource:
    """A data file's records as the planner reads them: ``{ref: ...}`` ids made ``RefIds``.

    The file is parsed once per command: the loader's pass (``checked``) keeps each chunk of
    records as zlib-compressed ``marshal`` bytes (a few bytes a record), and every later pass
    (the apps' checks, the planner) reads them back instead of the file. A pass the loader
    did not finish (it stopped at an error) keeps nothing: the file is read again then.
    """

    CHUNK = 1000  # records per compressed chunk

    def __init__(self, raw: DataFile):
        self.raw = raw
        self.path = raw.path
        self._count: int | None = None
        self._chunks: list[bytes] | None = None  # the records as parsed, once complete
        self._ids = True  # whether a record of the chunks has an `id` (to normalise when read back)

    def __repr__(self) -> str:
        return f"records_from({self.path!r})"

    @property
    def text_columns(self) -> frozenset[str] | None:
        """``DataFile.text_columns``: once a pass has begun, the codes of a file whose every value
        is a text (None: not such a file, or not read yet)."""
        return self.raw.text_columns

    @property
    def count(self) -> int:
        """Records in the file: counted while it was checked, or on first use. An applied
        changeset that did not change is not checked again, and most never need their count
        (only a ref's size does): a no-op re-run of a million rows does not split them."""
        if self._count is None:
            self._count = self.raw.count()
        return self._count

    @count.setter
    def count(self, value: int) -> None:
        self._count = value

    def checked(self, unchecked: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, dict[str, Any]]]:
        """The loader's pass: the file's records as parsed (not normalised), kept as they go,
        and counted. Once the header of a CSV file of text columns is read, ``unchecked()`` may
        say that no record of it needs a look of its own (the loader trusts it from its header):
        then none is yielded, and the rows are kept by column as read, with no record made."""
        chunks: list[bytes] | None = []
        chunk: list[tuple[int, Any]] = []
        ids = False
        count = 0
        header: tuple[str, ...] | None = None  # while rows are kept as read, not as records
        skip: bool | None = None
        for line, item in self.raw.text_rows():
            count += 1
            if type(item) is list:  # a row of a CSV file of text columns
                if skip is None:
                    skip, header = unchecked(), self.raw.text_header
                assert header is not None
                if skip:
                    chunk.append((line, item))
                    if len(chunk) == self.CHUNK:
                        chunks = _kept_rows(chunks, header, chunk)
                        chunk = []
                    continue
                item = text_record(header, item)
            record: Any = item  # a JSON element may be no object: the loader reports it
            chunk.append((line, record))
            if len(chunk) == self.CHUNK:
                chunks = _kept(chunks, chunk)
                chunk = []
            if not ids and isinstance(record, dict) and "id" in record:
                ids = True
            yield line, record
        if chunk:
            chunks = _kept_rows(chunks, header, chunk) if skip else _kept(chunks, chunk)
        self._ids, self._chunks, self._count = ids, chunks, count

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for chunk in self.chunks():
            yield from chunk.records() if isinstance(chunk, Columns) else chunk

    def chunks(self) -> Iterator[RecordChunk]:
        """The records, normalised, a chunk at a time: a run of records that give the same
        fields as ``Columns`` (what a CSV file's rows mostly are), others as (line, record) pairs."""
        if self._chunks is None:
            chunk: list[tuple[int, dict[str, Any]]] = []
            for line, record in self.raw:
                normalise_record(record)
                chunk.append((line, record))
                if len(chunk) == self.CHUNK:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            return
        for blob in self._chunks:
            tag, *kept = marshal.loads(zlib.decompress(blob))
            if tag == "c":
                yield Columns(*kept)
                continue
            (pairs,) = kept
            if self._ids:  # a record has an `id`: normalised as read back
                for _, record in pairs:
                    normalise_record(record)
            yield pairs


def _kept_rows(
    chunks: list[bytes] | None, header: tuple[str, ...] | None, rows: list[tuple[int, list[str]]]
) -> list[bytes] | None:
    """``_kept`` for rows of a CSV file of text columns, as read: by column when no cell is
    empty (every record gives every field), else as the records they are."""
    assert header is not None
    if header and all("" not in row for _, row in rows):
        if chunks is not None:
            lines = tuple(line for line, _ in rows)
            values = tuple(zip(*(row for _, row in rows), strict=True))
            chunks.append(zlib.compress(marshal.dumps(("c", header, lines, values)), 1))
        return chunks
    return _kept(chunks, [(line, text_record(header, row)) for line, row in rows])


def _kept(chunks: list[bytes] | None, chunk: list[tuple[int, dict[str, Any]]]) -> list[bytes] | None:
    """``chunks`` with ``chunk`` packed (by column when its records give the same fields, and
    no `id`, which is normalised when read back); None once a record holds what marshal cannot."""
    if chunks is None:
        return None
    first = chunk[0][1]
    codes = tuple(first) if type(first) is dict and "id" not in first else ()
    kept: tuple[Any, ...]
    if codes and all(type(r) is dict and tuple(r) == codes for _, r in chunk):
        lines = tuple(line for line, _ in chunk)
        kept = ("c", codes, lines, tuple(zip(*(r.values() for _, r in chunk), strict=True)))
    else:
        kept = ("d", chunk)
    try:
        chunks.append(zlib.compress(marshal.dumps(kept), 1))
    except ValueError:
        return None
    return chunks


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


def _app_label(body: OperationBody) -> str:
    if isinstance(body, RequestOp):
        return f"{body.method} {body.api} app {body.payload.get('app')}"
    return str(body.app)


def _app_label_raw(body: dict[str, Any]) -> str:
    app = body.get("app")
    if app is None and isinstance(body.get("payload"), dict):
        app = body["payload"].get("app")
    return "" if app is None else str(app)


# ---- the whole project ----------------------------------------------------------------------


def load_all(
    project: Project,
    env: Environment,
    journal: Mapping[str, JournaledChangeset] | None = None,
    *,
    known_fields: KnownFields | None = None,
    partial: list[LoadedChangeset] | None = None,
) -> tuple[list[LoadedChangeset], list[ChangesetError]]:
    """Every changeset of the project, and every problem found (empty when all is well).

    ``partial``, when given, receives the files whose operations are all well formed but that
    broke a project rule (a ref, a record): not for planning, only for further checks.

    ``journal`` (version -> what the journal knows) lets an applied changeset whose checksums
    did not change skip the record-by-record checks of its data files: a no-op re-run of a
    100,000-record history then reads each data file once, as bytes, for its checksum.
    ``known_fields`` (app id -> its field codes), when the caller knows them (the sandbox's
    file), turns a misspelt field code into an error instead of a value Kintone drops.
    """
    items, errors = discover(project.changesets_dir)
    templates = Templates(project, env)
    state = _ProjectState({}, set(), known_fields=known_fields or {})
    loaded: list[LoadedChangeset] = []
    for item in items:
        file_loader = _FileLoader(item, env, templates, state, (journal or {}).get(item.version))
        result = file_loader.load()
        errors.extend(file_loader.errors)
        if result is not None and not file_loader.errors:
            loaded.append(result)
        elif file_loader.partial is not None and partial is not None:
            partial.append(file_loader.partial)
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
    *,
    known_fields: KnownFields | None = None,
) -> list[LoadedChangeset]:
    """Every changeset, or one ``ChangesetError`` listing every problem of every file."""
    loaded, errors = load_all(project, env, journal, known_fields=known_fields)
    if errors:
        raise combine(errors)
    return loaded
