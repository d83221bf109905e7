"""Kintone's app-admin APIs, enough to create an app, give it fields and deploy it:

    POST preview/app.json              -> {app, revision}      a pre-live app
    GET/POST preview/app/form/fields.json                      its pre-live fields
    POST preview/app/deploy.json       -> {}                   pre-live -> live (or revert)
    GET preview/app/deploy.json        -> {apps: [{app, status}]}

Apps made here persist in the store beside the records (``apps.Apps``). Only apps created
through this API can be changed by it: a sandbox file app's settings come from the file. These
APIs take password authentication only (Kintone: "API Tokens cannot be used with this API").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..errors import SandboxDefinitionError
from .api import Api
from .apps import Apps
from .calls import ApiError, Call, bool_param, int_param, invalid_param, list_param, revision_param, str_param
from .definition import lookup_problem, parse_app
from .fields import field_properties
from .store import CreatedApp

MAX_APP_NAME = 64
MAX_DEPLOY_APPS = 300
# How many status reads answer PROCESSING after a deploy before SUCCESS: one, so a client's
# polling loop runs at least once against the sandbox (the deploy itself is applied at once).
DEPLOY_POLLS = 1


def require_password(call: Call) -> None:
    if call.auth.password:
        return
    if call.auth.tokens:
        # Observed on real tenants (cli-kintone's e2e tests, kintone-js-sdk fixtures): 403 GAIA_NO01.
        raise ApiError(403, "GAIA_NO01", "Using this API token, you cannot run the specified API.")
    raise ApiError(401, "CB_AU01", "Please login.")


class AppAdmin:
    def __init__(self, api: Api, apps: Apps, deploy_polls: int = DEPLOY_POLLS):
        self.api = api
        self.apps = apps
        self.deploy_polls = deploy_polls
        self.processing: dict[int, int] = {}  # app id -> status reads left that answer PROCESSING

    def register(self) -> None:
        self.api.add_routes(
            {
                ("POST", "preview/app"): (self.create_app, True),
                ("GET", "preview/app/form/fields"): (self.get_preview_fields, False),
                ("POST", "preview/app/form/fields"): (self.add_fields, True),
                ("POST", "preview/app/deploy"): (self.deploy, True),
                ("GET", "preview/app/deploy"): (self.deploy_status, False),
                ("GET", "app"): (self.get_app, False),
            }
        )

    def get_app(self, call: Call) -> dict[str, Any]:
        """app.json; a created app tells when and by whom it was created."""
        body = self.api.get_app(call)
        created = self.apps.created(int(body["appId"]))
        if created is not None:
            who = {"code": created.creator, "name": created.creator}
            body.update(createdAt=created.created, creator=who, modifiedAt=created.created, modifier=who)
        return body

    # -- helpers -------------------------------------------------------------------------------

    def _created(self, call: Call, app_id: int) -> CreatedApp:
        app = self.apps.created(app_id)
        if app is None:
            if self.apps.is_from_file(app_id):
                raise ApiError(
                    403,
                    "CB_NO02",
                    f"No privilege to proceed. (the settings of app {app_id} come from the sandbox file; "
                    "only apps created through the API can be changed through it)",
                )
            raise ApiError(
                404, "GAIA_AP01", f"The app (ID: {app_id}) not found. The app may have been deleted."
            )
        space = app.preview.get("guest_space_id")
        if space != call.guest:
            raise ApiError(
                403 if call.guest is not None else 400,
                "CB_NO02" if call.guest is not None else "GAIA_IL23",
                f"The app (ID: {app_id}) is not reached through this path: "
                + (f"use /k/guest/{space}/v1/." if space else "use /k/v1/."),
            )
        return app

    @staticmethod
    def _check_revision(app: CreatedApp, expected: int | None, key: str) -> None:
        # Kintone: "The request will fail if the revision number is not the latest revision";
        # the code is the one record revisions use (GAIA_CO02 / 409, kintone-api.md §2.5).
        if expected is not None and expected != app.preview_revision:
            raise ApiError(
                409,
                "GAIA_CO02",
                f"The revision is not the latest. (app ID: {app.id}, {key}: expected {expected}, "
                f"current {app.preview_revision})",
            )

    # -- POST preview/app.json -----------------------------------------------------------------

    def create_app(self, call: Call) -> dict[str, Any]:
        require_password(call)
        name = str_param(call.params.get("name"), "name")
        if len(name) > MAX_APP_NAME:
            raise invalid_param("name", f"Enter {MAX_APP_NAME} characters or fewer.")
        for key in ("space", "thread"):
            if call.params.get(key) not in (None, ""):
                int_param(call.params.get(key), key)
        app_id = self.apps.next_id()
        preview: dict[str, Any] = {"id": app_id, "name": name, "properties": {}}
        if call.guest is not None:
            preview["guest_space_id"] = call.guest
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        app = CreatedApp(app_id, preview, 1, None, None, created, call.auth.user)
        self.apps.save(app)
        return {"app": str(app_id), "revision": str(app.preview_revision)}

    # -- preview/app/form/fields.json ----------------------------------------------------------

    def get_preview_fields(self, call: Call) -> dict[str, Any]:
        require_password(call)
        app = self._created(call, int_param(call.params.get("app"), "app"))
        return {
            "properties": field_properties(parse_app(app.preview, "<created app>")),
            "revision": str(app.preview_revision),
        }

    def add_fields(self, call: Call) -> dict[str, Any]:
        require_password(call)
        app = self._created(call, int_param(call.params.get("app"), "app"))
        self._check_revision(app, revision_param(call.params.get("revision"), "revision"), "revision")
        properties = call.params.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            raise invalid_param("properties", "Required field.")
        existing = app.preview["properties"]
        system_codes = {f.code for f in parse_app(app.preview, "<created app>").system.values()}
        problems: dict[str, Any] = {}
        for code, spec in properties.items():
            if code in existing or code in system_codes:
                # UNCERTAIN: Kintone's code for a field code already in use was not captured.
                problems[f"properties[{code}].code"] = {"messages": ["The field code is already in use."]}
            elif isinstance(spec, Mapping) and "code" in spec and spec["code"] != code:
                problems[f"properties[{code}].code"] = {"messages": ["The code differs from its key."]}
        if problems:
            raise ApiError(400, "CB_VA01", "Missing or invalid input.", problems)
        preview = {**app.preview, "properties": {**existing, **properties}}
        try:
            parsed = parse_app(preview, "<created app>")
        except SandboxDefinitionError as exc:
            raise invalid_param("properties", exc.message) from None
        problem = lookup_problem(parsed, {**self.apps, parsed.id: parsed})
        if problem is not None:
            raise invalid_param("properties", problem)
        changed = replace(app, preview=preview, preview_revision=app.preview_revision + 1)
        self.apps.save(changed)
        return {"revision": str(changed.preview_revision)}

    # -- preview/app/deploy.json ---------------------------------------------------------------

    def deploy(self, call: Call) -> dict[str, Any]:
        require_password(call)
        items = list_param(call.params.get("apps"), "apps")
        if not 1 <= len(items) <= MAX_DEPLOY_APPS:
            raise invalid_param("apps", f"Give between 1 and {MAX_DEPLOY_APPS} apps.")
        revert = bool_param(call.params.get("revert"), "revert")
        changes: list[CreatedApp] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise invalid_param(f"apps[{i}]", "Enter an object with app and revision.")
            app_id = int_param(item.get("app"), f"apps[{i}].app")
            if self.apps.is_from_file(app_id) and self.apps.created(app_id) is None:
                self.api.app(Call(call.method, call.name, call.guest, {"app": app_id}, call.auth))
                continue  # a file app has nothing pre-live: deploying it changes nothing
            app = self._created(call, app_id)
            self._check_revision(app, revision_param(item.get("revision"), f"apps[{i}].revision"), "revision")
            if revert:  # pre-live goes back to the live settings (or to none before a first deploy)
                preview = app.live if app.live is not None else {**app.preview, "properties": {}}
                changes.append(replace(app, preview=preview, preview_revision=app.preview_revision + 1))
            else:
                changes.append(replace(app, live=app.preview, live_revision=app.preview_revision))
        for app in changes:
            self.apps.save(app)
            self.processing[app.id] = self.deploy_polls
        self.api.rebuild_uniques()
        return {}

    def deploy_status(self, call: Call) -> dict[str, Any]:
        require_password(call)
        raw = call.params.get("apps")
        ids = list_param([raw] if isinstance(raw, (str, int)) else raw, "apps")
        if not 1 <= len(ids) <= MAX_DEPLOY_APPS:
            raise invalid_param("apps", f"Give between 1 and {MAX_DEPLOY_APPS} apps.")
        statuses = []
        for i, raw_id in enumerate(ids):
            app_id = int_param(raw_id, f"apps[{i}]")
            if self.apps.created(app_id) is None:
                self.api.app(Call(call.method, call.name, call.guest, {"app": app_id}, call.auth))
            left = self.processing.get(app_id, 0)
            if left > 0:
                self.processing[app_id] = left - 1
            statuses.append({"app": str(app_id), "status": "PROCESSING" if left > 0 else "SUCCESS"})
        return {"apps": statuses}
