"""``Sandbox``: an embedded Kintone built from a sandbox file, over a SQLite record store.

    sandbox = Sandbox.open(Path("sandbox.yaml"), store=Path(".kmigrate/sandbox-dev.sqlite3"))
    client = httpx.Client(base_url=SANDBOX_BASE_URL, transport=sandbox.transport())

The same ``wsgi_app`` is what ``kmigrate sandbox serve`` puts on a localhost port.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from ..errors import Location, SandboxDefinitionError
from .admin import AppAdmin
from .api import Api
from .apps import Apps
from .definition import (  # noqa: F401 - read_definition and its bound are imported from here too
    MAX_DEFINITION_BYTES,
    SandboxDefinition,
    parse_definition,
    read_definition,
)
from .faults import FaultProfile, FaultyTransport
from .fields import render_record
from .store import Store
from .wsgi import MAX_IN_FLIGHT, WsgiApp

SANDBOX_BASE_URL = "http://sandbox.localhost"


class _Transport(httpx.WSGITransport):
    """httpx's WSGI transport keeps only the last of repeated headers; Kintone reads repeated
    ``X-Cybozu-API-Token`` headers as one list, so join them first."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        tokens = request.headers.get_list("X-Cybozu-API-Token")
        if len(tokens) > 1:
            request.headers["X-Cybozu-API-Token"] = ",".join(tokens)
        return super().handle_request(request)


class Sandbox:
    def __init__(
        self,
        definition: SandboxDefinition,
        store: Path | None = None,
        *,
        bulk_semantics: str = "atomic",
        max_in_flight: int = MAX_IN_FLIGHT,
    ):
        self.definition = definition
        self.store_path = store
        self._store = Store(store)
        self._lock = threading.RLock()
        self.apps = Apps(definition, self._store)
        self.api = Api(self.apps, self._store, bulk_semantics=bulk_semantics, directory=definition.directory)
        self.api.rebuild_uniques()
        AppAdmin(self.api, self.apps).register()
        self.wsgi_app = WsgiApp(self.api, self._lock, max_in_flight=max_in_flight)

    @classmethod
    def open(
        cls,
        definition: Path | str,
        store: Path | str | None = None,
        *,
        bulk_semantics: str = "atomic",
        max_in_flight: int = MAX_IN_FLIGHT,
        project_root: Path | None = None,
        max_bytes: int = MAX_DEFINITION_BYTES,
    ) -> Sandbox:
        """The sandbox of file ``definition``; with ``project_root`` (a project's environment),
        read only if the project may read it (``kmigrate.paths``)."""
        return cls(
            read_definition(Path(definition), project_root=project_root, max_bytes=max_bytes),
            Path(store) if store is not None else None,
            bulk_semantics=bulk_semantics,
            max_in_flight=max_in_flight,
        )

    @classmethod
    def from_definition(
        cls,
        data: dict[str, Any],
        store: Path | str | None = None,
        *,
        bulk_semantics: str = "atomic",
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> Sandbox:
        return cls(
            parse_definition(data, "<sandbox definition>"),
            Path(store) if store is not None else None,
            bulk_semantics=bulk_semantics,
            max_in_flight=max_in_flight,
        )

    @property
    def request_count(self) -> int:
        return self.wsgi_app.request_count

    def transport(self, faults: FaultProfile | None = None) -> httpx.BaseTransport:
        """The in-process transport; with ``faults``, each request first meets the profile's
        next seeded decision (see ``kmigrate.sandbox.faults``)."""
        transport = _Transport(app=self.wsgi_app)
        return transport if faults is None else FaultyTransport(transport, faults)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client wired to this sandbox (handy in tests)."""
        return httpx.Client(base_url=SANDBOX_BASE_URL, transport=self.transport(), **kwargs)

    def reset(self) -> None:
        """Drop every record; ids start again at 1. Open cursors go too. Apps created through the
        admin API stay (like the file's apps: ``journal_app = ID`` keeps pointing at one)."""
        with self._lock:
            self._store.reset()
            self.api.cursors.clear()

    def request_counts(self, day: str | None = None) -> dict[int, int]:
        """App id -> requests that named it on ``day`` (YYYY-MM-DD, UTC; default today), as
        Kintone's per-app daily limit counts them. Kept in the store; ``reset`` keeps them."""
        with self._lock:
            return self._store.request_counts(day or self.api.today())

    def records(self, app_id: int) -> list[dict[str, Any]]:
        """The app's records in Kintone's read shape, by ascending id."""
        app = self.apps.get(app_id)
        if app is None:
            known = ", ".join(str(a) for a in sorted(self.apps)) or "none"
            raise SandboxDefinitionError(
                f"the sandbox has no app {app_id} (apps: {known})",
                location=Location(file=self.definition.source),
            )
        with self._lock:
            return [render_record(app, r.id, r.revision, r.data) for r in self._store.all(app.id)]

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
