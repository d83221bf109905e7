"""The SQLite store: persistence between opens, a changed sandbox file, reset."""

from __future__ import annotations

from pathlib import Path

import yaml

from kmigrate.sandbox import Sandbox

from .conftest import rec


def write(path: Path, apps: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"apps": apps}, sort_keys=False), encoding="utf-8")
    return path


ORDERS = {
    "id": 1,
    "name": "Orders",
    "fields": {"title": "SINGLE_LINE_TEXT", "no": {"type": "SINGLE_LINE_TEXT", "unique": True}},
}


def test_records_survive_between_opens_and_the_store_dir_is_made(tmp_path: Path):
    file = write(tmp_path / "sandbox.yaml", [ORDERS])
    store = tmp_path / "state" / "deep" / "sandbox.sqlite3"
    with Sandbox.open(file, store) as first, first.client() as client:
        assert (
            client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="kept", no="N1")}).json()[
                "id"
            ]
            == "1"
        )
    with Sandbox.open(file, store) as second, second.client() as client:
        assert [r["title"]["value"] for r in second.records(1)] == ["kept"]
        assert client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="x")}).json()["id"] == "2"
        # uniqueness is remembered too
        response = client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="y", no="N1")})
        assert response.status_code == 400


def test_a_changed_sandbox_file_keeps_working(tmp_path: Path):
    file = write(tmp_path / "sandbox.yaml", [ORDERS])
    store = tmp_path / "sandbox.sqlite3"
    with Sandbox.open(file, store) as sb, sb.client() as client:
        client.post(
            "/k/v1/records.json",
            json={"app": 1, "records": [rec(title="a", no="N1"), rec(title="a", no="N2")]},
        )
    changed = {
        **ORDERS,
        "fields": {"title": {"type": "SINGLE_LINE_TEXT", "unique": True}, "extra": {"type": "NUMBER"}},
    }
    write(file, [changed, {"id": 2, "name": "New app", "fields": {"x": "SINGLE_LINE_TEXT"}}])
    with Sandbox.open(file, store) as sb, sb.client() as client:
        record = sb.records(1)[0]
        assert "no" not in record and record["extra"]["value"] == ""  # fields come from the file
        assert sb.records(2) == []
        assert client.post("/k/v1/record.json", json={"app": 2, "record": rec(x="1")}).json()["id"] == "1"
        # title became unique: a third "a" is refused
        response = client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="a")})
        assert response.status_code == 400 and "record.title.value" in response.json()["errors"]


def test_reset_empties_a_file_store(tmp_path: Path):
    file = write(tmp_path / "sandbox.yaml", [ORDERS])
    store = tmp_path / "s.sqlite3"
    with Sandbox.open(file, store) as sb, sb.client() as client:
        client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="a", no="N1")})
        sb.reset()
    with Sandbox.open(file, store) as sb, sb.client() as client:
        assert sb.records(1) == []
        assert (
            client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="a", no="N1")}).json()["id"]
            == "1"
        )


def test_two_sandboxes_in_memory_are_independent():
    definition = {"apps": [ORDERS]}
    with (
        Sandbox.from_definition(definition) as a,
        Sandbox.from_definition(definition) as b,
        a.client() as client,
    ):
        client.post("/k/v1/record.json", json={"app": 1, "record": rec(title="a")})
        assert len(a.records(1)) == 1 and b.records(1) == []


def test_a_field_made_unique_over_repeated_values_is_not_answered_from_the_index(tmp_path: Path):
    file = write(tmp_path / "sandbox.yaml", [ORDERS])
    store = tmp_path / "sandbox.sqlite3"
    with Sandbox.open(file, store) as sb, sb.client() as client:
        records = [rec(title="a", no="N1"), rec(title="a", no="N2"), rec(title="b")]
        client.post("/k/v1/records.json", json={"app": 1, "records": records})
    unique_title = {
        **ORDERS,
        "fields": {**ORDERS["fields"], "title": {"type": "SINGLE_LINE_TEXT", "unique": True}},
    }
    write(file, [unique_title])
    with Sandbox.open(file, store) as sb, sb.client() as client:
        # The index holds one record per value: "a" of record 2 is not in it.
        assert sb.api.store.unique_ids(1, "title", ["a"]) is None
        assert sb.api.store.unique_ids(1, "no", ["N1", "N2", "N3"]) == {1, 2}
        body = client.get("/k/v1/records.json", params={"app": 1, "query": 'title in ("a")'}).json()
        assert [r["$id"]["value"] for r in body["records"]] == ["2", "1"]
        client.put("/k/v1/record.json", json={"app": 1, "id": 1, "record": rec(title="c")})
    with Sandbox.open(file, store) as sb, sb.client() as client:
        assert sb.api.store.unique_ids(1, "title", ["a", "c"]) == {1, 2}  # no repeat left: complete again
        body = client.get("/k/v1/records.json", params={"app": 1, "query": 'title = "a"'}).json()
        assert [r["$id"]["value"] for r in body["records"]] == ["2"]


def test_select_reads_by_the_primary_key_in_either_order():
    with Sandbox.from_definition({"apps": [ORDERS]}) as sb, sb.client() as client:
        for _ in range(3):  # more than a few of the growing chunks it reads
            client.post(
                "/k/v1/records.json", json={"app": 1, "records": [rec(title=str(i)) for i in range(50)]}
            )
        client.request("DELETE", "/k/v1/records.json", json={"app": 1, "ids": [17, 18, 100]})
        store = sb.api.store
        every = [i for i in range(1, 151) if i not in (17, 18, 100)]
        assert [r.id for r in store.select(1, -(2**63), 2**63 - 1)] == every
        assert [r.id for r in store.select(1, 10, 120, descending=True)] == [
            i for i in reversed(every) if 10 <= i <= 120
        ]
        assert [r.id for r in store.select(1, 5, 99, [200, 99, 17, 3, 5, 40])] == [5, 40, 99]
        assert [r.id for r in store.select(1, 1, 150, range(1, 151), descending=True)] == list(
            reversed(every)
        )
        assert [r.id for r in store.select(2, 1, 150)] == []
