"""records/cursor.json: create, read page by page, delete; size and count limits."""

from __future__ import annotations

from kmigrate.sandbox import Sandbox

from .conftest import Kintone, rec


def fill(k: Kintone, n: int) -> None:
    for start in range(0, n, 100):
        k.ok(
            "POST",
            "records",
            {"app": 1, "records": [rec(title=f"t{i}", amount=i) for i in range(start, min(n, start + 100))]},
        )


def test_cursor_reads_every_matching_record_in_order(k: Kintone):
    fill(k, 250)
    created = k.ok(
        "POST",
        "records/cursor",
        {"app": 1, "query": "amount >= 10 order by amount asc", "fields": ["amount"], "size": 100},
    )
    assert created["totalCount"] == "240"
    pages = []
    while True:
        page = k.ok("GET", "records/cursor", params={"id": created["id"]})
        pages.append(page["records"])
        if not page["next"]:
            break
    assert [len(p) for p in pages] == [100, 100, 40]
    assert [r["amount"]["value"] for p in pages for r in p] == [str(i) for i in range(10, 250)]
    k.error("GET", "records/cursor", params={"id": created["id"]}, status=404, code="GAIA_CN01")  # consumed


def test_cursor_size_limits_and_no_limit_in_query(k: Kintone):
    k.error("POST", "records/cursor", {"app": 1, "size": 501}, status=400, code="CB_VA01")
    k.error("POST", "records/cursor", {"app": 1, "size": 0}, status=400, code="CB_VA01")
    k.error("POST", "records/cursor", {"app": 1, "query": "limit 5"}, status=400, code="CB_VA01")
    assert k.ok("POST", "records/cursor", {"app": 1, "size": 500})["totalCount"] == "0"


def test_at_most_ten_live_cursors_and_delete_frees_one(k: Kintone):
    ids = [k.ok("POST", "records/cursor", {"app": 1})["id"] for _ in range(10)]
    k.error("POST", "records/cursor", {"app": 1}, status=400, code="GAIA_TM12")
    assert k.ok("DELETE", "records/cursor", {"id": ids[0]}) == {}
    k.ok("POST", "records/cursor", {"app": 1})
    k.error("DELETE", "records/cursor", {"id": ids[0]}, status=404, code="GAIA_CN01")


def test_cursors_expire_after_ten_minutes(sandbox: Sandbox, k: Kintone):
    now = [1000.0]
    sandbox.api.clock = lambda: now[0]
    cursor = k.ok("POST", "records/cursor", {"app": 1})["id"]
    now[0] += 601
    k.error("GET", "records/cursor", params={"id": cursor}, status=404, code="GAIA_CN01")
