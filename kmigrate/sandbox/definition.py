"""The sandbox file: which apps the embedded Kintone hosts, their fields and their process.

Field definitions take Kintone's own shape (the ``properties`` of ``GET app/form/fields.json``)
or a shorthand; process management takes the body of ``GET app/status.json`` or a shorthand.
Both are turned into the frozen dataclasses below, which the rest of the sandbox reads.
Everything here is pure: parsing a dict, raising ``SandboxDefinitionError`` on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import Location, SandboxDefinitionError

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
# view, add, edit and delete records, and "manage" (app management: needed by record/assignees.json).
TOKEN_PERMISSIONS = ("view", "add", "edit", "delete", "manage")
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


@dataclass(frozen=True)
class AppDef:
    id: int
    name: str
    code: str = ""
    description: str = ""
    guest_space_id: int | None = None
    tokens: Mapping[str, frozenset[str]] | None = None  # None: the app takes any request
    fields: Mapping[str, FieldDef] = field(default_factory=dict)  # user fields, file order
    system: Mapping[str, FieldDef] = field(default_factory=dict)  # system type -> its field
    layout: Mapping[str, FieldDef] = field(default_factory=dict)  # GROUP / REFERENCE_TABLE
    process: ProcessDef | None = None
    form_layout: tuple[Mapping[str, Any], ...] | None = None  # layout.json's rows; None: one row per field
    views: Mapping[str, Mapping[str, Any]] | None = None  # views.json's views; None: one list view

    @property
    def process_enabled(self) -> bool:
        return self.enabled_process is not None

    @property
    def enabled_process(self) -> ProcessDef | None:
        """The process when management is on, else None."""
        return self.process if self.process is not None and self.process.enable else None

    def system_code(self, system_type: str) -> str:
        return self.system[system_type].code

    def query_options(self) -> dict[str, tuple[str, ...]]:
        """Choice field code (tables included) -> its options, and the status field -> the states:
        a query naming anything else is GAIA_IQ10, as in Kintone."""
        every = [*self.fields.values(), *(sub for f in self.fields.values() for sub in f.fields.values())]
        options = {f.code: f.options for f in every if f.options}
        process = self.enabled_process
        if process is not None:
            options[self.system_code("STATUS")] = tuple(s.name for s in process.states)
        return options

    def field_types(self) -> dict[str, str]:
        """Field code -> type for the query language: every field a query may name."""
        types: dict[str, str] = {"$id": "__ID__", "$revision": "__REVISION__"}
        for f in self.fields.values():
            types[f.code] = f.type
            for sub in f.fields.values():
                types.setdefault(sub.code, sub.type)
        for system_type, f in self.system.items():
            if system_type in ("STATUS", "STATUS_ASSIGNEE") and not self.process_enabled:
                continue
            if system_type == "CATEGORY":
                continue
            types[f.code] = f.type
        return types


@dataclass(frozen=True)
class SandboxDefinition:
    apps: Mapping[int, AppDef]
    source: Path | None = None
    directory: Directory | None = None  # None: any user, group or organization code is taken


@dataclass(frozen=True)
class Directory:
    """The users, groups and organizations the file declares: code -> display name."""

    users: Mapping[str, str]
    groups: Mapping[str, str]
    organizations: Mapping[str, str]

    def of(self, field_type: str) -> Mapping[str, str]:
        """The codes a field type takes (USER_SELECT: users, GROUP_SELECT: groups, ...)."""
        if field_type == "GROUP_SELECT":
            return self.groups
        if field_type == "ORGANIZATION_SELECT":
            return self.organizations
        return self.users


# --------------------------------------------------------------------------------------------


def parse_definition(data: Any, source: Path | str | None = None) -> SandboxDefinition:
    """The parsed sandbox YAML -> ``SandboxDefinition``; every problem names the file and app."""
    where = Location(file=source) if source is not None else None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SandboxDefinitionError(
            "the sandbox file must be a mapping with an `apps:` list", location=where
        )
    unknown = set(data) - {"apps", "directory"}
    if unknown:
        raise SandboxDefinitionError(
            f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}", location=where
        )
    raw_apps = data.get("apps") or []
    if not isinstance(raw_apps, list):
        raise SandboxDefinitionError("`apps:` must be a list of apps", location=where)
    apps: dict[int, AppDef] = {}
    for position, raw in enumerate(raw_apps, 1):
        app = _parse_app(raw, position, source)
        if app.id in apps:
            raise SandboxDefinitionError(f"app id {app.id} is defined twice", location=where)
        apps[app.id] = app
    for app in apps.values():
        problem = lookup_problem(app, apps)
        if problem is not None:
            raise SandboxDefinitionError(
                problem, location=Location(file=source, detail=f"app {app.id} ({app.name})")
            )
    try:
        directory = _parse_directory(data.get("directory"))
    except _Problem as exc:
        raise SandboxDefinitionError(str(exc), location=where) from None
    if directory is not None:
        for app in apps.values():
            for state in app.process.states if app.process else ():
                unknown_users = [u for u in state.assignees if u not in directory.users]
                if unknown_users:
                    raise SandboxDefinitionError(
                        f"process state {state.name!r}: assignee(s) {', '.join(unknown_users)} are not "
                        "users of the directory",
                        location=Location(file=source, detail=f"app {app.id} ({app.name})"),
                    )
    return SandboxDefinition(
        apps=apps, source=Path(source) if source is not None else None, directory=directory
    )


def _parse_directory(raw: Any) -> Directory | None:
    """``directory: {users: [alice, {code: bob, name: Bob Smith}], groups: [...], organizations: [...]}``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"users", "groups", "organizations"}:
        raise _Problem("`directory` takes `users`, `groups` and `organizations` (lists of codes)")

    def entries(key: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for item in raw.get(key) or []:
            if isinstance(item, str) and item:
                found[item] = item
            elif isinstance(item, Mapping) and isinstance(item.get("code"), str) and item["code"]:
                found[item["code"]] = str(item.get("name") or item["code"])
            else:
                raise _Problem(f"directory {key}: give a code or {{code, name}}, not {item!r}")
        return found

    return Directory(entries("users"), entries("groups"), entries("organizations"))


def lookup_problem(app: AppDef, apps: Mapping[int, AppDef]) -> str | None:
    """What is wrong with the app's lookups given the apps around it, or None."""
    tables = [f for f in app.fields.values() if f.type == "SUBTABLE"]
    # A lookup copies into fields beside it: the app's, or its own table row's.
    places = [(app.fields, f) for f in app.fields.values()] + [
        (t.fields, c) for t in tables for c in t.fields.values()
    ]
    for beside, f in places:
        lookup = f.lookup
        if lookup is None:
            continue
        related = apps.get(lookup.related_app)
        if related is None:
            return f"field {f.code!r}: the lookup's related app {lookup.related_app} is not in the sandbox"
        codes = {*related.fields, *(s.code for s in related.system.values())}
        if lookup.key_field not in codes:
            return f"field {f.code!r}: the related app {related.id} has no key field {lookup.key_field!r}"
        for mine, theirs in lookup.mappings:
            if mine not in beside:
                where = "the app" if beside is app.fields else "its table"
                return f"field {f.code!r}: the lookup copies into {mine!r}, which is not a field of {where}"
            if theirs not in codes:
                return f"field {f.code!r}: the related app {related.id} has no field {theirs!r} to copy"
    return None


def _parse_lookup(where: str, ftype: str, raw: Any) -> LookupDef | None:
    if raw is None:
        return None
    if ftype not in ("SINGLE_LINE_TEXT", "NUMBER"):
        raise _Problem(f"{where}: only a SINGLE_LINE_TEXT or NUMBER field can be a lookup")
    related = raw.get("relatedApp") if isinstance(raw, Mapping) else None
    app_id = related.get("app") if isinstance(related, Mapping) else None
    key = raw.get("relatedKeyField") if isinstance(raw, Mapping) else None
    if not (isinstance(app_id, (int, str)) and str(app_id).isdigit() and isinstance(key, str) and key):
        raise _Problem(
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
            raise _Problem(f"{where}: each lookup fieldMapping needs `field` and `relatedField`")
        mappings.append((m["field"], m["relatedField"]))
    return LookupDef(int(app_id), key, tuple(mappings))


class _Problem(Exception):
    """A definition problem before we know how to name where it is."""


def parse_app(raw: Any, source: Path | str | None = None) -> AppDef:
    """One app in the sandbox file's shape (``{id, name, properties, ...}``) -> ``AppDef``; the
    admin API builds created apps with it, so they obey the same rules as the file's."""
    return _parse_app(raw, 1, source)


def _parse_app(raw: Any, position: int, source: Path | str | None) -> AppDef:
    def fail(message: str, detail: str | None = None) -> SandboxDefinitionError:
        return SandboxDefinitionError(
            message, location=Location(file=source, detail=detail or f"app #{position}")
        )

    if not isinstance(raw, Mapping):
        raise fail("each app must be a mapping with at least `id` and `name`")
    known = {
        "id",
        "name",
        "code",
        "description",
        "guest_space_id",
        "api_tokens",
        "fields",
        "properties",
        "process",
        "layout",
        "views",
    }
    unknown = set(raw) - known
    if unknown:
        raise fail(
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(known))}"
        )
    app_id = raw.get("id")
    if not isinstance(app_id, int) or isinstance(app_id, bool) or app_id <= 0:
        raise fail(f"`id` must be a positive integer, not {app_id!r}")
    label = f"app {app_id}" + (f" ({raw['name']})" if raw.get("name") else "")
    guest = raw.get("guest_space_id")
    if guest is not None and (not isinstance(guest, int) or isinstance(guest, bool) or guest <= 0):
        raise fail(f"`guest_space_id` must be a positive integer, not {guest!r}", label)
    try:
        tokens = _parse_tokens(raw.get("api_tokens"))
        if "fields" in raw and "properties" in raw:
            raise _Problem("give `fields` or `properties` (Kintone's shape), not both")
        fields, system, layout = _parse_fields(raw.get("fields", raw.get("properties")) or {})
        process = _parse_process(raw.get("process"))
        form_layout = _parse_form_layout(raw.get("layout"), fields, system, layout)
        views = _parse_views(raw.get("views"))
    except _Problem as exc:
        raise fail(str(exc), label) from None
    return AppDef(
        id=app_id,
        name=str(raw.get("name") or f"App {app_id}"),
        code=str(raw.get("code") or ""),
        description=str(raw.get("description") or ""),
        guest_space_id=guest,
        tokens=tokens,
        fields=fields,
        system=system,
        layout=layout,
        process=process,
        form_layout=form_layout,
        views=views,
    )


_ROW_TYPES = ("ROW", "SUBTABLE", "GROUP")
_DECORATION_TYPES = ("LABEL", "SPACER", "HR")


def _parse_form_layout(
    raw: Any, fields: Mapping[str, FieldDef], system: Mapping[str, FieldDef], groups: Mapping[str, FieldDef]
) -> tuple[Mapping[str, Any], ...] | None:
    """``layout:`` is the ``layout`` array of ``GET app/form/layout.json``; every field it places must exist."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _Problem("`layout` must be the `layout` list of app/form/layout.json")
    known = {*fields, *groups, *(f.code for f in system.values())}
    known |= {sub for f in fields.values() for sub in f.fields}

    def check_row(row: Any, where: str) -> None:
        if not isinstance(row, Mapping) or row.get("type") not in _ROW_TYPES:
            raise _Problem(f"layout: {where} must be a mapping with type ROW, SUBTABLE or GROUP")
        if row["type"] in ("SUBTABLE", "GROUP") and row.get("code") not in known:
            raise _Problem(f"layout: {where} names {row.get('code')!r}, which is not a field of the app")
        if row["type"] == "GROUP":
            for j, inner in enumerate(row.get("layout") or []):
                check_row(inner, f"{where}, row {j + 1} of group {row['code']!r}")
            return
        for cell in row.get("fields") or []:
            if not isinstance(cell, Mapping) or not isinstance(cell.get("type"), str):
                raise _Problem(f"layout: {where} has a field without `type`")
            if cell["type"] not in _DECORATION_TYPES and cell.get("code") not in known:
                raise _Problem(
                    f"layout: {where} places {cell.get('code')!r}, which is not a field of the app"
                )

    for i, row in enumerate(raw):
        check_row(row, f"row {i + 1}")
    return tuple(raw)


def _parse_views(raw: Any) -> Mapping[str, Mapping[str, Any]] | None:
    """``views:`` is the ``views`` object of ``GET app/views.json``; ids and indexes may be left out."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _Problem("`views` must be the `views` mapping of app/views.json (name -> view)")
    views: dict[str, Mapping[str, Any]] = {}
    for index, (name, view) in enumerate(raw.items()):
        if not isinstance(view, Mapping):
            raise _Problem(f"views: {name!r} must be a mapping")
        if view.get("type", "LIST") not in ("LIST", "CALENDAR", "CUSTOM"):
            raise _Problem(f"views: {name!r}: type must be LIST, CALENDAR or CUSTOM")
        defaults: dict[str, Any] = {
            "type": "LIST",
            "name": str(name),
            "id": str(index + 1),
            "index": str(index),
        }
        if view.get("type", "LIST") == "LIST":
            defaults.update(fields=[], filterCond="", sort="")
        views[str(name)] = {**defaults, **view}
    return views


def _parse_tokens(raw: Any) -> dict[str, frozenset[str]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _Problem("`api_tokens` must be a list of tokens or {token, permissions} mappings")
    tokens: dict[str, frozenset[str]] = {}
    for item in raw:
        if isinstance(item, str) and item:
            tokens[item] = frozenset(TOKEN_PERMISSIONS)
        elif isinstance(item, Mapping) and isinstance(item.get("token"), str) and item["token"]:
            perms = item.get("permissions", list(TOKEN_PERMISSIONS))
            if not isinstance(perms, list) or not set(perms) <= set(TOKEN_PERMISSIONS):
                raise _Problem(
                    f"api token permissions must be a list of {', '.join(TOKEN_PERMISSIONS)}; got {perms!r}"
                )
            tokens[item["token"]] = frozenset(perms)
        else:
            raise _Problem(
                f"api token {item!r}: give a string, or {{token: ..., permissions: [view, add, edit, delete]}}"
            )
    if len(tokens) > 20:
        raise _Problem("Kintone allows at most 20 API tokens per app")
    return tokens


def _parse_fields(raw: Any) -> tuple[dict[str, FieldDef], dict[str, FieldDef], dict[str, FieldDef]]:
    if not isinstance(raw, Mapping):
        raise _Problem("`fields` must be a mapping of field code -> definition")
    fields: dict[str, FieldDef] = {}
    system: dict[str, FieldDef] = {}
    layout: dict[str, FieldDef] = {}
    for code, spec in raw.items():
        f = _parse_field(str(code), spec, in_table=False)
        if f is None:
            continue
        if f.type in SYSTEM_TYPES:
            if f.type in system:
                raise _Problem(f"field {code!r}: a second {f.type} field (an app has one)")
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
        raise _Problem(
            f"field code(s) used twice: {', '.join(sorted(dupes))} (codes are unique across the app, tables included)"
        )
    return fields, system, layout


_FIELD_KEYS = {
    "type",
    "code",
    "label",
    "noLabel",
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
    "enabled",
    "digit",
    "displayScale",
    "unit",
    "unitPosition",
    "expression",
    "hideExpression",
    "format",
    "protocol",
    "entities",
    "align",
    "lookup",
    "referenceTable",
    "openGroup",
    "thumbnailSize",
    "size",
}


def _parse_field(code: str, spec: Any, *, in_table: bool) -> FieldDef | None:
    if isinstance(spec, str):  # `title: SINGLE_LINE_TEXT`
        spec = {"type": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise _Problem(f"field {code!r}: give a mapping with at least `type`")
    ftype = spec["type"].upper()
    where = f"field {code!r}"
    unknown = set(spec) - _FIELD_KEYS
    if unknown:
        raise _Problem(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if "code" in spec and str(spec["code"]) != code:
        raise _Problem(f"{where}: `code: {spec['code']}` differs from its key")
    if ftype in IGNORED_TYPES:
        return None
    known_types = WRITABLE_TYPES | READ_ONLY_TYPES | LAYOUT_TYPES | set(SYSTEM_TYPES)
    if ftype not in known_types:
        raise _Problem(f"{where}: unknown type {ftype!r}; known: {', '.join(sorted(known_types))}")
    if in_table and ftype not in (WRITABLE_TYPES | READ_ONLY_TYPES) - {"SUBTABLE"}:
        raise _Problem(f"{where}: a {ftype} field cannot be a table column")
    options = _parse_options(where, spec.get("options")) if ftype in OPTION_TYPES else ()
    if ftype in OPTION_TYPES and not options:
        raise _Problem(f"{where}: a {ftype} field needs `options`")
    subfields: dict[str, FieldDef] = {}
    if ftype == "SUBTABLE":
        raw_sub = spec.get("fields")
        if not isinstance(raw_sub, Mapping) or not raw_sub:
            raise _Problem(f"{where}: a SUBTABLE needs `fields:` (its columns)")
        for sub_code, sub_spec in raw_sub.items():
            sub = _parse_field(str(sub_code), sub_spec, in_table=True)
            if sub is not None:
                subfields[sub.code] = sub
    unique = _bool(where, spec, "unique")
    if unique and ftype not in ("SINGLE_LINE_TEXT", "NUMBER", "LINK", "DATE", "DATETIME", "TIME"):
        raise _Problem(f"{where}: `unique` is not available for a {ftype} field")
    if unique and in_table:
        raise _Problem(f"{where}: a table column cannot be unique")
    fdef = FieldDef(
        code=code,
        type=ftype,
        label=str(spec.get("label") or code),
        required=_bool(where, spec, "required"),
        unique=unique,
        options=options,
        default=_parse_default(where, ftype, spec.get("defaultValue"), options),
        default_now=_bool(where, spec, "defaultNowValue"),
        min_value=_decimal(where, spec, "minValue"),
        max_value=_decimal(where, spec, "maxValue"),
        min_length=_int(where, spec, "minLength"),
        max_length=_int(where, spec, "maxLength"),
        fields=subfields,
        lookup=_parse_lookup(where, ftype, spec.get("lookup")),
        extra={
            k: v
            for k, v in spec.items()
            if k
            in (
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
            )
        },
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
                raise _Problem(f"{where}: option {item[0]!r} has a bad index") from None

        return tuple(str(label) for label, _ in sorted(raw.items(), key=index))
    if raw is None:
        return ()
    raise _Problem(
        f"{where}: `options` must be a list of labels or Kintone's {{label: {{label, index}}}} mapping"
    )


def _parse_default(where: str, ftype: str, raw: Any, options: tuple[str, ...]) -> Any:
    if raw is None or raw == "" or raw == []:
        return None
    if ftype in ("CHECK_BOX", "MULTI_SELECT"):
        values = raw if isinstance(raw, list) else [raw]
        bad = [v for v in values if str(v) not in options]
        if bad:
            raise _Problem(f"{where}: default value(s) {bad!r} are not among the options")
        return [str(v) for v in values]
    if ftype in ("USER_SELECT", "ORGANIZATION_SELECT", "GROUP_SELECT"):
        values = raw if isinstance(raw, list) else [raw]
        codes = [v.get("code") if isinstance(v, Mapping) else v for v in values]
        return [{"code": str(c), "name": str(c)} for c in codes if c]
    if ftype in ("DROP_DOWN", "RADIO_BUTTON") and str(raw) not in options:
        raise _Problem(f"{where}: default value {raw!r} is not among the options")
    if isinstance(raw, (list, Mapping)):
        raise _Problem(f"{where}: `defaultValue` must be a single value for a {ftype} field")
    return str(raw)


def _bool(where: str, spec: Mapping[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if isinstance(value, str) and value.lower() in ("true", "false"):  # Kintone's export writes "true"
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise _Problem(f"{where}: `{key}` must be true or false, not {value!r}")
    return value


def _decimal(where: str, spec: Mapping[str, Any], key: str) -> Decimal | None:
    value = spec.get(key)
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise _Problem(f"{where}: `{key}` must be a number, not {value!r}") from None


def _int(where: str, spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        raise _Problem(f"{where}: `{key}` must be an integer, not {value!r}") from None


def _parse_process(raw: Any) -> ProcessDef | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _Problem("`process` must be a mapping with `states` and `actions`")
    unknown = set(raw) - {"enable", "states", "actions", "revision"}
    if unknown:
        raise _Problem(f"process: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
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
        raise _Problem("process: `states` must be a list of names or Kintone's {name: {...}} mapping")
    for position, (name, spec) in enumerate(items):
        if not name or name == "None":
            raise _Problem(f"process: state #{position + 1} has no name")
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise _Problem(f"process: state {name!r} must be a name or a mapping")
        try:
            index = int(spec.get("index", position))
        except (TypeError, ValueError):
            raise _Problem(f"process: state {name!r} has a bad index") from None
        assignee = spec.get("assignee") or {}
        if not isinstance(assignee, Mapping):
            raise _Problem(
                f"process: state {name!r}: `assignee` must be {{type: ONE|ALL|ANY, entities: [...]}}"
            )
        atype = str(assignee.get("type", "ONE")).upper()
        if atype not in ASSIGNEE_TYPES:
            raise _Problem(
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
                raise _Problem(f"process: state {name!r}: bad assignee entity {entity!r}")
        states.append(StateDef(name=name, index=index, assignee_type=atype, assignees=tuple(logins)))
    names = [s.name for s in states]
    if len(set(names)) != len(names):
        raise _Problem("process: a state name is used twice")
    actions: list[ActionDef] = []
    for action in raw.get("actions") or []:
        if not isinstance(action, Mapping) or not all(
            isinstance(action.get(k), str) for k in ("name", "from", "to")
        ):
            raise _Problem(f"process: action {action!r} needs `name`, `from` and `to`")
        for end in ("from", "to"):
            if action[end] not in names:
                raise _Problem(f"process: action {action['name']!r}: `{end}: {action[end]}` is not a state")
        actions.append(
            ActionDef(action["name"], action["from"], action["to"], str(action.get("filterCond") or ""))
        )
    enable = raw.get("enable", True)
    if not isinstance(enable, bool):
        raise _Problem("process: `enable` must be true or false")
    if enable and not states:
        raise _Problem("process: an enabled process needs at least one state")
    return ProcessDef(enable=enable, states=tuple(states), actions=tuple(actions))
