"""The sandbox file: which apps the embedded Kintone hosts, their fields and their process.

Fields and process are read by ``kmigrate.appschema`` (their one home, shared with the
validator); this module adds what only the embedded Kintone has: app ids, guest spaces, API
tokens, lookups between apps, the directory, the form layout and views. Everything here is
pure: parsing a dict, raising ``SandboxDefinitionError`` on bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import yamlio
from ..appschema import (  # noqa: F401 - re-exported: the sandbox's modules read them from here
    ASSIGNEE_TYPES,
    DEFAULT_SYSTEM_CODES,
    IGNORED_TYPES,
    LAYOUT_TYPES,
    LENGTH_TYPES,
    OPTION_TYPES,
    READ_ONLY_TYPES,
    SYSTEM_TYPES,
    WRITABLE_TYPES,
    ActionDef,
    FieldDef,
    LookupDef,
    ProcessDef,
    SchemaProblem,
    StateDef,
    parse_fields,
    parse_process,
)
from ..errors import Location, SandboxDefinitionError
from ..paths import MB, read_project_file

# view, add, edit and delete records, and "manage" (app management: needed by record/assignees.json).
TOKEN_PERMISSIONS = ("view", "add", "edit", "delete", "manage")
_Problem = SchemaProblem  # a definition problem before we know how to name where it is


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
        fields, system, layout = parse_fields(raw.get("fields", raw.get("properties")) or {})
        process = parse_process(raw.get("process"))
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


# Here, not in service.py: `validate`, `plan` and a no-op `apply` read the file without
# importing the sandbox's server side.
MAX_DEFINITION_BYTES = 16 * MB


def read_definition(
    path: Path,
    *,
    project_root: Path | None = None,
    max_bytes: int = MAX_DEFINITION_BYTES,
    max_chars: int = yamlio.DEFAULT_MAX_CHARS,
) -> SandboxDefinition:
    """The sandbox file parsed; bounded in size and in YAML expansion (a pull request may
    change it), and confined to the project when ``project_root`` is given."""
    try:
        if project_root is not None:
            raw = read_project_file(
                project_root, path, what="the sandbox file", max_bytes=max_bytes, error=SandboxDefinitionError
            )
        else:
            raw = path.read_bytes()
        data = yamlio.safe_load(raw.decode("utf-8-sig"), max_chars)
    except OSError as exc:
        raise SandboxDefinitionError(
            f"cannot read the sandbox file: {exc.strerror or exc}",
            location=Location(file=path),
            hint='check the path (`sandbox = "FILE"` in kmigrate.toml, or --file)',
        ) from None
    except UnicodeDecodeError:
        raise SandboxDefinitionError(
            "not UTF-8 text; save it as UTF-8", location=Location(file=path)
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SandboxDefinitionError(
            f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
            location=Location(file=path, line=mark.line + 1 if mark else None),
        ) from None
    return parse_definition(data, path)
