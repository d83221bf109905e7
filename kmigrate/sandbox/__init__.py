"""The embedded Kintone: app definitions from a sandbox file, a SQLite record store, and the
REST API as a WSGI app (in process through an httpx transport, or served on localhost)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import SANDBOX_BASE_URL, Sandbox

__all__ = ["SANDBOX_BASE_URL", "Sandbox"]


def __getattr__(name: str) -> Any:
    # Imported on first use: reading the sandbox file (``definition``) does not need the server.
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
