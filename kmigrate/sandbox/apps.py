"""The apps a sandbox hosts: the sandbox file's, and those created through the admin API.

The file's apps are fixed for the life of a ``Sandbox``. Created apps live in the store
(``created_apps``) and take effect when deployed: ``get`` answers with their live settings,
``preview`` with their pre-live ones. Both kinds share one id space; a created app takes the
next id after every id in use, so it never shadows a file app, and a file that later declares
a created app's id is refused on open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..errors import Location, SandboxDefinitionError
from .definition import AppDef, SandboxDefinition, parse_app
from .store import CreatedApp, Store


class Apps(Mapping[int, AppDef]):
    """id -> the live ``AppDef`` (file apps, then deployed created apps)."""

    def __init__(self, definition: SandboxDefinition, store: Store):
        self.definition = definition
        self.store = store
        self._created: dict[int, CreatedApp] = {}
        self._live: dict[int, AppDef] = {}
        self.reload()

    def reload(self) -> None:
        created = {app.id: app for app in self.store.created_apps()}
        clash = sorted(set(created) & set(self.definition.apps))
        if clash:
            raise SandboxDefinitionError(
                f"app id {clash[0]} is declared in the sandbox file and was also created through "
                "the admin API in this store",
                location=Location(file=self.definition.source),
                hint="give the file's app another id, or use a fresh sandbox store",
            )
        self._created = created
        self._live = {
            app_id: parse_app(app.live, "<created app>")
            for app_id, app in created.items()
            if app.live is not None
        }

    # -- Mapping: the live apps -----------------------------------------------------------------

    def __getitem__(self, app_id: int) -> AppDef:
        found = self.definition.apps.get(app_id) or self._live.get(app_id)
        if found is None:
            raise KeyError(app_id)
        return found

    def __iter__(self) -> Iterator[int]:
        yield from self.definition.apps
        yield from (i for i in self._live if i not in self.definition.apps)

    def __len__(self) -> int:
        return len(self.definition.apps) + len(self._live)

    # -- created apps ---------------------------------------------------------------------------

    def created(self, app_id: int) -> CreatedApp | None:
        return self._created.get(app_id)

    def is_from_file(self, app_id: int) -> bool:
        return app_id in self.definition.apps

    def next_id(self) -> int:
        return max([0, *self.definition.apps, *self._created]) + 1

    def save(self, app: CreatedApp) -> None:
        """Store a created app's settings (inside the caller's transaction) and see them here."""
        self.store.save_created_app(app)
        self._created[app.id] = app
        if app.live is not None:
            self._live[app.id] = parse_app(app.live, "<created app>")
