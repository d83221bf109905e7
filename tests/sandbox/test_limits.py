"""Kintone's limits in the sandbox: requests in flight (429 GAIA_TO04) and the per-app daily counter."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from kmigrate.sandbox import Sandbox

from .conftest import DEFINITION, Kintone, rec


def test_past_the_in_flight_limit_a_request_is_refused_at_once_with_429():
    with Sandbox.from_definition(DEFINITION, max_in_flight=3) as sandbox:
        gate = sandbox.wsgi_app.gate
        answers: list[httpx.Response] = []

        def call() -> None:
            with sandbox.client() as client:
                answers.append(client.get("/k/v1/records.json", params={"app": 1}))

        threads = [threading.Thread(target=call) for _ in range(3)]
        with sandbox._lock:  # the three are received, then wait for the store
            for t in threads:
                t.start()
            with gate:
                assert gate.wait_for(lambda: sandbox.wsgi_app.in_flight == 3, timeout=10)
            with sandbox.client() as client:
                refused = client.get("/k/v1/records.json", params={"app": 1})
        for t in threads:
            t.join(timeout=10)
        assert refused.status_code == 429 and refused.json()["code"] == "GAIA_TO04"
        assert refused.headers["X-ConcurrencyLimit-Limit"] == "3"
        assert refused.headers["X-ConcurrencyLimit-Running"] == "3"
        assert [a.status_code for a in answers] == [200, 200, 200]
        with sandbox.client() as client:
            calm = client.get("/k/v1/records.json", params={"app": 1})
        assert calm.status_code == 200 and calm.headers["X-ConcurrencyLimit-Running"] == "1"
        assert sandbox.wsgi_app.in_flight == 0


def test_each_request_counts_once_per_app_it_names_and_the_count_persists(tmp_path: Path):
    store = tmp_path / "s.sqlite3"
    with Sandbox.from_definition(DEFINITION, store=store) as sandbox, sandbox.client() as client:
        sandbox.api.today = lambda: "2026-01-31"
        k = Kintone(client)
        k.post("record", {"app": 1, "record": rec(title="a")})
        k.get("records", {"app": 1})
        k.get("app", params={"id": 4})
        k.error(
            "GET", "record", {"app": 1, "id": 99}, status=404, code="GAIA_RE01"
        )  # refused calls count too
        k.get("records", {"app": 77})  # no such app: counted for none
        k.post(
            "bulkRequest",
            {
                "requests": [
                    {
                        "method": "POST",
                        "api": "/k/v1/record.json",
                        "payload": {"app": 1, "record": rec(title="b")},
                    },
                    {
                        "method": "POST",
                        "api": "/k/v1/record.json",
                        "payload": {"app": 1, "record": rec(title="c")},
                    },
                    {
                        "method": "POST",
                        "api": "/k/v1/record.json",
                        "payload": {"app": 4, "record": rec(title="d")},
                    },
                ]
            },
        )
        assert sandbox.request_counts() == {1: 4, 4: 2}
        sandbox.api.today = lambda: "2026-02-01"
        k.get("records", {"app": 1})
        assert sandbox.request_counts() == {1: 1}
    with Sandbox.from_definition(DEFINITION, store=store) as again:
        again.reset()  # records go, the counter stays
        assert again.request_counts("2026-01-31") == {1: 4, 4: 2}
