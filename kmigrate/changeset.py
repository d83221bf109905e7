"""The changeset file format as pydantic models: the user's contract, reviewed in pull requests.

A file is ``{description?, operations: [ {KIND: {...}}, ... ]}`` where KIND is one of
``add``, ``update``, ``upsert``, ``delete``, ``status``, ``assignees`` or ``request``. Each
operation is a one-key mapping, so a reviewer reads the kind first; ``Operation`` is the
tagged union of the seven bodies.

Record values are written in the shorthand (``title: New order``) or in Kintone's own form
(``title: {value: New order}``); ``to_kintone_record`` turns either into Kintone's form.
Records may be inline (``records:``) or come from a data file (``records_from:``); the loader
attaches a re-iterable ``RecordSource`` for the latter so large files are streamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from .errors import Location
from .kintone import describe_bulk_apis, is_bulk_api


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RefIds(_Strict):
    """``{ref: NAME}``: every id the ref's producer created; ``{ref: NAME, index: i}``: the i-th (0-based)."""

    ref: str = Field(min_length=1)
    index: int | None = Field(default=None, ge=0)


RecordId = Annotated[int, Field(gt=0)] | RefIds
Ids = list[RecordId] | RefIds
AppName = str | Annotated[int, Field(gt=0)]

# One record as written: field code -> shorthand value or Kintone's {"value": ...} form.
FieldValues = dict[str, Any]


class RecordSource(Protocol):
    """Records read from a data file; iterable more than once, each pass streaming the file."""

    path: str

    def __iter__(self) -> Iterator[tuple[int, FieldValues]]:
        """(line number in the data file, record) pairs."""
        ...


@dataclass(frozen=True, slots=True)
class Columns:
    """A run of a data file's records that all give the same fields in the same order, held by
    column (the loader's ``chunks()``): a pass that checks or compiles them a column at a time
    makes no dict per record, which is most of what reading a record back costs."""

    codes: tuple[str, ...]  # never empty
    lines: tuple[int, ...]  # each record's line in the data file
    values: tuple[tuple[Any, ...], ...]  # per code, each record's value, in order

    def __len__(self) -> int:
        return len(self.lines)

    def records(self) -> Iterator[tuple[int, FieldValues]]:
        """(line, record) pairs, as ``RecordSource`` yields them."""
        codes = self.codes
        for line, row in zip(self.lines, zip(*self.values, strict=True), strict=True):
            yield line, dict(zip(codes, row, strict=True))

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Each record's values, in the order of ``codes``."""
        return zip(*self.values, strict=True)


# What a source's ``chunks()`` yields: a run of records by column, or (line, record) pairs.
RecordChunk = Columns | list[tuple[int, FieldValues]]


class DataFileRef(_Strict):
    """``records_from: {path: data/x.csv, encoding: cp932}``: a data file in another encoding."""

    path: str = Field(min_length=1)
    encoding: str | None = None  # a Python codec name; shift_jis/sjis read as cp932 (Excel's)


class _RecordsOp(_Strict):
    app: AppName
    records: list[FieldValues] | None = None
    # CSV, JSON or JSON-lines, relative to the changeset file; UTF-8 unless an encoding is given
    records_from: str | DataFileRef | None = None
    # Set by the loader when records_from is given (with model_copy, which skips validation);
    # never written by a user, hence the validator below.
    source: SkipJsonSchema[Any] = Field(default=None, exclude=True, repr=False)

    @field_validator("source", mode="before")
    @classmethod
    def _not_written(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("`source` is not a key of an operation; use `records_from:` for a data file")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> _RecordsOp:
        if (self.records is None) == (self.records_from is None):
            raise ValueError("give exactly one of `records:` (inline) or `records_from:` (a data file)")
        return self

    @property
    def data_path(self) -> str | None:
        """The data file ``records_from`` names (either form)."""
        return self.records_from.path if isinstance(self.records_from, DataFileRef) else self.records_from

    @property
    def data_encoding(self) -> str | None:
        return self.records_from.encoding if isinstance(self.records_from, DataFileRef) else None

    @property
    def record_count(self) -> int | None:
        """Records written: inline, or counted while the loader streamed the data file (None: not read)."""
        if self.records is not None:
            return len(self.records)
        return getattr(self.source, "count", None)

    def iter_records(self) -> Iterable[FieldValues]:
        if self.records is not None:
            return iter(self.records)
        if self.source is None:
            raise RuntimeError("records_from was not loaded by the loader")
        return (rec for _line, rec in self.source)


class AddOp(_RecordsOp):
    """POST /k/v1/records.json. ``ref`` names the records created, for later operations."""

    ref: str | None = None


class UpdateOp(_RecordsOp):
    """PUT /k/v1/records.json. Each record has ``id`` (or ``{ref}``), or ``key`` names the
    unique field whose value in each record is Kintone's ``updateKey``. ``revision`` per record
    turns on optimistic locking.

    After loading, a record's ``id`` is an ``int`` or a ``RefIds`` with an ``index`` (the loader
    turns ``{ref: NAME, index: I}`` mappings and digit strings into those)."""

    key: str | None = None


class UpsertOp(_RecordsOp):
    """PUT /k/v1/records.json with ``upsert: true``: update on a ``key`` match, insert otherwise."""

    key: str = Field(min_length=1)
    ref: str | None = None


class DeleteOp(_Strict):
    """DELETE /k/v1/records.json."""

    app: AppName
    ids: Ids
    revisions: list[int] | None = None

    @model_validator(mode="after")
    def _paired(self) -> DeleteOp:
        if self.revisions is not None:
            if isinstance(self.ids, RefIds):
                raise ValueError("`revisions` needs `ids` written as a list, one revision per id")
            if len(self.revisions) != len(self.ids):
                raise ValueError(f"`revisions` has {len(self.revisions)} entries for {len(self.ids)} ids")
        return self


class StatusRecord(_Strict):
    id: RecordId
    action: str | None = None
    assignee: str | None = None
    revision: int | None = None


class StatusOp(_Strict):
    """PUT /k/v1/records/status.json: run a process-management action on records."""

    app: AppName
    records: Ids | list[StatusRecord]
    action: str | None = None  # default for every record
    assignee: str | None = None

    @model_validator(mode="after")
    def _has_action(self) -> StatusOp:
        if self.action is None:
            recs = self.records if isinstance(self.records, list) else []
            if not recs or any(not isinstance(r, StatusRecord) or r.action is None for r in recs):
                raise ValueError("give `action:` for the operation or an `action` on every record")
        return self


class AssigneesOp(_Strict):
    """PUT /k/v1/record/assignees.json."""

    app: AppName
    id: RecordId
    assignees: list[str] = Field(max_length=100)
    revision: int | None = None


class RequestOp(_Strict):
    """The escape hatch: any of the eight APIs a bulk request allows, payload as Kintone takes it.

    ``api`` is written without prefix or suffix (``records``, ``record/status``) or in the
    canonical form (``/k/v1/records.json``); the payload's ``app`` may be an alias.
    """

    method: Literal["POST", "PUT", "DELETE"]
    api: str
    payload: dict[str, Any]

    @field_validator("api")
    @classmethod
    def _short_api(cls, value: str) -> str:
        # A guest-space path is accepted as written; the app's guest space (kmigrate.toml) decides the prefix sent.
        return re.sub(r"^/k/(?:guest/\d+/)?v1/", "", value).removesuffix(".json").strip("/")

    @model_validator(mode="after")
    def _allowed(self) -> RequestOp:
        if not is_bulk_api(self.method, self.api):
            allowed = describe_bulk_apis()
            raise ValueError(f"{self.method} {self.api} is not allowed in a bulk request; allowed: {allowed}")
        if "app" not in self.payload:
            raise ValueError("the payload needs `app`")
        return self


KINDS = ("add", "update", "upsert", "delete", "status", "assignees", "request")
OperationBody = AddOp | UpdateOp | UpsertOp | DeleteOp | StatusOp | AssigneesOp | RequestOp
_BODY = {
    "add": AddOp,
    "update": UpdateOp,
    "upsert": UpsertOp,
    "delete": DeleteOp,
    "status": StatusOp,
    "assignees": AssigneesOp,
    "request": RequestOp,
}


def app_written(body: OperationBody) -> object:
    """The app as the operation names it: its ``app:``, or a request's ``payload.app``."""
    return body.payload.get("app") if isinstance(body, RequestOp) else body.app


class Operation(_Strict):
    """``{KIND: BODY}`` as written; exactly one of the keys is set."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    add: AddOp | None = None
    update: UpdateOp | None = None
    upsert: UpsertOp | None = None
    delete: DeleteOp | None = None
    status: StatusOp | None = None
    assignees: AssigneesOp | None = None
    request: RequestOp | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kinds = [k for k in data if k in _BODY]
            unknown = [k for k in data if k not in _BODY]
            if unknown:
                raise ValueError(f"unknown operation {unknown[0]!r}; expected one of: {', '.join(KINDS)}")
            if len(kinds) != 1:
                raise ValueError(f"an operation is one mapping with exactly one key of: {', '.join(KINDS)}")
        return data

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def body(self) -> OperationBody:
        return getattr(self, self.kind)

    def iter_records(self) -> Iterable[FieldValues]:
        """The records of an add, update or upsert (inline or streamed from its data file)."""
        body = self.body
        if not isinstance(body, _RecordsOp):
            raise TypeError(f"a {self.kind} operation has no records to iterate")
        return body.iter_records()


class ChangesetFile(_Strict):
    """The whole file after Jinja and YAML."""

    description: str | None = ""  # `description:` left empty is null in YAML; the loader reads it as ""
    operations: list[Operation] = Field(min_length=1)


# ---- record values: shorthand -> Kintone's form -------------------------------------------

_ENTITY_KEYS = ({"code"}, {"code", "name"}, {"code", "type"})


def _is_full(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and set(value) <= {"value", "type"}


def _is_entity_list(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, dict) and set(v) in _ENTITY_KEYS for v in value)


def to_kintone_value(value: Any) -> dict[str, Any]:
    """One field's value in Kintone's ``{"value": ...}`` form.

    A list of mappings is a subtable (each row's fields again in either form; a row written
    ``{id: ROW, value: {...}}`` keeps its row id), except a list of ``{code: ...}`` mappings,
    which is a USER/ORGANIZATION/GROUP_SELECT value.
    """
    if _is_full(value):
        inner = value["value"]
        if (
            isinstance(inner, list)
            and inner
            and all(isinstance(r, dict) and "value" in r and isinstance(r["value"], dict) for r in inner)
        ):
            return {"value": [_row(r) for r in inner]}
        return {"value": inner}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) for v in value)
        and not _is_entity_list(value)
    ):
        return {"value": [_row(r) for r in value]}
    return {"value": value}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    if "value" in row and isinstance(row["value"], dict) and set(row) <= {"id", "value"}:
        out: dict[str, Any] = {"value": {k: to_kintone_value(v) for k, v in row["value"].items()}}
        if "id" in row:
            out = {"id": str(row["id"]), **out}
        return out
    return {"value": {k: to_kintone_value(v) for k, v in row.items()}}


def to_kintone_record(fields: FieldValues) -> dict[str, dict[str, Any]]:
    return {code: to_kintone_value(v) for code, v in fields.items()}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the changeset format, for editors (``kmigrate schema``)."""
    schema = ChangesetFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kmigrate changeset"
    return schema


# ---- a changeset as the loader hands it to the planner --------------------------------------


@dataclass(frozen=True)
class LoadedChangeset:
    """One changeset file, rendered, parsed and validated: the planner's input.

    ``operation_lines[i]`` is the line of operation ``i`` in the source file, ``None`` when
    Jinja made it (a loop, an include, a macro) so that it has no source line of its own.
    ``record_lines[i]``, for inline records, gives each record's source line the same way.
    ``rendered_operation_lines``/``rendered_record_lines`` are the same lines in the rendered
    text (equal to the source lines when the render kept every line where it was). Records read
    with ``records_from`` know their data-file line through their ``RecordSource``.
    ``location(operation, record)`` puts all of that into one ``Location`` for a message.
    """

    version: str  # "0003"
    name: str  # "submit_spring_orders"
    path: Path
    description: str
    operations: tuple[Operation, ...]
    source_checksum: str  # sha256 of the source with line endings normalised
    rendered_checksum: str  # sha256 of the rendered operations, data files included
    operation_lines: tuple[int | None, ...] = ()
    record_lines: tuple[tuple[int | None, ...] | None, ...] = _field(default=(), repr=False)
    rendered_operation_lines: tuple[int | None, ...] = _field(default=(), repr=False)
    rendered_record_lines: tuple[tuple[int, ...] | None, ...] = _field(default=(), repr=False)
    rendered_text_differs: bool = False  # False: rendered lines are source lines

    @property
    def id(self) -> str:
        return f"V{self.version}__{self.name}"

    def location(self, operation: int | None = None, record: int | None = None) -> Location:
        """Where operation ``operation`` (0-based) and its record ``record`` (0-based) were written.

        An inline record gives its line in the changeset (or "rendered line N" when Jinja made
        it); a record of a data file gives the data file and its line (found by streaming the
        file up to it, which only an error report should need).
        """

        if operation is None or not 0 <= operation < len(self.operations):
            return Location(file=str(self.path), changeset=self.id)
        op = self.operations[operation]
        detail = op.kind
        line = _at(self.operation_lines, operation)
        rendered = _at(self.rendered_operation_lines, operation)
        body = op.body
        source = getattr(body, "source", None)
        if record is not None and source is not None:
            for position, (data_line, _rec) in enumerate(source):
                if position == record:
                    return Location(
                        file=source.path,
                        line=data_line,
                        changeset=self.id,
                        operation=operation + 1,
                        record=record + 1,
                        detail=detail,
                    )
        if record is not None:
            lines = _at(self.record_lines, operation)
            rlines = _at(self.rendered_record_lines, operation)
            line = _at(lines, record) if lines else None
            rendered = _at(rlines, record) if rlines else None
        if line is None and rendered is not None and self.rendered_text_differs:
            detail = f"{detail}, rendered line {rendered}"
        elif line is None:
            line = rendered
        return Location(
            file=str(self.path),
            line=line,
            changeset=self.id,
            operation=operation + 1,
            record=None if record is None else record + 1,
            detail=detail,
        )


def _at(seq: Any, index: int) -> Any:
    return seq[index] if seq is not None and 0 <= index < len(seq) else None
