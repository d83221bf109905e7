"""The embedded Kintone: app definitions from a sandbox file, a SQLite record store, and the
REST API as a WSGI app (in process through an httpx transport, or served on localhost)."""

from .service import SANDBOX_BASE_URL, Sandbox

__all__ = ["SANDBOX_BASE_URL", "Sandbox"]
