"""A sandbox with an items app and a journal app, and a client over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kmigrate.client import Client
from kmigrate.config import App, Credentials
from kmigrate.remote.app import JournalApp
from kmigrate.remote.records import FIELDS, Markers
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

JOURNAL_APP = 90


def definition(guest_journal: bool = False) -> dict:
    apps: list[dict] = [
        {
            "id": 1,
            "name": "Items",
            "fields": {
                "code": {"type": "SINGLE_LINE_TEXT", "required": True, "unique": True},
                "qty": {"type": "NUMBER"},
            },
        },
        {"id": JOURNAL_APP, "name": "kmigrate journal", "fields": FIELDS},
    ]
    if guest_journal:
        apps.append(
            {
                "id": 7,
                "name": "Guest items",
                "guest_space_id": 3,
                "fields": {"code": {"type": "SINGLE_LINE_TEXT"}},
            }
        )
        apps.append({"id": 91, "name": "journal (space 3)", "guest_space_id": 3, "fields": FIELDS})
    return {"apps": apps}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.from_definition(definition(guest_journal=True)) as box:
        yield box


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[Client]:
    with Client(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport()) as c:
        yield c


@pytest.fixture
def markers() -> Markers:
    return Markers("shop", {None: App(JOURNAL_APP), 3: App(91, 3)})


@pytest.fixture
def journal_app(client: Client, markers: Markers) -> JournalApp:
    return JournalApp(client, markers)
