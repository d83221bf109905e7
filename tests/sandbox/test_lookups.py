"""Lookups: a LOOKUP field copies its mapped fields from the related app (GAIA_LO04 when the key is missing)."""

from __future__ import annotations

from typing import Any

import pytest

from kmigrate.errors import SandboxDefinitionError
from kmigrate.sandbox import Sandbox

from .conftest import Kintone, rec


def lookup(key: str = "code", app: int = 1, **mappings: str) -> dict[str, Any]:
    return {
        "relatedApp": {"app": str(app), "code": ""},
        "relatedKeyField": key,
        "fieldMappings": [{"field": mine, "relatedField": theirs} for mine, theirs in mappings.items()],
        "lookupPickerFields": [],
        "filterCond": "",
        "sort": "",
    }


def definition(customer_lookup: dict[str, Any] | None = None, tokens: bool = False) -> dict[str, Any]:
    return {
        "apps": [
            {
                "id": 1,
                "name": "Customers",
                **({"api_tokens": ["customers-token"]} if tokens else {}),
                "fields": {
                    "code": {"type": "SINGLE_LINE_TEXT", "unique": True},
                    "name": "SINGLE_LINE_TEXT",
                    "tier": {"type": "DROP_DOWN", "options": ["Gold", "Silver"]},
                    "region": "SINGLE_LINE_TEXT",
                },
            },
            {
                "id": 2,
                "name": "Orders",
                **({"api_tokens": ["orders-token"]} if tokens else {}),
                "fields": {
                    "customer": {
                        "type": "SINGLE_LINE_TEXT",
                        "lookup": customer_lookup or lookup(customer_name="name", customer_tier="tier"),
                    },
                    "by_number": {
                        "type": "NUMBER",
                        "lookup": lookup("Record_number", customer_region="region"),
                    },
                    "customer_name": "SINGLE_LINE_TEXT",
                    "customer_tier": {"type": "DROP_DOWN", "options": ["Gold", "Silver"]},
                    "customer_region": "SINGLE_LINE_TEXT",
                },
            },
        ]
    }


CUSTOMERS_TOKEN = {"X-Cybozu-API-Token": "customers-token"}


@pytest.fixture
def lk():
    with Sandbox.from_definition(definition()) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        k.ok(
            "POST",
            "records",
            {
                "app": 1,
                "records": [
                    rec(code="C-1", name="Acme", tier="Gold", region="North"),
                    rec(code="C-2", name="Bolt", tier="Silver", region="South"),
                ],
            },
        )
        yield k


def values(k: Kintone, record_id: int, *codes: str) -> list[Any]:
    record = k.ok("GET", "record", {"app": 2, "id": record_id})["record"]
    return [record[c]["value"] for c in codes]


def test_add_and_update_copy_the_mapped_fields(lk: Kintone):
    lk.ok("POST", "record", {"app": 2, "record": rec(customer="C-1", customer_name="typed by hand")})
    assert values(lk, 1, "customer", "customer_name", "customer_tier") == ["C-1", "Acme", "Gold"]
    lk.ok("PUT", "record", {"app": 2, "id": 1, "record": rec(customer="C-2")})
    assert values(lk, 1, "customer_name", "customer_tier") == ["Bolt", "Silver"]
    # An update that does not send the lookup leaves the copies alone.
    lk.ok("PUT", "record", {"app": 2, "id": 1, "record": rec(customer_region="West")})
    assert values(lk, 1, "customer_name", "customer_region") == ["Bolt", "West"]
    # An empty lookup clears what it copies.
    lk.ok("PUT", "record", {"app": 2, "id": 1, "record": rec(customer="")})
    assert values(lk, 1, "customer_name", "customer_tier") == ["", None]


def test_a_record_number_key_and_many_records_at_once(lk: Kintone):
    lk.ok("POST", "records", {"app": 2, "records": [rec(by_number="2"), rec(by_number="1", customer="C-1")]})
    assert values(lk, 1, "customer_region") == ["South"]
    assert values(lk, 2, "customer_region", "customer_name") == ["North", "Acme"]


def test_a_key_missing_in_the_related_app_is_gaia_lo04_and_writes_nothing(lk: Kintone):
    err = lk.error(
        "POST",
        "records",
        {"app": 2, "records": [rec(customer="C-1"), rec(customer="C-9")]},
        status=400,
        code="GAIA_LO04",
    )
    assert '"C-9"' in err["message"] and '"customer"' in err["message"]
    lk.error("POST", "record", {"app": 2, "record": rec(by_number="7")}, status=400, code="GAIA_LO04")
    assert lk.ok("GET", "records", {"app": 2})["records"] == []


def test_with_api_tokens_the_related_apps_token_is_needed_too():
    with (
        Sandbox.from_definition(definition(tokens=True)) as sandbox,
        sandbox.client() as client,
    ):
        k = Kintone(client)
        k.ok("POST", "record", {"app": 1, "record": rec(code="C-1", name="Acme")}, headers=CUSTOMERS_TOKEN)
        body = {"app": 2, "record": rec(customer="C-1")}
        k.error(
            "POST",
            "record",
            body,
            headers={"X-Cybozu-API-Token": "orders-token"},
            status=400,
            code="GAIA_LO04",
        )
        both = {"X-Cybozu-API-Token": "orders-token,customers-token"}
        k.ok("POST", "record", body, headers=both)
        assert sandbox.records(2)[0]["customer_name"]["value"] == "Acme"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lookup(app=9, customer_name="name"), "the lookup's related app 9 is not in the sandbox"),
        (lookup("nope", customer_name="name"), "the related app 1 has no key field 'nope'"),
        (lookup(missing="name"), "the lookup copies into 'missing'"),
        (lookup(customer_name="nope"), "the related app 1 has no field 'nope' to copy"),
        ({"relatedApp": {}}, "`lookup` takes Kintone's shape"),
    ],
)
def test_a_bad_lookup_in_the_file_is_refused(bad: dict[str, Any], message: str):
    with pytest.raises(SandboxDefinitionError) as caught:
        Sandbox.from_definition(definition(bad))
    assert message in str(caught.value)


def test_a_changeset_applied_by_kmigrate_fills_the_lookup(tmp_path):
    """End to end: `kmigrate apply` sends only the key; the sandbox copies the customer's fields."""
    import yaml
    from click.testing import CliRunner

    from kmigrate.cli import main

    (tmp_path / "changesets").mkdir()
    (tmp_path / "sandbox.yaml").write_text(yaml.safe_dump(definition(), sort_keys=False), encoding="utf-8")
    (tmp_path / "kmigrate.toml").write_text(
        'default_env = "dev"\n[env.dev]\nsandbox = "sandbox.yaml"\napps = { customers = 1, orders = 2 }\n',
        encoding="utf-8",
    )
    (tmp_path / "changesets" / "V0001__customers_then_orders.yaml").write_text(
        "description: customers, then orders that look them up\n"
        "operations:\n"
        "  - add:\n"
        "      app: customers\n"
        "      records:\n"
        "        - {code: C-1, name: Acme, tier: Gold, region: North}\n"
        "  - add:\n"
        "      app: orders\n"
        "      records:\n"
        "        - {customer: C-1}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "apply"])
    assert result.exit_code == 0, result.output
    store = tmp_path / ".kmigrate" / "sandbox-dev.sqlite3"
    with Sandbox.open(tmp_path / "sandbox.yaml", store) as sandbox:
        (order,) = sandbox.records(2)
    assert (order["customer_name"]["value"], order["customer_tier"]["value"]) == ("Acme", "Gold")


def test_a_lookup_column_fills_its_own_table_row():
    shop = {
        "apps": [
            {
                "id": 1,
                "name": "Products",
                "fields": {"sku": {"type": "SINGLE_LINE_TEXT", "unique": True}, "price": "NUMBER"},
            },
            {
                "id": 2,
                "name": "Orders",
                "fields": {
                    "lines": {
                        "type": "SUBTABLE",
                        "fields": {
                            "sku": {"type": "SINGLE_LINE_TEXT", "lookup": lookup("sku", unit_price="price")},
                            "unit_price": "NUMBER",
                            "qty": "NUMBER",
                        },
                    }
                },
            },
        ]
    }
    with Sandbox.from_definition(shop) as sandbox, sandbox.client() as client:
        k = Kintone(client)
        k.ok("POST", "records", {"app": 1, "records": [rec(sku="A", price="120"), rec(sku="B", price="80")]})
        rows = [{"value": {"sku": {"value": "A"}, "qty": {"value": "2"}}}, {"value": {"sku": {"value": "B"}}}]
        k.ok("POST", "record", {"app": 2, "record": rec(lines=rows)})
        stored = k.ok("GET", "record", {"app": 2, "id": 1})["record"]["lines"]["value"]
        assert [r["value"]["unit_price"]["value"] for r in stored] == ["120", "80"]
        # The first row switches product; the second is sent back by id with its qty only and keeps its price.
        again = [
            {"id": stored[0]["id"], "value": {"sku": {"value": "B"}}},
            {"id": stored[1]["id"], "value": {"qty": {"value": "5"}}},
        ]
        k.ok("PUT", "record", {"app": 2, "id": 1, "record": rec(lines=again)})
        now = k.ok("GET", "record", {"app": 2, "id": 1})["record"]["lines"]["value"]
        assert [(r["value"]["sku"]["value"], r["value"]["unit_price"]["value"]) for r in now] == [
            ("B", "80"),
            ("B", "80"),
        ]
        bad = [{"value": {"sku": {"value": "Z"}}}]
        k.error("POST", "record", {"app": 2, "record": rec(lines=bad)}, status=400, code="GAIA_LO04")
    broken = {
        **shop,
        "apps": [
            shop["apps"][0],
            {
                **shop["apps"][1],
                "fields": {
                    "lines": {
                        "type": "SUBTABLE",
                        "fields": {
                            "sku": {"type": "SINGLE_LINE_TEXT", "lookup": lookup("sku", nowhere="price")}
                        },
                    }
                },
            },
        ],
    }
    with pytest.raises(
        SandboxDefinitionError, match="copies into 'nowhere', which is not a field of its table"
    ):
        Sandbox.from_definition(broken)
