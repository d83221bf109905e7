"""An app's definition as data: its fields and its process, in Kintone's own shapes.

One home for reading them, for every place that needs them: the embedded sandbox builds its
apps from them (``sandbox/definition.py``), and the validator (``appcheck``) checks changesets
against them, whether they came from the sandbox file, from a real Kintone (``GET
app/form/fields.json`` and ``app/status.json``) or from a schema file ``sandbox pull`` saved.
Field definitions take Kintone's shape (the ``properties`` of ``app/form/fields.json``) or a
shorthand; process management the body of ``app/status.json`` or a shorthand. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

# Types whose value a record carries and a client may write.
# Types whose value a record carries and a client may write.
WRITABLE_TYPES = frozenset(
    {
        "SINGLE_LINE_TEXT",
        "MULTI_LINE_TEXT",
        "RICH_TEXT",
        "LINK",
        "NUMBER",
        "DROP_DOWN",
        "RADIO_BUTTON",
        "CHECK_BOX",
        "MULTI_SELECT",
        "DATE",
        "TIME",
        "DATETIME",
        "USER_SELECT",
        "ORGANIZATION_SELECT",
        "GROUP_SELECT",
        "FILE",
        "SUBTABLE",
    }
)
# Types a record carries but no record API writes (CALC is never computed by the sandbox: it reads "").
READ_ONLY_TYPES = frozenset({"CALC"})
# System fields: one per app, present whether or not the file mentions them.
SYSTEM_TYPES = (
    "RECORD_NUMBER",
    "CREATOR",
    "CREATED_TIME",
    "MODIFIER",
    "UPDATED_TIME",
    "STATUS",
    "STATUS_ASSIGNEE",
    "CATEGORY",
)
# Kintone's default codes for the system fields (an English-language app).
DEFAULT_SYSTEM_CODES = {
    "RECORD_NUMBER": "Record_number",
    "CREATOR": "Created_by",
    "CREATED_TIME": "Created_datetime",
    "MODIFIER": "Updated_by",
    "UPDATED_TIME": "Updated_datetime",
    "STATUS": "Status",
    "STATUS_ASSIGNEE": "Assignee",
    "CATEGORY": "Categories",
}
# Only in fields.json, never in a record.
LAYOUT_TYPES = frozenset({"GROUP", "REFERENCE_TABLE"})
# Only in the form layout: accepted and ignored so a full export can be dropped in.
IGNORED_TYPES = frozenset({"LABEL", "SPACER", "HR"})

OPTION_TYPES = frozenset({"DROP_DOWN", "RADIO_BUTTON", "CHECK_BOX", "MULTI_SELECT"})
LENGTH_TYPES = frozenset({"SINGLE_LINE_TEXT", "LINK"})
ASSIGNEE_TYPES = ("ONE", "ALL", "ANY")


@dataclass(frozen=True)
class FieldDef:
    code: str
    type: str
    label: str
    required: bool = False
    unique: bool = False
    options: tuple[str, ...] = ()
    default: Any = None  # in the read shape; None = the type's empty value
    default_now: bool = False
    min_value: Decimal | None = None
    max_value: Decimal | None = None
    min_length: int | None = None
    max_length: int | None = None
    fields: Mapping[str, FieldDef] = field(default_factory=dict)  # SUBTABLE columns
    extra: Mapping[str, Any] = field(default_factory=dict)  # other Kintone keys, echoed by fields.json
    lookup: LookupDef | None = None


@dataclass(frozen=True)
class LookupDef:
    """Kintone's ``lookup`` of a text or number field: find the related app's record whose key
    field holds the value, and copy its fields into this record."""

    related_app: int
    key_field: str
    mappings: tuple[tuple[str, str], ...]  # (this app's field, the related app's field)


@dataclass(frozen=True)
class StateDef:
    name: str
    index: int
    assignee_type: str = "ONE"
    assignees: tuple[str, ...] = ()  # login names


@dataclass(frozen=True)
class ActionDef:
    name: str
    from_: str
    to: str
    filter_cond: str = ""


@dataclass(frozen=True)
class ProcessDef:
    enable: bool
    states: tuple[StateDef, ...]
    actions: tuple[ActionDef, ...]

    def state(self, name: str) -> StateDef | None:
        return next((s for s in self.states if s.name == name), None)

    def target(self, action: ActionDef) -> StateDef:
        """The state an action leads to (parsing made sure it exists)."""
        return next(s for s in self.states if s.name == action.to)

    @property
    def initial(self) -> StateDef:
        return min(self.states, key=lambda s: s.index)


class SchemaProblem(Exception):
    """A definition problem before we know how to name where it is."""


def _parse_lookup(where: str, ftype: str, raw: Any) -> LookupDef | None:
    if raw is None:
        return None
    if ftype not in ("SINGLE_LINE_TEXT", "NUMBER"):
        raise SchemaProblem(f"{where}: only a SINGLE_LINE_TEXT or NUMBER field can be a lookup")
    related = raw.get("relatedApp") if isinstance(raw, Mapping) else None
    app_id = related.get("app") if isinstance(related, Mapping) else None
    key = raw.get("relatedKeyField") if isinstance(raw, Mapping) else None
    if not (isinstance(app_id, (int, str)) and str(app_id).isdigit() and isinstance(key, str) and key):
        raise SchemaProblem(
            f"{where}: `lookup` takes Kintone's shape: {{relatedApp: {{app: ID}}, relatedKeyField: CODE, "
            "fieldMappings: [{field, relatedField}]}"
        )
    mappings = []
    for m in raw.get("fieldMappings") or []:
        if (
            not isinstance(m, Mapping)
            or not isinstance(m.get("field"), str)
            or not isinstance(m.get("relatedField"), str)
        ):
            raise SchemaProblem(f"{where}: each lookup fieldMapping needs `field` and `relatedField`")
        mappings.append((m["field"], m["relatedField"]))
    return LookupDef(int(app_id), key, tuple(mappings))


def parse_fields(raw: Any) -> tuple[dict[str, FieldDef], dict[str, FieldDef], dict[str, FieldDef]]:
    if not isinstance(raw, Mapping):
        raise SchemaProblem("`fields` must be a mapping of field code -> definition")
    fields: dict[str, FieldDef] = {}
    system: dict[str, FieldDef] = {}
    layout: dict[str, FieldDef] = {}
    for code, spec in raw.items():
        f = _parse_field(str(code), spec, in_table=False)
        if f is None:
            continue
        if f.type in SYSTEM_TYPES:
            if f.type in system:
                raise SchemaProblem(f"field {code!r}: a second {f.type} field (an app has one)")
            system[f.type] = f
        elif f.type in LAYOUT_TYPES:
            layout[f.code] = f
        else:
            fields[f.code] = f
    for system_type in SYSTEM_TYPES:
        if system_type not in system:
            code = DEFAULT_SYSTEM_CODES[system_type]
            system[system_type] = FieldDef(code=code, type=system_type, label=code.replace("_", " "))
    every = [*fields, *(f.code for f in system.values())]
    for f in fields.values():
        every.extend(f.fields)
    dupes = {c for c in every if every.count(c) > 1}
    if dupes:
        raise SchemaProblem(
            f"field code(s) used twice: {', '.join(sorted(dupes))} (codes are unique across the app, tables included)"
        )
    return fields, system, layout


# Kintone's keys kmigrate does not read itself, echoed back by fields.json as they were given.
_ECHOED_KEYS = frozenset(
    {
        "noLabel",
        "digit",
        "displayScale",
        "unit",
        "unitPosition",
        "expression",
        "hideExpression",
        "format",
        "protocol",
        "align",
        "lookup",
        "referenceTable",
        "openGroup",
        "thumbnailSize",
        "entities",
        "enabled",
    }
)
_READ_KEYS = frozenset(
    {
        "type",
        "code",
        "label",
        "required",
        "unique",
        "options",
        "defaultValue",
        "defaultNowValue",
        "minValue",
        "maxValue",
        "minLength",
        "maxLength",
        "fields",
        "size",  # accepted (an export has it), not echoed
    }
)
_FIELD_KEYS = _READ_KEYS | _ECHOED_KEYS
N = TypeVar("N", Decimal, int)


def _parse_field(code: str, spec: Any, *, in_table: bool) -> FieldDef | None:
    if isinstance(spec, str):  # `title: SINGLE_LINE_TEXT`
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise SchemaProblem(f"field {code!r}: give a mapping with at least `type`")
    ftype = spec["type"].upper()
    where = f"field {code!r}"
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise SchemaProblem(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if "code" in spec and str(spec["code"]) != code:
        raise SchemaProblem(f"{where}: `code: {spec['code']}` differs from its key")
    if ftype in IGNORED_TYPES:
        return None
    known_types = WRITABLE_TYPES | READ_ONLY_TYPES | LAYOUT_TYPES | set(SYSTEM_TYPES)
    if ftype not in known_types:
        raise SchemaProblem(f"{where}: unknown type {ftype!r}; known: {', '.join(sorted(known_types))}")
    if in_table and ftype not in (WRITABLE_TYPES | READ_ONLY_TYPES) - {"SUBTABLE"}:
        raise SchemaProblem(f"{where}: a {ftype} field cannot be a table column")
    options = _parse_options(where, spec.get("options")) if ftype in OPTION_TYPES else ()
    if ftype in OPTION_TYPES and not options:
        raise SchemaProblem(f"{where}: a {ftype} field needs `options`")
    subfields: dict[str, FieldDef] = {}
    if ftype == "SUBTABLE":
        raw_sub = spec.get("fields")
        if not isinstance(raw_sub, Mapping) or not raw_sub:
            raise SchemaProblem(f"{where}: a SUBTABLE needs `fields:` (its columns)")
        for sub_code, sub_spec in raw_sub.items():
            sub = _parse_field(str(sub_code), sub_spec, in_table=True)
            if sub is not None:
                subfields[sub.code] = sub
    unique = _bool(where, spec, "unique")
    if unique and ftype not in ("SINGLE_LINE_TEXT", "NUMBER", "LINK", "DATE", "DATETIME", "TIME"):
        raise SchemaProblem(f"{where}: `unique` is not available for a {ftype} field")
    if unique and in_table:
        raise SchemaProblem(f"{where}: a table column cannot be unique")
    fdef = FieldDef(
        code=code,
        type=ftype,
        label=str(spec.get("label") or code),
        required=_bool(where, spec, "required"),
        unique=unique,
        options=options,
        default=_parse_default(where, ftype, spec.get("defaultValue"), options),
        default_now=_bool(where, spec, "defaultNowValue"),
        min_value=_number(where, spec, "minValue", Decimal, "a number"),
        max_value=_number(where, spec, "maxValue", Decimal, "a number"),
        min_length=_number(where, spec, "minLength", int, "an integer"),
        max_length=_number(where, spec, "maxLength", int, "an integer"),
        fields=subfields,
        lookup=_parse_lookup(where, ftype, spec.get("lookup")),
        extra={k: v for k, v in spec.items() if k in _ECHOED_KEYS},
    )
    if ftype == "RADIO_BUTTON" and fdef.default is None:
        # Kintone always selects a radio button: the first option unless told otherwise.
        fdef = FieldDef(**{**fdef.__dict__, "default": options[0]})
    return fdef


def _parse_options(where: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list):
        return tuple(str(o) for o in raw)
    if isinstance(raw, Mapping):  # Kintone's {label: {label, index}}

        def index(item: tuple[Any, Any]) -> int:
            value = item[1]
            try:
                return int(value.get("index", 0)) if isinstance(value, Mapping) else 0
            except (TypeError, ValueError):
                raise SchemaProblem(f"{where}: option {item[0]!r} has a bad index") from None

        return tuple(str(label) for label, _ in sorted(raw.items(), key=index))
    if raw is None:
        return ()
    raise SchemaProblem(
        f"{where}: `options` must be a list of labels or Kintone's {{label: {{label, index}}}} mapping"
    )


def _parse_default(where: str, ftype: str, raw: Any, options: tuple[str, ...]) -> Any:
    if raw is None or raw == "" or raw == []:
        return None
    if ftype in ("CHECK_BOX", "MULTI_SELECT"):
        values = raw if isinstance(raw, list) else [raw]
        bad = [v for v in values if str(v) not in options]
        if bad:
            raise SchemaProblem(f"{where}: default value(s) {bad!r} are not among the options")
        return [str(v) for v in values]
    if ftype in ("USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT"):
        values = raw if isinstance(raw, list) else [raw]
        codes = [v.get("code") if isinstance(v, Mapping) else v for v in values]
        return [{"code": str(c), "name": str(c)} for c in codes if c]
    if ftype in ("DROP_DOWN", "RADIO_BUTTON") and str(raw) not in options:
        raise SchemaProblem(f"{where}: default value {raw!r} is not among the options")
    if isinstance(raw, (list, Mapping)):
        raise SchemaProblem(f"{where}: `defaultValue` must be a single value for a {ftype} field")
    return str(raw)


def _bool(where: str, spec: Mapping[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # Kintone's export writes "true"
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise SchemaProblem(f"{where}: `{key}` must be true or false, not {value!r}")
    return value


def _number(where: str, spec: Mapping[str, Any], key: str, parse: Callable[[str], N], what: str) -> N | None:
    """``spec[key]`` read by ``parse`` (``Decimal`` or ``int``); None when absent or empty (as
    Kintone's export writes an unset bound)."""
    value = spec.get(key)
    if value is None or value == "":
        return None
    try:
        return parse(str(value))
    except (ValueError, InvalidOperation):
        raise SchemaProblem(f"{where}: `{key}` must be {what}, not {value!r}") from None


def parse_process(raw: Any) -> ProcessDef | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise SchemaProblem("`process` must be a mapping with `states` and `actions`")
    unknown = set(raw) - {"enable", "states", "actions", "revision"}
    if unknown:
        raise SchemaProblem(f"process: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    raw_states = raw.get("states") or []
    states: list[StateDef] = []
    if isinstance(raw_states, Mapping):  # app/status.json: {name: {name, index, assignee}}
        items = [(str(name), spec) for name, spec in raw_states.items()]
    elif isinstance(raw_states, list):
        items = [
            (str(s), None)
            if isinstance(s, str)
            else (str(s.get("name")) if isinstance(s, Mapping) else "", s)
            for s in raw_states
        ]
    else:
        raise SchemaProblem("process: `states` must be a list of names or Kintone's {name: {...}} mapping")
    for position, (name, spec) in enumerate(items):
        if not name or name == "None":
            raise SchemaProblem(f"process: state #{position + 1} has no name")
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise SchemaProblem(f"process: state {name!r} must be a name or a mapping")
        try:
            index = int(spec.get("index", position))
        except (TypeError, ValueError):
            raise SchemaProblem(f"process: state {name!r} has a bad index") from None
        assignee = spec.get("assignee") or {}
        if not isinstance(assignee, Mapping):
            raise SchemaProblem(
                f"process: state {name!r}: `assignee` must be {{type: ONE|ALL|ANY, entities: [...]}}"
            )
        atype = str(assignee.get("type", "ONE")).upper()
        if atype not in ASSIGNEE_TYPES:
            raise SchemaProblem(
                f"process: state {name!r}: assignee type must be one of {', '.join(ASSIGNEE_TYPES)}"
            )
        logins: list[str] = []
        for entity in assignee.get("entities") or []:
            if isinstance(entity, str):
                logins.append(entity)
            elif isinstance(entity, Mapping):
                inner = entity.get("entity", entity)
                # Only users by login name; groups, departments and field entities need a
                # directory the sandbox does not have.
                if (
                    isinstance(inner, Mapping)
                    and str(inner.get("type", "USER")).upper() == "USER"
                    and inner.get("code")
                ):
                    logins.append(str(inner["code"]))
            else:
                raise SchemaProblem(f"process: state {name!r}: bad assignee entity {entity!r}")
        states.append(StateDef(name=name, index=index, assignee_type=atype, assignees=tuple(logins)))
    names = [s.name for s in states]
    if len(set(names)) != len(names):
        raise SchemaProblem("process: a state name is used twice")
    actions: list[ActionDef] = []
    for action in raw.get("actions") or []:
        if not isinstance(action, Mapping) or not all(
            isinstance(action.get(k), str) for k in ("name", "from", "to")
        ):
            raise SchemaProblem(f"process: action {action!r} needs `name`, `from` and `to`")
        for end in ("from", "to"):
            if action[end] not in names:
                raise SchemaProblem(
                    f"process: action {action['name']!r}: `{end}: {action[end]}` is not a state"
                )
        actions.append(
            ActionDef(action["name"], action["from"], action["to"], str(action.get("filterCond") or ""))
        )
    enable = raw.get("enable", True)
    if not isinstance(enable, bool):
        raise SchemaProblem("process: `enable` must be true or false")
    if enable and not states:
        raise SchemaProblem("process: an enabled process needs at least one state")
    return ProcessDef(enable=enable, states=tuple(states), actions=tuple(actions))


# ---- one app as the validator sees it -------------------------------------------------------


@dataclass(frozen=True)
class AppSchema:
    """One app's definition, handed to the validator as data: its user fields, its system
    fields (type -> field) and its process. ``source`` says where it came from, for messages
    (``sandbox.yaml``, ``https://example.cybozu.com``, a schema file)."""

    fields: Mapping[str, FieldDef]
    system: Mapping[str, FieldDef] = field(default_factory=dict)
    process: ProcessDef | None = None
    source: str = ""

    @property
    def enabled_process(self) -> ProcessDef | None:
        return self.process if self.process is not None and self.process.enable else None

    @classmethod
    def from_kintone(
        cls, properties: Mapping[str, Any], status: Mapping[str, Any] | None = None, source: str = ""
    ) -> AppSchema:
        """From the ``properties`` of ``GET app/form/fields.json`` and the body of ``GET
        app/status.json``, as Kintone answers them. Raises ``SchemaProblem``."""
        fields, system, _layout = parse_fields(properties)
        process = parse_process(
            {k: v for k, v in status.items() if k in ("enable", "states", "actions", "revision")}
            if status is not None
            else None
        )
        return cls(fields=fields, system=system, process=process, source=source)

    def known_fields(self) -> dict[str, frozenset[str]]:
        """Field code -> its subtable's column codes (empty for other fields), system fields
        included: what the loader checks a record's codes against."""
        codes = {code: frozenset(f.fields) for code, f in self.fields.items()}
        codes.update({f.code: frozenset() for f in self.system.values()})
        return codes
