"""Kintone's official CLI (cli-kintone, npm @kintone/cli) against a served sandbox.

cli-kintone speaks only https, so the sandbox is served here behind TLS with a throw-away
certificate that node is told to trust. The CLI is installed with npm into the
repository's bench/.node (gitignored, shared with bench/run.py) on first use; node, npm and
openssl must be on PATH.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmigrate.sandbox import Sandbox
from kmigrate.sandbox.server import make_server

from .conftest import DEFINITION, rec

# One worker under xdist: the npm install into bench/.node happens once, by one process.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli-kintone")]

ROOT = Path(__file__).resolve().parents[2]
CLI_VERSION = "1.19.2"
# The same install bench/run.py uses (npm install --prefix bench/.node @kintone/cli).
CLI = ROOT / "bench" / ".node" / "node_modules" / ".bin" / "cli-kintone"


@pytest.fixture(scope="session")
def cli_kintone() -> Path:
    if not CLI.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("node and npm are needed for this test (e.g. `apt-get install -y nodejs npm`)")
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(CLI.parents[2]),
                f"@kintone/cli@{CLI_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return CLI


@pytest.fixture
def definition() -> dict[str, Any]:
    return DEFINITION


@pytest.fixture
def served(tmp_path: Path, definition: dict[str, Any]) -> Iterator[tuple[Sandbox, str, dict[str, str]]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sandbox = Sandbox.from_definition(definition)
    server = make_server(sandbox, "127.0.0.1", 0)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(cert)}
    try:
        yield sandbox, f"https://127.0.0.1:{server.server_port}", env
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        sandbox.close()


def run(cli: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_record_export_reads_layout_fields_and_records(cli_kintone: Path, served):
    sandbox, base, env = served
    with sandbox.client() as client:
        client.post(
            "/k/v1/records.json",
            json={
                "app": 1,
                "records": [
                    rec(
                        title="first",
                        order_no="A-1",
                        amount="5",
                        items=[{"value": {"name": {"value": "bolt"}}}],
                    ),
                    rec(title="second", order_no="A-2", amount="70", priority="High"),
                    rec(title="third", order_no="A-3", amount="12"),
                ],
            },
        )
    auth = ["--base-url", base, "--app", "1", "--username", "alice", "--password", "pw"]
    everything = rows(run(cli_kintone, env, "record", "export", *auth))
    assert [r["title"] for r in everything] == ["first", "second", "third"]
    assert everything[0]["name"] == "bolt" and everything[0]["Record_number"] == "ORD-1"
    picked = run(
        cli_kintone,
        env,
        "record",
        "export",
        *auth,
        "--fields",
        "title,amount",
        "--condition",
        "amount > 6",
        "--order-by",
        "amount desc",
    )
    assert rows(picked) == [{"title": "second", "amount": "70"}, {"title": "third", "amount": "12"}]


def test_record_import_then_export_round_trips(cli_kintone: Path, served, tmp_path: Path):
    sandbox, base, env = served
    auth = ["--base-url", base, "--app", "4", "--username", "alice", "--password", "pw"]
    source = tmp_path / "in.csv"
    source.write_text('"title"\n"one"\n"two, with a comma"\n', encoding="utf-8")
    run(cli_kintone, env, "record", "import", *auth, "--file-path", str(source))
    assert [r["title"]["value"] for r in sandbox.records(4)] == ["one", "two, with a comma"]
    exported = rows(run(cli_kintone, env, "record", "export", *auth, "--fields", "title"))
    assert exported == [{"title": "one"}, {"title": "two, with a comma"}]


@pytest.mark.parametrize(
    "definition",
    [{"apps": [{"id": 1, "name": "Contracts", "fields": {"title": "SINGLE_LINE_TEXT", "contract": "FILE"}}]}],
)
def test_record_import_and_export_carry_attachments(cli_kintone: Path, served, tmp_path: Path):
    sandbox, base, env = served
    auth = ["--base-url", base, "--app", "1", "--username", "alice", "--password", "pw"]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "C-001.pdf").write_bytes(b"%PDF-1.4 one")
    (tmp_path / "in.csv").write_text('"title","contract"\n"one","C-001.pdf"\n', encoding="utf-8")
    run(
        cli_kintone,
        env,
        "record",
        "import",
        *auth,
        "--file-path",
        str(tmp_path / "in.csv"),
        "--attachments-dir",
        str(folder),
    )
    (stored,) = sandbox.records(1)[0]["contract"]["value"]
    assert (stored["name"], stored["size"]) == ("C-001.pdf", "12")
    out = tmp_path / "out"
    exported = rows(
        run(
            cli_kintone,
            env,
            "record",
            "export",
            *auth,
            "--fields",
            "title,contract",
            "--attachments-dir",
            str(out),
        )
    )
    assert exported == [{"title": "one", "contract": "contract-1/C-001.pdf"}]
    assert (out / "contract-1" / "C-001.pdf").read_bytes() == b"%PDF-1.4 one"
