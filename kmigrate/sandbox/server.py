"""Serve a sandbox over HTTP on localhost (stdlib wsgiref, one thread per connection).

Requests are taken concurrently (``apply --parallel`` sends several bulks at once): each
connection has its thread, an injected latency sleeps in it outside any lock, and only the
store's work is serialised (``WsgiApp``'s lock), as Kintone's writes to one app are.

server = make_server(sandbox, "localhost", 0)   # port 0: any free port
threading.Thread(target=server.serve_forever, daemon=True).start()
... http://localhost:{server.server_port} ...
server.shutdown(); server.server_close()

With ``faults`` (a ``FaultProfile``) every request meets the profile's next fault on real
sockets: a reset closes the connection with a TCP reset before the request is handled; a drop
handles it (committed) and closes without answering; a slow answer is handled, then held
``slow_delay`` seconds before it is written. ``GET /__sandbox/faults`` answers the counters
(JSON, see ``FaultProfile.report``) without meeting a fault, and marks a client-run boundary.

With ``kill`` (a ``KillSwitch``, for the crash matrix in tests/harness/crash.py) the server
SIGKILLs the client process named in a pid file when its Nth request arrives (``before`` it is
handled), right after the sandbox committed it (``commit``: the answer is never written), or a
few milliseconds after the answer was written (``answer``): kmigrate itself carries no test hook.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as _make_server

from ..errors import InputError
from .faults import Fault, FaultProfile, broken_bulk_answer, is_bulk_path
from .service import Sandbox

FAULTS_PATH = "/__sandbox/faults"


KILL_PHASES = ("before", "commit", "answer")


@dataclass
class KillSwitch:
    """SIGKILL the client (its pid read from ``pid_file`` at that moment) at its ``request``-th
    request (1-based, control paths not counted), in ``phase``; ``delay_ms`` after the answer
    for ``answer``. ``fired`` tells whether it did."""

    request: int
    phase: str
    pid_file: Path
    delay_ms: float = 0.0
    seen: int = 0
    fired: bool = False
    _counting: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def parse(cls, spec: str, pid_file: Path) -> KillSwitch:
        """``N:PHASE`` or ``N:answer+MS``, e.g. ``7:commit``, ``3:answer+2``."""
        number, _, phase = spec.partition(":")
        phase, _, delay = phase.partition("+")
        try:
            switch = cls(int(number), phase, pid_file, float(delay) if delay else 0.0)
        except ValueError:
            switch = None
        if switch is None or switch.request < 1 or phase not in KILL_PHASES or switch.delay_ms < 0:
            raise InputError(
                f"kill point {spec!r}: expected N:PHASE with N >= 1 and PHASE one of {', '.join(KILL_PHASES)}"
                " (answer+MS: MS milliseconds after the answer)"
            )
        return switch

    def arm(self) -> str | None:
        """Count a request; the phase to kill it in, when it is the one (requests arrive on
        several threads at once: exactly one is the Nth)."""
        with self._counting:
            self.seen += 1
            return self.phase if self.seen == self.request and not self.fired else None

    def fire(self) -> None:
        self.fired = True
        try:
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # the client is gone already (or never wrote its pid): nothing to kill


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


def _broken_bulk_app(app: Callable[..., Iterable[bytes]], at: int) -> Callable[..., Iterable[bytes]]:
    """``app`` with its answer to a broken bulk told as ``broken_bulk_answer`` tells it."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen: list[str] = []
        body = b"".join(app(environ, lambda status, headers, exc_info=None: seen.append(status)))
        status, payload = broken_bulk_answer(int(seen[0].split()[0]), body, at)
        reason = "Internal Server Error" if status == 500 else seen[0].split(" ", 1)[1]
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(payload)))]
        start_response(f"{status} {reason}", headers)
        return [payload]

    return wrapped


def _then(app: Callable[..., Iterable[bytes]], after: Callable[[], None]) -> Callable[..., Iterable[bytes]]:
    """``app``, then ``after`` once it has run (committed) and before its answer is written."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = list(app(environ, start_response))
        after()
        return body

    return wrapped


def make_server(
    sandbox: Sandbox,
    host: str = "localhost",
    port: int = 0,
    log: Callable[[str], None] | None = None,
    faults: FaultProfile | None = None,
    kill: KillSwitch | None = None,
) -> WSGIServer:
    """A server bound to (host, port) and ready for ``serve_forever()``; ``log`` gets one line
    per request (the library never prints on its own)."""
    counted = faults if faults is not None else (FaultProfile() if kill is not None else None)

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            if log is not None:
                log(format % args)

        def handle(self) -> None:
            if counted is None:
                super().handle()
            else:
                self._handle_with_faults(counted)

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
            phase = kill.arm() if kill is not None else None
            if kill is not None and phase == "before":
                kill.fire()
                self.close_connection = True
                return
            fault = profile.next(bulk=is_bulk_path(self.path))
            profile.note_request(self.command, self.path, body, fault)
            if fault.latency:
                time.sleep(fault.latency)
            if fault.kind == "reset":
                # SO_LINGER 0: close() sends a TCP reset instead of an orderly FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            out: Any = self.wfile
            if fault.kind == "drop" or phase == "commit":
                out = _Discard()
            elif fault.kind == "slow":
                out = _Late(self.wfile, profile.slow_delay)
            app = _refusing_app(fault) if fault.refuses else self.server.get_app()  # type: ignore[attr-defined]
            broken = profile.break_bulk(fault, self.path, body)
            if broken is not None:
                body, app = broken[0], _broken_bulk_app(app, broken[1])
            if kill is not None and phase == "commit":
                app = _then(app, kill.fire)
            environ = self.get_environ()
            environ["CONTENT_LENGTH"] = str(len(body))
            handler = ServerHandler(io.BytesIO(body), out, self.get_stderr(), environ, multithread=False)
            handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's backpointer for logging
            handler.run(app)
            if kill is not None and phase == "answer":
                self.wfile.flush()
                time.sleep(kill.delay_ms / 1000.0)
                kill.fire()

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
