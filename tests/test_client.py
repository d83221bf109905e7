"""The Kintone client against httpx.MockTransport: URLs, headers, errors, retries, secrets."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from kmigrate.client import NO_RETRY, Client, RetryPolicy, check_base_url
from kmigrate.config import Credentials
from kmigrate.errors import ConfigError, InputError, KintoneError, TransportError
from kmigrate.kintone import api_path, split_api
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

from .openapi_schema import validate_bulk_requests

TOKENS = ("tok-AAAA-secret-1", "tok-BBBB-secret-2")
PASSWORD = "pa55-w0rd-SECRET"
BASIC_PASSWORD = "basic-SECRET-pw"
ALL_CREDS = Credentials(TOKENS, "alice", PASSWORD, "gate", BASIC_PASSWORD)
SECRETS = (*TOKENS, PASSWORD, BASIC_PASSWORD)


class Recorder:
    """A MockTransport handler that answers from a list (or a function) and keeps the requests."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise type(answer)(str(answer), request=request)
        if callable(answer):
            return answer(request)
        return answer

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def make_client(
    recorder: Recorder,
    creds: Credentials = Credentials(TOKENS),
    url: str = "https://example.cybozu.com",
    **kw: Any,
) -> tuple[Client, list[float]]:
    slept: list[float] = []
    kw.setdefault("retry", RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0))
    client = Client(url, creds, transport=httpx.MockTransport(recorder), sleep=slept.append, **kw)
    return client, slept


ADD = {
    "method": "POST",
    "api": "/k/v1/records.json",
    "payload": {"app": 1, "records": [{"title": {"value": "a"}}]},
}
UPDATE = {
    "method": "PUT",
    "api": "/k/v1/records.json",
    "payload": {"app": 1, "records": [{"id": 5, "record": {"title": {"value": "b"}}}]},
}
STATUS = {
    "method": "PUT",
    "api": "/k/v1/records/status.json",
    "payload": {"app": 1, "records": [{"id": 5, "action": "Submit"}]},
}


def ok_bulk(n: int) -> httpx.Response:
    return httpx.Response(200, json={"results": [{"ids": ["1"], "revisions": ["1"]}] * n})


# ---- base URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080",
        "http://127.0.0.1",
        "http://127.9.9.9:1/",
        "http://[::1]:5000",
        "https://x.cybozu.com/",
    ],
)
def test_base_url_loopback_http_or_https_is_accepted(url: str) -> None:
    assert check_base_url(url) == url.rstrip("/")


def test_plain_http_is_judged_on_the_resolved_addresses() -> None:
    def resolver(table: dict[str, list[str]]):
        def resolve(host: str) -> list[str]:
            if host not in table:
                raise OSError("no such host")
            return table[host]

        return resolve

    resolve = resolver(
        {
            "sandbox.localhost": ["127.0.0.1", "::1"],
            "evil.localhost": ["203.0.113.7"],
            "mixed.example": ["127.0.0.1", "198.51.100.1"],
            "loop.example": ["127.0.0.2"],
        }
    )
    assert check_base_url("http://sandbox.localhost", resolve=resolve) == "http://sandbox.localhost"
    assert check_base_url("http://loop.example:8080", resolve=resolve) == "http://loop.example:8080"
    for url in ("http://evil.localhost", "http://mixed.example", "http://unknown.localhost"):
        with pytest.raises(ConfigError, match="plain http"):
            check_base_url(url, resolve=resolve)
    # An in-process transport opens no connection: names are judged as written.
    assert check_base_url("http://sandbox.localhost", resolve=None) == "http://sandbox.localhost"


def test_plain_http_to_a_remote_host_needs_the_flag() -> None:
    with pytest.raises(ConfigError) as err:
        check_base_url("http://example.cybozu.com")
    assert "http://example.cybozu.com" in str(err.value) and "--insecure-http" in str(err.value)
    assert check_base_url("http://example.cybozu.com", insecure_http=True) == "http://example.cybozu.com"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("example.cybozu.com", "is not an http(s) URL with a host"),
        ("ftp://x.com", "is not an http(s) URL with a host"),
        ("https://", "is not an http(s) URL with a host"),
        ("https://x.com/?a=1", "must not have a query string or fragment"),
    ],
)
def test_malformed_base_urls_are_config_errors(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_base_url(url)
    assert f"base URL {url!r} {says}" in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        f"https://alice:{PASSWORD}@x.cybozu.com",
        f"htps://alice:{PASSWORD}@x.cybozu.com",  # a bad scheme too: the user info is judged first
        f"https://alice:{PASSWORD}@",
        f"https://alice:{PASSWORD}@[::1",  # urlsplit raises on this one
    ],
)
def test_credentials_in_the_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_base_url(url)
    assert PASSWORD not in str(err.value) and PASSWORD not in str(err.value.hint)


def test_a_path_prefix_and_port_are_kept() -> None:
    rec = Recorder(ok_bulk(1))
    client, _ = make_client(rec, url="https://proxy.example.com:8443/kintone/")
    client.bulk([ADD])
    assert str(rec.requests[0].url) == "https://proxy.example.com:8443/kintone/k/v1/bulkRequest.json"


def test_tls_certificates_and_host_names_are_verified() -> None:
    import ssl

    with Client("https://example.cybozu.com", Credentials()) as client:
        context = client._http._transport._pool._ssl_context  # httpx's default transport
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_api_paths() -> None:
    assert api_path("records") == "/k/v1/records.json"
    assert api_path("record/status", 7) == "/k/guest/7/v1/record/status.json"
    assert split_api("/k/guest/7/v1/record/status.json") == (7, "record/status")
    assert split_api("/k/v1/records.json") == (None, "records")
    with pytest.raises(
        ValueError, match=r"not a Kintone API path: '/k/v2/records.json' \(expected /k/v1/NAME"
    ):
        split_api("/k/v2/records.json")
    with pytest.raises(ValueError, match="it should end in .json"):
        split_api("/k/v1/records")


# ---- headers ---------------------------------------------------------------------------------


def test_api_tokens_are_sent_comma_separated() -> None:
    rec = Recorder(ok_bulk(1))
    client, _ = make_client(rec)
    client.bulk([ADD])
    headers = rec.requests[0].headers
    assert headers["X-Cybozu-API-Token"] == ",".join(TOKENS)
    assert "X-Cybozu-Authorization" not in headers and "Authorization" not in headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("kmigrate/")


def test_password_auth_wins_over_tokens_and_basic_auth_is_added() -> None:
    rec = Recorder(ok_bulk(1))
    client, _ = make_client(rec, ALL_CREDS)
    client.bulk([ADD])
    headers = rec.requests[0].headers
    assert base64.b64decode(headers["X-Cybozu-Authorization"]).decode() == f"alice:{PASSWORD}"
    assert "X-Cybozu-API-Token" not in headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"gate:{BASIC_PASSWORD}".encode()).decode()


# ---- bulk requests ---------------------------------------------------------------------------


def test_bulk_sends_a_body_valid_against_the_openapi_schema_and_returns_results() -> None:
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "results": [
                    {"ids": ["1"], "revisions": ["1"]},
                    {"records": [{"id": "5", "revision": "3"}]},
                    {"records": [{"id": "5", "revision": "5"}]},
                ]
            },
        )
    )
    client, _ = make_client(rec)
    results = client.bulk([ADD, UPDATE, STATUS])
    assert results[0] == {"ids": ["1"], "revisions": ["1"]} and results[2]["records"][0]["revision"] == "5"
    request = rec.requests[0]
    assert request.method == "POST" and request.url.path == "/k/v1/bulkRequest.json"
    body = rec.body()
    validate_bulk_requests(body)
    assert body == {"requests": [ADD, UPDATE, STATUS]}
    assert client.request_count == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {
                "requests": [
                    {"method": "POST", "api": "/k/v1/records.json", "payload": {"app": 1, "records": "x"}}
                ]
            },
            "BulkRequestPostRecordsPostForm:\n  records: 'x' is not of type 'array'",
        ),
        (
            {
                "requests": [
                    {
                        "method": "PUT",
                        "api": "/k/v1/records/status.json",
                        "payload": {"app": 1, "records": [{"action": "Submit"}]},
                    }
                ]
            },
            "BulkRequestPostRecordsStatusPutForm:\n  records/0: 'id' is a required property",
        ),
        (
            {"requests": [{"method": "POST", "api": "/k/v1/records.json"}]},
            "requests/0: 'payload' is a required",
        ),
        ({"reqs": []}, "(root): 'requests' is a required property"),
    ],
)
def test_the_schema_check_rejects_malformed_bulk_bodies(body: dict, says: str) -> None:
    with pytest.raises(AssertionError) as err:
        validate_bulk_requests(body)
    assert says in str(err.value)


def test_guest_space_bulk_prefixes_the_outer_url_and_every_inner_api() -> None:
    rec = Recorder(ok_bulk(2))
    client, _ = make_client(rec)
    client.bulk([ADD, {**UPDATE, "api": "/k/guest/12/v1/records.json"}], guest_space_id=12)
    assert rec.requests[0].url.path == "/k/guest/12/v1/bulkRequest.json"
    body = rec.body()
    assert [r["api"] for r in body["requests"]] == ["/k/guest/12/v1/records.json"] * 2
    validate_bulk_requests(body)


@pytest.mark.parametrize(
    "requests, guest, needle",
    [
        ([{**ADD, "api": "/k/guest/3/v1/records.json"}], 12, "guest space 3"),
        ([{**ADD, "api": "/k/guest/3/v1/records.json"}], None, "no guest space"),
        ([ADD] * 21, None, "1 to 20"),
        ([], None, "1 to 20"),
        ([{"method": "GET", "api": "/k/v1/records.json", "payload": {}}], None, "cannot run inside a bulk"),
        ([{"method": "POST", "api": "/k/v1/app.json", "payload": {}}], None, "cannot run inside a bulk"),
        ([{"method": "POST", "api": "records", "payload": {}}], None, "not a Kintone API path"),
    ],
)
def test_bulks_kintone_would_refuse_are_input_errors_and_nothing_is_sent(
    requests: list, guest: int | None, needle: str
) -> None:
    rec = Recorder(ok_bulk(1))
    client, _ = make_client(rec)
    with pytest.raises(InputError, match=needle):
        client.bulk(requests, guest_space_id=guest)
    assert rec.requests == []


def test_a_failing_inner_request_names_its_index_code_and_errors() -> None:
    error = {
        "code": "CB_VA01",
        "id": "err-42",
        "message": "Missing or invalid input.",
        "errors": {"records[3].title.value": {"messages": ["Required."]}},
    }
    rec = Recorder(httpx.Response(400, json={"results": [{}, {}, error]}))
    client, slept = make_client(rec)
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD, UPDATE, STATUS])
    exc = err.value
    assert (exc.code, exc.status, exc.bulk_index, exc.error_id) == ("CB_VA01", 400, 2, "err-42")
    assert exc.errors == error["errors"]
    assert "request 2: PUT /k/v1/records/status.json" in str(exc) and "records[3].title.value" in str(exc)
    assert len(rec.requests) == 1 and slept == []


def test_a_top_level_error_has_no_bulk_index_and_an_auth_hint() -> None:
    rec = Recorder(httpx.Response(401, json={"code": "CB_AU01", "id": "x1", "message": "Please login."}))
    client, _ = make_client(rec)
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD])
    assert (err.value.code, err.value.status, err.value.bulk_index) == ("CB_AU01", 401, None)
    assert "KINTONE_API_TOKEN" in str(err.value)


def test_a_200_bulk_answer_of_the_wrong_shape_is_in_doubt() -> None:
    rec = Recorder(httpx.Response(200, json={"results": [{}]}))
    client, _ = make_client(rec)
    with pytest.raises(TransportError) as err:
        client.bulk([ADD, UPDATE])
    assert err.value.sent_maybe is True


# ---- retries ---------------------------------------------------------------------------------

TOO_MANY = httpx.Response(
    429, json={"code": "GAIA_TO04", "id": "t", "message": "Too many concurrent requests."}
)
MAINTENANCE = httpx.Response(
    503, text="<html>Kintone is under maintenance</html>", headers={"Content-Type": "text/html"}
)


def test_429_and_503_are_retried_with_growing_backoff() -> None:
    rec = Recorder(TOO_MANY, MAINTENANCE, ok_bulk(1))
    client, slept = make_client(rec, retry=RetryPolicy(attempts=5, base_delay=1.0, max_delay=100.0))
    assert client.bulk([ADD]) == [{"ids": ["1"], "revisions": ["1"]}]
    assert len(rec.requests) == 3 and client.request_count == 3
    assert [r.content for r in rec.requests[1:]] == [rec.requests[0].content] * 2  # the same bulk, unchanged
    assert len(slept) == 2 and 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0


def test_retry_after_is_honoured_as_given_within_the_time_budget() -> None:
    rec = Recorder(
        httpx.Response(429, json={"code": "GAIA_TO04", "message": "busy"}, headers={"Retry-After": "3"}),
        ok_bulk(1),
    )
    client, slept = make_client(rec, retry=RetryPolicy(attempts=3, base_delay=0.1, max_delay=2.0))
    client.bulk([ADD])
    assert slept == [3.0]  # more than one backoff wait may be: the server asked for it
    assert client.retry_count == 1


def test_a_retry_after_beyond_the_time_budget_is_not_waited_for() -> None:
    rec = Recorder(
        httpx.Response(429, json={"code": "GAIA_TO04", "message": "busy"}, headers={"Retry-After": "90"}),
        ok_bulk(1),
    )
    client, slept = make_client(rec, retry=RetryPolicy(attempts=5, max_seconds=60))
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD])
    assert err.value.status == 429 and slept == [] and len(rec.requests) == 1 and client.retry_count == 0


def test_an_http_date_retry_after_falls_back_to_the_backoff() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    assert policy.delay(3, "Wed, 21 Oct 2015 07:28:00 GMT", jitter=0.0) == 2.0
    assert policy.delay(3, None, jitter=0.5) == 3.0
    assert policy.delay(30, None, jitter=0.99) == 100.0  # one wait is capped


class FakeClock:
    """Monotonic time that only the client's sleeps move."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_retries_stop_when_the_next_wait_would_pass_the_time_budget() -> None:
    rec = Recorder(MAINTENANCE)
    clock = FakeClock()
    policy = RetryPolicy(attempts=100, base_delay=1.0, max_delay=8.0, max_seconds=20.0)
    client = Client(
        "https://example.cybozu.com",
        Credentials(TOKENS),
        transport=httpx.MockTransport(rec),
        retry=policy,
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD])
    assert err.value.status == 503
    waited = sum(clock.slept)
    assert waited <= 20.0 and len(clock.slept) >= 3  # 0.5-1, 1-2, 2-4, 4-8 ... within 20 s
    assert client.retry_count == len(clock.slept) == len(rec.requests) - 1
    # the wait that was not started would have ended past the budget
    assert waited + policy.delay(len(rec.requests), jitter=0.0) > 20.0


def test_retry_policy_of_the_user_settings() -> None:
    assert RetryPolicy.of() == RetryPolicy(attempts=6, max_seconds=60.0)
    assert RetryPolicy.of(retries=0, seconds=5.0) == RetryPolicy(attempts=1, max_seconds=5.0)


def test_a_timeout_in_seconds_bounds_reading_the_answer() -> None:
    client = Client("https://example.cybozu.com", Credentials(TOKENS), timeout=7.5)
    timeout = client._http.timeout
    assert (timeout.read, timeout.write, timeout.pool, timeout.connect) == (7.5, 7.5, 7.5, 7.5)
    client = Client("https://example.cybozu.com", Credentials(TOKENS), timeout=300)
    assert client._http.timeout.read == 300 and client._http.timeout.connect == 10.0
    assert Client("https://example.cybozu.com", Credentials(TOKENS))._http.timeout.read == 120.0


def test_retries_are_bounded_then_the_refusal_is_raised() -> None:
    rec = Recorder(TOO_MANY)
    client, slept = make_client(rec)
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD])
    assert err.value.code == "GAIA_TO04" and err.value.status == 429
    assert len(rec.requests) == 3 and len(slept) == 2
    assert "after 3 attempts" in str(err.value)


def test_maintenance_plain_text_becomes_a_clear_error_with_the_status() -> None:
    rec = Recorder(
        httpx.Response(
            503, text="Service Unavailable: maintenance until 10:00", headers={"Content-Type": "text/plain"}
        )
    )
    client, _ = make_client(rec, retry=NO_RETRY)
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD])
    assert err.value.status == 503 and err.value.code is None
    assert (
        "HTTP 503" in str(err.value)
        and "maintenance until 10:00" in str(err.value)
        and "text/plain" in str(err.value)
    )


def test_an_html_404_says_check_the_base_url() -> None:
    rec = Recorder(httpx.Response(404, text="<html>Not Found</html>", headers={"Content-Type": "text/html"}))
    client, _ = make_client(rec)
    with pytest.raises(KintoneError) as err:
        client.app_form_fields(1)
    assert err.value.status == 404 and "base URL" in str(err.value) and len(rec.requests) == 1


def test_a_gateway_error_without_a_kintone_body_is_in_doubt_and_not_retried() -> None:
    rec = Recorder(httpx.Response(502, text="<html>Bad gateway</html>"))
    client, _ = make_client(rec)
    with pytest.raises(TransportError) as err:
        client.bulk([ADD])
    assert err.value.sent_maybe is True and "HTTP 502" in str(err.value)
    assert len(rec.requests) == 1


def test_a_200_that_is_not_json_is_in_doubt() -> None:
    rec = Recorder(httpx.Response(200, text="<html>login</html>"))
    client, _ = make_client(rec)
    with pytest.raises(TransportError) as err:
        client.bulk([ADD])
    assert err.value.sent_maybe is True


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed"),
        httpx.ReadError("reset"),
        httpx.WriteTimeout("w"),
    ],
)
def test_a_bulk_whose_answer_was_lost_is_never_sent_twice(failure: Exception) -> None:
    rec = Recorder(failure, ok_bulk(1))
    client, slept = make_client(rec)
    with pytest.raises(TransportError) as err:
        client.bulk([ADD])
    assert err.value.sent_maybe is True
    assert len(rec.requests) == 1 and slept == []
    assert "may have reached Kintone" in str(err.value)


def test_a_connection_never_made_is_retried_and_then_certainly_not_sent() -> None:
    rec = Recorder(httpx.ConnectError("connection refused"))
    client, slept = make_client(rec)
    with pytest.raises(TransportError) as err:
        client.bulk([ADD])
    assert err.value.sent_maybe is False and "nothing was sent" in str(err.value)
    assert len(rec.requests) == 3 and len(slept) == 2

    rec = Recorder(httpx.ConnectTimeout("slow"), ok_bulk(1))
    client, _ = make_client(rec)
    assert client.bulk([ADD])[0]["ids"] == ["1"]


def test_reads_are_retried_after_an_ambiguous_failure() -> None:
    rec = Recorder(
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, json={"properties": {"title": {"type": "SINGLE_LINE_TEXT"}}}),
    )
    client, slept = make_client(rec)
    assert client.app_form_fields(3) == {"title": {"type": "SINGLE_LINE_TEXT"}}
    assert len(rec.requests) == 2 and len(slept) == 1
    assert dict(parse_qsl(rec.requests[0].url.query.decode())) == {"app": "3"}


# ---- reads -----------------------------------------------------------------------------------


def fake_records_api(total: int, calls: list[dict[str, str]]) -> Callable[[httpx.Request], httpx.Response]:
    """Answers GET records.json for `[cond and ]$id > N order by $id asc limit L` over ids 1..total."""

    def handle(request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.url.query.decode()))
        calls.append(params)
        match = re.fullmatch(r"(?:\((.*)\) and )?\$id > (\d+) order by \$id asc limit (\d+)", params["query"])
        assert match, params["query"]
        cond, last, limit = match.group(1), int(match.group(2)), int(match.group(3))
        ids = [i for i in range(1, total + 1) if i > last]
        if cond:
            inside = re.fullmatch(r"\$id in \((.*)\)", cond)
            assert inside, cond
            ids = [i for i in ids if str(i) in inside.group(1).split(", ")]
        page = ids[:limit]
        return httpx.Response(
            200,
            json={
                "records": [
                    {
                        "$id": {"type": "__ID__", "value": str(i)},
                        "n": {"type": "NUMBER", "value": str(i * 10)},
                    }
                    for i in page
                ],
                "totalCount": None,
            },
        )

    return handle


def test_get_records_pages_by_id_through_every_record() -> None:
    calls: list[dict[str, str]] = []
    client, _ = make_client(Recorder(fake_records_api(1234, calls)))
    records = list(client.get_records(7, fields=["n"]))
    assert [r["n"]["value"] for r in records] == [str(i * 10) for i in range(1, 1235)]
    assert all("$id" not in r for r in records)  # added for paging only
    assert [c["query"] for c in calls] == [f"$id > {n} order by $id asc limit 500" for n in (0, 500, 1000)]
    assert calls[0]["fields[0]"] == "n" and calls[0]["fields[1]"] == "$id" and calls[0]["app"] == "7"


def test_get_records_in_a_guest_space_with_a_condition() -> None:
    calls: list[dict[str, str]] = []
    rec = Recorder(fake_records_api(10, calls))
    client, _ = make_client(rec)
    records = list(client.get_records(7, query="$id in (2, 5)", guest_space_id=4))
    assert [r["$id"]["value"] for r in records] == ["2", "5"]
    assert rec.requests[0].url.path == "/k/guest/4/v1/records.json"


def test_records_exist_checks_ids_in_chunks() -> None:
    calls: list[dict[str, str]] = []
    client, _ = make_client(Recorder(fake_records_api(150, calls)))
    assert client.records_exist(1, [*range(1, 202, 2)]) == set(range(1, 151, 2))
    assert len(calls) == 2


def test_max_record_id_asks_for_the_highest_id_only() -> None:
    rec = Recorder(
        httpx.Response(
            200, json={"records": [{"$id": {"type": "__ID__", "value": "4711"}}], "totalCount": None}
        ),
        httpx.Response(200, json={"records": [], "totalCount": None}),
    )
    client, _ = make_client(rec)
    assert client.max_record_id(3, guest_space_id=5) == 4711
    assert client.max_record_id(3) == 0  # an empty app
    first = rec.requests[0]
    assert first.method == "GET" and first.url.path == "/k/guest/5/v1/records.json"
    params = dict(parse_qsl(first.url.query.decode()))
    assert params == {"app": "3", "fields[0]": "$id", "query": "order by $id desc limit 1"}


def test_max_record_id_against_the_sandbox() -> None:
    from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox

    sandbox = Sandbox.from_definition(
        {"apps": [{"id": 1, "name": "A", "fields": {"t": {"type": "SINGLE_LINE_TEXT"}}}]}
    )
    client = Client(SANDBOX_BASE_URL, Credentials(), transport=sandbox.transport())
    assert client.max_record_id(1) == 0
    client.bulk(
        [{"method": "POST", "api": "/k/v1/records.json", "payload": {"app": 1, "records": [{}, {}, {}]}}]
    )
    assert client.max_record_id(1) == 3
    assert [r["$id"]["value"] for r in client.get_records(1, "$id > 1", ["$id"])] == ["2", "3"]


def test_get_record_and_count() -> None:
    rec = Recorder(
        httpx.Response(200, json={"record": {"$id": {"type": "__ID__", "value": "9"}}}),
        httpx.Response(200, json={"records": [], "totalCount": "42"}),
    )
    client, _ = make_client(rec)
    assert client.get_record(3, 9)["$id"]["value"] == "9"
    assert client.count_records(3, 'status = "x"') == 42
    params = dict(parse_qsl(rec.requests[1].url.query.decode()))
    assert params["totalCount"] == "true" and params["query"] == 'status = "x" limit 1'


# ---- secrets ---------------------------------------------------------------------------------


def test_secrets_never_appear_in_errors_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = [repr(ALL_CREDS)]
    failures: list[Any] = [
        httpx.Response(
            400,
            json={"results": [{"code": "CB_VA01", "message": "bad", "errors": {"x": {"messages": ["y"]}}}]},
        ),
        httpx.Response(401, json={"code": "CB_WA01", "message": "Password authentication failed."}),
        httpx.Response(503, text="maintenance"),
        httpx.Response(502, text="gateway"),
        httpx.Response(200, text="not json"),
        httpx.ReadTimeout("t"),
        httpx.ConnectError("refused"),
    ]
    for failure in failures:
        client, _ = make_client(Recorder(failure), ALL_CREDS, retry=RetryPolicy(attempts=2, base_delay=0))
        texts.append(repr(client))
        with pytest.raises((KintoneError, TransportError)) as err:
            client.bulk([ADD])
        texts += [str(err.value), repr(err.value), str(err.value.__cause__ or "")]
    texts.append(caplog.text)
    encoded = [
        base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
        base64.b64encode(f"gate:{BASIC_PASSWORD}".encode()).decode(),
    ]
    blob = "\n".join(texts)
    assert "POST /k/v1/bulkRequest.json" in blob  # the texts are real
    for secret in (*SECRETS, *encoded):
        assert secret not in blob


# ---- against the embedded sandbox (the same client code as for a real Kintone) -------------------


SANDBOX_APPS = {
    "apps": [
        {
            "id": 1,
            "name": "Orders",
            "fields": {
                "title": {"type": "SINGLE_LINE_TEXT", "required": True},
                "order_no": {"type": "SINGLE_LINE_TEXT", "unique": True},
                "amount": {"type": "NUMBER"},
            },
            "process": {
                "enable": True,
                "states": ["Draft", "In review"],
                "actions": [{"name": "Submit", "from": "Draft", "to": "In review"}],
            },
        },
        {"id": 2, "name": "Guests", "guest_space_id": 5, "fields": {"title": {"type": "SINGLE_LINE_TEXT"}}},
        {
            "id": 3,
            "name": "Locked",
            "api_tokens": ["right-token"],
            "fields": {"title": {"type": "SINGLE_LINE_TEXT"}},
        },
    ]
}


class Validating(httpx.BaseTransport):
    """Passes requests on to the sandbox, checking each bulk body against the OpenAPI schema."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner
        self.bulks = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/bulkRequest.json"):
            validate_bulk_requests(json.loads(request.read()))
            self.bulks += 1
        return self.inner.handle_request(request)


@pytest.fixture
def sandbox() -> Any:
    with Sandbox.from_definition(SANDBOX_APPS) as sb:
        yield sb


def sandbox_client(sandbox: Sandbox, creds: Credentials = Credentials()) -> tuple[Client, Validating]:
    transport = Validating(sandbox.transport())
    return Client(SANDBOX_BASE_URL, creds, transport=transport, retry=NO_RETRY), transport


def add_call(app: int, start: int, count: int, api: str = "/k/v1/records.json") -> dict[str, Any]:
    records = [
        {"title": {"value": f"order {i}"}, "order_no": {"value": f"N-{i:05d}"}, "amount": {"value": str(i)}}
        for i in range(start, start + count)
    ]
    return {"method": "POST", "api": api, "payload": {"app": app, "records": records}}


def test_sandbox_bulk_adds_then_reads_everything_back(sandbox: Sandbox) -> None:
    client, transport = sandbox_client(sandbox)
    results = client.bulk([add_call(1, i * 100, 100) for i in range(12)])
    ids = [int(i) for r in results for i in r["ids"]]
    assert len(ids) == 1200 and len(set(ids)) == 1200 and transport.bulks == 1
    records = list(client.get_records(1, fields=["order_no", "amount"]))
    assert [r["order_no"]["value"] for r in records] == [
        f"N-{i:05d}" for i in range(1200)
    ]  # $id order = creation order
    assert set(records[0]) == {"order_no", "amount"}
    assert client.count_records(1) == 1200
    assert [
        r["amount"]["value"] for r in client.get_records(1, query="amount >= 1195", fields=["amount"])
    ] == [str(i) for i in range(1195, 1200)]
    assert client.records_exist(1, [ids[0], ids[-1], 999_999]) == {ids[0], ids[-1]}
    assert client.get_record(1, ids[3])["title"]["value"] == "order 3"
    assert client.app_form_fields(1)["order_no"]["type"] == "SINGLE_LINE_TEXT"


def test_sandbox_status_change_on_records_added_earlier(sandbox: Sandbox) -> None:
    client, _ = sandbox_client(sandbox)
    (added,) = client.bulk([add_call(1, 0, 3)])
    ids = [int(i) for i in added["ids"]]
    (moved,) = client.bulk(
        [
            {
                "method": "PUT",
                "api": "/k/v1/records/status.json",
                "payload": {"app": 1, "records": [{"id": i, "action": "Submit"} for i in ids]},
            }
        ]
    )
    assert [r["revision"] for r in moved["records"]] == ["3"] * 3
    assert {r["Status"]["value"] for r in client.get_records(1)} == {"In review"}


def test_sandbox_failing_bulk_names_the_index_and_leaves_nothing(sandbox: Sandbox) -> None:
    client, _ = sandbox_client(sandbox)
    bad = {
        "method": "POST",
        "api": "/k/v1/records.json",
        "payload": {"app": 1, "records": [{"title": {"value": "ok"}}, {"amount": {"value": "1"}}]},
    }
    with pytest.raises(KintoneError) as err:
        client.bulk([add_call(1, 0, 100), add_call(1, 100, 100), bad])
    exc = err.value
    assert exc.bulk_index == 2 and exc.code == "CB_VA01" and exc.status == 400
    assert any(key.startswith("records[1].title") for key in exc.errors)
    assert client.count_records(1) == 0  # the whole bulk was rolled back


def test_sandbox_guest_space(sandbox: Sandbox) -> None:
    client, _ = sandbox_client(sandbox)
    client.bulk(
        [
            {
                "method": "POST",
                "api": "/k/v1/records.json",
                "payload": {"app": 2, "records": [{"title": {"value": "g"}}]},
            }
        ],
        guest_space_id=5,
    )
    assert [r["title"]["value"] for r in client.get_records(2, guest_space_id=5)] == ["g"]
    with pytest.raises(KintoneError) as err:  # a guest-space app through /k/v1/
        list(client.get_records(2))
    assert err.value.code and err.value.status and err.value.status >= 400


def test_sandbox_api_tokens(sandbox: Sandbox) -> None:
    good, _ = sandbox_client(sandbox, Credentials(("right-token",)))
    good.bulk(
        [
            {
                "method": "POST",
                "api": "/k/v1/records.json",
                "payload": {"app": 3, "records": [{"title": {"value": "t"}}]},
            }
        ]
    )
    bad, _ = sandbox_client(sandbox, Credentials(("wrong-token",)))
    with pytest.raises(KintoneError) as err:
        bad.bulk(
            [
                {
                    "method": "POST",
                    "api": "/k/v1/records.json",
                    "payload": {"app": 3, "records": [{"title": {"value": "t"}}]},
                }
            ]
        )
    assert err.value.status in (401, 403) and "wrong-token" not in str(err.value)
    assert good.count_records(3) == 1


# ---- real sockets: the failure classes httpx raises on a real network ----------------------------


def test_a_closed_port_is_certainly_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    slept: list[float] = []
    client = Client(
        f"http://127.0.0.1:{port}",
        Credentials(TOKENS),
        retry=RetryPolicy(attempts=2, base_delay=0),
        sleep=slept.append,
    )
    with pytest.raises(TransportError) as err:
        client.bulk([ADD])
    assert err.value.sent_maybe is False and client.request_count == 2
    assert TOKENS[0] not in str(err.value)


def test_a_server_that_takes_the_request_and_never_answers_leaves_it_in_doubt() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    received: list[bytes] = []

    def swallow() -> None:
        conn, _ = server.accept()
        received.append(conn.recv(65536))
        threading.Event().wait(2)  # hold the connection open, answer nothing
        conn.close()

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    client = Client(
        f"http://127.0.0.1:{server.getsockname()[1]}",
        Credentials(TOKENS),
        timeout=httpx.Timeout(2.0, read=0.3),
        sleep=lambda s: None,
    )
    with pytest.raises(TransportError) as err:
        client.bulk([ADD])
    server.close()
    assert err.value.sent_maybe is True and client.request_count == 1  # never sent twice
    assert received and received[0].startswith(b"POST /k/v1/bulkRequest.json")


# ---- against the sandbox's seeded faults ----------------------------------------------------


def test_retryable_faults_are_retried_and_every_record_lands_once() -> None:
    from kmigrate.sandbox.faults import FaultProfile

    sandbox = Sandbox.from_definition(
        {"apps": [{"id": 1, "name": "Notes", "fields": {"title": "SINGLE_LINE_TEXT"}}]}
    )
    profile = FaultProfile.parse("seed=11,429=0.2,503=0.2,reset=0.2")
    clock = FakeClock()
    client = Client(
        SANDBOX_BASE_URL,
        Credentials(),
        transport=sandbox.transport(faults=profile),
        retry=RetryPolicy(attempts=30, max_seconds=10_000),
        sleep=clock.sleep,
        clock=clock,
    )
    for n in range(40):
        client.bulk(
            [
                {
                    "method": "POST",
                    "api": "/k/v1/record.json",
                    "payload": {"app": 1, "record": {"title": {"value": f"n{n}"}}},
                }
            ]
        )
    assert [r["title"]["value"] for r in sandbox.records(1)] == [f"n{n}" for n in range(40)]
    injected = profile.report()["faults"]
    assert isinstance(injected, dict) and injected["429"] and injected["503"] and injected["reset"]
    assert client.retry_count == injected["429"] + injected["503"] + injected["reset"] == profile.retries


@pytest.mark.parametrize("kind", ["drop", "slow"])
def test_a_bulk_whose_answer_the_fault_lost_is_in_doubt_and_not_resent(kind: str) -> None:
    from kmigrate.sandbox.faults import FaultProfile

    sandbox = Sandbox.from_definition(
        {"apps": [{"id": 1, "name": "Notes", "fields": {"title": "SINGLE_LINE_TEXT"}}]}
    )
    client = Client(
        SANDBOX_BASE_URL,
        Credentials(),
        transport=sandbox.transport(faults=FaultProfile.parse(f"seed=1,{kind}=1")),
        sleep=lambda s: None,
    )
    with pytest.raises(TransportError) as err:
        client.bulk([{"method": "POST", "api": "/k/v1/record.json", "payload": {"app": 1, "record": {}}}])
    assert err.value.sent_maybe and client.request_count == 1 and len(sandbox.records(1)) == 1


def test_a_read_is_retried_after_a_server_error_and_a_write_is_not() -> None:
    error = httpx.Response(500, json={"code": "CB_UN01", "id": "x", "message": "oops"})
    rec = Recorder(error, httpx.Response(502, text="bad gateway"), httpx.Response(200, json={"records": []}))
    client, slept = make_client(rec, retry=RetryPolicy(attempts=5, base_delay=0.1))
    assert client.request("GET", "records", params={"app": 1}) == {"records": []}
    assert len(rec.requests) == 3 and len(slept) == 2 and client.retry_count == 2
    rec = Recorder(error, ok_bulk(1))
    client, slept = make_client(rec, retry=RetryPolicy(attempts=5, base_delay=0.1))
    with pytest.raises(KintoneError) as err:
        client.bulk([ADD])  # a 500 may have run it: never sent again by the client
    assert err.value.status == 500 and len(rec.requests) == 1 and slept == []


def test_an_encoded_bulk_is_byte_for_byte_what_the_client_sends_and_takes_a_head() -> None:
    from kmigrate.client import encode_bulk
    from kmigrate.plan import canonical_json

    encoded = encode_bulk([ADD, UPDATE], guest_space_id=None)
    assert encoded.body() == canonical_json({"requests": [ADD, UPDATE]}).encode()
    assert encoded.since(1).body() == canonical_json({"requests": [UPDATE]}).encode()
    marked = encoded.after([STATUS])
    assert [r["api"] for r in marked.requests] == [STATUS["api"], ADD["api"], UPDATE["api"]]
    with pytest.raises(InputError, match="1 to 20 requests"):
        encode_bulk([ADD] * 20, None).after([STATUS])
    assert encode_bulk([ADD], 12).requests[0]["api"] == "/k/guest/12/v1/records.json"


def test_an_encoded_bulk_sends_the_parts_it_is_given_only_for_requests_checking_left_as_they_were() -> None:
    from kmigrate.client import encode_bulk
    from kmigrate.plan import canonical_json

    marked = [b"<add as planned>", b"<update as planned>"]
    # Unchanged by the checks: the bytes given are what is sent, not encoded again.
    assert encode_bulk([ADD, UPDATE], None, parts=marked).parts == tuple(marked)
    # A part not known (None) is encoded here.
    assert encode_bulk([ADD, UPDATE], None, parts=[None, marked[1]]).parts == (
        canonical_json(ADD).encode(),
        marked[1],
    )
    # Put in a guest space, the api changes: the part given does not say what is sent any more.
    guest = encode_bulk([ADD], 12, parts=[marked[0]])
    assert guest.parts == (canonical_json({**ADD, "api": "/k/guest/12/v1/records.json"}).encode(),)
    lower = {**ADD, "method": "post"}  # the checks spell the method in capitals
    assert encode_bulk([lower], None, parts=[marked[0]]).parts == (canonical_json(ADD).encode(),)
    extra = {**ADD, "note": 1}  # a key the checks drop
    assert encode_bulk([extra], None, parts=[marked[0]]).parts == (canonical_json(ADD).encode(),)
