"""Attachments (kmigrate.sandbox.files): upload, fileKeys in FILE fields, download."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kmigrate.sandbox import Sandbox

from .conftest import Kintone, check, rec

FILE_APP: dict[str, Any] = {
    "apps": [
        {
            "id": 1,
            "name": "Contracts",
            "fields": {
                "title": "SINGLE_LINE_TEXT",
                "contract": "FILE",
                "parts": {"type": "SUBTABLE", "fields": {"drawing": "FILE", "label": "SINGLE_LINE_TEXT"}},
            },
        }
    ]
}


@pytest.fixture
def fk():
    clock = [1_000_000.0]
    with Sandbox.from_definition(FILE_APP) as sandbox, sandbox.client() as client:
        sandbox.api.files.clock = lambda: clock[0]
        yield Kintone(client), clock


def upload(
    k: Kintone, name: str = "C-001.pdf", data: bytes = b"%PDF-1.4 contract", kind: str = "application/pdf"
) -> str:
    response = k.client.post("/k/v1/file.json", files={"file": (name, data, kind)})
    check(response, "/k/v1/file.json", "POST")
    assert response.status_code == 200, response.text
    return response.json()["fileKey"]


def test_upload_attach_read_and_download(fk):
    k, _ = fk
    key = upload(k, "契約 C-001.pdf")
    k.ok("POST", "record", {"app": 1, "record": rec(title="a", contract=[{"fileKey": key}])})
    (stored,) = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["contract"]["value"]
    assert stored["fileKey"] != key  # the record holds a permanent key of its own
    assert (stored["name"], stored["contentType"], stored["size"]) == (
        "契約 C-001.pdf",
        "application/pdf",
        "17",
    )
    got = k.client.get("/k/v1/file.json", params={"fileKey": stored["fileKey"]})
    assert got.status_code == 200 and got.content == b"%PDF-1.4 contract"
    assert got.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''%E5%A5%91%E7%B4%84%20C-001.pdf" in got.headers["content-disposition"]
    # An upload's own key is not a download key.
    k.error("GET", "file", params={"fileKey": key}, status=400, code="GAIA_BL01")


def test_unknown_and_expired_file_keys_are_refused_and_nothing_is_written(fk):
    k, clock = fk
    err = k.error(
        "POST",
        "record",
        {"app": 1, "record": rec(contract=[{"fileKey": "nope"}])},
        status=400,
        code="GAIA_BL01",
    )
    assert err["message"] == "The specified file (id: nope) not found."
    key = upload(k)
    clock[0] += 3 * 24 * 3600 + 1  # three days later, never attached
    k.error(
        "POST", "record", {"app": 1, "record": rec(contract=[{"fileKey": key}])}, status=400, code="GAIA_BL01"
    )
    assert k.ok("GET", "records", {"app": 1})["records"] == []


def test_an_update_keeps_files_sent_back_and_drops_the_others(fk):
    k, _ = fk
    first, second = upload(k, "a.txt", b"A", "text/plain"), upload(k, "b.txt", b"B", "text/plain")
    k.ok("POST", "record", {"app": 1, "record": rec(contract=[{"fileKey": first}, {"fileKey": second}])})
    held = [f["fileKey"] for f in k.ok("GET", "record", {"app": 1, "id": 1})["record"]["contract"]["value"]]
    k.ok("PUT", "record", {"app": 1, "id": 1, "record": rec(contract=[{"fileKey": held[1]}])})
    now = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["contract"]["value"]
    assert [(f["fileKey"], f["name"]) for f in now] == [(held[1], "b.txt")]
    # Another record cannot take a key this one holds.
    k.error(
        "POST",
        "record",
        {"app": 1, "record": rec(contract=[{"fileKey": held[1]}])},
        status=400,
        code="GAIA_BL01",
    )


def test_file_columns_in_tables_take_uploads_too(fk):
    k, _ = fk
    key = upload(k, "d.png", b"\x89PNG", "image/png")
    k.ok(
        "POST",
        "record",
        {
            "app": 1,
            "record": rec(
                parts=[{"value": {"drawing": {"value": [{"fileKey": key}]}, "label": {"value": "x"}}}]
            ),
        },
    )
    (row,) = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["parts"]["value"]
    (cell,) = row["value"]["drawing"]["value"]
    assert cell["name"] == "d.png" and cell["fileKey"] != key
    # The row sent back with its id and only its label keeps the drawing.
    k.ok(
        "PUT",
        "record",
        {"app": 1, "id": 1, "record": rec(parts=[{"id": row["id"], "value": {"label": {"value": "y"}}}])},
    )
    (again,) = k.ok("GET", "record", {"app": 1, "id": 1})["record"]["parts"]["value"]
    assert again["value"]["drawing"]["value"] == [cell] and again["value"]["label"]["value"] == "y"
    k.error(
        "POST",
        "record",
        {"app": 1, "record": rec(parts=[{"value": {"drawing": {"value": [{"fileKey": "zz"}]}}}])},
        status=400,
        code="GAIA_BL01",
    )


def test_bad_uploads_and_methods(fk):
    k, _ = fk
    no_part = k.client.post("/k/v1/file.json", files={"other": ("x", b"x")})
    assert (no_part.status_code, no_part.json()["code"]) == (400, "CB_VA01")
    as_json = k.client.post("/k/v1/file.json", json={"file": "x"})
    assert (as_json.status_code, as_json.json()["code"]) == (400, "CB_VA01")
    k.error("GET", "file", status=400, code="CB_VA01")
    k.error("PUT", "file", {"fileKey": "x"}, status=405, code="CB_ME01")


def test_files_persist_and_reset_drops_them(tmp_path):
    store = tmp_path / "s.sqlite3"
    with Sandbox.from_definition(FILE_APP, store=store) as sandbox, sandbox.client() as client:
        key = client.post("/k/v1/file.json", files={"file": ("a.txt", b"kept", "text/plain")}).json()[
            "fileKey"
        ]
        client.post("/k/v1/record.json", json={"app": 1, "record": rec(contract=[{"fileKey": key}])})
        held = client.get("/k/v1/record.json", params={"app": 1, "id": 1}).json()["record"]["contract"][
            "value"
        ][0]
    with Sandbox.from_definition(FILE_APP, store=store) as sandbox, sandbox.client() as client:
        assert client.get("/k/v1/file.json", params={"fileKey": held["fileKey"]}).content == b"kept"
        sandbox.reset()
        gone = client.get("/k/v1/file.json", params={"fileKey": held["fileKey"]})
        assert isinstance(gone, httpx.Response) and gone.json()["code"] == "GAIA_BL01"
