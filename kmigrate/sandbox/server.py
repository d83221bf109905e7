"""Serve a sandbox over HTTP on localhost (stdlib wsgiref, one thread per connection).

server = make_server(sandbox, "localhost", 0)   # port 0: any free port
threading.Thread(target=server.serve_forever, daemon=True).start()
... http://localhost:{server.server_port} ...
server.shutdown(); server.server_close()
"""

from __future__ import annotations

from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _make_server

from .service import Sandbox


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(
    sandbox: Sandbox, host: str = "localhost", port: int = 0, log: Callable[[str], None] | None = None
) -> WSGIServer:
    """A server bound to (host, port) and ready for ``serve_forever()``; ``log`` gets one line
    per request (the library never prints on its own)."""

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            if log is not None:
                log(format % args)

    return _make_server(
        host, port, sandbox.wsgi_app, server_class=_ThreadingWSGIServer, handler_class=Handler
    )
