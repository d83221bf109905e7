"""What the benchmark puts between a runner and the sandbox: a clock on the sandbox's own work,
and injected latency (the sandbox's fault option when it exists, a small stand-in otherwise).

    timed = time_sandbox(sandbox)                  # before any transport is made
    transport = latency_transport(sandbox, 50)     # 50 ms before every request
    ... timed.seconds, timed.requests ...

The sandbox's own time is measured around its WSGI app, so it is what the sandbox spends
parsing, checking and storing a request; the httpx WSGI bridge and the injected wait are not
in it (they count as the client's side, the same for every runner).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from kmigrate.sandbox import Sandbox


class TimedApp:
    """A WSGI app around the sandbox's: counts requests (and the reads among them: kmigrate's
    reconciliation reads a little before its bulks) and adds up the time spent in it."""

    def __init__(self, app: Any):
        self.app = app
        self.seconds = 0.0
        self.requests = 0
        self.reads = 0

    @property
    def request_count(self) -> int:  # what ``Sandbox.request_count`` reads
        return self.requests

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.perf_counter()
        try:
            return list(self.app(environ, start_response))
        finally:
            self.seconds += time.perf_counter() - began
            self.requests += 1
            self.reads += environ.get("REQUEST_METHOD") == "GET"


def time_sandbox(sandbox: Sandbox) -> TimedApp:
    """Put a ``TimedApp`` in front of ``sandbox``: every transport made afterwards goes through it."""
    timed = TimedApp(sandbox.wsgi_app)
    sandbox.wsgi_app = timed  # type: ignore[assignment]  # transports are built from this attribute
    return timed


class LatencyTransport(httpx.BaseTransport):
    """The stand-in until ``kmigrate.sandbox.faults`` is on main: wait, then pass the request on."""

    def __init__(self, inner: httpx.BaseTransport, seconds: float):
        self.inner = inner
        self.seconds = seconds

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.seconds)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def sandbox_has_faults() -> bool:
    return importlib.util.find_spec("kmigrate.sandbox.faults") is not None


def latency_spec(ms: int) -> str:
    return f"seed=1,latency={ms}-{ms}"


def latency_transport(sandbox: Sandbox, ms: int) -> httpx.BaseTransport:
    """The sandbox's in-process transport with ``ms`` milliseconds before every request.

    With the sandbox's fault layer, its ``FaultyTransport`` waits for real only when given a
    ``sleep`` (``sandbox.transport(faults=...)`` does not sleep in process), so it is built
    here with ``time.sleep``.
    """
    if ms <= 0:
        return sandbox.transport()
    if sandbox_has_faults():
        from kmigrate.sandbox.faults import FaultProfile, FaultyTransport

        return FaultyTransport(sandbox.transport(), FaultProfile.parse(latency_spec(ms)), sleep=time.sleep)
    return LatencyTransport(sandbox.transport(), ms / 1000)


def latency_wsgi(app: Any, seconds: float) -> Callable[..., Iterable[bytes]]:
    """For a served sandbox without the fault layer: wait outside the sandbox's lock (as a
    network would, so requests in flight together overlap), then let the sandbox answer."""

    def delayed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        time.sleep(seconds)
        return app(environ, start_response)

    return delayed
