"""The Kintone REST API over the record store: one method per endpoint, no HTTP.

``Api.handle(Call)`` runs one API call and returns the success body, or raises ``ApiError``
carrying Kintone's error code, message, ``errors`` and HTTP status. Every write runs in a
store transaction, so a call is atomic; a bulk request wraps its calls in one more, so the bulk
is all-or-nothing. Behaviour follows docs/kintone-api.md; where that text marks a fact
[UNCERTAIN], the choice made here says so in a comment.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..fieldrules import actions_from, assignee_problem, assignees_problem, update_key_problem
from .calls import (
    ApiError,
    Auth,
    Call,
    bool_param,
    int_param,
    invalid,
    invalid_param,
    list_param,
    not_found,
    optional_int_param,
    optional_str_param,
    revision_param,
    str_param,
)
from .definition import AppDef, Directory, FieldDef, ProcessDef
from .fields import (
    ENTITY_TYPES,
    Problems,
    check_required,
    default_value,
    field_properties,
    merge_table,
    normalize,
    now_utc,
    render_record,
)
from .files import Files
from .forms import form_layout, views
from .lookups import LookupNotFound, fill_lookups, fill_table_lookups
from .query import DEFAULT_LIMIT, Query, QueryError, parse_query
from .store import Store, StoredRecord

ENTITY_NOUNS = {"USER_SELECT": "a user", "ORGANIZATION_SELECT": "an organization", "GROUP_SELECT": "a group"}
MAX_WRITE = 100
MAX_BULK = 20
MAX_TOKENS = 9
MAX_CURSORS = 10
CURSOR_LIFETIME = 600.0  # seconds
MAX_CURSOR_SIZE = 500
DEFAULT_CURSOR_SIZE = 100

API_PATH = re.compile(r"^/k/(?:guest/(?P<guest>\d+)/)?v1/(?P<name>[A-Za-z/]+)\.json$")

# The eight APIs a bulk request may carry (kintone-api.md §1.2).
BULK_APIS = frozenset(
    {
        ("POST", "record"),
        ("POST", "records"),
        ("PUT", "record"),
        ("PUT", "records"),
        ("DELETE", "records"),
        ("PUT", "record/status"),
        ("PUT", "records/status"),
        ("PUT", "record/assignees"),
    }
)


class BulkFailure(ApiError):
    """A bulk request whose inner request ``index`` failed: everything was rolled back (under
    ``bulk_semantics="prefix"``, only the failing request and the ones after it)."""

    def __init__(self, index: int, count: int, inner: ApiError):
        super().__init__(inner.status, inner.code, inner.message, inner.errors)
        self.index = index
        self.count = count
        self.inner = inner

    def body(self) -> dict[str, Any]:
        results: list[dict[str, Any]] = [{} for _ in range(self.count)]
        results[self.index] = self.inner.body()
        return {"results": results}


@dataclass
class _Cursor:
    app: int
    records: list[dict[str, Any]]
    size: int
    position: int = 0
    expires: float = 0.0


def _check_revision(record: StoredRecord, expected: int | None) -> None:
    # GAIA_CO02 / 409: OBSERVED-3P/UNCERTAIN in kintone-api.md §2.5; followed as recommended.
    if expected is not None and expected != record.revision:
        raise ApiError(
            409,
            "GAIA_CO02",
            "The revision is not the latest. Someone may have updated the record after you opened it. "
            f"(record ID: {record.id}, expected revision {expected}, current {record.revision})",
        )


def _check_repeated(record_id: int, seen: set[int]) -> None:
    if record_id in seen:
        raise ApiError(
            400, "GAIA_RE09", f"The record (ID: {record_id}) is specified more than once in the request."
        )
    seen.add(record_id)


def _key_fields(app: AppDef) -> frozenset[str]:
    """The fields a query may be answered for from the unique index: unique text fields that no
    lookup copies into (the index follows the values a write sends; a lookup's copy is not one)."""
    copied = {mine for f in app.fields.values() if f.lookup for mine, _ in f.lookup.mappings}
    return frozenset(
        code
        for code, f in app.fields.items()
        if f.unique and f.type in ("SINGLE_LINE_TEXT", "LINK") and code not in copied
    )


# -- the API -------------------------------------------------------------------------------


BULK_SEMANTICS = ("atomic", "prefix")


class Api:
    def __init__(
        self,
        apps: Mapping[int, AppDef],
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        bulk_semantics: str = "atomic",
        directory: Directory | None = None,
    ):
        if bulk_semantics not in BULK_SEMANTICS:
            raise ValueError(
                f"bulk_semantics must be one of {', '.join(BULK_SEMANTICS)}, not {bulk_semantics!r}"
            )
        # "atomic": a failed bulk rolls back whole (Kintone's reference). "prefix": the requests
        # before the failing one stay committed (a widely copied description; see docs/sandbox.md).
        self.bulk_semantics = bulk_semantics
        self.directory = directory
        self.apps = apps  # id -> live app: the sandbox file's and those created through the admin API
        self.files = Files(store)
        self.store = store
        self.clock = clock
        self.today: Callable[[], str] = lambda: datetime.now(UTC).date().isoformat()  # the counter's day
        self.cursors: dict[str, _Cursor] = {}
        # (method, name) -> (handler, writes?)
        self.routes: dict[tuple[str, str], tuple[Callable[[Call], dict[str, Any]], bool]] = {
            ("GET", "record"): (self.get_record, False),
            ("POST", "record"): (self.add_record, True),
            ("PUT", "record"): (self.update_record, True),
            ("GET", "records"): (self.get_records, False),
            ("POST", "records"): (self.add_records, True),
            ("PUT", "records"): (self.update_records, True),
            ("DELETE", "records"): (self.delete_records, True),
            ("PUT", "record/status"): (self.update_status, True),
            ("PUT", "records/status"): (self.update_statuses, True),
            ("PUT", "record/assignees"): (self.update_assignees, True),
            ("POST", "records/cursor"): (self.create_cursor, False),
            ("GET", "records/cursor"): (self.get_cursor, False),
            ("DELETE", "records/cursor"): (self.delete_cursor, False),
            ("GET", "app"): (self.get_app, False),
            ("GET", "app/form/fields"): (self.get_fields, False),
            ("GET", "app/status"): (self.get_status_settings, False),
            ("GET", "app/form/layout"): (self.get_layout, False),
            ("GET", "app/views"): (self.get_views, False),
            # The bulk opens its own transaction: under "prefix" semantics it commits a prefix.
            ("POST", "bulkRequest"): (self.bulk_request, False),
        }
        # file.json is served by the WSGI layer (multipart in, bytes out); other methods are 405.
        self.known_names = {name for _, name in self.routes} | {"file"}

    def count(self, call: Call) -> None:
        """One more request today for each app the call names (a bulk: each app it touches once),
        as Kintone's per-app daily limit counts them; outside the call's own transaction."""
        raw: list[Any] = [call.params.get("id" if call.name == "app" else "app")]
        if call.name == "bulkRequest":
            requests = call.params.get("requests")
            payloads = (
                [r.get("payload") for r in requests if isinstance(r, dict)]
                if isinstance(requests, list)
                else []
            )
            raw = [p.get("app") for p in payloads if isinstance(p, dict)]
        apps: set[int] = set()
        for value in raw:
            try:
                app_id = int(value)
            except (TypeError, ValueError):
                continue
            if app_id in self.apps:
                apps.add(app_id)
        if apps:
            self.store.count_requests(self.today(), sorted(apps))

    def add_routes(
        self, routes: Mapping[tuple[str, str], tuple[Callable[[Call], dict[str, Any]], bool]]
    ) -> None:
        self.routes.update(routes)
        self.known_names |= {name for _, name in routes}

    def rebuild_uniques(self) -> None:
        """Unique values from the records, for every app's unique fields (on open, after a deploy)."""
        self.store.rebuild_uniques(
            {app.id: [c for c, f in app.fields.items() if f.unique] for app in self.apps.values()}
        )

    def handle(self, call: Call) -> dict[str, Any]:
        route = self.routes.get((call.method, call.name))
        if route is None:
            # Codes CB_NF01 / CB_ME01 are the sandbox's own: Kintone's answer to an unknown
            # path was not captured.
            if call.name in self.known_names:
                raise ApiError(405, "CB_ME01", f"{call.method} is not supported by /k/v1/{call.name}.json.")
            raise ApiError(
                404,
                "CB_NF01",
                f"The API /k/v1/{call.name}.json does not exist (or the sandbox does not provide it).",
            )
        handler, writes = route
        if not writes:
            return handler(call)
        with self.store.transaction():
            return handler(call)

    # -- apps and permissions ------------------------------------------------------------------

    def app(self, call: Call, *permissions: str, key: str = "app") -> AppDef:
        app_id = int_param(call.params.get(key), key)
        app = self.apps.get(app_id)
        if app is None:
            raise ApiError(
                404, "GAIA_AP01", f"The app (ID: {app_id}) not found. The app may have been deleted."
            )
        if app.guest_space_id != call.guest:
            if call.guest is None:
                raise ApiError(
                    400,
                    "GAIA_IL23",
                    f"The app (ID: {app_id}) is in guest space {app.guest_space_id}: "
                    f"use /k/guest/{app.guest_space_id}/v1/ to reach it.",
                )
            raise ApiError(
                403,
                "CB_NO02",
                f"No privilege to proceed. (the app (ID: {app_id}) is not in guest space {call.guest})",
            )
        self._authorize(app, call.auth, permissions)
        return app

    @staticmethod
    def _authorize(app: AppDef, auth: Auth, permissions: tuple[str, ...]) -> None:
        if app.tokens is None or auth.password:  # users are whoever logs in, with every right
            return
        if not auth.tokens:
            raise ApiError(401, "CB_AU01", "Please login.")
        granted: set[str] = set()
        matched = False
        for token in auth.tokens:
            if token in app.tokens:
                matched = True
                granted |= app.tokens[token]
        if not matched:
            # GAIA_AP15: OBSERVED-3P, HTTP status UNCERTAIN; the sandbox answers 403.
            raise ApiError(403, "GAIA_AP15", f"The API token is not valid for the app (ID: {app.id}).")
        missing = [p for p in permissions if p not in granted]
        if missing:
            # GAIA_NO01 / 403: observed on real tenants (cli-kintone's e2e tests: a view-only
            # token adding records); the message is Kintone's, the reason in brackets ours.
            raise ApiError(
                403,
                "GAIA_NO01",
                "Using this API token, you cannot run the specified API. "
                f"(the token lacks the {', '.join(missing)} permission)",
            )

    # -- reads ---------------------------------------------------------------------------------

    def _render(self, app: AppDef, rec: StoredRecord) -> dict[str, Any]:
        return render_record(app, rec.id, rec.revision, rec.data)

    def get_record(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        record_id = int_param(call.params.get("id"), "id")
        rec = self.store.get(app.id, record_id)
        if rec is None:
            raise not_found(record_id)
        return {"record": self._render(app, rec)}

    def _select(
        self, app: AppDef, call: Call, query_text: Any, *, window: bool = False
    ) -> tuple[Query, list[dict[str, Any]]]:
        """The records the query selects, in its order; ``window``: only up to the end of its
        offset/limit window are needed (no total count)."""
        if query_text is not None and not isinstance(query_text, str):
            raise invalid_param("query", "Enter a string.")
        subtables = {sub: table.code for table in app.fields.values() for sub in table.fields}
        try:
            query = parse_query(
                query_text or "",
                app.field_types(),
                subtables=subtables,
                options=app.query_options(),
                login_user=call.auth.user,
            )
        except QueryError as exc:
            raise ApiError(exc.status, exc.code, exc.message, exc.errors) from None
        narrow = query.narrowing
        ids = narrow.allowed_ids()
        for code, values in narrow.keys:
            if code in _key_fields(app):
                found = self.store.unique_ids(app.id, code, values)
                if found is not None:
                    ids = sorted(found if ids is None else found.intersection(ids))
        if narrow.empty or (ids is not None and not ids):
            return query, []
        # Only the records the indexes allow are read and tested; in `$id` order they come
        # sorted already, and a window's end stops the reading.
        stored = self.store.select(
            app.id, narrow.id_low, narrow.id_high, ids, descending=narrow.id_order is not False
        )
        enough = None
        if window and narrow.id_order is not None:
            enough = (query.offset or 0) + (query.limit if query.limit is not None else DEFAULT_LIMIT)
        selected = []
        for rec in stored:
            record = self._render(app, rec)
            if query.matches(record):
                selected.append(record)
                if enough is not None and len(selected) >= enough:
                    break
        return query, selected if narrow.id_order is not None else query.sort(selected)

    @staticmethod
    def _only_fields(records: list[dict[str, Any]], codes: Any) -> list[dict[str, Any]]:
        if isinstance(codes, str):  # `fields=title` in a query string: one code
            codes = [codes]
        codes = list_param(codes, "fields", required=False)
        if not codes:
            return records
        wanted = [str(c) for c in codes]
        return [{code: rec[code] for code in wanted if code in rec} for rec in records]

    def get_records(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        try:
            window = not bool_param(call.params.get("totalCount"), "totalCount")
        except ApiError:
            window = False  # refused just below, after the query's own errors, as before
        query, selected = self._select(app, call, call.params.get("query"), window=window)
        total = bool_param(call.params.get("totalCount"), "totalCount")
        start = query.offset or 0
        size = query.limit if query.limit is not None else DEFAULT_LIMIT
        page = self._only_fields(selected[start : start + size], call.params.get("fields"))
        return {"records": page, "totalCount": str(len(selected)) if total else None}

    # -- cursors -------------------------------------------------------------------------------

    def _live_cursors(self) -> dict[str, _Cursor]:
        now = self.clock()
        for cursor_id in [c for c, cur in self.cursors.items() if cur.expires <= now]:
            del self.cursors[cursor_id]
        return self.cursors

    def create_cursor(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        size = optional_int_param(call.params.get("size"), "size") or DEFAULT_CURSOR_SIZE
        if not 1 <= size <= MAX_CURSOR_SIZE:
            raise invalid_param("size", f"Enter a value between 1 and {MAX_CURSOR_SIZE}.")
        query, selected = self._select(app, call, call.params.get("query"))
        if query.limit is not None or query.offset is not None:
            raise invalid_param("query", "limit and offset cannot be used in the query of a cursor.")
        if len(self._live_cursors()) >= MAX_CURSORS:
            # The code is UNCERTAIN (kintone-api.md §4.1 names no code); GAIA_TM12 / 400 is
            # what client libraries associate with "too many cursors".
            raise ApiError(
                400,
                "GAIA_TM12",
                f"The maximum number of cursors ({MAX_CURSORS}) has been reached. "
                "Read a cursor to its end or delete one first.",
            )
        cursor_id = str(uuid.uuid4())
        records = self._only_fields(selected, call.params.get("fields"))
        self.cursors[cursor_id] = _Cursor(app.id, records, size, expires=self.clock() + CURSOR_LIFETIME)
        return {"id": cursor_id, "totalCount": str(len(records))}

    def _cursor(self, call: Call) -> tuple[str, _Cursor]:
        cursor_id = str_param(call.params.get("id"), "id")
        cursor = self._live_cursors().get(cursor_id)
        if cursor is None:
            # Code and status UNCERTAIN (not captured); the sandbox answers GAIA_CN01 / 404.
            raise ApiError(404, "GAIA_CN01", f"The cursor (ID: {cursor_id}) does not exist or has expired.")
        return cursor_id, cursor

    def get_cursor(self, call: Call) -> dict[str, Any]:
        cursor_id, cursor = self._cursor(call)
        page = cursor.records[cursor.position : cursor.position + cursor.size]
        cursor.position += len(page)
        more = cursor.position < len(cursor.records)
        if more:
            # UNCERTAIN (kintone-api.md §4.1): a read restarts the 10-minute window.
            cursor.expires = self.clock() + CURSOR_LIFETIME
        else:
            del self.cursors[cursor_id]
        return {"records": page, "next": more}

    def delete_cursor(self, call: Call) -> dict[str, Any]:
        cursor_id, _ = self._cursor(call)
        del self.cursors[cursor_id]
        return {}

    # -- app settings --------------------------------------------------------------------------

    def get_app(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view", key="id")
        admin = {"code": "Administrator", "name": "Administrator"}
        return {
            "appId": str(app.id),
            "code": app.code,
            "name": app.name,
            "description": app.description,
            "spaceId": str(app.guest_space_id) if app.guest_space_id else None,
            "threadId": None,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "creator": admin,
            "modifiedAt": "2024-01-01T00:00:00.000Z",
            "modifier": admin,
        }

    def get_fields(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        return {"properties": field_properties(app), "revision": "1"}

    def get_layout(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        return {"layout": form_layout(app), "revision": "1"}

    def get_views(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        return {"views": views(app), "revision": "1"}

    def get_status_settings(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "view")
        process = app.process
        if process is None:
            return {"enable": False, "states": None, "actions": None, "revision": "1"}
        states = {
            s.name: {
                "name": s.name,
                "index": str(s.index),
                "assignee": {
                    "type": s.assignee_type,
                    "entities": [
                        {"entity": {"type": "USER", "code": login}, "includeSubs": False}
                        for login in s.assignees
                    ],
                },
            }
            for s in sorted(process.states, key=lambda s: s.index)
        }
        actions = [
            {"name": a.name, "from": a.from_, "to": a.to, "filterCond": a.filter_cond}
            for a in process.actions
        ]
        return {"enable": process.enable, "states": states, "actions": actions, "revision": "1"}

    # -- writes: shared ------------------------------------------------------------------------

    def _new_row_ids(self, app: AppDef) -> Callable[[], int]:
        return lambda: self.store.allocate_row_ids(app.id, 1)[0]

    def _values_from(
        self,
        app: AppDef,
        record: Any,
        prefix: str,
        problems: Problems,
        old: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], set[str]]:
        """A request's record -> (stored values after the write, codes the request sent)."""
        if record is None:
            record = {}
        if not isinstance(record, dict):
            problems.add(prefix, "Enter the record as an object of field codes.")
            return {}, set()
        values: dict[str, Any] = dict(old) if old is not None else {}
        sent: set[str] = set()
        for code, raw in record.items():
            f = app.fields.get(code)
            if f is None:
                if meta is not None:
                    self._system_value(app, code, raw, prefix, problems, meta)
                continue  # unknown and read-only codes are ignored, as Kintone does
            if f.type == "CALC":
                continue
            value = normalize(f, raw, f"{prefix}.{code}", problems)
            if f.type in ENTITY_TYPES and value is not None:
                value = self._known_entities(f.type, value, f"{prefix}.{code}.values.value", problems)
            if f.type == "FILE" and value is not None:
                value = self.files.attach(value, (old or {}).get(code))
            if f.type == "SUBTABLE" and value is not None:
                value = merge_table(f, value, (old or {}).get(code), self._new_row_ids(app))
                self._check_table_cells(f, value, (old or {}).get(code), f"{prefix}.{code}", problems)
            values[code] = value
            sent.add(code)
        if old is None:
            for code, f in app.fields.items():
                if code not in values and f.type != "CALC":
                    value = default_value(f)
                    values[code] = value
                    # Kintone checks a minimum length on create even when the field is not sent.
                    if f.min_length is not None and isinstance(value, str) and len(value) < f.min_length:
                        problems.add(f"{prefix}.{code}.value", f"Enter at least {f.min_length} characters.")
        return values, sent

    def _check_table_cells(
        self,
        table: FieldDef,
        rows: list[dict[str, Any]],
        old: list[dict[str, Any]] | None,
        key: str,
        problems: Problems,
    ) -> None:
        """The cells this call sent in FILE and entity columns: fileKeys checked against the
        row's files, entity codes against the directory (a kept cell is the stored one)."""
        columns = [
            code for code, sub in table.fields.items() if sub.type == "FILE" or sub.type in ENTITY_TYPES
        ]
        if not columns:
            return
        old_rows = {row["id"]: row["value"] for row in old or []}
        for i, row in enumerate(rows):
            before = old_rows.get(row["id"], {})
            for code in columns:
                cell = row["value"][code]
                held = before.get(code, {}).get("value")
                if cell["value"] is held:
                    continue
                if cell["type"] == "FILE":
                    cell["value"] = self.files.attach(cell["value"], held)
                else:
                    cell_key = f"{key}.value[{i}].value.{code}.values.value"
                    checked = self._known_entities(cell["type"], cell["value"], cell_key, problems)
                    cell["value"] = checked if checked is not None else cell["value"]

    def _lookups(
        self,
        app: AppDef,
        values: dict[str, Any],
        sent: set[str],
        auth: Auth,
        old: dict[str, Any] | None = None,
    ) -> None:
        def may_view(related: AppDef) -> bool:
            return self._may_view(related, auth)

        try:
            fill_lookups(app.fields, values, sent, self.apps, self.store, may_view)
            for code in sent:
                table = app.fields[code]
                if table.type == "SUBTABLE" and values.get(code) is not None:
                    old_rows = (old or {}).get(code)
                    fill_table_lookups(table, values[code], old_rows, self.apps, self.store, may_view)
        except LookupNotFound as exc:
            # GAIA_LO04 (OBSERVED-3P): the key is not in the related app, or the caller may not
            # view it. UNCERTAIN: several matches (Kintone's UI offers a choice); refused alike.
            raise ApiError(
                400,
                "GAIA_LO04",
                f'The value "{exc.value}" of the field "{exc.field}" is not found in the related app '
                f"(ID: {exc.related_app}), or you have no permission to view it."
                + (f" ({exc.matches} records match.)" if exc.matches > 1 else ""),
            ) from None

    def _may_view(self, related: AppDef, auth: Auth) -> bool:
        # With API tokens a lookup needs a token of the related app with view, too (Kintone):
        # the caller must be one who could read the related app itself.
        try:
            self._authorize(related, auth, ("view",))
        except ApiError:
            return False
        return True

    def _known_entities(
        self, field_type: str, value: list[dict[str, Any]], key: str, problems: Problems
    ) -> list[dict[str, Any]] | None:
        """With a directory, each code must be in it (its name is the directory's)."""
        if self.directory is None:
            return value
        known = self.directory.of(field_type)
        missing = [v["code"] for v in value if v["code"] not in known]
        for code in missing:
            # UNCERTAIN: Kintone's exact code and key for an unknown user were not captured;
            # CB_VA01 at the field's .values.value key, as for other bad entity values.
            problems.add(key, f'"{code}" is not {ENTITY_NOUNS[field_type]} of the directory.')
        return None if missing else [{"code": v["code"], "name": known[v["code"]]} for v in value]

    def known_user(self, login: str, key: str) -> None:
        if self.directory is not None and login not in self.directory.users:
            raise invalid_param(key, f'"{login}" is not a user of the directory.')

    def _system_value(
        self, app: AppDef, code: str, raw: Any, prefix: str, problems: Problems, meta: dict[str, Any]
    ) -> None:
        """On create Kintone lets the creator, modifier and their times be set (app admins)."""
        targets = {
            app.system_code("CREATOR"): "creator",
            app.system_code("MODIFIER"): "modifier",
            app.system_code("CREATED_TIME"): "created",
            app.system_code("UPDATED_TIME"): "updated",
        }
        slot = targets.get(code)
        if slot is None or not isinstance(raw, dict):
            return
        value = raw.get("value")
        if slot in ("creator", "modifier"):
            if isinstance(value, dict) and isinstance(value.get("code"), str) and value["code"]:
                if self.directory is not None and value["code"] not in self.directory.users:
                    problems.add(
                        f"{prefix}.{code}.value", f'"{value["code"]}" is not a user of the directory.'
                    )
                meta[slot] = value["code"]
            else:
                problems.add(f"{prefix}.{code}.value", 'Enter {"code": login name}.')
        else:
            moment = normalize(FieldDef(code, "DATETIME", code), raw, f"{prefix}.{code}", problems)
            if moment:
                meta[slot] = moment

    def _check_unique(
        self,
        app: AppDef,
        entries: list[tuple[str, int | None, dict[str, Any], set[str] | None]],
        problems: Problems,
    ) -> None:
        """entries: (error prefix, record id or None for a new one, values, codes sent or None=all)."""
        for code, f in app.fields.items():
            if not f.unique:
                continue
            wanted = [
                (index, prefix, rid, values[code])
                for index, (prefix, rid, values, sent) in enumerate(entries)
                if (sent is None or code in sent) and isinstance(values.get(code), str) and values[code] != ""
            ]
            if not wanted:
                continue
            owners = self.store.unique_owners(app.id, code, list({v for *_, v in wanted}))
            claimed: dict[str, object] = {}  # value -> the first entry of this call that claims it
            for index, prefix, rid, value in wanted:
                who = rid if rid is not None else ("new", index)
                owner = owners.get(value)
                if (owner is not None and owner != rid) or claimed.setdefault(value, who) != who:
                    problems.add(f"{prefix}.{code}.value", "This value already exists in another record.")

    def _unique_rows(
        self, app: AppDef, record_id: int, values: dict[str, Any], sent: set[str] | None
    ) -> list[tuple[str, str, int]]:
        return [
            (code, values.get(code) or "", record_id)
            for code, f in app.fields.items()
            if f.unique and (sent is None or code in sent)
        ]

    def _initial_process(self, app: AppDef) -> tuple[str | None, list[str]]:
        process = app.enabled_process
        if process is None:
            return None, []
        state = process.initial
        # A new record starts in the first state; its assignees are that state's candidates
        # (for ONE, only when there is exactly one candidate to choose).
        if state.assignee_type == "ONE":
            return state.name, list(state.assignees) if len(state.assignees) == 1 else []
        return state.name, list(state.assignees)

    def _insert(
        self, app: AppDef, call: Call, prepared: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> list[StoredRecord]:
        ids = self.store.allocate_ids(app.id, len(prepared))
        now = now_utc()
        status, assignees = self._initial_process(app)
        user = call.auth.user
        records = []
        unique_rows = []
        for record_id, (values, meta) in zip(ids, prepared, strict=False):
            data = {
                "values": values,
                "creator": meta.get("creator", user),
                "created": meta.get("created", now),
                "modifier": meta.get("modifier", meta.get("creator", user)),
                "updated": meta.get("updated", meta.get("created", now)),
                "status": status,
                "assignees": list(assignees),
            }
            records.append(StoredRecord(record_id, 1, data))
            unique_rows.extend(self._unique_rows(app, record_id, values, None))
        self.store.insert_many(app.id, records)
        if unique_rows:
            self.store.set_uniques(app.id, unique_rows, new=True)
        return records

    # -- writes: records -----------------------------------------------------------------------

    def _add(
        self, app: AppDef, call: Call, records: list[Any], prefix_of: Callable[[int], str]
    ) -> list[StoredRecord]:
        problems = Problems()
        prepared = []
        for i, record in enumerate(records):
            prefix = prefix_of(i)
            meta: dict[str, Any] = {}
            values, sent = self._values_from(app, record, prefix, problems, None, meta)
            self._lookups(app, values, sent, call.auth)
            check_required(app, values, prefix, problems)
            prepared.append((values, meta))
        self._check_unique(
            app, [(prefix_of(i), None, v, None) for i, (v, _) in enumerate(prepared)], problems
        )
        if problems:
            raise invalid(problems)
        return self._insert(app, call, prepared)

    def add_record(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "add")
        (rec,) = self._add(app, call, [call.params.get("record")], lambda i: "record")
        return {"id": str(rec.id), "revision": str(rec.revision)}

    def add_records(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "add")
        records = list_param(call.params.get("records"), "records")
        if not records or len(records) > MAX_WRITE:
            raise invalid_param(
                "records",
                f"A maximum of {MAX_WRITE} records can be added at one time."
                if records
                else "Required field.",
            )
        added = self._add(app, call, records, lambda i: f"records[{i}]")
        return {"ids": [str(r.id) for r in added], "revisions": [str(r.revision) for r in added]}

    def _update(
        self, app: AppDef, call: Call, items: list[Any], single: bool, upsert: bool
    ) -> list[tuple[StoredRecord, str]]:
        problems = Problems()
        seen: set[int] = set()
        plan: list[tuple[str, str, StoredRecord | None, dict[str, Any], set[str], dict[str, Any]]] = []
        for i, item in enumerate(items):
            head = "" if single else f"records[{i}]."
            record_prefix = "record" if single else f"records[{i}].record"
            if not isinstance(item, dict):
                raise invalid_param(f"records[{i}]", "Enter an object with id or updateKey, and record.")
            has_id, has_key = item.get("id") is not None, item.get("updateKey") is not None
            if has_id and has_key:
                raise invalid_param(f"{head}id", "Specify either id or updateKey, not both.")
            if not has_id and not has_key:
                raise invalid_param(f"{head}id", "Required field.")
            expected = revision_param(item.get("revision"), f"{head}revision")
            record = item.get("record")
            target: StoredRecord | None
            key_value: tuple[str, Any] | None = None
            if has_id:
                record_id = int_param(item["id"], f"{head}id")
                _check_repeated(record_id, seen)
                target = self.store.get(app.id, record_id)
                if target is None and not upsert:
                    raise not_found(record_id)
            else:
                key_code, key_raw = self._update_key(app, item["updateKey"], f"{head}updateKey")
                owner = self.store.unique_owner(app.id, key_code, key_raw)
                if owner is None and not upsert:
                    # GAIA_RE20: OBSERVED-3P; HTTP status not recorded, the sandbox answers 400.
                    raise ApiError(
                        400,
                        "GAIA_RE20",
                        "No records match the conditions specified in the updateKey field. "
                        f"({key_code} = {key_raw!r})",
                    )
                target = self.store.get(app.id, owner) if owner is not None else None
                if target is not None:
                    _check_repeated(target.id, seen)
                key_value = (key_code, key_raw)
            if target is not None:
                _check_revision(target, expected)
                values, sent = self._values_from(app, record, record_prefix, problems, target.data["values"])
                self._lookups(app, values, sent, call.auth, target.data["values"])
                check_required(app, values, record_prefix, problems, only=sent)
                plan.append(("UPDATE", record_prefix, target, values, sent, {}))
            else:
                # Upsert insert: a given id is ignored (a new id is assigned); an updateKey's
                # value becomes the new record's value of that field.
                if key_value is not None and isinstance(record, dict):
                    record = {**record, key_value[0]: {"value": key_value[1]}}
                elif key_value is not None and record is None:
                    record = {key_value[0]: {"value": key_value[1]}}
                meta: dict[str, Any] = {}
                values, sent = self._values_from(app, record, record_prefix, problems, None, meta)
                self._lookups(app, values, sent, call.auth)
                check_required(app, values, record_prefix, problems)
                plan.append(("INSERT", record_prefix, None, values, sent, meta))
        self._check_unique(
            app,
            [
                (prefix, rec.id if rec else None, values, sent if kind == "UPDATE" else None)
                for kind, prefix, rec, values, sent, _ in plan
            ],
            problems,
        )
        if problems:
            raise invalid(problems)
        now, user = now_utc(), call.auth.user
        results: list[tuple[StoredRecord, str]] = []
        updated: list[StoredRecord] = []
        unique_rows: list[tuple[str, str, int]] = []
        for _, _, rec, values, sent, meta in plan:
            if rec is not None:  # an UPDATE
                data = {**rec.data, "values": values, "modifier": user, "updated": now}
                new = StoredRecord(rec.id, rec.revision + 1, data)
                updated.append(new)
                unique_rows.extend(self._unique_rows(app, rec.id, values, sent))
                results.append((new, "UPDATE"))
            else:
                (new,) = self._insert(app, call, [(values, meta)])
                results.append((new, "INSERT"))
        self.store.update_many(app.id, updated)
        if unique_rows:
            self.store.set_uniques(app.id, unique_rows)
        return results

    @staticmethod
    def _update_key(app: AppDef, raw: Any, key: str) -> tuple[str, str]:
        if not isinstance(raw, dict) or not isinstance(raw.get("field"), str):
            raise invalid_param(f"{key}.field", "Required field.")
        code = raw["field"]
        f = app.fields.get(code)
        key_problem = update_key_problem(code, f)
        if key_problem is not None or f is None:
            raise invalid_param(f"{key}.field", key_problem or "")
        value = raw.get("value")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
            raise invalid_param(f"{key}.value", "Required field.")
        problems = Problems()
        text = normalize(f, {"value": value}, key, problems)
        if problems or text is None:
            raise invalid_param(
                f"{key}.value", "Only numbers are allowed." if f.type == "NUMBER" else "Enter a string."
            )
        return code, text

    def update_record(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "edit")
        params = call.params
        ((rec, _),) = self._update(
            app, call, [{k: params.get(k) for k in ("id", "updateKey", "revision", "record")}], True, False
        )
        return {"revision": str(rec.revision)}

    def update_records(self, call: Call) -> dict[str, Any]:
        upsert = bool_param(call.params.get("upsert"), "upsert")
        app = self.app(call, "edit", *(("add",) if upsert else ()))
        items = list_param(call.params.get("records"), "records")
        if not items or len(items) > MAX_WRITE:
            raise invalid_param(
                "records",
                f"A maximum of {MAX_WRITE} records can be updated at one time."
                if items
                else "Required field.",
            )
        results = self._update(app, call, items, False, upsert)
        if upsert:
            return {
                "records": [
                    {"id": str(r.id), "revision": str(r.revision), "operation": op} for r, op in results
                ]
            }
        return {"records": [{"id": str(r.id), "revision": str(r.revision)} for r, _ in results]}

    def delete_records(self, call: Call) -> dict[str, Any]:
        app = self.app(call, "delete")
        ids = list_param(call.params.get("ids"), "ids")
        if not 1 <= len(ids) <= MAX_WRITE:
            raise invalid_param("ids", f"Between 1 and {MAX_WRITE} records can be deleted at one time.")
        revisions = list_param(call.params.get("revisions"), "revisions", required=False)
        if revisions and len(revisions) != len(ids):
            raise invalid_param("revisions", "Give one revision per id, in the same order.")
        seen: set[int] = set()
        for i, raw_id in enumerate(ids):
            record_id = int_param(raw_id, f"ids[{i}]")
            _check_repeated(record_id, seen)
            rec = self.store.get(app.id, record_id)
            if rec is None:
                raise not_found(record_id)
            if revisions:
                _check_revision(rec, revision_param(revisions[i], f"revisions[{i}]"))
        self.store.delete_many(app.id, seen)
        return {}

    # -- writes: process management ------------------------------------------------------------

    def _process_app(self, call: Call, permission: str) -> tuple[AppDef, ProcessDef]:
        app = self.app(call, permission)
        process = app.enabled_process
        if process is None:
            # GAIA_ST02 / 400: OBSERVED-3P (kintone-api.md §3.4).
            raise ApiError(400, "GAIA_ST02", f"Process management is not enabled for the app (ID: {app.id}).")
        return app, process

    def _act(
        self, app: AppDef, process: ProcessDef, call: Call, item: Any, head: str, seen: set[int]
    ) -> StoredRecord:
        if not isinstance(item, dict):
            raise invalid_param(head.rstrip(".") or "record", "Enter an object with id and action.")
        record_id = int_param(item.get("id"), f"{head}id")
        action_name = str_param(item.get("action"), f"{head}action")
        assignee = optional_str_param(item.get("assignee"), f"{head}assignee")
        if assignee is not None:
            self.known_user(assignee, f"{head}assignee")
        expected = revision_param(item.get("revision"), f"{head}revision")
        _check_repeated(record_id, seen)
        rec = self.store.get(app.id, record_id)
        if rec is None:
            raise not_found(record_id)
        _check_revision(rec, expected)
        current = rec.data.get("status") or process.initial.name
        actions = actions_from(process, current, action_name)
        if len(actions) != 1:
            # GAIA_IL03 / 400 (kintone-api.md §3.4); also for an action name given twice on a state.
            raise ApiError(
                400,
                "GAIA_IL03",
                f"The action {action_name!r} cannot be taken from the status {current!r} "
                f"of the record (ID: {record_id}). The status or its settings may have been changed by someone.",
            )
        user = call.auth.user
        current_assignees = rec.data.get("assignees") or []
        if current_assignees and user not in current_assignees:
            raise ApiError(
                403,
                "CB_NO02",
                f"No privilege to proceed. (only the assignees {', '.join(current_assignees)} "
                f"can act on the record (ID: {record_id}); the caller is {user})",
            )
        nxt = process.target(actions[0])
        candidates = list(nxt.assignees)
        problem = assignee_problem(nxt, assignee)
        if problem is not None:
            if assignee is None:
                raise ApiError(400, "GAIA_SA01", problem)
            raise invalid_param(f"{head}assignee", problem)
        new_assignees = (
            [assignee] if assignee is not None and nxt.assignee_type == "ONE" and candidates else candidates
        )
        data = {
            **rec.data,
            "status": nxt.name,
            "assignees": new_assignees,
            "modifier": user,
            "updated": now_utc(),
        }
        # The action and the status change are two updates: revision + 2.
        new = StoredRecord(rec.id, rec.revision + 2, data)
        self.store.update_many(app.id, [new])
        return new

    def update_status(self, call: Call) -> dict[str, Any]:
        app, process = self._process_app(call, "view")
        params = call.params
        rec = self._act(
            app,
            process,
            call,
            {k: params.get(k) for k in ("id", "action", "assignee", "revision")},
            "",
            set(),
        )
        return {"revision": str(rec.revision)}

    def update_statuses(self, call: Call) -> dict[str, Any]:
        app, process = self._process_app(call, "view")
        items = list_param(call.params.get("records"), "records")
        if not items or len(items) > MAX_WRITE:
            raise invalid_param(
                "records",
                f"A maximum of {MAX_WRITE} records can be updated at one time."
                if items
                else "Required field.",
            )
        seen: set[int] = set()
        done = [self._act(app, process, call, item, f"records[{i}].", seen) for i, item in enumerate(items)]
        return {"records": [{"id": str(r.id), "revision": str(r.revision)} for r in done]}

    def update_assignees(self, call: Call) -> dict[str, Any]:
        app, process = self._process_app(call, "manage")
        record_id = int_param(call.params.get("id"), "id")
        assignees = list_param(call.params.get("assignees"), "assignees")
        if len(assignees) > MAX_WRITE:
            raise invalid_param("assignees", f"A maximum of {MAX_WRITE} assignees can be specified.")
        if not all(isinstance(a, str) and a for a in assignees):
            raise invalid_param("assignees", "Enter an array of login names.")
        expected = revision_param(call.params.get("revision"), "revision")
        rec = self.store.get(app.id, record_id)
        if rec is None:
            raise not_found(record_id)
        _check_revision(rec, expected)
        assignees = list(dict.fromkeys(assignees))
        for i, login in enumerate(assignees):
            self.known_user(login, f"assignees[{i}]")
        state = process.state(rec.data.get("status") or process.initial.name)
        problem = assignees_problem(state, assignees) if state is not None else None
        if problem is not None:
            # Its code is not documented, the sandbox answers CB_VA01.
            raise invalid_param("assignees", problem)
        data = {**rec.data, "assignees": assignees, "modifier": call.auth.user, "updated": now_utc()}
        new = StoredRecord(rec.id, rec.revision + 1, data)
        self.store.update_many(app.id, [new])
        return {"revision": str(new.revision)}

    # -- bulk ----------------------------------------------------------------------------------

    def bulk_request(self, call: Call) -> dict[str, Any]:
        requests = list_param(call.params.get("requests"), "requests")
        # Envelope errors are a plain top-level CB_VA01 (kintone-api.md §1.5: UNCERTAIN, "most likely").
        if not requests:
            raise invalid_param("requests", "Required field.")
        if len(requests) > MAX_BULK:
            raise invalid_param(
                "requests", f"A maximum of {MAX_BULK} requests can be sent in one bulk request."
            )
        inner: list[Call] = []
        for i, req in enumerate(requests):
            if not isinstance(req, dict):
                raise invalid_param(f"requests[{i}]", "Enter an object with method, api and payload.")
            method, api, payload = req.get("method"), req.get("api"), req.get("payload")
            if method not in ("GET", "POST", "PUT", "DELETE"):
                raise invalid_param(f"requests[{i}].method", "Enter one of POST, PUT or DELETE.")
            match = API_PATH.match(api) if isinstance(api, str) else None
            if match is None:
                raise invalid_param(f"requests[{i}].api", "Enter the API's path, e.g. /k/v1/records.json.")
            if (method, match["name"]) not in BULK_APIS:
                # Which error Kintone gives is UNCERTAIN (§1.2); the sandbox rejects the whole bulk.
                raise invalid_param(f"requests[{i}].api", f"{method} {api} cannot be used in a bulk request.")
            if not isinstance(payload, dict):
                raise invalid_param(f"requests[{i}].payload", "Required field.")
            guest = int(match["guest"]) if match["guest"] else None
            inner.append(Call(method, match["name"], guest, payload, call.auth))
        results: list[dict[str, Any]] = []
        failure: BulkFailure | None = None
        try:
            with self.store.transaction():
                for i, sub in enumerate(inner):
                    try:
                        if sub.guest != call.guest:
                            self._wrong_bulk_space(call.guest, sub)
                        results.append(self.handle(sub))
                    except ApiError as exc:
                        failure = BulkFailure(i, len(inner), exc)
                        if self.bulk_semantics == "prefix":
                            break  # the failing call's savepoint is undone; the earlier ones commit
                        raise failure from None
        except BulkFailure:
            pass
        if failure is not None:
            raise failure
        return {"results": results}

    def _wrong_bulk_space(self, outer: int | None, sub: Call) -> None:
        # A bulk sent to a guest space touches only that space's apps, and each inner api
        # carries the same /k/guest/{id}/v1/ prefix (kintone-api.md §1.1, §1.3).
        try:
            app = self.apps.get(int(sub.params.get("app") or ""))
        except (TypeError, ValueError):
            app = None
        if outer is not None and sub.guest is None and app is not None and app.guest_space_id == outer:
            raise ApiError(
                400,
                "GAIA_IL23",
                f"In a bulk request sent to guest space {outer}, "
                f"write the api as /k/guest/{outer}/v1/{sub.name}.json.",
            )
        raise ApiError(
            403,
            "CB_NO02",
            "No privilege to proceed. (a bulk request touches only the apps of the space "
            "its URL names, and every inner api carries the same path prefix)",
        )
