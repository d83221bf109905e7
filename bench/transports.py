"""What the benchmark puts between a runner and the sandbox: a clock on the sandbox's own work,
and latency injected with the sandbox's own fault layer (``kmigrate.sandbox.faults``).

    timed = time_sandbox(sandbox)                  # before any transport is made
    transport = latency_transport(sandbox, 50)     # 50 ms before every request
    ... timed.seconds, timed.requests ...

The sandbox's own time is measured around its WSGI app, so it is what the sandbox spends
parsing, checking and storing a request; the httpx WSGI bridge and the injected wait are not
in it (they count as the client's side, the same for every runner).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from kmigrate.sandbox import Sandbox
from kmigrate.sandbox.faults import FaultProfile, FaultyTransport


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


def latency_profile(ms: int) -> FaultProfile:
    """The sandbox's fault layer with no fault, only ``ms`` milliseconds before every request."""
    return FaultProfile.parse(f"seed=1,latency={ms}-{ms}")


def latency_transport(sandbox: Sandbox, ms: int) -> httpx.BaseTransport:
    """The sandbox's in-process transport with ``ms`` milliseconds before every request.

    ``sandbox.transport(faults=...)`` never sleeps in process (its latency is only counted), so
    the sandbox's ``FaultyTransport`` is built here with a real ``time.sleep``.
    """
    if ms <= 0:
        return sandbox.transport()
    return FaultyTransport(sandbox.transport(), latency_profile(ms), sleep=time.sleep)
