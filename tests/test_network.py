"""Deploying from where companies are: a proxy from the environment, a CA bundle and a client
certificate per environment (client.tls_context, Client's trust_env)."""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from kmigrate.cli import main
from kmigrate.client import Client
from kmigrate.config import Credentials, load_project
from kmigrate.errors import ConfigError, TransportError
from kmigrate.sandbox import Sandbox
from kmigrate.sandbox.server import make_server

from .projects import TOKEN, items_project, served, write_changeset

CREDS = Credentials(api_tokens=(TOKEN,))


@contextmanager
def fake_proxy(upstream: str) -> Iterator[tuple[str, list[str]]]:
    """A plain-HTTP forward proxy on loopback that sends every request on to ``upstream`` and
    records the request lines it saw (absolute URIs, as a client talking to a proxy writes them)."""
    seen: list[str] = []
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            seen.append(self.requestline)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = urlsplit(self.path)
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")
            }
            connection.request(
                self.command, path.path + (f"?{path.query}" if path.query else ""), body, headers
            )
            answer = connection.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format, *args):  # noqa: A002 - stdlib's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_requests_go_through_the_proxy_the_environment_names(tmp_path, monkeypatch):
    root = items_project(tmp_path, base_url="http://kintone.invalid")
    toml = root / "kmigrate.toml"
    toml.write_text(toml.read_text() + "insecure_http = true\n")  # the proxy is plain http here
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env_file = load_project(root).environment().sandbox_file
    with Sandbox.open(env_file, tmp_path / "remote.sqlite3") as sandbox, served(sandbox) as url:
        with fake_proxy(url) as (proxy, seen):
            for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("HTTP_PROXY", proxy)
            # kintone.invalid resolves nowhere: only the proxy can have carried these
            with Client("http://kintone.invalid", CREDS, insecure_http=True) as client:
                assert list(client.get_records(1)) == []
            result = CliRunner().invoke(
                main, ["-C", str(root), "-e", "remote", "apply", "--yes"], env={"KINTONE_API_TOKEN": TOKEN}
            )
            assert result.exit_code == 0, result.output
        assert [r["code"]["value"] for r in sandbox.records(1)] == ["A"]
    assert seen[0].startswith("GET http://kintone.invalid/k/v1/records.json?")
    assert "POST http://kintone.invalid/k/v1/bulkRequest.json HTTP/1.1" in seen


def test_without_a_proxy_in_the_environment_the_host_is_dialled_directly(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Client("http://kintone.invalid", CREDS, insecure_http=True, retry=_no_retry()) as client:
        with pytest.raises(TransportError):
            list(client.get_records(1))


def _no_retry():
    from kmigrate.client import RetryPolicy

    return RetryPolicy(attempts=1)


# ---- TLS: a CA bundle and a client certificate ------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=kmigrate test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)  # fmt: skip
    return d


@contextmanager
def served_tls(sandbox, pki: Path) -> Iterator[str]:
    """The sandbox over HTTPS, asking every client for a certificate signed by the test CA."""
    server = make_server(sandbox, "127.0.0.1", 0)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.load_verify_locations(pki / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_ca_bundle_and_a_client_certificate_from_kmigrate_toml(tmp_path, pki):
    root = items_project(tmp_path, base_url="https://127.0.0.1:1")
    for name in ("ca.pem", "client.pem", "client.key"):
        shutil.copy(pki / name, root / name)
    toml = root / "kmigrate.toml"
    toml.write_text(
        toml.read_text() + 'ca_bundle = "ca.pem"\nclient_cert = { cert = "client.pem", key = "client.key" }\n'
    )
    write_changeset(root, "V0001__a.yaml", "operations:\n  - add: {app: items, records: [{code: A}]}\n")
    env_file = load_project(root).environment().sandbox_file
    with Sandbox.open(env_file, tmp_path / "remote.sqlite3") as sandbox, served_tls(sandbox, pki) as url:
        toml.write_text(toml.read_text().replace("https://127.0.0.1:1", url))
        env = load_project(root).environment("remote")
        assert env.ca_bundle == root / "ca.pem" and env.client_cert == (
            root / "client.pem",
            root / "client.key",
        )
        result = CliRunner().invoke(
            main, ["-C", str(root), "-e", "remote", "apply", "--yes"], env={"KINTONE_API_TOKEN": TOKEN}
        )
        assert result.exit_code == 0, result.output
        assert [r["code"]["value"] for r in sandbox.records(1)] == ["A"]
        # the same server refuses a client without the certificate, and an unknown CA is not trusted
        without_cert = Client(url, CREDS, ca_bundle=root / "ca.pem", retry=_no_retry())
        with without_cert, pytest.raises(TransportError):
            list(without_cert.get_records(1))
        untrusted = Client(
            url, CREDS, client_cert=(root / "client.pem", root / "client.key"), retry=_no_retry()
        )
        with untrusted, pytest.raises(TransportError):
            list(untrusted.get_records(1))


def test_a_missing_or_broken_certificate_file_is_a_config_error(tmp_path):
    (tmp_path / "broken.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="ca_bundle .*missing.pem"):
        Client("https://example.cybozu.com", CREDS, ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="client_cert .*broken.pem"):
        Client("https://example.cybozu.com", CREDS, client_cert=(tmp_path / "broken.pem", None))
