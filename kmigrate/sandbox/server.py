"""Serve a sandbox over HTTP on localhost (stdlib wsgiref, one thread per connection).

server = make_server(sandbox, "localhost", 0)   # port 0: any free port
threading.Thread(target=server.serve_forever, daemon=True).start()
... http://localhost:{server.server_port} ...
server.shutdown(); server.server_close()

With ``faults`` (a ``FaultProfile``) every request meets the profile's next fault on real
sockets: a reset closes the connection with a TCP reset before the request is handled; a drop
handles it (committed) and closes without answering; a slow answer is handled, then held
``slow_delay`` seconds before it is written. ``GET /__sandbox/faults`` answers the counters
(JSON, see ``FaultProfile.report``) without meeting a fault, and marks a client-run boundary.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _make_server

from .faults import Fault, FaultProfile
from .service import Sandbox

FAULTS_PATH = "/__sandbox/faults"


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Discard(io.RawIOBase):
    """Where a dropped request's answer goes."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


class _Late(io.RawIOBase):
    """Holds the answer back ``delay`` seconds before its first byte."""

    def __init__(self, out: Any, delay: float):
        self.out, self.delay, self.waited = out, delay, False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if not self.waited:
            self.waited = True
            time.sleep(self.delay)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def _refusing_app(fault: Fault) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = fault.refusal()
        reason = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
        start_response(f"{status} {reason}", [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]

    return app


def make_server(
    sandbox: Sandbox,
    host: str = "localhost",
    port: int = 0,
    log: Callable[[str], None] | None = None,
    faults: FaultProfile | None = None,
) -> WSGIServer:
    """A server bound to (host, port) and ready for ``serve_forever()``; ``log`` gets one line
    per request (the library never prints on its own)."""

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            if log is not None:
                log(format % args)

        def handle(self) -> None:
            if faults is None:
                super().handle()
            else:
                self._handle_with_faults(faults)

        def _handle_with_faults(self, profile: FaultProfile) -> None:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536 or not self.parse_request():
                return
            if self.path.split("?", 1)[0] == FAULTS_PATH:
                profile.mark_boundary()
                self._answer_json(profile.report())
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            body = self.rfile.read(length) if length > 0 else b""
            fault = profile.next()
            profile.note_request(self.command, self.path, body, fault)
            if fault.latency:
                time.sleep(fault.latency)
            if fault.kind == "reset":
                # SO_LINGER 0: close() sends a TCP reset instead of an orderly FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            out: Any = self.wfile
            if fault.kind == "drop":
                out = _Discard()
            elif fault.kind == "slow":
                out = _Late(self.wfile, profile.slow_delay)
            handler = ServerHandler(
                io.BytesIO(body), out, self.get_stderr(), self.get_environ(), multithread=False
            )
            handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's backpointer for logging
            handler.run(_refusing_app(fault) if fault.refuses else self.server.get_app())  # type: ignore[attr-defined]

        def _answer_json(self, data: object) -> None:
            payload = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return _make_server(
        host, port, sandbox.wsgi_app, server_class=_ThreadingWSGIServer, handler_class=Handler
    )
