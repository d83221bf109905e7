"""Kintone over httpx: base URL, authentication, guest spaces, errors, bounded retries.

The same code talks to a real Kintone and to the embedded sandbox: the sandbox is only an
httpx transport (``Client(url, creds, transport=sandbox.transport())``).

What the runner can rely on, for crash safety:

- ``KintoneError``: Kintone (or something in front of it) answered and refused. For a bulk
  request nothing of it was applied (a bulk is all-or-nothing). ``bulk_index`` names the
  failing inner request.
- ``TransportError(sent_maybe=False)``: the request certainly never reached Kintone.
- ``TransportError(sent_maybe=True)``: Kintone may have run it and the answer was lost: the
  batch is in doubt. A write is never retried automatically in that case.

Retries are only automatic where they cannot apply anything twice: 429 (Kintone's concurrency
limit, ``GAIA_TO04``) and 503 (unavailable or under maintenance) mean Kintone did not run the
request; a connection that was never made means nothing was sent; reads are idempotent (a
read is also sent again after a 500, 502 or 504, and after an answer lost on the way).

Secrets (API tokens, passwords) live only in the ``httpx.Client``'s default headers: no
message, repr or log line built here contains them.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import __version__
from .config import Credentials
from .errors import ConfigError, InputError, KintoneError, TransportError
from .kintone import MAX_BULK_REQUESTS, MAX_READ_LIMIT, api_path, describe_bulk_apis, is_bulk_api, split_api
from .plan import canonical_json

log = logging.getLogger(__name__)

# Answers that say Kintone did not run the request, so sending it again is safe.
RETRYABLE_STATUSES = frozenset({429, 503})
# A read cannot apply anything, so it is also sent again after a server error (a write is not:
# a 500 may have run it).
RETRYABLE_READ_STATUSES = RETRYABLE_STATUSES | {500, 502, 504}


Resolver = Callable[[str], Sequence[str]]  # a host name -> the addresses it resolves to


def resolve_addresses(host: str) -> list[str]:
    """Every address ``host`` resolves to (an ``OSError`` when it resolves to none)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


def is_loopback_host(host: str, resolve: Resolver | None = resolve_addresses) -> bool:
    """Whether a connection to ``host`` stays on this machine: an address literal is judged as
    written; a name by every address it resolves to (all loopback), so a ``*.localhost`` name
    that a resolver sends elsewhere does not count. ``resolve=None`` (an in-process transport,
    which opens no connection) judges names as written: ``localhost`` and ``*.localhost``."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    if resolve is None:
        return host == "localhost" or host.endswith(".localhost")
    try:
        addresses = resolve(host)
    except (OSError, UnicodeError):
        return False
    try:
        return bool(addresses) and all(
            ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses
        )
    except ValueError:
        return False


def check_base_url(
    base_url: str, *, insecure_http: bool = False, resolve: Resolver | None = resolve_addresses
) -> str:
    """The base URL without a trailing slash, or a ``ConfigError`` saying what is wrong with it.

    Plain http is allowed only to this machine (``is_loopback_host``, on the resolved address)
    or with ``insecure_http``."""
    url = base_url.strip()
    write_it = "write it as https://SUBDOMAIN.cybozu.com (optionally with :PORT and a /path prefix)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket; the URL may hold a secret: not echoed
        raise ConfigError("base URL cannot be read as a URL", hint=write_it) from None
    # User info is checked first, before any message echoes the URL: it holds a secret.
    if "@" in parts.netloc:
        raise ConfigError(
            f"base URL for host {host!r} contains a user name or password",
            hint="remove them from the URL; set KINTONE_USERNAME/KINTONE_PASSWORD or KINTONE_API_TOKEN instead",
        )
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL with a host", hint=write_it)
    if parts.query or parts.fragment:
        raise ConfigError(f"base URL {url!r} must not have a query string or fragment")
    if parts.scheme == "http" and not insecure_http and not is_loopback_host(host, resolve):
        raise ConfigError(
            f"base URL {url!r} uses plain http to a host that is not this machine (or does not resolve "
            "to loopback only): the credentials would cross the network unencrypted",
            hint="use https://, or pass --insecure-http (insecure_http = true in kmigrate.toml) if you really mean it",
        )
    return url.rstrip("/")


def tls_context(
    ca_bundle: Path | None = None, client_cert: tuple[Path, Path | None] | None = None
) -> ssl.SSLContext | bool:
    """What httpx verifies with: ``True`` (the system's CAs; httpx honours SSL_CERT_FILE) unless
    the environment names a CA bundle or a client certificate (``ca_bundle``, ``client_cert``
    in kmigrate.toml); a file that is missing or not a certificate is a ``ConfigError``."""
    if ca_bundle is None and client_cert is None:
        return True
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ca_bundle {ca_bundle}: cannot load it as PEM certificates ({exc})",
            hint="point ca_bundle at the PEM file of the CA (your proxy's or company's), relative to kmigrate.toml",
        ) from None
    if client_cert is not None:
        cert, key = client_cert
        try:
            context.load_cert_chain(str(cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"client_cert {cert}{' / ' + str(key) if key else ''}: cannot load it ({exc})",
                hint='client_cert = { cert = "PEM certificate", key = "PEM private key (unencrypted)" }',
            ) from None
    return context


def auth_headers(credentials: Credentials) -> dict[str, str]:
    """Kintone's headers for these credentials. Password auth wins when both kinds are set:
    one login reaches every app it may see, while tokens are per app."""
    headers: dict[str, str] = {}
    if credentials.username and credentials.password:
        pair = f"{credentials.username}:{credentials.password}".encode()
        headers["X-Cybozu-Authorization"] = base64.b64encode(pair).decode()
    elif credentials.api_tokens:
        headers["X-Cybozu-API-Token"] = ",".join(credentials.api_tokens)
    if credentials.basic_username and credentials.basic_password:
        pair = f"{credentials.basic_username}:{credentials.basic_password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return headers


DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_RETRIES = 5
DEFAULT_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to keep sending again a request Kintone did not run.

    Bounded twice: ``attempts`` in all (the first included), and ``max_seconds`` from the first
    attempt: a wait that would end past it is not started (the last answer is raised instead).
    A ``Retry-After`` of N seconds is waited as given, within that budget; an HTTP date falls
    back to the backoff.
    """

    attempts: int = DEFAULT_RETRIES + 1
    base_delay: float = 0.5  # seconds; doubles each time, with jitter
    max_delay: float = 10.0  # of one backoff wait (a Retry-After may ask for more)
    max_seconds: float = DEFAULT_RETRY_SECONDS

    @classmethod
    def of(cls, retries: int | None = None, seconds: float | None = None) -> RetryPolicy:
        """From the settings a user writes (``retries``, ``retry_seconds``); None: the default."""
        return cls(
            attempts=(DEFAULT_RETRIES if retries is None else retries) + 1,
            max_seconds=DEFAULT_RETRY_SECONDS if seconds is None else seconds,
        )

    def delay(self, attempt: int, retry_after: str | None = None, jitter: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); ``jitter`` in
        [0, 1) (drawn when not given)."""
        if retry_after:
            try:
                return max(float(retry_after), 0.0)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        backoff = self.base_delay * (2 ** (attempt - 1))
        share = random.random() if jitter is None else jitter
        return min(backoff * (0.5 + share / 2), self.max_delay)


NO_RETRY = RetryPolicy(attempts=1)


def timeout_of(seconds: float) -> httpx.Timeout:
    """The client's timeout for a setting of ``seconds``: reading an answer (and writing, and
    waiting for a pooled connection) that long; connecting at most 10 s of it."""
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


DEFAULT_TIMEOUT = timeout_of(DEFAULT_TIMEOUT_SECONDS)

# Transport failures after which the request certainly did not reach Kintone.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class Client:
    """A Kintone REST client: one bulk request per batch, plus the reads the runner needs.

    ``request_count`` counts the HTTP requests sent (retries included), ``retry_count`` the
    retries among them, for tests and reports. ``timeout`` in seconds (or an ``httpx.Timeout``);
    ``sleep`` and ``clock`` are injected so tests decide retries without waiting.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        transport: httpx.BaseTransport | None = None,
        insecure_http: bool = False,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        ca_bundle: Path | None = None,
        client_cert: tuple[Path, Path | None] | None = None,
    ):
        # An injected transport opens no connection of its own: names are judged as written.
        resolve = resolve_addresses if transport is None else None
        self.base_url = check_base_url(base_url, insecure_http=insecure_http, resolve=resolve)
        auth = auth_headers(credentials)
        self._auth_kind = ", ".join(auth) or "none"  # header names only, for the repr
        self.retry = retry
        self._sleep = sleep
        self._clock = clock
        self.request_count = 0
        self.retry_count = 0
        self._counting = threading.Lock()  # `apply --parallel` sends from several threads
        headers = {"User-Agent": f"kmigrate/{__version__}", **auth}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            transport=transport,
            timeout=timeout_of(timeout) if isinstance(timeout, (int, float)) else timeout,
            verify=tls_context(ca_bundle, client_cert),
            follow_redirects=False,
            # HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY (and SSL_CERT_FILE) from the
            # environment, as a company network sets them; an injected transport uses none.
            trust_env=True,
        )

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, auth={self._auth_kind})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writes --------------------------------------------------------------------------

    def bulk(
        self, requests: Sequence[Mapping[str, Any]] | EncodedBulk, guest_space_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Send one bulk request (all-or-nothing in Kintone) and return its ``results``.

        Every inner ``api`` must be in the bulk's guest space: ``/k/v1/...`` is rewritten to the
        guest prefix when ``guest_space_id`` is given; an inner api of another guest space is an
        ``InputError`` (Kintone would refuse it), raised before anything is sent. ``requests``
        may come checked and encoded already (``encode_bulk``, done while another bulk is in
        flight); its own guest space is then the bulk's.
        """
        encoded = requests if isinstance(requests, EncodedBulk) else encode_bulk(requests, guest_space_id)
        data = self._send(
            "POST",
            api_path("bulkRequest", encoded.guest_space_id),
            json_body=encoded,
            idempotent=False,
            bulk=list(encoded.requests),
        )
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or len(results) != len(encoded.requests):
            # Kintone answered 200 but not with what a bulk returns: we cannot tell what ran.
            raise TransportError(
                f"unexpected answer to POST {api_path('bulkRequest', encoded.guest_space_id)}: "
                f"expected {len(encoded.requests)} results, got {_preview(data)}",
                sent_maybe=True,
            )
        return results

    def upload_file(self, name: str, content: bytes, guest_space_id: int | None = None) -> str:
        """``POST /k/v1/file.json`` (multipart, one part ``file``) -> the upload's fileKey.

        Sent again on an ambiguous failure like a read: a second upload only leaves a temporary
        fileKey nobody uses, which Kintone drops after three days."""
        data = self._send(
            "POST",
            api_path("file", guest_space_id),
            files={"file": (name, content, "application/octet-stream")},
            idempotent=True,
        )
        key = data.get("fileKey") if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise TransportError(
                f"unexpected answer to POST {api_path('file', guest_space_id)}: {_preview(data)}",
                sent_maybe=False,
            )
        return key

    # ---- reads ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        guest_space_id: int | None = None,
    ) -> dict[str, Any]:
        """Any Kintone API by name (``records``, ``app/form/fields``). Only GET is retried on an
        ambiguous failure, since only a read cannot apply anything twice."""
        return self._send(
            method.upper(),
            api_path(name, guest_space_id),
            params=params,
            json_body=body,
            idempotent=method.upper() == "GET",
        )

    def get_record(self, app: int, record_id: int, guest_space_id: int | None = None) -> dict[str, Any]:
        return self.request(
            "GET", "record", params={"app": app, "id": record_id}, guest_space_id=guest_space_id
        )["record"]

    def get_records(
        self,
        app: int,
        query: str | None = None,
        fields: Iterable[str] | None = None,
        guest_space_id: int | None = None,
        page_size: int = MAX_READ_LIMIT,
    ) -> Iterator[dict[str, Any]]:
        """Every record matching ``query`` (a condition only: no ``order by``/``limit``/``offset``),
        in ``$id`` order, paged by ``$id > last`` so the 10,000 offset cap never bites and no
        cursor is left open if the caller stops early."""
        wanted = list(fields) if fields is not None else None
        asked = None if wanted is None else (wanted if "$id" in wanted else [*wanted, "$id"])
        condition = f"({query}) and " if query and query.strip() else ""
        last = 0
        while True:
            params: dict[str, Any] = {
                "app": app,
                "query": f"{condition}$id > {last} order by $id asc limit {page_size}",
            }
            if asked is not None:
                params["fields"] = asked
            records = self.request("GET", "records", params=params, guest_space_id=guest_space_id)["records"]
            for record in records:
                last = int(record["$id"]["value"])
                if wanted is not None and "$id" not in wanted:
                    record = {k: v for k, v in record.items() if k != "$id"}
                yield record
            if len(records) < page_size:
                return

    def max_record_id(self, app: int, guest_space_id: int | None = None) -> int:
        """The app's highest record id now; 0 when it has no record. One GET."""
        params = {"app": app, "fields": ["$id"], "query": "order by $id desc limit 1"}
        records = self.request("GET", "records", params=params, guest_space_id=guest_space_id)["records"]
        return int(records[0]["$id"]["value"]) if records else 0

    def records_exist(self, app: int, ids: Iterable[int], guest_space_id: int | None = None) -> set[int]:
        """Which of ``ids`` exist in ``app``."""
        wanted = sorted({int(i) for i in ids})
        found: set[int] = set()
        for start in range(0, len(wanted), 100):
            chunk = wanted[start : start + 100]
            query = f"$id in ({', '.join(str(i) for i in chunk)})"
            found.update(
                int(r["$id"]["value"]) for r in self.get_records(app, query, ["$id"], guest_space_id)
            )
        return found

    def count_records(self, app: int, query: str | None = None, guest_space_id: int | None = None) -> int:
        params: dict[str, Any] = {
            "app": app,
            "fields": ["$id"],
            "totalCount": True,
            "query": f"{query or ''} limit 1".strip(),
        }
        return int(self.request("GET", "records", params=params, guest_space_id=guest_space_id)["totalCount"])

    def app_form_fields(self, app: int, guest_space_id: int | None = None) -> dict[str, Any]:
        """The app's fields: ``properties`` of ``GET /k/v1/app/form/fields.json``."""
        return self.request("GET", "app/form/fields", params={"app": app}, guest_space_id=guest_space_id)[
            "properties"
        ]

    # ---- the one place that talks HTTP ----------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        idempotent: bool,
        bulk: list[dict[str, Any]] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> Any:
        what = f"{method} {path}"
        attempt = 0
        started = self._clock()
        while True:
            attempt += 1
            try:
                response = self._exchange(method, path, params, json_body, files)
            except httpx.TransportError as exc:
                sent_maybe = not isinstance(exc, _NOT_SENT)
                if (idempotent or not sent_maybe) and self._may_retry(
                    attempt, started, self.retry.delay(attempt)
                ):
                    continue
                raise _transport_error(what, self.base_url, exc, sent_maybe, attempt) from exc
            if response.status_code in (RETRYABLE_READ_STATUSES if idempotent else RETRYABLE_STATUSES):
                wait = self.retry.delay(attempt, response.headers.get("Retry-After"))
                if self._may_retry(attempt, started, wait):
                    log.info("%s -> HTTP %s, sent again after %.1f s", what, response.status_code, wait)
                    continue
            return _decode(what, response, bulk, attempt)

    def _may_retry(self, attempt: int, started: float, wait: float) -> bool:
        """Wait ``wait`` seconds and say yes, if another attempt fits both bounds."""
        if attempt >= self.retry.attempts or self._clock() - started + wait > self.retry.max_seconds:
            return False
        self._sleep(wait)
        with self._counting:
            self.retry_count += 1
        return True

    def _exchange(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        files: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        with self._counting:
            self.request_count += 1
        if files is not None:  # multipart/form-data: httpx writes the boundary and the header
            response = self._http.request(method, path, files=dict(files))
        elif method == "GET" and params:
            # Kintone reads arrays as fields[0]=a&fields[1]=b; a JSON body with
            # X-HTTP-Method-Override would also do, but a query string keeps GETs plain.
            response = self._http.get(path, params=_query_params(params))
        else:
            if isinstance(json_body, EncodedBulk):
                content: bytes | None = json_body.body()
            else:
                content = None if json_body is None else json.dumps(json_body, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json"} if content is not None else None
            response = self._http.request(method, path, content=content, headers=headers)
        log.debug("%s %s -> HTTP %s", method, path, response.status_code)
        return response


def prepare_bulk(
    requests: list[Mapping[str, Any]], guest_space_id: int | None, *, limit: bool = True
) -> list[dict[str, Any]]:
    """The ``requests`` array of a bulk request, checked and with every inner api in the bulk's
    guest space; an ``InputError`` (nothing sent) when Kintone would certainly refuse it."""
    if limit:
        _check_count(len(requests))
    out = []
    for index, request in enumerate(requests):
        method = str(request.get("method", "")).upper()
        api = str(request.get("api", ""))
        try:
            guest, name = split_api(api)
        except ValueError as exc:
            raise InputError(f"bulk request {index}: {exc}") from None
        if not is_bulk_api(method, name):
            allowed = describe_bulk_apis()
            raise InputError(
                f"bulk request {index}: {method} {api} cannot run inside a bulk request (allowed: {allowed})"
            )
        if guest is not None and guest != guest_space_id:
            where = f"guest space {guest_space_id}" if guest_space_id is not None else "no guest space"
            raise InputError(
                f"bulk request {index}: {api} is in guest space {guest} but the bulk request goes to {where}",
                hint="Kintone runs a bulk request within one guest space (or none); split it",
            )
        out.append(
            {"method": method, "api": api_path(name, guest_space_id), "payload": request.get("payload", {})}
        )
    return out


@dataclass(frozen=True)
class EncodedBulk:
    """A bulk request checked (``prepare_bulk``) and JSON-encoded, one inner request at a time,
    so it can be made ahead of its send and a request put in front of it (the journal app's
    marker) without encoding the rest again. ``body()`` is byte for byte the canonical JSON
    (``plan.canonical_json``) of ``{"requests": requests}``: the encoding ``Batch.hash`` is
    computed on, so a planned call goes out as the bytes it was hashed as."""

    requests: tuple[dict[str, Any], ...]
    parts: tuple[bytes, ...]
    guest_space_id: int | None = None

    def body(self) -> bytes:
        return b'{"requests":[' + b",".join(self.parts) + b"]}"

    def since(self, start: int) -> EncodedBulk:
        """The bulk of the inner requests from ``start`` on (the rest of a bulk whose first
        requests are known applied)."""
        if start == 0:
            return self
        return EncodedBulk(self.requests[start:], self.parts[start:], self.guest_space_id)

    def after(self, head: Sequence[Mapping[str, Any]]) -> EncodedBulk:
        """``head``'s requests, then this bulk's (checked as one bulk)."""
        first = encode_bulk(head, self.guest_space_id, limit=False)
        joined = EncodedBulk(first.requests + self.requests, first.parts + self.parts, self.guest_space_id)
        _check_count(len(joined.requests))
        return joined


def encode_bulk(
    requests: Sequence[Mapping[str, Any]] | EncodedBulk,
    guest_space_id: int | None,
    *,
    limit: bool = True,
    parts: Sequence[bytes | None] | None = None,
) -> EncodedBulk:
    """``requests`` checked as ``prepare_bulk`` checks them, and encoded; pure, so it can run on
    another thread than the send. An ``EncodedBulk`` is returned as it is. ``parts``: per
    request, its canonical JSON where already made (``Batch.sendable_parts``), used as it is
    when checking left the request unchanged; None: encoded here."""
    if isinstance(requests, EncodedBulk):
        return requests
    requests = list(requests)
    prepared = prepare_bulk(requests, guest_space_id, limit=limit)
    known = parts if parts is not None else (None,) * len(prepared)
    encoded = tuple(
        part if part is not None and _unchanged(given, checked) else canonical_json(checked).encode()
        for given, checked, part in zip(requests, prepared, known, strict=True)
    )
    return EncodedBulk(tuple(prepared), encoded, guest_space_id)


def _unchanged(given: Mapping[str, Any], checked: Mapping[str, Any]) -> bool:
    """Whether ``prepare_bulk`` left a request as it was given (so its JSON is the same)."""
    return (
        len(given) == 3
        and given.get("method") == checked["method"]
        and given.get("api") == checked["api"]
        and given.get("payload") is checked["payload"]
    )


def bulk_with_head(
    head: Sequence[Mapping[str, Any]], requests: Sequence[Mapping[str, Any]] | EncodedBulk
) -> list[Mapping[str, Any]] | EncodedBulk:
    """``head``'s requests in front of a bulk's, encoded or not."""
    if isinstance(requests, EncodedBulk):
        return requests.after(head)
    return [*head, *requests]


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_BULK_REQUESTS:
        raise InputError(f"a bulk request takes 1 to {MAX_BULK_REQUESTS} requests, not {count}")


def _query_params(params: Mapping[str, Any]) -> list[tuple[str, str | int | float | bool | None]]:
    pairs: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            pairs.extend((f"{key}[{i}]", str(v)) for i, v in enumerate(value))
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif value is not None:
            pairs.append((key, str(value)))
    return pairs


def _decode(what: str, response: httpx.Response, bulk: list[dict[str, Any]] | None, attempts: int) -> Any:
    status = response.status_code
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if 200 <= status < 300:
        if data is None:
            raise TransportError(
                f"{what}: HTTP {status} with a body that is not JSON ({_content_type(response)}): "
                f"{_preview(response.text)}",
                sent_maybe=True,
                hint="is the base URL a Kintone domain? A proxy or login page may be in the way",
            )
        return data
    if isinstance(data, dict) and bulk is not None and isinstance(data.get("results"), list):
        for index, slot in enumerate(data["results"]):
            if isinstance(slot, dict) and slot.get("code"):
                inner = bulk[index] if index < len(bulk) else {}
                return _raise_kintone(
                    slot,
                    status,
                    f"{what} (request {index}: {inner.get('method')} {inner.get('api')})",
                    index,
                    tried,
                )
    if isinstance(data, dict) and data.get("code"):
        return _raise_kintone(data, status, what, None, tried)
    # Not a Kintone error body: a maintenance page, a proxy, a wrong URL.
    body = f"HTTP {status} ({_content_type(response)}): {_preview(response.text)}"
    if status == 503 or 400 <= status < 500:
        # A 4xx refusal and a 503 both mean the request was not run.
        hint = _HINTS_BY_STATUS.get(status)
        raise KintoneError(f"{what} refused{tried}: {body}", status=status, hint=hint)
    raise TransportError(
        f"{what}: {body}; Kintone may or may not have run the request",
        sent_maybe=True,
        hint="a gateway between kmigrate and Kintone failed; check `kmigrate status` before running again",
    )


_HINTS_BY_CODE = {
    "CB_AU01": "set KINTONE_API_TOKEN, or KINTONE_USERNAME and KINTONE_PASSWORD",
    "CB_WA01": "check KINTONE_USERNAME and KINTONE_PASSWORD",
    "GAIA_IA02": "check KINTONE_API_TOKEN: one token per app, comma-separated",
    "GAIA_AP15": "check KINTONE_API_TOKEN: it needs a token of every app the batch touches",
    "CB_NO02": "the user or token lacks a permission; check the app's and the guest space's settings",
    "GAIA_IL23": "the app is in a guest space: set guest_space_id for it in kmigrate.toml",
    "GAIA_TO04": "Kintone's limit of concurrent requests was reached; wait and try again",
}
_HINTS_BY_STATUS = {
    401: "check the credentials (and KINTONE_BASIC_AUTH_USERNAME/PASSWORD if the domain uses Basic auth)",
    404: "check the base URL",
    503: "Kintone is unavailable (maintenance?); try again later",
}


def _raise_kintone(body: Mapping[str, Any], status: int, what: str, index: int | None, tried: str) -> Any:
    code = str(body.get("code"))
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else None
    raise KintoneError(
        f"{body.get('message') or 'Kintone refused the request'} (HTTP {status}, {what}{tried})",
        code=code,
        status=status,
        errors=errors,
        error_id=body.get("id"),
        bulk_index=index,
        hint=_HINTS_BY_CODE.get(code),
    )


def _transport_error(
    what: str, base_url: str, exc: httpx.TransportError, sent_maybe: bool, attempts: int
) -> TransportError:
    kind = type(exc).__name__
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    if sent_maybe:
        return TransportError(
            f"{what}: {kind} ({exc}){tried}; the request may have reached Kintone and its answer was lost",
            sent_maybe=True,
            hint="do not send it again blindly: check what Kintone holds (`kmigrate status`, `kmigrate resolve`)",
        )
    return TransportError(
        f"{what}: could not reach {base_url}{tried}: {kind} ({exc}); nothing was sent",
        sent_maybe=False,
        hint="check the base URL and the network, then run again",
    )


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "no content type").split(";")[0]


def _preview(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
