"""The op compiler, pure: each operation of a changeset -> items for the packer, and its summary.

``compile_changeset`` streams a changeset's bulks in order: each operation's compiler feeds
the ``Packer`` one item per record (ids turned into ref markers, records into Kintone's form,
each record checked by the rules of ``kmigrate.records``) and yields the bulks that fill up.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ..attachments import AttachmentPaths, file_markers
from ..changeset import (
    AddOp,
    AssigneesOp,
    Columns,
    DeleteOp,
    LoadedChangeset,
    OperationBody,
    RefIds,
    RequestOp,
    StatusOp,
    StatusRecord,
    UpdateOp,
    UpsertOp,
    _RecordsOp,
    app_written,
    to_kintone_record,
)
from ..config import Environment
from ..errors import ChangesetError, ConfigError, Location
from ..kintone import api_path
from ..plan import Call, OperationSummary, Segment, ref_marker, text_records_json
from ..records import id_problems, key_text, not_a_mapping, ref_index_problem, selection_problems
from .packing import Bulk, CallSpec, Limits, Packer, Uses
from .refs import RefRegistry

Compiled = Generator[Bulk, None, tuple[int, str]]  # yields full bulks; returns (records, description)


def compile_changeset(
    cs: LoadedChangeset,
    env: Environment,
    refs: RefRegistry,
    limits: Limits,
    summaries: list[OperationSummary],
    paths: AttachmentPaths | None = None,
) -> Iterator[Bulk]:
    """The changeset's bulks in order, streamed; appends one summary per operation."""
    packer = Packer(limits, refs)
    paths = paths if paths is not None else AttachmentPaths(env.root, {})
    for index, operation in enumerate(cs.operations):
        compiler = OpCompiler(cs, index, operation.kind, operation.body, env, refs, packer, paths)
        summaries.append((yield from compiler.run()))
        refs.open = None
    yield from packer.finish()


class OpCompiler:
    """Compiles one operation into the packer, and summarises it for the person reviewing."""

    def __init__(
        self,
        cs: LoadedChangeset,
        index: int,
        kind: str,
        body: OperationBody,
        env: Environment,
        refs: RefRegistry,
        packer: Packer,
        paths: AttachmentPaths,
    ):
        self.cs, self.index, self.kind, self.body = cs, index, kind, body
        self.refs, self.packer, self.paths = refs, packer, paths
        self.line = cs.operation_lines[index] if index < len(cs.operation_lines) else None
        self.app_written = app_written(body)
        try:
            self.app = env.app(self.app_written)
        except ConfigError as exc:
            raise ChangesetError(exc.message, location=self.loc(), hint=exc.hint) from None
        self.file_codes = paths.codes(self.app.id)

    # -- errors
    def loc(
        self, record: int | None = None, data_line: int | None = None, data_file: str | None = None
    ) -> Location:
        if data_file is not None:  # known while streaming: no need to read the data file again
            return Location(
                file=data_file,
                line=data_line,
                changeset=self.cs.id,
                operation=self.index + 1,
                record=None if record is None else record + 1,
                detail=self.kind,
            )
        where = self.cs.location(self.index, record)
        if where.line is None and record is not None:  # the record's own line is unknown: its operation's
            where = replace(where, line=self.cs.location(self.index).line)
        return where

    def error(
        self, message: str, record: int | None = None, hint: str | None = None, **where: Any
    ) -> ChangesetError:
        return ChangesetError(message, location=self.loc(record, **where), hint=hint)

    # -- ids and refs
    def _ref_size(self, name: str, record: int | None) -> int:
        return self.refs.size(name, self.loc(record))

    def one_id(self, value: Any, record: int | None) -> tuple[Any, tuple[tuple[str, int | None], ...]]:
        """A single record id as written -> (id or indexed marker, the ref ids it uses)."""
        if isinstance(value, dict):  # a request's payload, or a record the loader did not read
            try:
                value = RefIds.model_validate(value)
            except ValidationError:
                raise self.error(
                    f"`id: {value}` is not a ref; write {{ref: NAME}} or {{ref: NAME, index: N}}", record
                ) from None
        if isinstance(value, RefIds):
            name, index = value.ref, value.index
            size = self._ref_size(name, record)
            if index is None:
                if size != 1:
                    raise self.error(
                        f"`id: {{ref: {name}}}` stands for one record, but ref {name!r} has {size}",
                        record,
                        hint=f"write {{ref: {name}, index: N}} for the N-th (0-based) record of the ref",
                    )
                index = 0
            problem = ref_index_problem(name, index, size)
            if problem is not None:
                raise self.error(problem, record)
            return ref_marker(name, index), ((name, index),)
        problems = id_problems(value)
        if problems:
            raise self.error(problems[0], record)
        return int(value), ()

    def id_list(self, ids: Any) -> Iterator[tuple[Any, tuple[tuple[str, int | None], ...]]]:
        """A list of ids as written (or one whole ref) -> ids and indexed markers, one per record."""
        elements = [ids] if isinstance(ids, RefIds) else list(ids)
        for element in elements:
            if isinstance(element, RefIds) and element.index is None:
                for i in range(self._ref_size(element.ref, None)):
                    yield ref_marker(element.ref, i), ((element.ref, i),)
            else:
                yield self.one_id(element, None)

    # -- records
    def records(self) -> Iterator[tuple[int, dict[str, Any], int | None]]:
        """(record index, fields, line in the data file) in order, streaming ``records_from``."""
        body = self.body
        assert isinstance(body, _RecordsOp)
        if body.records is not None:
            for i, rec in enumerate(body.records):
                yield i, rec, None
        elif body.source is not None:
            for i, (line, rec) in enumerate(body.source):
                yield i, rec, line
        else:
            raise self.error("records_from was not read: plan changesets the loader has loaded")

    def text_items(self) -> Iterator[list[Any]] | None:
        """An add's records as Kintone's, a chunk at a time, built straight from the rows, when
        its data file is CSV of text columns only that the loader kept (``chunks``: a run by
        column, ``Columns``, no record rebuilt) and no FILE field asks for a look at each value;
        None otherwise (``records`` then yields each record). A run of texts by column comes as
        each record's canonical JSON (``plan.text_records_json``), the rest as dicts."""
        body = self.body
        assert isinstance(body, _RecordsOp)
        chunks = getattr(body.source, "chunks", None)
        if chunks is None or self.file_codes or body.records is not None:
            return None
        if getattr(body.source, "text_columns", None) is None:
            return None  # not known to be text yet: the loader's pass has not read the header

        def items() -> Iterator[list[Any]]:
            for chunk in chunks():
                if isinstance(chunk, Columns) and all(
                    set(map(type, column)) == {str} for column in chunk.values
                ):
                    # Each record made as the JSON it is hashed and sent as (``EncodedPayload``).
                    yield text_records_json(chunk.codes, chunk.values)
                elif isinstance(chunk, Columns):
                    codes = chunk.codes
                    yield [{c: {"value": v} for c, v in zip(codes, row, strict=True)} for row in chunk.rows()]
                else:  # records that give different fields (an empty cell omits one)
                    yield [{c: {"value": v} for c, v in record.items()} for _, record in chunk]

        return items()

    def where(self, data_line: int | None) -> dict[str, Any]:
        """The keywords of ``error`` that place a record of a data file."""
        if data_line is None or not isinstance(self.body, _RecordsOp):
            return {}
        return {
            "data_file": str(getattr(self.body.source, "path", self.body.records_from)),
            "data_line": data_line,
        }

    def _check_record(self, rec: Any, i: int, data_line: int | None) -> None:
        """The record rules the compiler relies on (``records``; the loader checked them all)."""
        if not isinstance(rec, dict):
            raise self.error(not_a_mapping(rec), i, **self.where(data_line))
        if self.kind in ("update", "upsert"):
            problems = selection_problems(self.kind, getattr(self.body, "key", None), rec)
            if problems:
                raise self.error(problems[0], i, **self.where(data_line))

    def _kintone_record(self, rec: dict[str, Any], i: int, data_line: int | None) -> dict[str, Any]:
        """``_record``, FILE values written as paths first made file markers (``kmigrate.attachments``)."""
        if not self.file_codes:  # as ``_record``, one pass: only a non-scalar may be a marker list
            for value in rec.values():
                if type(value) not in _SCALARS:
                    return to_kintone_record(self._marked(rec, i, data_line))
            return {code: {"value": value} for code, value in rec.items()}
        return _record(self._marked(rec, i, data_line))

    def _marked(self, rec: dict[str, Any], i: int, data_line: int | None) -> dict[str, Any]:
        return self.paths.mark(rec, self.file_codes, lambda: self.loc(i, **self.where(data_line)))

    # -- the kinds
    def run(self) -> Generator[Bulk, None, OperationSummary]:
        """Feeds the packer, yielding the bulks that fill up; returns the operation's summary."""
        count, description = yield from getattr(self, f"_{self.kind}")()
        body = self.body
        request = body if isinstance(body, RequestOp) else None
        return OperationSummary(
            index=self.index,
            kind=self.kind,
            app=str(self.app_written),
            app_id=self.app.id,
            records=count,
            line=self.line,
            destructive=self.kind == "delete" or (request is not None and request.method == "DELETE"),
            ref=getattr(body, "ref", None),
            description=description,
            overwrites=self.kind in ("update", "upsert")
            or (request is not None and request.method == "PUT" and request.api in ("record", "records")),
            guest_space_id=self.app.guest_space_id,
        )

    def _spec(self, key: tuple[Any, ...], method: str, api: str, shape: str, **more: Any) -> CallSpec:
        guest = self.app.guest_space_id
        return CallSpec(key, method, api_path(api, guest), self.app.id, shape, guest, self.index, **more)

    def _define_ref(self, ref: str | None) -> None:
        if ref is not None:
            self.refs.define(ref, f"{self.cs.id} operation {self.index + 1}", self.loc())

    def _add(self) -> Compiled:
        body = self.body
        assert isinstance(body, AddOp)
        ref = body.ref
        self._define_ref(ref)
        spec = self._spec(("add", self.app.id), "POST", "records", "records", ref=ref)
        # The hot loop of a big import: the packer's rules for items that use no ref and never
        # repeat, inlined (a new call only when the call is full or of another kind), a run of
        # items at a time.
        packer, op, key = self.packer, self.index, spec.key
        limit = packer.limits.records_per_call
        call = packer.call
        segment: list[Any] | None = None
        span: list[int] | None = None
        n = -1
        for items in self._add_items():
            start = 0
            while start < len(items):
                if call is None or call.key != key or len(call.items) >= limit:
                    call = packer.start_call(spec)
                    segment = span = None
                    if packer.done:
                        yield from packer.take()
                if segment is None:
                    segment = [op, n + 1, 0, ref]
                    call.segments.append(segment)
                taken = items[start : start + limit - len(call.items)]
                start += len(taken)
                call.items.extend(taken)
                segment[2] += len(taken)
                n += len(taken)
                if ref is not None:
                    if span is None:
                        span = packer.produced.setdefault(ref, [segment[1], n + 1])
                    span[1] = n + 1
        if ref is not None:
            self.refs.count[ref] = n + 1
        return n + 1, f"creates ref {ref}" if ref else ""

    def _add_items(self) -> Iterator[list[Any]]:
        """An add's records as Kintone's, in runs: a CSV file of text columns a chunk at a time
        (``text_items``), anything else a record at a time."""
        text_items = self.text_items()
        if text_items is not None:
            yield from text_items
            return
        source = getattr(self.body, "source", None)
        text: bool | None = None  # every value a text: known at the first record (the header read)
        for n, rec, data_line in self.records():
            if type(rec) is not dict:
                self._check_record(rec, n, data_line)
            if text is None:
                text = not self.file_codes and getattr(source, "text_columns", None) is not None
            # A text is its own {"value": ...} (``_kintone_record``'s scalar case, without the scan).
            yield [
                {code: {"value": value} for code, value in rec.items()}
                if text
                else self._kintone_record(rec, n, data_line)
            ]

    def _keyed(self) -> Compiled:
        body = self.body
        assert isinstance(body, (UpdateOp, UpsertOp))
        upsert = isinstance(body, UpsertOp)
        field = body.key
        ref = body.ref if isinstance(body, UpsertOp) else None
        self._define_ref(ref)
        spec = self._spec(
            (self.kind, self.app.id, field), "PUT", "records", "records", ref=ref, upsert=upsert
        )
        packer, item, done = self.packer, self.packer.item, self.packer.done
        n = -1
        for n, rec, data_line in self.records():
            self._check_record(rec, n, data_line)
            fields = dict(rec)
            out: dict[str, Any] = {}
            uses: Uses = ()
            if field is None:
                out["id"], uses = self.one_id(fields.pop("id"), n)
                dedupe: Any = ("id", _id_key(out["id"]))
            else:
                value = key_text(fields.pop(field))
                out["updateKey"] = {"field": field, "value": value}
                dedupe = value
            revision = fields.pop("revision", None)
            if revision is not None:  # null: no check, as if not written
                out["revision"] = revision
            out["record"] = self._kintone_record(fields, n, data_line)
            item(spec, out, dedupe, uses, n)
            if ref is not None:
                self.refs.count[ref] = n + 1
            if done:
                yield from packer.take()
        count = n + 1
        mode = f"upsert by {field}" if upsert else (f"by key {field}" if field else "by id")
        return count, mode + (f", creates ref {ref}" if ref else "")

    _update = _upsert = _keyed

    def _delete(self) -> Compiled:
        body = self.body
        assert isinstance(body, DeleteOp)
        spec = self._spec(("delete", self.app.id), "DELETE", "records", "ids")
        revisions = body.revisions
        if revisions is not None and isinstance(body.ids, list):
            if any(isinstance(e, RefIds) and e.index is None for e in body.ids):
                raise self.error(
                    "`revisions` pairs with ids one to one; a whole {ref: NAME} inside `ids` cannot carry them",
                    hint="write the ref's ids with index: N, or drop `revisions`",
                )
        packer, item, done = self.packer, self.packer.item, self.packer.done
        n = -1
        for n, (value, uses) in enumerate(self.id_list(body.ids)):
            revision = revisions[n] if revisions is not None else None
            item(spec, value, ("id", _id_key(value)), uses, n, revision)
            if done:
                yield from packer.take()
        return n + 1, "deletes records"

    def _status(self) -> Compiled:
        body = self.body
        assert isinstance(body, StatusOp)
        spec = self._spec(("status", self.app.id), "PUT", "records/status", "status")

        def entries() -> Iterator[tuple[Any, Uses, str | None, str | None, int | None]]:
            written = body.records if isinstance(body.records, list) else []
            per_record = [r for r in written if isinstance(r, StatusRecord)]
            if per_record and len(per_record) == len(written):
                for n, r in enumerate(per_record):
                    value, uses = self.one_id(r.id, n)
                    yield value, uses, r.action or body.action, r.assignee or body.assignee, r.revision
            else:
                for value, uses in self.id_list(body.records):
                    yield value, uses, body.action, body.assignee, None

        packer, item, done = self.packer, self.packer.item, self.packer.done
        n = -1
        actions: list[str | None] = []
        for n, (value, uses, action, assignee, revision) in enumerate(entries()):
            out: dict[str, Any] = {"id": value, "action": action}
            if assignee is not None:
                out["assignee"] = assignee
            if revision is not None:
                out["revision"] = revision
            if action not in actions:
                actions.append(action)
            item(spec, out, ("id", _id_key(value)), uses, n)
            if done:
                yield from packer.take()
        return n + 1, "action " + ", ".join(str(a) for a in actions)

    def _assignees(self) -> Compiled:
        body = self.body
        assert isinstance(body, AssigneesOp)
        guest = self.app.guest_space_id
        value, uses = self.one_id(body.id, None)
        payload: dict[str, Any] = {"app": self.app.id, "id": value, "assignees": list(body.assignees)}
        if body.revision is not None:
            payload["revision"] = body.revision
        call = Call(
            "PUT",
            api_path("record/assignees", guest),
            payload,
            (Segment(self.index, 0, 1),),
            frozenset(n for n, _ in uses),
        )
        self.packer.single(call, guest, uses)
        yield from self.packer.take()
        return 1, "assignees " + (", ".join(body.assignees) or "(none)")

    def _request(self) -> Compiled:
        body = self.body
        assert isinstance(body, RequestOp)
        guest = self.app.guest_space_id
        uses: list[tuple[str, int | None]] = []
        payload = self._request_value(dict(body.payload), uses)
        payload["app"] = self.app.id
        count = 1
        for listed in ("records", "ids"):
            value = payload.get(listed)
            if isinstance(value, list):
                count = len(value)
            elif isinstance(value, dict) and "$ref" in value:
                count = self.refs.count.get(value["$ref"], 1)
        if count > self.packer.limits.records_per_call:
            raise self.error(
                f"the request carries {count} records; one call takes at most {self.packer.limits.records_per_call}",
                hint="split it into several requests, or use add/update/delete/status, which split for you",
            )
        call = Call(
            body.method,
            api_path(body.api, guest),
            payload,
            (Segment(self.index, 0, count),),
            frozenset(n for n, _ in uses),
        )
        self.packer.single(call, guest, tuple(uses))
        yield from self.packer.take()
        return count, f"{body.method} {body.api}"

    def _request_value(self, value: Any, uses: list[tuple[str, int | None]]) -> Any:
        """The payload as written, with `{ref: NAME}` / `{ref: NAME, index: N}` turned into markers."""
        if isinstance(value, dict):
            if "$ref" in value:
                raise self.error("`$ref` is reserved for kmigrate's ref markers; write {ref: NAME} instead")
            if "ref" in value and set(value) <= {"ref", "index"} and isinstance(value["ref"], str):
                name, index = value["ref"], value.get("index")
                self._ref_size(name, None)  # known, and created earlier
                if index is None:
                    uses.append((name, None))
                    return ref_marker(name)
                marker, used = self.one_id(value, None)
                uses.extend(used)
                return marker
            return {k: self._request_value(v, uses) for k, v in value.items()}
        if isinstance(value, list):
            return [self._request_value(v, uses) for v in value]
        return value


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    """``to_kintone_record``, with the common case (every value a scalar, as from CSV) inlined."""
    for value in fields.values():
        if type(value) not in _SCALARS:
            return to_kintone_record(fields)
    return {code: {"value": value} for code, value in fields.items()}


def uses_attachments(cs: LoadedChangeset, env: Environment, paths: AttachmentPaths) -> bool:
    """Might the changeset send attachments? Their files are not in its checksums, so a
    changeset that might is compiled even when applied (its batch hashes cover the files)."""
    for operation in cs.operations:
        body = operation.body
        if not isinstance(body, _RecordsOp):
            continue
        try:
            if paths.codes(env.app(app_written(body)).id):
                return True
        except ConfigError:
            return True  # planning reports it
        if any(next(file_markers(r), None) is not None for r in body.records or ()):
            return True
    return False


def _id_key(value: Any) -> Any:
    return (value["$ref"], value["index"]) if isinstance(value, dict) else value
