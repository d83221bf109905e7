"""Seeded fault injection (kmigrate/sandbox/faults.py) in process and on real sockets, and the
bulk semantics switch (atomic / prefix)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from kmigrate.errors import InputError
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox
from kmigrate.sandbox.faults import FAULT_KINDS, FaultProfile
from kmigrate.sandbox.server import FAULTS_PATH, make_server

from .conftest import DEFINITION, rec

SPEC = "seed=7,latency=0-20,429=0.05,500=0.02,503=0.05,reset=0.05,drop=0.05,slow=0.02"


def only(kind: str) -> FaultProfile:
    return FaultProfile.parse(f"seed=1,{kind}=1")


def add_one(client: httpx.Client, title: str = "x") -> httpx.Response:
    return client.post("/k/v1/record.json", json={"app": 4, "record": rec(title=title)})


def titles(sandbox: Sandbox, app: int = 4) -> list[str]:
    return [r["title"]["value"] for r in sandbox.records(app)]


# ---- the spec and the seeded draws -----------------------------------------------------------


def test_spec_is_parsed_with_every_key():
    profile = FaultProfile.parse(SPEC + ",slow_delay=1.5")
    assert profile.seed == 7 and profile.latency_ms == (0, 20) and profile.slow_delay == 1.5
    assert profile.probabilities == {
        "429": 0.05,
        "500": 0.02,
        "503": 0.05,
        "reset": 0.05,
        "drop": 0.05,
        "slow": 0.02,
    }


@pytest.mark.parametrize(
    "spec, why",
    [
        ("seed=x", "not a number"),
        ("429=1.5", "between 0 and 1"),
        ("latency=20-5", "LOW-HIGH"),
        ("teapot=0.1", "unknown key 'teapot'"),
        ("429", "KEY=VALUE"),
        ("429=0.6,503=0.6", "more than 1"),
        ("count=-1", "not negative"),
    ],
)
def test_a_bad_spec_is_an_input_error_naming_the_part(spec: str, why: str):
    with pytest.raises(InputError, match=why):
        FaultProfile.parse(spec)


def test_the_same_seed_replays_the_same_faults_and_another_seed_does_not():
    def draws(spec: str) -> list[tuple[str | None, float]]:
        profile = FaultProfile.parse(spec)
        return [(f.kind, f.latency) for f in (profile.next() for _ in range(500))]

    first = draws(SPEC)
    assert first == draws(SPEC)
    assert first != draws(SPEC.replace("seed=7", "seed=8"))
    kinds = {kind for kind, _ in first}
    assert (
        set(FAULT_KINDS) - {"partial"} <= kinds and None in kinds
    )  # 500 draws meet every kind at these rates


def test_counts_match_the_draws():
    profile = FaultProfile.parse(SPEC)
    drawn = [profile.next() for _ in range(300)]
    report = profile.report()
    assert report["requests"] == 300
    faults = report["faults"]
    assert isinstance(faults, dict)
    for kind in FAULT_KINDS:
        assert faults[kind] == sum(f.kind == kind for f in drawn)
    assert faults["latency"] == sum(f.latency > 0 for f in drawn)


# ---- in process ------------------------------------------------------------------------------


@pytest.fixture
def plain() -> Iterator[Sandbox]:
    sb = Sandbox.from_definition(json.loads(json.dumps(DEFINITION)))
    yield sb
    sb.close()


def faulty_client(sandbox: Sandbox, profile: FaultProfile) -> httpx.Client:
    return httpx.Client(base_url=SANDBOX_BASE_URL, transport=sandbox.transport(faults=profile))


def test_429_is_kintones_json_and_nothing_runs(plain: Sandbox):
    with faulty_client(plain, only("429")) as client:
        response = add_one(client)
    assert response.status_code == 429 and response.json()["code"] == "GAIA_TO04"
    assert {"code", "id", "message"} <= set(response.json())
    assert titles(plain) == []


def test_500_is_kintone_shaped_json_and_nothing_runs(plain: Sandbox):
    with faulty_client(plain, only("500")) as client:
        response = add_one(client)
    assert response.status_code == 500 and {"code", "id", "message"} <= set(response.json())
    assert titles(plain) == []


def test_503_is_plain_text_and_nothing_runs(plain: Sandbox):
    with faulty_client(plain, only("503")) as client:
        response = add_one(client)
    assert response.status_code == 503 and response.headers["content-type"].startswith("text/plain")
    with pytest.raises(ValueError):
        response.json()
    assert titles(plain) == []


def test_reset_is_a_connect_error_before_anything_runs(plain: Sandbox):
    with faulty_client(plain, only("reset")) as client, pytest.raises(httpx.ConnectError):
        add_one(client)
    assert titles(plain) == []


def test_drop_commits_then_loses_the_answer(plain: Sandbox):
    with faulty_client(plain, only("drop")) as client, pytest.raises(httpx.RemoteProtocolError):
        add_one(client, "kept")
    assert titles(plain) == ["kept"]


def test_slow_commits_then_times_out_and_sleeps_only_when_asked(plain: Sandbox):
    with faulty_client(plain, only("slow")) as client, pytest.raises(httpx.ReadTimeout):
        add_one(client, "late")
    assert titles(plain) == ["late"]
    slept: list[float] = []
    profile = FaultProfile.parse("seed=1,slow=1,latency=5-5,slow_delay=2.5")
    from kmigrate.sandbox.faults import FaultyTransport

    inner = Sandbox.transport(plain)
    with (
        httpx.Client(
            base_url=SANDBOX_BASE_URL, transport=FaultyTransport(inner, profile, sleep=slept.append)
        ) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        add_one(client)
    assert slept == [0.005, 2.5]


def test_a_repeated_request_after_a_fault_counts_as_a_retry(plain: Sandbox):
    profile = FaultProfile.parse("seed=3,429=0.5")
    with faulty_client(plain, profile) as client:
        statuses = [add_one(client, "same").status_code for _ in range(20)]
    # every request after a 429 repeats it: each is a retry; after a 200 the next is not
    expected = sum(1 for before in statuses[:-1] if before == 429)
    assert expected > 0 and profile.retries == expected
    assert len(titles(plain)) == statuses.count(200)


# ---- on real sockets -------------------------------------------------------------------------


@pytest.fixture
def served(plain: Sandbox, request: pytest.FixtureRequest) -> Iterator[tuple[str, FaultProfile]]:
    profile = FaultProfile.parse(request.param)
    server = make_server(plain, "127.0.0.1", 0, faults=profile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", profile
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("served", ["seed=1,reset=1"], indirect=True)
def test_served_reset_breaks_the_connection_before_handling(served, plain: Sandbox):
    base, _ = served
    with httpx.Client(base_url=base, timeout=5) as client, pytest.raises(httpx.TransportError) as caught:
        add_one(client)
    assert not isinstance(caught.value, httpx.TimeoutException)
    assert titles(plain) == []


@pytest.mark.parametrize("served", ["seed=1,drop=1"], indirect=True)
def test_served_drop_commits_and_closes_without_an_answer(served, plain: Sandbox):
    base, _ = served
    with httpx.Client(base_url=base, timeout=5) as client, pytest.raises(httpx.RemoteProtocolError):
        add_one(client, "kept")
    assert titles(plain) == ["kept"]


@pytest.mark.parametrize("served", ["seed=1,slow=1,slow_delay=1"], indirect=True)
def test_served_slow_answer_comes_after_the_clients_timeout(served, plain: Sandbox):
    base, _ = served
    with httpx.Client(base_url=base, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        add_one(client, "late")
    assert titles(plain) == ["late"]


@pytest.mark.parametrize("served", ["seed=1,429=0.5,503=0.5"], indirect=True)
def test_served_refusals_and_the_counters_endpoint(served, plain: Sandbox):
    base, profile = served
    with httpx.Client(base_url=base, timeout=5) as client:
        statuses = [add_one(client).status_code for _ in range(6)]
        report = client.get(FAULTS_PATH).json()
    assert set(statuses) <= {429, 503} and titles(plain) == []
    assert report["requests"] == 6 and report["faults"]["429"] + report["faults"]["503"] == 6
    assert report["faults"]["429"] == statuses.count(429) and report["spec"] == profile.spec
    assert report["retries"] == 5  # the same request six times, each after a fault


# ---- bulk semantics --------------------------------------------------------------------------


def failing_bulk() -> dict:
    good = {"method": "POST", "api": "/k/v1/record.json", "payload": {"app": 4, "record": rec(title="first")}}
    bad = {"method": "PUT", "api": "/k/v1/record.json", "payload": {"app": 4, "id": 999, "record": {}}}
    return {"requests": [good, bad, good]}


@pytest.mark.parametrize("semantics, kept", [("atomic", []), ("prefix", ["first"])])
def test_a_failed_bulk_keeps_what_its_semantics_say_and_answers_in_kintones_shape(semantics: str, kept):
    with Sandbox.from_definition(json.loads(json.dumps(DEFINITION)), bulk_semantics=semantics) as sb:
        with sb.client() as client:
            response = client.post("/k/v1/bulkRequest.json", json=failing_bulk())
        assert response.status_code == 404
        results = response.json()["results"]
        assert results[0] == {} and results[2] == {} and results[1]["code"] == "GAIA_RE01"
        assert titles(sb) == kept


def test_unknown_bulk_semantics_is_refused():
    with pytest.raises(ValueError, match="bulk_semantics"):
        Sandbox.from_definition(json.loads(json.dumps(DEFINITION)), bulk_semantics="eventual")


# ---- the crash matrix's kill switch ------------------------------------------------------------


@pytest.mark.parametrize("phase, kept", [("before", []), ("commit", ["second"]), ("answer+1", ["second"])])
def test_the_kill_switch_kills_the_named_process_at_its_request_and_phase(
    plain: Sandbox, tmp_path, phase: str, kept: list[str]
):
    import subprocess
    import sys

    from kmigrate.sandbox.server import KillSwitch

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = tmp_path / "pid"
        pid_file.write_text(str(victim.pid))
        switch = KillSwitch.parse(f"2:{phase}", pid_file)
        server = make_server(plain, "127.0.0.1", 0, kill=switch)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=5) as client:
                assert add_one(client, "first").status_code == 200
                assert victim.poll() is None  # the first request kills nobody
                try:
                    answered = add_one(client, "second").status_code == 200
                except httpx.TransportError:
                    answered = False
                assert answered == phase.startswith("answer")
                assert client.get(FAULTS_PATH).json()["requests"] == 2 - (phase == "before")
        finally:
            server.shutdown()
            server.server_close()
        assert victim.wait(timeout=10) == -9 and switch.fired
        assert titles(plain) == ["first", *kept]
    finally:
        victim.kill()


@pytest.mark.parametrize("spec", ["0:commit", "3:later", "x:before", "2:answer+-1"])
def test_a_bad_kill_point_is_an_input_error(spec: str, tmp_path):
    from kmigrate.sandbox.server import KillSwitch

    with pytest.raises(InputError, match="kill point"):
        KillSwitch.parse(spec, tmp_path / "pid")


# ---- partial: a bulk that fails part-way --------------------------------------------------------


def three_adds() -> dict:
    add = {"method": "POST", "api": "/k/v1/record.json", "payload": {"app": 4, "record": rec(title="a")}}
    return {"requests": [add, add, add]}


@pytest.mark.parametrize("semantics", ["atomic", "prefix"])
def test_partial_fails_a_bulk_at_a_drawn_request_and_keeps_what_the_semantics_keep(semantics: str):
    profile = FaultProfile.parse("seed=1,partial=1")
    at = 1 + min(int(FaultProfile.parse("seed=1,partial=1").next().share * 2), 1)  # never 0 when 3
    with Sandbox.from_definition(json.loads(json.dumps(DEFINITION)), bulk_semantics=semantics) as sb:
        with faulty_client(sb, profile) as client:
            response = client.post("/k/v1/bulkRequest.json", json=three_adds())
            assert response.status_code == 500
            results = response.json()["results"]
            assert results[at]["code"] == "CB_UN01" and f"request {at}" in results[at]["message"]
            assert [r for i, r in enumerate(results) if i != at] == [{}, {}]
            assert add_one(client).status_code == 200  # not a bulk: no fault
        assert len(titles(sb)) == (at if semantics == "prefix" else 0) + 1
        assert profile.report()["faults"]["partial"] == 1


@pytest.mark.parametrize("served", ["seed=1,partial=1"], indirect=True)
def test_served_partial_is_a_500_in_the_failed_bulk_shape(served, plain: Sandbox):
    base, profile = served
    with httpx.Client(base_url=base, timeout=5) as client:
        response = client.post("/k/v1/bulkRequest.json", json=three_adds())
    assert response.status_code == 500 and sum(bool(r) for r in response.json()["results"]) == 1
    assert titles(plain) == [] and profile.report()["faults"]["partial"] == 1  # atomic: all rolled back


def test_count_stops_injecting_after_that_many_faults_and_partial_waits_for_a_bulk(plain: Sandbox):
    profile = FaultProfile.parse("seed=1,partial=1,count=1")
    with faulty_client(plain, profile) as client:
        assert add_one(client).status_code == 200  # not a bulk: partial does not apply, nor count
        assert client.post("/k/v1/bulkRequest.json", json=three_adds()).status_code == 500
        assert client.post("/k/v1/bulkRequest.json", json=three_adds()).status_code == 200
    assert profile.report()["faults"]["partial"] == 1 and len(titles(plain)) == 1 + 3
