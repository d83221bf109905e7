"""Changesets checked against the apps' definitions, before anything is sent. Pure.

What Kintone would refuse in a bulk request, found offline: a value its field does not take
(``12,000`` for a NUMBER, ``2024/07/01`` for a DATE, an option the drop-down lacks, too long,
out of bounds), a required field left out of an add, a unique value written twice by the
project, an update key that is not a unique field, a process action the app does not have or
that cannot run from the state the records are known to be in, a missing or extra assignee.
The value rules are Kintone's own as the sandbox implements them (``fieldrules``): one home,
so what ``validate`` refuses is what the sandbox refuses.

The definitions come in as data (app id -> ``AppSchema``) from the edge: the sandbox file, a
schema file ``sandbox pull`` saved, or the real apps read by ``validate --online``. This module
never reads anything.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .appschema import AppSchema, FieldDef, ProcessDef
from .attachments import as_uploaded
from .changeset import (
    AddOp,
    AssigneesOp,
    Columns,
    LoadedChangeset,
    Operation,
    RefIds,
    StatusOp,
    StatusRecord,
    UpdateOp,
    UpsertOp,
    _RecordsOp,
    app_written,
    to_kintone_record,
    to_kintone_value,
)
from .config import Environment
from .errors import ChangesetError, ConfigError, Location
from .fieldrules import (
    REFUSED,
    Problems,
    actions_from,
    assignee_problem,
    assignees_problem,
    check_required,
    empty_value,
    is_empty,
    normalize,
    update_key_problem,
    value_checker,
)
from .plan import JournaledChangeset
from .records import RESERVED_RECORD_KEYS

Schemas = Mapping[int, AppSchema]  # app id -> its definition
MAX_ERRORS_PER_OPERATION = 50

# What to do about a value Kintone refuses, by field type.
_FORMAT_HINTS = {
    "NUMBER": "write digits with an optional `.` and no thousands separators or units, e.g. 12000 or 1234.5",
    "DATE": "write dates as YYYY-MM-DD, e.g. 2024-07-01",
    "TIME": "write times as HH:MM (24-hour), e.g. 09:30",
    "DATETIME": "write an ISO 8601 date and time with its offset, e.g. 2024-07-01T09:30:00Z or "
    "2024-07-01T18:30:00+09:00",
}
_PREFIX = "record"  # Kintone's key of a record's values in an error: record.title.value


def known_fields(schemas: Schemas) -> dict[int, dict[str, frozenset[str]]]:
    """App id -> field code -> its columns: what the loader checks a record's codes against."""
    return {app_id: schema.known_fields() for app_id, schema in schemas.items()}


def check_changesets(
    changesets: Sequence[LoadedChangeset],
    env: Environment,
    schemas: Schemas,
    journal: Mapping[str, JournaledChangeset] | None = None,
) -> list[ChangesetError]:
    """Every problem Kintone would refuse, for every changeset, in version order.

    Applied changesets whose checksums did not change are not checked again (their records are
    in Kintone already), but their process actions still move the known states of their refs.
    """
    checker = _Checker(env, schemas)
    for cs in changesets:
        j = (journal or {}).get(cs.version)
        trusted = (
            j is not None
            and j.fully_applied
            and (j.source_checksum, j.rendered_checksum) == (cs.source_checksum, cs.rendered_checksum)
        )
        for index, op in enumerate(cs.operations):
            checker.operation(cs, index, op, report=not trusted)
    return checker.errors


# ---- what the project has written so far ----------------------------------------------------


class _Values:
    """The values one unique field was given so far, 16 bytes each: a 96-bit digest of the
    value (the text's own hash and a CRC-32 of it: two values alike by chance, odds of 1e-17 in
    a million) and the ordinal of the first record that wrote it (a dict of every value and its
    Location took ~400 bytes a record: 580 MB for a million rows). Digests are kept in buckets
    by 12 bits of the hash; a bucket is searched with ``bytearray.find``, in C."""

    BUCKETS = 4096

    def __init__(self) -> None:
        self.keys: list[bytearray | None] = [None] * self.BUCKETS  # 8 bytes of each digest
        self.rest: dict[int, bytearray] = {}  # per bucket: the digest's other 4 bytes, the ordinal's 4

    def first(self, value: str, ordinal: int) -> int | None:
        """The ordinal of the record that wrote ``value`` first; None (and kept) if none did."""
        hashed = hash(value)  # 64 bits (SipHash, cached by the text), and 32 bits more of CRC
        key = hashed.to_bytes(8, "little", signed=True)
        other = zlib.crc32(value.encode("utf-8", "surrogatepass")).to_bytes(4, "little")
        bucket = hashed & (self.BUCKETS - 1)
        keys = self.keys[bucket]
        if keys is None:
            keys = self.keys[bucket] = bytearray()
            self.rest[bucket] = bytearray()
        rest = self.rest[bucket]
        at = keys.find(key)
        while at != -1:
            if at % 8 == 0 and rest[at : at + 4] == other:
                return int.from_bytes(rest[at + 4 : at + 8], "little")
            at = keys.find(key, at + 1)
        keys += key
        rest += other + ordinal.to_bytes(4, "little")  # at most 4 billion records checked
        return None


@dataclass
class _Checker:
    env: Environment
    schemas: Schemas
    errors: list[ChangesetError] = field(default_factory=list)
    # (app id, field code) -> the stored values its adds wrote, each with the first record that did
    uniques: dict[tuple[int, str], _Values] = field(default_factory=dict)
    records: int = 0  # the records checked so far: each one's ordinal
    # (first ordinal, changeset, operation index) of each records operation checked, in order
    places: list[tuple[int, LoadedChangeset, int]] = field(default_factory=list)
    # ref -> the process state of each of its records, where known (None: not known)
    states: dict[str, list[str | None]] = field(default_factory=dict)

    def operation(self, cs: LoadedChangeset, index: int, op: Operation, *, report: bool) -> None:
        body = op.body
        try:
            app = self.env.app(app_written(body))
        except ConfigError:
            return  # the loader reported it
        schema = self.schemas.get(app.id)
        if schema is None:
            return
        errors = _OperationErrors(self.errors, cs, index, f"{op.kind} {app_written(body)}", report)
        if isinstance(body, _RecordsOp):
            if report:
                self._records(cs, index, op.kind, body, app.id, schema, errors)
            if isinstance(body, AddOp) and body.ref:
                process = schema.enabled_process
                initial = process.initial.name if process is not None else None
                self.states[body.ref] = [initial] * (body.record_count or 0)
            elif isinstance(body, UpsertOp) and body.ref:
                self.states.pop(body.ref, None)  # updated or created: the state is not known
        elif isinstance(body, StatusOp):
            self._status(body, schema, errors)
        elif isinstance(body, AssigneesOp):
            self._assignees(body, schema, errors)
        errors.close()

    # -- records ----

    def _records(
        self,
        cs: LoadedChangeset,
        index: int,
        kind: str,
        body: _RecordsOp,
        app_id: int,
        schema: AppSchema,
        errors: _OperationErrors,
    ) -> None:
        key = body.key if isinstance(body, (UpdateOp, UpsertOp)) else None
        if key is not None:
            problem = update_key_problem(key, schema.fields.get(key))
            if problem is not None:
                errors.add(
                    f"`key: {key}`: {problem}",
                    hint='turn on "Prohibit duplicate values" for the field in the app, or find the records by `id`',
                )
        shape = _Shape.of(schema)  # what does not change from record to record
        # The unique fields' indexes, looked up once: each add's values go into them.
        indexes = (
            [(code, f, self.uniques.setdefault((app_id, code), _Values())) for code, f in shape.unique]
            if kind == "add"
            else []
        )
        self.places.append((self.records, cs, index))
        each = _RecordsPass(self, cs, index, kind, body, schema, shape, indexes, errors)
        ordinal = self.records
        for position, chunk in _chunks_of(body):
            if isinstance(chunk, Columns):
                stored = _accepted_columns(kind, chunk, shape)
                if stored is not None:  # every record taken whole: only the indexes are left
                    each.index_columns(stored, chunk, ordinal, position)
                    ordinal += len(chunk)
                    continue
                chunk = list(chunk.records())  # a record needs a look of its own
            for offset, (line, record) in enumerate(chunk):
                each.record(record, ordinal, position + offset, line)
                ordinal += 1
        self.records = ordinal

    def _where(self, ordinal: int) -> Location:
        """Where the record of ``ordinal`` was written (a data file's is streamed up to it: only
        a duplicate's message needs it)."""
        start, cs, index = self.places[bisect.bisect_right(self.places, ordinal, key=lambda p: p[0]) - 1]
        return cs.location(index, ordinal - start)

    def duplicate(self, code: str, value: Any, first: int, errors: _OperationErrors, at: Location) -> None:
        # Past what is shown, the message is only counted: the first place is not looked up.
        shown = errors.report and errors.count < MAX_ERRORS_PER_OPERATION
        errors.add(
            f"field `{code}` is unique in the app, and {value!r} is already written by "
            f"{_place(self._where(first)) if shown else 'an earlier record'}: "
            "Kintone refuses the second write (duplicate value)",
            hint="give each record its own value, or make the second write an update",
            at=at,
        )

    # -- process management ----

    def _status(self, body: StatusOp, schema: AppSchema, errors: _OperationErrors) -> None:
        process = _process_of(schema, body.app, "status actions", errors)
        if process is None:
            return
        for target, action, assignee in _status_targets(body):
            known = self._known_states(target)
            if known is None:  # records by id, or of an upsert: only the action's name is known
                self._action_exists(process, action, assignee, schema, errors)
                continue
            ref, positions = known
            for position in positions:
                state = self.states[ref][position]
                if state is None:
                    if not self._action_exists(process, action, assignee, schema, errors):
                        break
                    continue
                runs = actions_from(process, state, action)
                if not runs:
                    self._no_action(process, action, state, ref, schema, errors)
                    self._forget(ref, positions)
                    break
                nxt = process.target(runs[0])
                problem = assignee_problem(nxt, assignee)
                if problem is not None:
                    errors.add(
                        f"action {action!r}: {problem}",
                        hint="give `assignee:` on the operation or the record",
                    )
                self.states[ref][position] = nxt.name

    def _known_states(self, target: Any) -> tuple[str, list[int]] | None:
        """(ref, positions) of the records a status target names, when the project made them."""
        if not isinstance(target, RefIds) or target.ref not in self.states:
            return None
        size = len(self.states[target.ref])
        if target.index is None:
            return target.ref, list(range(size))
        return (target.ref, [target.index]) if target.index < size else None

    def _forget(self, ref: str, positions: list[int]) -> None:
        for position in positions:
            self.states[ref][position] = None

    def _action_exists(
        self,
        process: ProcessDef,
        action: str,
        assignee: str | None,
        schema: AppSchema,
        errors: _OperationErrors,
    ) -> bool:
        named = [a for a in process.actions if a.name == action]
        if not named:
            names = list(dict.fromkeys(a.name for a in process.actions))
            errors.add(
                f"the app's process has no action {action!r}{_in(schema)}{_guess(action, names)}",
                hint=f"its actions: {', '.join(names) or 'none'}",
            )
            return False
        problems = [assignee_problem(process.target(a), assignee) for a in named]
        if all(p is not None for p in problems):
            errors.add(
                f"action {action!r}: {problems[0]}", hint="give `assignee:` on the operation or the record"
            )
        return True

    def _no_action(
        self,
        process: ProcessDef,
        action: str,
        state: str,
        ref: str,
        schema: AppSchema,
        errors: _OperationErrors,
    ) -> None:
        here = list(dict.fromkeys(a.name for a in process.actions if a.from_ == state))
        if any(a.name == action for a in process.actions):
            message = (
                f"action {action!r} cannot run from status {state!r}, where the records of ref {ref!r} are "
                "at this point (Kintone refuses it: GAIA_IL03)"
            )
        else:
            every = list(dict.fromkeys(a.name for a in process.actions))
            message = f"the app's process has no action {action!r}{_in(schema)}{_guess(action, every)}"
        errors.add(message, hint=f"from {state!r} the process offers: {', '.join(here) or 'no action'}")

    def _assignees(self, body: AssigneesOp, schema: AppSchema, errors: _OperationErrors) -> None:
        process = _process_of(schema, body.app, "assignee changes", errors)
        if process is None:
            return
        known = self._known_states(body.id)
        if known is None:
            return
        ref, positions = known
        state_name = self.states[ref][positions[0]]
        state = process.state(state_name) if state_name is not None else None
        problem = assignees_problem(state, body.assignees) if state is not None else None
        if problem is not None:
            errors.add(problem, hint="name one assignee, or move the record to a status that takes several")


# ---- one record -----------------------------------------------------------------------------


def record_problems(
    kind: str, key: str | None, record: Mapping[str, Any], schema: AppSchema
) -> list[tuple[str, str | None]]:
    """(message, what to do) for each value of one record that Kintone would refuse."""
    return _record_problems(kind, record, schema, _Shape.of(schema))[0]


@dataclass
class _RecordsPass:
    """One records operation's records through the checker: each one's problems, and the unique
    fields' values (an add's) into the indexes."""

    checker: _Checker
    cs: LoadedChangeset
    index: int
    kind: str
    body: _RecordsOp
    schema: AppSchema
    shape: _Shape
    indexes: list[tuple[str, FieldDef, _Values]]  # an add's unique fields: (code, field, values so far)
    errors: _OperationErrors

    def record(self, record: Any, ordinal: int, position: int, line: int | None) -> None:
        if not isinstance(record, dict):
            return  # the loader reported it
        kind = self.kind
        accepted = _accepted(kind, record, self.shape)  # most records: no problem, found fast
        problems, stored = (
            ([], accepted)
            if accepted is not None
            else _generic_problems(kind, record, self.schema, self.shape)
        )
        if problems:
            at = self.location(position, line)
            for message, hint in problems:
                self.errors.add(message, hint=hint, at=at)
        for code, f, values in self.indexes:
            if code not in record:
                continue
            if code in stored:  # normalised once, by record_problems
                value = stored[code]
            else:
                value = normalize(f, to_kintone_record({code: record[code]})[code], code, Problems())
            self.indexed(code, values, value, ordinal, position, line)

    def index_columns(
        self, stored: Mapping[str, list[Any]], chunk: Columns, ordinal: int, position: int
    ) -> None:
        """``record``'s indexing for a run of records ``_accepted_columns`` took whole: ``stored``
        per code, each record's stored value; ``ordinal`` and ``position`` are the run's first."""
        for code, _, values in self.indexes:
            column = stored.get(code)
            if column is None:
                continue  # no record of the run writes the field
            for offset, value in enumerate(column):
                self.indexed(code, values, value, ordinal + offset, position + offset, chunk.lines[offset])

    def indexed(
        self, code: str, values: _Values, value: Any, ordinal: int, position: int, line: int | None
    ) -> None:
        if value is None or is_empty(value):
            return
        first = values.first(str(value), ordinal)
        if first is not None and first != ordinal:
            self.checker.duplicate(code, value, first, self.errors, self.location(position, line))

    def location(self, position: int, line: int | None) -> Location:
        return _location(self.cs, self.index, self.kind, self.body, position, line)


@dataclass(frozen=True)
class _Shape:
    """Of one app's fields, what every record is checked with: worked out once per operation."""

    files: frozenset[str]  # FILE fields: their paths are checked as the fileKeys they become
    defaults: dict[str, Any]  # what an add leaves in each field it does not send
    min_lengths: tuple[tuple[str, int], ...]  # (code, minimum) of the fields that have one
    # The fast path (``_accepted``): each written field's rules compiled once, the fields whose
    # values only the generic path checks (tables, files), the required fields, and the fields
    # an add that leaves them out leaves too short. ``fast``: False when the defaults alone need
    # the generic path (a table given default rows).
    checkers: dict[str, Callable[[Any], Any]]
    generic_only: frozenset[str]
    required: tuple[str, ...]
    short_when_unsent: tuple[str, ...]
    unique: tuple[tuple[str, FieldDef], ...]
    fast: bool

    @classmethod
    def of(cls, schema: AppSchema) -> _Shape:
        fields = schema.fields
        defaults = {code: _default(f) for code, f in fields.items()}
        min_lengths = tuple((code, f.min_length) for code, f in fields.items() if f.min_length is not None)
        generic_only = frozenset(code for code, f in fields.items() if f.type in ("SUBTABLE", "FILE"))
        return cls(
            frozenset(code for code, f in fields.items() if f.type == "FILE"),
            defaults,
            min_lengths,
            {
                code: value_checker(f)
                for code, f in fields.items()
                if f.type != "CALC" and code not in generic_only and code not in RESERVED_RECORD_KEYS
            },
            generic_only,
            tuple(code for code, f in fields.items() if f.required),
            tuple(
                code
                for code, minimum in min_lengths
                if isinstance(defaults[code], str) and len(defaults[code]) < minimum
            ),
            tuple((code, f) for code, f in fields.items() if f.unique),
            not any(f.type == "SUBTABLE" and not is_empty(defaults[code]) for code, f in fields.items()),
        )


def _accepted(kind: str, record: Mapping[str, Any], shape: _Shape) -> dict[str, Any] | None:
    """Each written field's stored value when the compiled rules take the whole record as it
    is (what ``_record_problems``'s generic path would find no problem in, with the same stored
    values); None when the generic path must look at it (it finds and explains the problems)."""
    if not shape.fast:
        return None
    checkers, refused = shape.checkers, REFUSED
    stored: dict[str, Any] = {}
    for code, value in record.items():
        check = checkers.get(code)
        if check is None:
            if code in shape.generic_only:
                return None
            continue  # a reserved key, an unknown code (the loader's to report), a CALC field
        kept = check(value if type(value) is str else to_kintone_value(value)["value"])
        if kept is refused:
            return None
        stored[code] = kept
    if kind == "add":
        defaults = shape.defaults
        for code in shape.required:
            value = stored[code] if code in stored else defaults[code]
            if value is None or value == "" or value == []:  # fieldrules.is_empty, inlined
                return None
        for code in shape.short_when_unsent:
            if code not in stored:
                return None
    else:
        for code in shape.required:
            if code in stored and is_empty(stored[code]):
                return None
    return stored


def _accepted_columns(kind: str, chunk: Columns, shape: _Shape) -> dict[str, list[Any]] | None:
    """``_accepted`` for a run of records at once, a column at a time: per code, each record's
    stored value when the compiled rules take every record of the run whole (each as ``_accepted``
    would); None when any record needs a look of its own (``_accepted`` then sees each)."""
    if not shape.fast:
        return None
    checkers, refused = shape.checkers, REFUSED
    stored: dict[str, list[Any]] = {}
    for code, column in zip(chunk.codes, chunk.values, strict=True):
        check = checkers.get(code)
        if check is None:
            if code in shape.generic_only:
                return None
            continue  # a reserved key, an unknown code (the loader's to report), a CALC field
        kept = [check(v if type(v) is str else to_kintone_value(v)["value"]) for v in column]
        if any(k is refused for k in kept):
            return None
        stored[code] = kept
    if any(code in chunk.codes and code not in stored for code, _ in shape.unique):
        return None  # a unique value not normalised here: ``_RecordsPass.record`` normalises it
    if kind == "add":
        for code in shape.required:
            if code in stored:
                if any(v is None or v == "" or v == [] for v in stored[code]):  # fieldrules.is_empty
                    return None
            elif is_empty(shape.defaults[code]):
                return None
        if any(code not in stored for code in shape.short_when_unsent):
            return None
    else:
        for code in shape.required:
            if code in stored and any(is_empty(v) for v in stored[code]):
                return None
    return stored


def _record_problems(
    kind: str, record: Mapping[str, Any], schema: AppSchema, shape: _Shape
) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    """``record_problems``, and each written field's stored value (the unique indexes read them)."""
    accepted = _accepted(kind, record, shape)
    if accepted is not None:
        return [], accepted
    return _generic_problems(kind, record, schema, shape)


def _generic_problems(
    kind: str, record: Mapping[str, Any], schema: AppSchema, shape: _Shape
) -> tuple[list[tuple[str, str | None]], dict[str, Any]]:
    """``_record_problems`` by ``normalize`` itself, value by value: every problem found and
    explained."""
    fields = schema.fields
    written = {
        # a text value (every CSV cell) is its own {"value": ...}: to_kintone_record's result
        code: (
            {"value": v}
            if type(v) is str and code not in shape.files
            else to_kintone_value(as_uploaded(v) if code in shape.files else v)
        )
        for code, v in record.items()
        if code not in RESERVED_RECORD_KEYS
    }
    problems = Problems()
    stored: dict[str, Any] = {}
    for code, raw in written.items():
        f = fields.get(code)
        if f is None or f.type == "CALC":
            continue  # an unknown code is the loader's to report; CALC is never written
        stored[code] = normalize(f, raw, f"{_PREFIX}.{code}", problems)
        if f.type == "SUBTABLE":
            _silently_blank(f, raw, stored[code], problems)
    if kind == "add":
        complete = {
            code: _completed(f, stored[code]) if code in stored else shape.defaults[code]
            for code, f in fields.items()
        }
        check_required(schema, complete, _PREFIX, problems)
        for code, minimum in shape.min_lengths:  # Kintone checks a minimum length on add even unsent
            value = complete[code]
            if code not in stored and isinstance(value, str) and len(value) < minimum:
                problems.add(f"{_PREFIX}.{code}.value", f"Enter at least {minimum} characters.")
    else:
        check_required(
            schema,
            {code: _completed(fields[code], v) for code, v in stored.items()},
            _PREFIX,
            problems,
            only=set(stored),
        )
    if not problems:
        return [], stored
    return [_explain(k, messages["messages"], written, schema) for k, messages in problems.items()], stored


def _silently_blank(f: FieldDef, raw: Any, stored: Any, problems: Problems) -> None:
    """Inside a table Kintone stores "" for a NUMBER it cannot read, without an error: a value
    lost. The validator refuses it."""
    rows = raw.get("value") if isinstance(raw, dict) else None
    if not isinstance(rows, list) or not isinstance(stored, list):
        return
    for i, (row, kept) in enumerate(zip(rows, stored, strict=False)):
        cells = row.get("value") if isinstance(row, dict) else None
        if not isinstance(cells, dict):
            continue
        for code, cell in cells.items():
            sub = f.fields.get(code)
            written = cell.get("value") if isinstance(cell, dict) else None
            if (
                sub is not None
                and sub.type == "NUMBER"
                and not is_empty(written)
                and kept["value"].get(code) == ""
            ):
                problems.add(
                    f"{_PREFIX}.{f.code}.value[{i}].value.{code}.value",
                    "Only numbers are allowed (in a table Kintone would store an empty value instead).",
                )


def _completed(f: FieldDef, value: Any) -> Any:
    """A table's rows with every column, as ``check_required`` reads them."""
    if f.type != "SUBTABLE" or not isinstance(value, list):
        return value
    return [
        {
            "value": {
                code: {"value": row["value"][code] if code in row["value"] else _default(sub)}
                for code, sub in f.fields.items()
            }
        }
        for row in value
    ]


def _default(f: FieldDef) -> Any:
    """What an add leaves in a field it does not send (the moment itself: a non-empty mark)."""
    if f.default_now:
        return "now"
    return f.default if f.default is not None else empty_value(f.type)


def _explain(
    key: str, messages: list[str], written: Mapping[str, Any], schema: AppSchema
) -> tuple[str, str | None]:
    """Kintone's error key and messages -> a sentence naming the field and the value, and a hint."""
    code, row, column = _parse_key(key)
    f = schema.fields.get(code)
    value: Any = (written.get(code) or {}).get("value")
    name = f"field `{code}`"
    if f is not None and row is not None and column is not None:
        f = f.fields.get(column)
        cells = value[row].get("value", {}) if isinstance(value, list) and row < len(value) else {}
        value = (cells.get(column) or {}).get("value") if isinstance(cells, dict) else None
        name = f"table `{code}` row {row + 1}, column `{column}`"
    ftype = f.type if f is not None else "?"
    said = " ".join(messages)
    if said == "Required.":
        return (
            f"{name} ({ftype}) is required and {'empty' if code in written else 'not given'}: "
            "Kintone refuses the record",
            f"give `{column or code}` a value",
        )
    shown = f" = {value!r}" if value is not None else ""
    hint = _FORMAT_HINTS.get(ftype)
    if f is not None and f.options:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v not in f.options]
        guess = _guess(str(bad[0]), list(f.options)) if bad else ""
        hint = f"use the options exactly as the app spells them: {', '.join(f.options)}{guess}"
    elif "characters" in said:
        hint = "shorten the value, or change the field's length limit in the app"
    elif "or more" in said or "or less" in said:
        hint = "keep the value within the field's bounds, or change them in the app"
    return f"{name} ({ftype}){shown}: {said}", hint


def _parse_key(key: str) -> tuple[str, int | None, str | None]:
    """``record.lines.value[2].value.qty.value`` -> ("lines", 2, "qty"); ``record[amount].value``
    -> ("amount", None, None)."""
    rest = key[len(_PREFIX) :]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0], None, None
    rest = rest.lstrip(".")
    code, _, tail = rest.partition(".")
    if tail.startswith("value[") and "].value." in tail:
        number, _, cell = tail[len("value[") :].partition("].value.")
        column = cell.split(".", 1)[0].split("[", 1)[0]
        if number.isdigit():
            return code, int(number), column
    return code, None, None


# ---- helpers --------------------------------------------------------------------------------


class _OperationErrors:
    """Collects one operation's problems, at most ``MAX_ERRORS_PER_OPERATION`` of them."""

    def __init__(self, out: list[ChangesetError], cs: LoadedChangeset, index: int, detail: str, report: bool):
        self.out, self.cs, self.index, self.detail, self.report = out, cs, index, detail, report
        self.count = 0
        self.seen: set[tuple[str, Location | None]] = set()  # one report per problem and place

    def add(self, message: str, *, hint: str | None = None, at: Location | None = None) -> None:
        if not self.report or (message, at) in self.seen:
            return
        self.seen.add((message, at))
        self.count += 1
        if self.count > MAX_ERRORS_PER_OPERATION:
            return
        where = at or self.cs.location(self.index)
        if where.detail is None or where.detail == self.cs.operations[self.index].kind:
            where = Location(
                file=where.file,
                line=where.line,
                changeset=where.changeset,
                operation=where.operation,
                record=where.record,
                detail=self.detail,
            )
        self.out.append(ChangesetError(message, location=where, hint=hint))

    def close(self) -> None:
        if self.count > MAX_ERRORS_PER_OPERATION:
            self.out.append(
                ChangesetError(
                    f"{self.count - MAX_ERRORS_PER_OPERATION} more problems in this operation not shown",
                    location=self.cs.location(self.index),
                    hint="fix the ones shown and run `kmigrate validate` again",
                )
            )


def _chunks_of(body: _RecordsOp) -> Iterator[tuple[int, Columns | list[tuple[int | None, Any]]]]:
    """(position of its first record, chunk) for the records of a records operation: a data
    file's by column where the loader kept them so (``Columns``), others as (line, record) pairs."""
    if body.records is not None:
        yield 0, [(None, record) for record in body.records]
        return
    source = body.source
    if source is None:
        return
    chunks = getattr(source, "chunks", None)
    position = 0
    for chunk in chunks() if chunks is not None else _thousands(source):
        yield position, chunk
        position += len(chunk)


def _thousands(source: Iterable[tuple[int | None, Any]]) -> Iterator[list[tuple[int | None, Any]]]:
    """A source of another kind (without ``chunks``), streamed a thousand records at a time."""
    pairs = iter(source)
    while chunk := list(itertools.islice(pairs, 1000)):
        yield chunk


def _location(
    cs: LoadedChangeset, index: int, kind: str, body: _RecordsOp, position: int, line: int | None
) -> Location:
    """Where a record of ``_chunks_of`` was written."""
    if body.records is not None:
        return cs.location(index, position)
    return Location(
        file=body.source.path,
        line=line,
        changeset=cs.id,
        operation=index + 1,
        record=position + 1,
        detail=kind,
    )


def _status_targets(body: StatusOp) -> Iterator[tuple[Any, str, str | None]]:
    """(record or ref, action, assignee) for each record a status operation names."""
    records = body.records
    if isinstance(records, RefIds):
        assert body.action is not None  # the model requires it without per-record actions
        yield records, body.action, body.assignee
        return
    for item in records:
        if isinstance(item, StatusRecord):
            action = item.action or body.action
            assert action is not None
            yield item.id, action, item.assignee or body.assignee
        else:
            assert body.action is not None
            yield item, body.action, body.assignee


def _process_of(schema: AppSchema, app: object, what: str, errors: _OperationErrors) -> ProcessDef | None:
    """The app's enabled process; None, reported, when it has none."""
    if schema.enabled_process is None:
        errors.add(
            f"app {app} has no process management enabled{_in(schema)}: Kintone refuses {what} on it (GAIA_ST02)",
            hint="enable process management in the app, or remove the operation",
        )
    return schema.enabled_process


def _guess(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _in(schema: AppSchema) -> str:
    return f" (per {schema.source})" if schema.source else ""


def _place(where: Location) -> str:
    text = f"{where.file}:{where.line}" if where.line else str(where.file)
    if where.record:
        text += f" (record {where.record})"
    return text
