"""``kmigrate journal init``: the journal app made with Kintone's app admin APIs.

    POST preview/app.json                 a pre-live app (name, space)
    POST preview/app/form/fields.json     its fields (``records.FIELDS``)
    POST preview/app/deploy.json          pre-live -> live
    GET  preview/app/deploy.json?apps[0]  polled until SUCCESS (FAIL/CANCEL: an error)

These need password auth (``KINTONE_USERNAME``/``KINTONE_PASSWORD``) and the right to create
apps: API tokens cannot create apps. The app is created outside guest spaces unless a guest
space is given; in one, every path carries ``/k/guest/ID/v1/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..client import Client
from ..errors import ConfigError, KmigrateError
from .records import FIELDS

DEPLOY_SECONDS = 120.0  # how long to wait for Kintone to deploy the new app


def create_journal_app(
    client: Client,
    *,
    name: str = "kmigrate journal",
    space: int | None = None,
    guest_space_id: int | None = None,
    wait: float = DEPLOY_SECONDS,
    poll: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Create, fill and deploy the journal app; its id once Kintone says the deploy succeeded."""
    body: dict[str, object] = {"name": name}
    if space is not None or guest_space_id is not None:
        body["space"] = space if space is not None else guest_space_id
    created = client.request("POST", "preview/app", body=body, guest_space_id=guest_space_id)
    app = int(created["app"])
    properties = {code: {"code": code, **spec} for code, spec in FIELDS.items()}
    client.request(
        "POST",
        "preview/app/form/fields",
        body={"app": app, "properties": properties},
        guest_space_id=guest_space_id,
    )
    client.request("POST", "preview/app/deploy", body={"apps": [{"app": app}]}, guest_space_id=guest_space_id)
    deadline = monotonic() + wait
    while True:
        answer = client.request(
            "GET", "preview/app/deploy", params={"apps": [app]}, guest_space_id=guest_space_id
        )
        status = next(
            (str(a.get("status")) for a in answer.get("apps", []) if int(a.get("app", 0)) == app), ""
        )
        if status == "SUCCESS":
            return app
        if status in ("FAIL", "CANCEL"):
            raise KmigrateError(
                f"Kintone could not deploy the new journal app {app} (deploy status {status})",
                hint=f"open app {app}'s settings in Kintone to see why, or create it by hand (docs/journal.md)",
            )
        if monotonic() >= deadline:
            raise KmigrateError(
                f"the new journal app {app} was still deploying after {wait:g} s (status {status or 'unknown'})",
                hint=f"check app {app} in Kintone; once it is live, add `journal_app = {app}` to kmigrate.toml",
            )
        sleep(poll)


def require_password(has_password: bool) -> None:
    if not has_password:
        raise ConfigError(
            "creating an app needs a Kintone user: set KINTONE_USERNAME and KINTONE_PASSWORD "
            "(API tokens cannot create apps)",
            hint="or create the app by hand with the fields listed in docs/journal.md",
        )
