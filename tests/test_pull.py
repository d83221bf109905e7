"""`kmigrate sandbox pull` against a served sandbox reproduces its apps; `validate --online`
reads the apps' definitions and sends no write (counted)."""

from __future__ import annotations

import dataclasses
import textwrap

import httpx
import pytest
import yaml
from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.client import Client
from kmigrate.config import Credentials, load_project
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox
from kmigrate.sandbox.definition import parse_definition

from .projects import served
from .test_appcheck import ORDERS_YAML

TOKEN = "tok-orders"


def remote_project(tmp_path, base_url: str, changeset: str | None = None):
    """A project whose `production` is the served sandbox (ids 1 and 2) and whose `sandbox`
    names the same aliases 11 and 12."""
    root = tmp_path / "p"
    (root / "changesets").mkdir(parents=True)
    (root / "replica.yaml").write_text(
        "apps:\n  - {id: 11, name: Old, api_tokens: [tok-replica], fields: {x: NUMBER}}\n"
    )
    (root / "kmigrate.toml").write_text(
        textwrap.dedent(
            f"""\
            default_env = "sandbox"
            [env.sandbox]
            sandbox = "replica.yaml"
            apps = {{ orders = 11, notes = 12 }}
            [env.production]
            base_url = "{base_url}"
            apps = {{ orders = 1, notes = 2 }}
            """
        )
    )
    if changeset is not None:
        (root / "changesets" / "V0001__c.yaml").write_text(textwrap.dedent(changeset))
    return root


@pytest.fixture
def production(tmp_path, monkeypatch):
    """The apps of test_appcheck served on localhost, as a real Kintone would be."""
    source = tmp_path / "production.yaml"
    source.write_text(
        ORDERS_YAML.replace(
            "    fields:\n      text:", "    api_tokens: [tok-orders]\n    fields:\n      text:"
        )
    )
    monkeypatch.setenv("KINTONE_API_TOKEN", TOKEN)
    with Sandbox.open(source, tmp_path / "production.sqlite3") as sandbox:
        with served(sandbox) as base_url:
            yield source, base_url, sandbox


def test_pull_from_a_served_sandbox_reproduces_its_apps(tmp_path, production):
    source, base_url, sandbox = production
    sandbox_client = Client(SANDBOX_BASE_URL, Credentials(api_tokens=(TOKEN,)), transport=sandbox.transport())
    sandbox_client.request("POST", "records", body={"app": 1, "records": [{"code": {"value": "A1"}}]})
    root = remote_project(tmp_path, base_url)
    result = CliRunner().invoke(
        main, ["-C", str(root), "sandbox", "pull", "-e", "production", "--records", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "pulled orders: app 1 of production -> app 11" in result.output
    original = parse_definition(yaml.safe_load(source.read_text())).apps
    replica_text = (root / "replica.yaml").read_text()
    replica = parse_definition(yaml.safe_load(replica_text)).apps
    for source_id, target_id in ((1, 11), (2, 12)):
        assert same(replica[target_id].fields) == same(original[source_id].fields)
        assert same(replica[target_id].system) == same(original[source_id].system)
        assert replica[target_id].process == original[source_id].process
        assert replica[target_id].name == original[source_id].name
    assert replica[11].tokens == {"tok-replica": frozenset({"view", "add", "edit", "delete", "manage"})}
    assert replica[12].tokens is None and TOKEN not in replica_text  # never production's credentials
    env = load_project(root).environment("sandbox")
    with Sandbox.open(env.sandbox_file, env.sandbox_store) as replica_sandbox:
        assert [r["code"]["value"] for r in replica_sandbox.records(11)] == ["A1"]


def test_pull_out_writes_a_schema_file_that_validate_uses(tmp_path, production):
    _source, base_url, _sandbox = production
    root = remote_project(
        tmp_path, base_url, "operations:\n  - add: {app: orders, records: [{code: A1, amount: '12,000'}]}\n"
    )
    pulled = CliRunner().invoke(
        main, ["-C", str(root), "sandbox", "pull", "-e", "production", "--out", str(root / "schema.yaml")]
    )
    assert pulled.exit_code == 0, pulled.output
    toml = root / "kmigrate.toml"
    toml.write_text(toml.read_text() + 'schema = "schema.yaml"\n')
    result = CliRunner().invoke(main, ["-C", str(root), "-e", "production", "validate"])
    assert result.exit_code == 2 and "field `amount` (NUMBER) = '12,000'" in result.output


def same(fields):
    """Fields compared as definitions: Kintone's answer spells out `noLabel: false` (the default)
    and the status fields' `enabled` (the process's `enable`, compared on its own)."""
    out = {}
    for code, f in fields.items():
        extra = {k: v for k, v in f.extra.items() if (k, v) != ("noLabel", False) and k != "enabled"}
        out[code] = dataclasses.replace(f, extra=extra, fields=same(f.fields))
    return out


class Counting(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner
        self.methods: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(f"{request.method} {request.url.path}")
        return self.inner.handle_request(request)


def test_validate_online_reads_the_apps_and_sends_no_write(tmp_path, production):
    _source, base_url, sandbox = production
    bad = "operations:\n  - add: {app: orders, ref: o, records: [{code: A1, day: 2024/07/01}]}\n"
    bad += "  - status: {app: orders, records: {ref: o}, action: Aprove}\n"
    root = remote_project(tmp_path, base_url, bad)
    project = load_project(root)
    env = project.environment("production")
    counting = Counting(sandbox.transport())
    client = Client(SANDBOX_BASE_URL, Credentials(api_tokens=(TOKEN,)), transport=counting)
    result = api.validate(api.Context(project, env), online=True, client=client)
    said = "\n".join(str(e) for e in result.errors)
    assert "field `day` (DATE) = '2024/07/01'" in said and "no action 'Aprove'" in said, said
    assert "did you mean 'Approve'?" in said
    assert counting.methods and all(m.startswith("GET ") for m in counting.methods), counting.methods
    assert sorted(counting.methods) == sorted(
        ["GET /k/v1/app/form/fields.json", "GET /k/v1/app/status.json"] * 2
    )  # two apps, two reads each, nothing else
    assert sandbox.records(1) == [] and not env.journal_path.exists()
    offline = CliRunner().invoke(main, ["-C", str(root), "-e", "production", "validate"])
    assert offline.exit_code == 0  # without definitions nothing is known of the values
    online = CliRunner().invoke(main, ["-C", str(root), "-e", "production", "validate", "--online"])
    assert online.exit_code == 2 and "no action 'Aprove'" in online.output
