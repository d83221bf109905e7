"""Seeded fault injection for the sandbox: what a network and a busy Kintone do to requests.

    profile = FaultProfile.parse("seed=7,latency=0-20,429=0.05,500=0.02,503=0.05,reset=0.05,drop=0.05,slow=0.02")
    client = httpx.Client(base_url=SANDBOX_BASE_URL, transport=sandbox.transport(faults=profile))
    # or: kmigrate sandbox serve --faults "seed=7,..."

Each request draws the profile's next ``Fault`` from one ``random.Random(seed)``, in the order
requests arrive, so a seed replays the same faults for the same sequence of requests. Kinds:

- ``429``: refused before it runs, Kintone's concurrency answer (``GAIA_TO04``, JSON);
- ``500``: refused before it runs, a Kintone-shaped JSON error (``CB_UN01``);
- ``503``: refused before it runs, a plain-text maintenance page (as Kintone's is);
- ``reset``: the connection is reset before the request is handled;
- ``drop``: the request is handled and committed, then the connection drops without an answer;
- ``slow``: the request is handled and committed, and the answer comes later than the client
  waits (``slow_delay`` seconds);
- ``partial``: a bulk request fails at one of its inner requests (drawn too), with a 500 in
  Kintone's failed-bulk shape: under ``bulk_semantics="prefix"`` the requests before it stay
  committed, under ``atomic`` nothing does. Other requests meet no fault.

``latency=LO-HI`` adds LO..HI milliseconds before any request (a fault or not); ``count=N``
stops injecting after N faults (``partial=1,count=1``: exactly one bulk fails part-way).

In process (``FaultyTransport``) a reset is ``httpx.ConnectError`` (certainly never sent), a
drop ``httpx.RemoteProtocolError`` and a slow answer ``httpx.ReadTimeout``; nothing sleeps
unless a ``sleep`` is given. Served (``kmigrate sandbox serve --faults``), real sockets do the
same: see ``kmigrate.sandbox.server``; there a reset cannot look "never sent" to the client,
since the request had already left when the connection breaks.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from ..errors import InputError

# The kinds a request can meet, in the order their probabilities are stacked on [0, 1).
FAULT_KINDS = ("429", "500", "503", "reset", "drop", "slow", "partial")
DEFAULT_SLOW_DELAY = 5.0  # seconds: served answers come this late; set it above the client's timeout

TOO_MANY_REQUESTS = {
    "code": "GAIA_TO04",
    "message": "The number of concurrent API requests exceeds the limit.",
}
SERVER_ERROR = {
    "code": "CB_UN01",
    "message": "An unexpected error occurred. (injected by the sandbox's faults)",
}
UNAVAILABLE_TEXT = "Service Unavailable: kintone is under maintenance. (injected by the sandbox's faults)\n"


@dataclass(frozen=True)
class Fault:
    """What one request meets: ``kind`` (``None``: answered normally) after ``latency`` seconds."""

    kind: str | None = None
    latency: float = 0.0
    share: float = 0.0  # partial: where in the bulk it fails, as a share of its requests

    @property
    def refuses(self) -> bool:
        """The request is answered with an error before it runs."""
        return self.kind in ("429", "500", "503")

    def refusal(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of a refusing fault, as Kintone (or its gateway) sends them."""
        if self.kind == "503":
            return 503, {"Content-Type": "text/plain; charset=utf-8"}, UNAVAILABLE_TEXT.encode()
        body = TOO_MANY_REQUESTS if self.kind == "429" else SERVER_ERROR
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.kind == "429":
            headers["X-Cybozu-Error"] = "GAIA_TO04"  # seen on some 429s (kintone-api.md §6)
        payload = json.dumps({**body, "id": secrets.token_urlsafe(15)}).encode()
        return int(self.kind or 500), headers, payload


@dataclass
class FaultProfile:
    """Per-request probabilities of each kind, a latency range (ms) and the seed that replays them.

    ``counts`` tallies what was injected, by kind (``latency`` counts delayed requests,
    ``requests`` every decision), ``retries`` the requests that repeated the one before them
    after it met a fault (see ``note_request``).
    """

    seed: int = 0
    probabilities: dict[str, float] = field(default_factory=dict)
    latency_ms: tuple[int, int] = (0, 0)
    slow_delay: float = DEFAULT_SLOW_DELAY
    limit: int | None = None  # at most this many faults in all
    spec: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self._last_faulted: tuple[str, str, bytes] | None = None
        self._injected = 0

    @classmethod
    def parse(cls, spec: str) -> FaultProfile:
        """``seed=7,latency=0-20,429=0.05,...,slow_delay=3``; an ``InputError`` naming the bad part."""
        seed, probabilities, latency, slow_delay, limit = 0, {}, (0, 0), DEFAULT_SLOW_DELAY, None
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep:
                raise _bad(spec, part, "expected KEY=VALUE")
            try:
                if key == "seed":
                    seed = int(value)
                elif key == "latency":
                    low, dash, high = value.partition("-")
                    latency = (int(low), int(high) if dash else int(low))
                    if not 0 <= latency[0] <= latency[1]:
                        raise _bad(spec, part, "latency is LOW-HIGH in milliseconds, 0 <= LOW <= HIGH")
                elif key == "count":
                    limit = int(value)
                    if limit < 0:
                        raise _bad(spec, part, "count is how many faults at most, not negative")
                elif key == "slow_delay":
                    slow_delay = float(value)
                    if slow_delay < 0:
                        raise _bad(spec, part, "slow_delay is seconds, not negative")
                elif key in FAULT_KINDS:
                    probability = float(value)
                    if not 0.0 <= probability <= 1.0:
                        raise _bad(spec, part, "a probability is between 0 and 1")
                    probabilities[key] = probability
                else:
                    raise _bad(spec, part, f"unknown key {key!r}")
            except ValueError:
                raise _bad(spec, part, "not a number") from None
        if sum(probabilities.values()) > 1.0 + 1e-9:
            raise _bad(spec, spec, "the probabilities add up to more than 1")
        return cls(seed, probabilities, latency, slow_delay, limit, spec)

    def next(self, *, bulk: bool = True) -> Fault:
        """The next request's fault: one latency draw (if a range is set), then one kind draw
        (``partial`` means no fault for a request that is not a bulk one)."""
        with self._lock:
            low, high = self.latency_ms
            latency = self._random.randint(low, high) / 1000.0 if high > 0 else 0.0
            draw = self._random.random()
            kind = None
            edge = 0.0
            for name in FAULT_KINDS:
                edge += self.probabilities.get(name, 0.0)
                if draw < edge:
                    kind = name
                    break
            share = self._random.random() if kind == "partial" else 0.0
            if (kind == "partial" and not bulk) or (self.limit is not None and self._injected >= self.limit):
                kind = None
            self.counts["requests"] += 1
            if latency:
                self.counts["latency"] += 1
            if kind is not None:
                self._injected += 1
                if kind != "partial":  # partial counts once it broke a bulk (break_bulk)
                    self.counts[kind] += 1
            return Fault(kind, latency, share)

    def break_bulk(self, fault: Fault, path: str, body: bytes) -> tuple[bytes, int] | None:
        """For a ``partial`` fault on a bulk request: the body with inner request k replaced by
        one the sandbox refuses, and k; None for any other request (it meets no fault)."""
        if fault.kind != "partial" or not is_bulk_path(path):
            return None
        try:
            data = json.loads(body)
            requests = data["requests"]
            # Not at 0 when there is a choice: failing the first request is a plain refusal.
            at = (
                0
                if len(requests) == 1
                else 1 + min(int(fault.share * (len(requests) - 1)), len(requests) - 2)
            )
            prefix = str(requests[at]["api"]).rsplit("/", 1)[0]
            app = requests[at]["payload"]["app"]
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        requests[at] = {"method": "PUT", "api": f"{prefix}/record.json", "payload": {"app": app, "id": 0}}
        with self._lock:
            self.counts["partial"] += 1
        return json.dumps(data).encode(), at

    def note_request(self, method: str, target: str, body: bytes, fault: Fault) -> None:
        """Count a retry: a request identical to the previous one that met a fault (a
        sequential client such as kmigrate sends it again at once or not at all)."""
        signature = (method, target, body)
        with self._lock:
            if self._last_faulted == signature:
                self.retries += 1
            self._last_faulted = signature if fault.kind is not None else None

    def mark_boundary(self) -> None:
        """A new client run starts: its first request is not a retry of the last one."""
        with self._lock:
            self._last_faulted = None

    def report(self) -> dict[str, object]:
        """The counters as JSON: ``{"spec", "seed", "requests", "faults": {kind: n}, "retries"}``."""
        with self._lock:
            faults = {k: self.counts.get(k, 0) for k in (*FAULT_KINDS, "latency")}
            return {
                "spec": self.spec,
                "seed": self.seed,
                "requests": self.counts.get("requests", 0),
                "faults": faults,
                "retries": self.retries,
            }


def is_bulk_path(path: str) -> bool:
    return path.split("?", 1)[0].endswith("/bulkRequest.json")


def broken_bulk_answer(status: int, body: bytes, at: int) -> tuple[int, bytes]:
    """The sandbox's refusal of the request ``break_bulk`` replaced, told as an unexpected
    error (500, ``CB_UN01``) at that index, in Kintone's failed-bulk shape."""
    try:
        results = json.loads(body)["results"]
        assert isinstance(results, list) and results[at].get("code")
    except (ValueError, KeyError, TypeError, IndexError, AssertionError, AttributeError):
        return status, body  # it failed otherwise (or not): pass the answer on as it is
    message = f"An unexpected error occurred. (injected: the bulk request failed at request {at})"
    results[at] = {**SERVER_ERROR, "message": message, "id": secrets.token_urlsafe(15)}
    return 500, json.dumps({"results": results}).encode()


def _bad(spec: str, part: str, why: str) -> InputError:
    return InputError(
        f"fault spec {spec!r}: {part!r}: {why}",
        hint='e.g. "seed=7,latency=0-20,429=0.05,500=0.02,503=0.05,reset=0.05,drop=0.05,slow=0.02"',
    )


class FaultyTransport(httpx.BaseTransport):
    """An httpx transport that puts a ``FaultProfile`` in front of another (the sandbox's).

    ``sleep`` (default: none) is called with each latency and, for ``slow``, with
    ``slow_delay``; without it nothing waits for real and a slow answer is a ReadTimeout at once.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        profile: FaultProfile,
        *,
        sleep: Callable[[float], None] | None = None,
    ):
        self.inner = inner
        self.profile = profile
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = self.profile.next(bulk=is_bulk_path(request.url.path))
        self.profile.note_request(request.method, str(request.url), request.read(), fault)
        if fault.latency and self.sleep is not None:
            self.sleep(fault.latency)
        if fault.kind == "reset":
            raise httpx.ConnectError("[Errno 104] Connection reset by peer (injected)", request=request)
        if fault.refuses:
            status, headers, body = fault.refusal()
            return httpx.Response(status, headers=headers, content=body, request=request)
        broken = self.profile.break_bulk(fault, request.url.path, request.read())
        if broken is not None:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            request = httpx.Request(request.method, request.url, headers=headers, content=broken[0])
        response = self.inner.handle_request(request)
        response.read()  # handled and committed, whatever happens to the answer now
        if broken is not None:
            status, body = broken_bulk_answer(response.status_code, response.content, broken[1])
            return httpx.Response(
                status, headers={"Content-Type": response.headers["Content-Type"]}, content=body
            )
        if fault.kind == "drop":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response. (injected)", request=request
            )
        if fault.kind == "slow":
            if self.sleep is not None:
                self.sleep(self.profile.slow_delay)
            raise httpx.ReadTimeout("The read operation timed out (injected)", request=request)
        return response

    def close(self) -> None:
        self.inner.close()
