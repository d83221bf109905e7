"""The sandbox over the network: plain httpx against a real localhost port."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import yaml

from kmigrate.sandbox import Sandbox
from kmigrate.sandbox.server import make_server

from .conftest import DEFINITION, rec


def test_served_sandbox_answers_kintone_clients_over_http(sandbox: Sandbox):
    server = make_server(sandbox, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            added = client.post("/k/v1/records.json", json={"app": 1, "records": [rec(title="net")] * 3})
            assert added.json() == {"ids": ["1", "2", "3"], "revisions": ["1", "1", "1"]}
            got = client.get(
                "/k/v1/records.json", params={"app": 1, "query": "$id > 1", "totalCount": "true"}
            )
            assert got.json()["totalCount"] == "2"
            bulk = client.post(
                "/k/v1/bulkRequest.json",
                json={
                    "requests": [
                        {"method": "DELETE", "api": "/k/v1/records.json", "payload": {"app": 1, "ids": [1]}},
                        {
                            "method": "PUT",
                            "api": "/k/v1/record.json",
                            "payload": {"app": 1, "id": 1, "record": {}},
                        },
                    ]
                },
            )
            assert bulk.status_code == 404 and bulk.json()["results"][0] == {}
            # repeated token headers over the wire are joined, as Kintone does
            token = client.get(
                "/k/v1/records.json",
                params={"app": 2},
                headers=[("X-Cybozu-API-Token", "nope"), ("X-Cybozu-API-Token", "view-token")],
            )
            assert token.status_code == 200, token.text
            auth = base64.b64encode(b"zoe:pw").decode()
            client.put(
                "/k/v1/record.json",
                json={"app": 1, "id": 2, "record": rec(title="by zoe")},
                headers={"X-Cybozu-Authorization": auth},
            )
            assert (
                client.get("/k/v1/record.json?app=1&id=2").json()["record"]["Updated_by"]["value"]["code"]
                == "zoe"
            )
            wrong = client.get("/nothing")
            assert wrong.status_code == 404 and wrong.json()["code"] == "CB_NF01"
        assert len(sandbox.records(1)) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_kmigrate_sandbox_serve_command(tmp_path: Path):
    file = tmp_path / "sandbox.yaml"
    file.write_text(yaml.safe_dump(DEFINITION, sort_keys=False), encoding="utf-8")
    store = tmp_path / "store.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kmigrate",
            "sandbox",
            "--file",
            str(file),
            "--store",
            str(store),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = proc.stdout.readline()
        assert "http://127.0.0.1:" in first, first + proc.stderr.read()
        url = first.split()[3]
        response = httpx.post(
            f"{url}/k/v1/record.json", json={"app": 4, "record": rec(title="served")}, timeout=5
        )
        assert response.json() == {"id": "1", "revision": "1"}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped" in out
    with Sandbox.open(file, store) as sb:  # the served writes reached the store
        assert [r["title"]["value"] for r in sb.records(4)] == ["served"]


def test_served_requests_are_taken_concurrently_with_their_latency_outside_any_lock(
    sandbox: Sandbox, monkeypatch
):
    """Three requests each meet an injected latency; the latency waits at a barrier of three,
    so the requests pass only if the server holds all three in their latency at once."""
    import kmigrate.sandbox.server as server_module
    from kmigrate.sandbox.faults import FaultProfile

    barrier = threading.Barrier(3)
    monkeypatch.setattr(server_module.time, "sleep", lambda seconds: barrier.wait(timeout=30))
    server = make_server(sandbox, "127.0.0.1", 0, faults=FaultProfile.parse("seed=1,latency=5-5"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    statuses: list[int] = []
    try:
        base = f"http://127.0.0.1:{server.server_port}"

        def add(n: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                statuses.append(
                    client.post(
                        "/k/v1/records.json", json={"app": 1, "records": [rec(title=str(n))]}
                    ).status_code
                )

        threads = [threading.Thread(target=add, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [200, 200, 200]
    assert not barrier.broken
    assert sorted(r["title"]["value"] for r in sandbox.records(1)) == ["0", "1", "2"]
