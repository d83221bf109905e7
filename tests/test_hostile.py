"""Hostile and malformed input (issue #9): a table of attacks, each refused in seconds.

Changesets come from pull requests, and CI runs ``validate`` and ``plan`` on every one, so each
case below is a small project (a good changeset, plus the case's own files) run through
``validate``, ``plan`` and ``apply --yes`` in a child process (forked with kmigrate imported)
under a timeout and a memory cap (``tests/hostile_driver.py``). Each command must exit 2 with
no traceback; the secret marker (the content of a file outside the project, or a password)
must appear in no output and in no sandbox record; no request may be sent; no journal may be
written.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .hostile_driver import run_case, run_commands

pytestmark = pytest.mark.slow  # each case runs its commands in a forked child

SECRET = "KMIGRATE-SECRET-MARKER-5d1e"  # the content of files outside the project
TIMEOUT = 120  # seconds for all three commands together: generous, a hang still fails

CONFIG = """\
default_env = "sandbox"

[limits]
render_seconds = 1   # the loops below are refused after 1 s, not the default 10

[env.sandbox]
sandbox = "sandbox.yaml"
apps = { customers = 1 }

[env.remote]
base_url = "https://example.invalid"
apps = { customers = 1 }
"""

SANDBOX = """\
apps:
  - id: 1
    name: Customers
    fields:
      customer_code: {type: SINGLE_LINE_TEXT, unique: true}
      name: {type: SINGLE_LINE_TEXT}
"""

GOOD = """\
description: a good changeset beside the bad one
operations:
  - add:
      app: customers
      records:
        - {customer_code: C-1, name: Good}
"""

BAD = "changesets/V0002__bad.yaml"


def records(body: str) -> str:
    """A changeset adding records whose list is ``body`` (indented as a YAML list item)."""
    return f"operations:\n  - add:\n      app: customers\n      records:\n{body}"


def rendered(expression: str) -> str:
    """A changeset whose one record's name is the template expression's output."""
    return records(f"        - {{customer_code: C-9, name: {expression}}}\n")


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [lol]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def rng_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# A setup step: writes into the project (root) knowing where the secret lives (outside).
Setup = Callable[[Path, Path], None]


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Setup | None = None
    words: str = ""  # words the output must hold (case-insensitive)
    args: tuple[str, ...] = ()
    hosts: dict[str, list[str]] = field(default_factory=dict)  # name -> addresses; others resolve to none


def symlink(link: str, target: str | Callable[[Path, Path], Path]) -> Setup:
    def make(root: Path, outside: Path) -> None:
        path = root / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        path.symlink_to(target(root, outside) if callable(target) else Path(target))

    return make


def fifo(name: str) -> Setup:
    def make(root: Path, outside: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        os.mkfifo(path)

    return make


def to_secret(_root: Path, outside: Path) -> Path:
    return outside / "secret.txt"


def to_secret_csv(_root: Path, outside: Path) -> Path:
    return outside / "secret.csv"


def config(extra: str = "", env: str = "") -> str:
    """The base config with ``extra`` at the top level and ``env`` in [env.sandbox]."""
    head, _, rest = CONFIG.partition("[env.sandbox]\n")
    return f"{extra}\n{head}[env.sandbox]\n{env}\n{rest}" if env else f"{extra}\n{CONFIG}"


def remote(setting: str) -> str:
    return CONFIG.replace('base_url = "https://example.invalid"', setting)


def add_from(path: str) -> str:
    return f"operations:\n  - add: {{app: customers, records_from: {path}}}\n"


def load_csv(path: str) -> str:
    return f"{{% set rows = load_csv({path!r}) %}}\n" + rendered("{{ rows | tojson }}")


def load_json(path: str) -> str:
    return f"{{% set rows = load_json({path!r}) %}}\n" + rendered("{{ rows | tojson }}")


CASES = [
    # ---- the bytes of a changeset -------------------------------------------------------------
    Case("random-bytes", {BAD: rng_bytes(4096, 1)}),
    Case(
        "invalid-utf8",
        {BAD: b"operations:\n  - add: {app: customers, records: [{name: \xff\xfe}]}\n"},
        words="UTF-8",
    ),
    Case("nul-in-changeset", {BAD: "operations:\n  - add: {app: customers, records: [{name: a\0b}]}\n"}),
    Case("empty-changeset", {BAD: ""}, words="empty"),
    Case("deep-nesting", {BAD: "operations: " + "[" * 50_000 + "]" * 50_000 + "\n"}),
    Case("deep-nesting-block", {BAD: "operations:\n" + "".join("  " * i + "- \n" for i in range(3000))}),
    Case("ten-mb-line", {BAD: "operations: " + "x" * (10 << 20) + "\n"}),
    Case("over-file-mb", {BAD: "# " + "x" * (17 << 20) + "\n"}, words="larger than the limit"),
    Case("multiple-documents", {BAD: GOOD + "---\n" + GOOD}),
    Case("python-object-tag", {BAD: records('        - !!python/object/apply:os.system ["echo pwned"]\n')}),
    Case("python-name-tag", {BAD: records("        - {name: !!python/name:os.system}\n")}),
    Case("binary-tag", {BAD: records("        - {name: !!binary aGVsbG8=}\n")}, words="binary"),
    Case("set-tag", {BAD: records("        - !!set {a, b}\n")}),
    Case("duplicate-key", {BAD: records("        - {name: a, name: b}\n")}, words="duplicate key"),
    Case("tab-indent", {BAD: "operations:\n\t- add: {}\n"}),
    # ---- YAML expansion ------------------------------------------------------------------------
    Case(
        "alias-bomb-in-records",
        {BAD: alias_bomb() + records("").replace("records:\n", "records: *a9\n")},
        words="aliases expanded",
    ),
    Case("alias-bomb-top-level", {BAD: alias_bomb() + "operations: *a9\n"}, words="aliases expanded"),
    Case("alias-bomb-in-description", {BAD: alias_bomb() + "description: *a9\noperations: []\n"}),
    Case(
        "merge-key-bomb",
        {
            BAD: "m0: &m0 {k: v}\n"
            + "".join(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}\n" for i in range(1, 9))
            + records("        - *m8\n")
        },
    ),
    Case("recursive-alias", {BAD: "operations: &a [*a]\n"}, words="alias"),
    Case(
        "lowered-yaml-budget",
        {
            "kmigrate.toml": config("[limits]\nyaml_mb = 0.001\n".replace("[limits]\n", "")).replace(
                "render_seconds = 1", "render_seconds = 1\nyaml_mb = 0.001"
            ),
            BAD: "x: &x [" + ", ".join(["abcdefgh"] * 100) + "]\n" + records("        - {name: *x}\n"),
        },
        words="yaml_mb",
    ),
    # ---- Jinja: work and size -------------------------------------------------------------------
    Case(
        "nested-range-loops",
        {BAD: "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}\n" + GOOD},
        words="render_seconds",
    ),
    Case(
        "nested-list-loops",
        {
            BAD: "{% set l = range(100000) | list %}"
            "{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}\n" + GOOD
        },
        words="render_seconds",
    ),
    Case("string-times-huge", {BAD: rendered("{{ 'a' * 10**10 }}")}, words="render_output_mb"),
    Case("list-times-huge", {BAD: rendered("{{ [1] * 10**10 }}")}, words="render_output_mb"),
    Case("huge-power", {BAD: rendered("{{ 2 ** 100000000 }}")}, words="too large"),
    Case("center-huge", {BAD: rendered("{{ 'x' | center(10000000000) }}")}, words="render_output_mb"),
    Case("percent-width", {BAD: rendered("{{ '%099999999999d' % 1 }}")}, words="render_output_mb"),
    Case("format-width", {BAD: rendered("{{ '{:>99999999999}'.format(1) }}")}, words="render_output_mb"),
    Case("lipsum-huge", {BAD: rendered("{{ lipsum(n=100000000) }}")}, words="render_output_mb"),
    Case(
        "concat-doubling",
        {
            BAD: "{% set ns = namespace(v='x') %}{% for i in range(64) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}\n"
            + GOOD
        },
        words="render_output_mb",
    ),
    Case(
        "plus-doubling",
        {
            BAD: "{% set ns = namespace(v=[1]) %}{% for i in range(64) %}{% set ns.v = ns.v + ns.v %}{% endfor %}\n"
            + GOOD
        },
        words="render_output_mb",
    ),
    Case(
        "output-over-budget",
        {
            "kmigrate.toml": CONFIG.replace("render_seconds = 1", "render_seconds = 5\nrender_output_mb = 1"),
            BAD: "{% for i in range(100000) %}# {{ '%030d' % i }}\n{% endfor %}" + GOOD,
        },
        words="render_output_mb",
    ),
    Case("slice-huge", {BAD: rendered("{{ [1] | slice(100000000) | list }}")}, words="slices"),
    Case(
        "wordwrap-huge-input",
        {BAD: rendered("{{ ('x ' * 30000000) | wordwrap(5) }}")},
        words="the filter wordwrap",
    ),
    Case(
        "percent-many-values",
        {BAD: rendered("{{ ('%s' * 3000000) % ((1,) * 3000000) }}")},
        words="values formatted",
    ),
    Case(
        "sort-by-macro-huge",
        {BAD: "{% macro k(x) %}{% endmacro %}" + rendered("{{ ([1] * 30000000).sort(key=k) }}")},
        words="the method sort",
    ),
    Case("recursive-macro", {BAD: "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}" + rendered("{{ f(1) }}")}),
    Case("self-include", {BAD: rendered("{% include 'V0002__bad.yaml' %}")}),
    # ---- Jinja: the sandbox ------------------------------------------------------------------------
    Case("cycler-globals", {BAD: rendered("{{ cycler.__init__.__globals__ }}")}, words="not allowed"),
    Case("lipsum-globals", {BAD: rendered("{{ lipsum.__globals__ }}")}, words="not allowed"),
    Case("joiner-globals", {BAD: rendered("{{ joiner.__init__.__globals__.os }}")}, words="not allowed"),
    Case(
        "str-subclasses",
        {BAD: rendered("{{ ''.__class__.__mro__[1].__subclasses__() }}")},
        words="not allowed",
    ),
    Case("namespace-init", {BAD: rendered("{{ namespace.__init__.__globals__ }}")}, words="not allowed"),
    Case("load-csv-globals", {BAD: rendered("{{ load_csv.__globals__ }}")}, words="not allowed"),
    Case("format-attribute", {BAD: rendered("{{ '{0.__class__}'.format(1) }}")}, words="not allowed"),
    Case("undefined-variable", {BAD: rendered("{{ nope }}")}, words="undefined"),
    Case("template-syntax-error", {BAD: rendered("{{ 1 + }}")}, words="syntax"),
    # ---- templates reaching outside the project ----------------------------------------------------
    Case(
        "include-symlink-to-secret",
        {BAD: rendered("{% include 'pw.j2' %}")},
        setup=symlink("templates/pw.j2", to_secret),
        words="outside the project folder",
    ),
    Case(
        "import-symlink-to-secret",
        {BAD: "{% import 'pw.j2' as pw %}\n" + GOOD},
        setup=symlink("templates/pw.j2", to_secret),
        words="outside the project folder",
    ),
    Case("include-dotdot", {BAD: rendered("{% include '../../secret.txt' %}")}, words="not found"),
    Case("include-absolute", {BAD: rendered("{% include '/etc/passwd' %}")}, words="not found"),
    Case(
        "include-fifo",
        {BAD: rendered("{% include 'pipe.j2' %}")},
        setup=fifo("templates/pipe.j2"),
        words="FIFO",
    ),
    Case(
        "include-dev-zero",
        {BAD: rendered("{% include 'zero.j2' %}")},
        setup=symlink("templates/zero.j2", "/dev/zero"),
        words="outside the project folder",
    ),
    Case(
        "templates-folder-outside",
        {"kmigrate.toml": config('templates = "/etc"').replace("\n[limits]", "[limits]")},
        words="outside the project folder",
    ),
    Case(
        "templates-folder-symlink",
        setup=symlink("templates", lambda root, outside: outside),
        words="outside the project folder",
    ),
    # ---- data files ------------------------------------------------------------------------------------
    Case("records-from-dotdot", {BAD: add_from("../../secret.csv")}, words="outside the project folder"),
    Case(
        "records-from-symlink",
        {BAD: add_from("data/pw.csv")},
        setup=symlink("changesets/data/pw.csv", to_secret_csv),
        words="outside the project folder",
    ),
    Case("records-from-absolute", {BAD: add_from("/etc/passwd.csv")}, words="outside the project folder"),
    Case(
        "records-from-dev-zero",
        {BAD: add_from("data/zero.csv")},
        setup=symlink("changesets/data/zero.csv", "/dev/zero"),
        words="outside the project folder",
    ),
    Case(
        "records-from-fifo",
        {BAD: add_from("data/pipe.csv")},
        setup=fifo("changesets/data/pipe.csv"),
        words="FIFO",
    ),
    Case("records-from-folder", {BAD: add_from("data.csv"), "changesets/data.csv/x": "x"}, words="folder"),
    Case("load-csv-dotdot", {BAD: load_csv("../../secret.csv")}, words="outside the project folder"),
    Case(
        "load-csv-symlink",
        {BAD: load_csv("data/pw.csv")},
        setup=symlink("changesets/data/pw.csv", to_secret_csv),
        words="outside the project folder",
    ),
    Case("load-json-absolute", {BAD: load_json("/etc/hostname")}, words="outside the project folder"),
    Case(
        "load-csv-fifo",
        {BAD: load_csv("data/pipe.csv")},
        setup=fifo("changesets/data/pipe.csv"),
        words="FIFO",
    ),
    Case(
        "csv-nul",
        {BAD: add_from("data/nul.csv"), "changesets/data/nul.csv": "customer_code,name\nC-5,ab\0cd\n"},
        words="column 2 ('name') holds a NUL",
    ),
    Case("csv-random-bytes", {BAD: add_from("data/r.csv"), "changesets/data/r.csv": rng_bytes(4096, 2)}),
    Case(
        "csv-invalid-utf8",
        {BAD: add_from("data/u.csv"), "changesets/data/u.csv": b"customer_code\nC-\xff\n"},
        words="UTF-8",
    ),
    Case(
        "csv-ten-mb-cell",
        {
            BAD: add_from("data/big.csv"),
            "changesets/data/big.csv": "customer_code,name\nC-1," + "x" * (10 << 20) + ",extra\n",
        },
        words="bad CSV",
    ),
    Case(
        "json-deep-nesting",
        {BAD: add_from("data/d.json"), "changesets/data/d.json": "[" + "[" * 100_000 + "]" * 100_000 + "]"},
    ),
    Case(
        "jsonl-not-objects",
        {BAD: add_from("data/l.jsonl"), "changesets/data/l.jsonl": "[1]\n"},
        words="not an object",
    ),
    Case(
        "over-data-file-mb",
        {
            "kmigrate.toml": CONFIG.replace("render_seconds = 1", "render_seconds = 1\ndata_file_mb = 0.001"),
            BAD: add_from("data/big.csv"),
            "changesets/data/big.csv": "customer_code\n" + "C-1\n" * 1000,
        },
        words="larger than the limit",
    ),
    # ---- the changesets folder and its files --------------------------------------------------------------
    Case(
        "changesets-folder-outside",
        {"kmigrate.toml": 'changesets = "../../../../etc"\n' + CONFIG},
        words="outside the project folder",
    ),
    Case(
        "changesets-folder-symlink",
        setup=symlink("changesets", lambda root, outside: outside / "elsewhere"),
        words="outside the project folder",
    ),
    Case(
        "changeset-symlink-to-secret",
        setup=symlink("changesets/V0003__pw.yaml", to_secret),
        words="outside the project folder",
    ),
    Case("changeset-fifo", setup=fifo("changesets/V0003__pipe.yaml"), words="FIFO"),
    Case("changeset-bad-name", {"changesets/notes.txt": "x"}, words="not a changeset file name"),
    # ---- the sandbox file ----------------------------------------------------------------------------------
    Case(
        "sandbox-dev-zero",
        {"kmigrate.toml": CONFIG.replace('sandbox = "sandbox.yaml"', 'sandbox = "/dev/zero"')},
        words="outside the project folder",
    ),
    Case(
        "sandbox-symlink-dev-zero",
        setup=symlink("sandbox.yaml", "/dev/zero"),
        words="outside the project folder",
    ),
    Case(
        "sandbox-symlink-to-secret",
        setup=symlink("sandbox.yaml", to_secret),
        words="outside the project folder",
    ),
    Case("sandbox-fifo", setup=fifo("sandbox.yaml"), words="FIFO"),
    Case(
        "sandbox-store-outside",
        {
            "kmigrate.toml": CONFIG.replace(
                'sandbox = "sandbox.yaml"', 'sandbox = "sandbox.yaml"\nsandbox_store = "/etc/passwd"'
            )
        },
        words="outside the project folder",
    ),
    Case(
        "sandbox-dotdot",
        {"kmigrate.toml": CONFIG.replace('sandbox = "sandbox.yaml"', 'sandbox = "../secret.txt"')},
        words="outside the project folder",
    ),
    Case(
        "sandbox-alias-bomb",
        {"sandbox.yaml": alias_bomb() + SANDBOX},
        words="aliases expanded",
    ),
    Case("sandbox-random-bytes", {"sandbox.yaml": rng_bytes(2048, 3)}),
    # ---- kmigrate.toml ----------------------------------------------------------------------------------------
    Case("toml-random-bytes", {"kmigrate.toml": rng_bytes(2048, 4)}),
    Case("toml-invalid-utf8", {"kmigrate.toml": b'default_env = "\xff"\n'}),
    Case(
        "toml-symlink-to-secret",
        setup=symlink("kmigrate.toml", to_secret),
        words="outside the project folder",
    ),
    Case("toml-fifo", setup=fifo("kmigrate.toml"), words="FIFO"),
    Case(
        "toml-symlink-dev-zero",
        setup=symlink("kmigrate.toml", "/dev/zero"),
        words="outside the project folder",
    ),
    Case("toml-syntax", {"kmigrate.toml": CONFIG + "[env.sandbox\n"}, words="TOML"),
    Case(
        "toml-unknown-key",
        {"kmigrate.toml": CONFIG.replace("[env.sandbox]\n", "[env.sandbox]\nsandbx = 1\n")},
        words="unknown key",
    ),
    Case(
        "toml-app-negative",
        {"kmigrate.toml": CONFIG.replace("customers = 1 }", "customers = -1 }", 1)},
        words="greater than 0",
    ),
    Case(
        "toml-app-string",
        {"kmigrate.toml": CONFIG.replace("customers = 1 }", 'customers = "1" }', 1)},
        words="numeric id",
    ),
    Case(
        "toml-app-bool",
        {"kmigrate.toml": CONFIG.replace("customers = 1 }", "customers = true }", 1)},
        words="numeric id",
    ),
    Case(
        "toml-app-float",
        {"kmigrate.toml": CONFIG.replace("customers = 1 }", "customers = 1.5 }", 1)},
        words="numeric id",
    ),
    Case(
        "toml-app-datetime",
        {"kmigrate.toml": CONFIG.replace("customers = 1 }", "customers = 1979-05-27T07:32:00Z }", 1)},
    ),
    Case(
        "toml-apps-array", {"kmigrate.toml": CONFIG.replace("apps = { customers = 1 }", "apps = [1, 2]", 1)}
    ),
    Case("toml-env-string", {"kmigrate.toml": 'env = "sandbox"\n'}),
    Case(
        "toml-default-env-int",
        {"kmigrate.toml": CONFIG.replace('default_env = "sandbox"', "default_env = 5")},
    ),
    Case("toml-changesets-array", {"kmigrate.toml": 'changesets = ["a"]\n' + CONFIG}),
    Case(
        "toml-insecure-http-string",
        {"kmigrate.toml": remote('base_url = "http://example.invalid"\ninsecure_http = "yes"')},
        words="true or false",
    ),
    Case(
        "toml-timeout-string",
        {"kmigrate.toml": remote('base_url = "https://example.invalid"\ntimeout = "60"')},
        words="timeout",
    ),
    Case(
        "toml-retries-bool",
        {"kmigrate.toml": remote('base_url = "https://example.invalid"\nretries = true')},
        words="retries",
    ),
    Case(
        "toml-limits-string",
        {"kmigrate.toml": CONFIG.replace("render_seconds = 1", 'render_seconds = "1"')},
        words="render_seconds",
    ),
    Case(
        "toml-limits-negative",
        {"kmigrate.toml": CONFIG.replace("render_seconds = 1", "render_seconds = -1")},
        words="render_seconds",
    ),
    # ---- plain http: decided on the resolved address, before anything is written -------------------------------
    Case(
        "http-remote-host",
        {"kmigrate.toml": remote('base_url = "http://kintone.example.com"')},
        args=("-e", "remote"),
        words="plain http",
    ),
    Case(
        "http-unresolvable-localhost",
        {"kmigrate.toml": remote('base_url = "http://evil.localhost"')},
        args=("-e", "remote"),
        words="plain http",
    ),
    Case(
        "http-localhost-resolving-elsewhere",
        {"kmigrate.toml": remote('base_url = "http://evil.localhost:8080"')},
        args=("-e", "remote"),
        hosts={"evil.localhost": ["203.0.113.7"]},
        words="plain http",
    ),
    Case(
        "http-name-resolving-partly-to-loopback",
        {"kmigrate.toml": remote('base_url = "http://mixed.example"')},
        args=("-e", "remote"),
        hosts={"mixed.example": ["127.0.0.1", "198.51.100.1"]},
        words="plain http",
    ),
    Case(
        "http-public-address",
        {"kmigrate.toml": remote('base_url = "http://203.0.113.7:8080"')},
        args=("-e", "remote"),
        words="plain http",
    ),
    Case(
        "http-mapped-address",
        {"kmigrate.toml": remote('base_url = "http://[::ffff:203.0.113.7]"')},
        args=("-e", "remote"),
        words="plain http",
    ),
    Case(
        "url-with-password",
        {"kmigrate.toml": remote(f'base_url = "https://alice:{SECRET}@example.invalid"')},
        args=("-e", "remote"),
        words="user name or password",
    ),
    Case(
        "url-with-user-name",
        {"kmigrate.toml": remote(f'base_url = "https://{SECRET}@example.invalid"')},
        args=("-e", "remote"),
        words="user name or password",
    ),
]


def _build(tmp_path: Path, case: Case) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    (outside / "elsewhere").mkdir(parents=True)
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    (outside / "secret.csv").write_text(f"customer_code,name\n{SECRET},{SECRET}\n")
    (outside / "elsewhere" / "V0001__copy.yaml").write_text(f"description: {SECRET}\noperations: x\n")
    root = tmp_path / "project"
    base: dict[str, str | bytes] = {
        "kmigrate.toml": CONFIG,
        "sandbox.yaml": SANDBOX,
        "changesets/V0001__good.yaml": GOOD,
        "templates/macros.j2": "{% macro hello() %}hello{% endmacro %}\n",
    }
    for rel, content in {**base, **case.files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.setup is not None:
        case.setup(root, outside)
    return root, outside


def _run(root: Path, case: Case) -> list[dict]:
    return run_case(str(root), list(case.args), timeout=TIMEOUT, hosts=case.hosts)


def _no_secret_in_store(root: Path) -> None:
    for path in (root / ".kmigrate").glob("sandbox-*"):
        assert SECRET.encode() not in path.read_bytes()
        if path.suffix == ".sqlite3":
            with sqlite3.connect(path) as conn:
                assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0


def _nothing_journaled(root: Path) -> None:
    """No journal file at all: every refusal comes before the journal is opened."""
    assert sorted(p.name for p in (root / ".kmigrate").glob("*.db*")) == []


def test_the_suite_is_big_enough() -> None:
    assert len(CASES) >= 55 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused(tmp_path: Path, case: Case) -> None:
    root, _outside = _build(tmp_path, case)
    results = _run(root, case)
    assert [r["command"] for r in results] == ["validate", "plan", "apply"]
    for result in results:
        command, out = result["command"], result["output"]
        assert result["exception"] is None, f"{command}: {result['exception']}"
        assert result["exit"] == 2, f"{command}: exit {result['exit']}, expected 2\n{out[-3000:]}"
        assert "Traceback" not in out, out[-3000:]
        assert SECRET not in out, (
            f"{command} showed the content of a file outside the project (or a password)"
        )
        assert out.startswith("Error: ") or "\nError: " in out, out[-3000:]
        if case.words:
            assert case.words.lower() in out.lower(), f"{command}: expected {case.words!r} in\n{out[-3000:]}"
        assert result["sent"] == [], f"{command} sent {result['sent']}"
    _nothing_journaled(root)
    _no_secret_in_store(root)


def test_an_in_doubt_batch_does_not_hide_a_plain_http_url(tmp_path: Path) -> None:
    """The URL is judged before the journal is even opened: validate, plan and apply each exit 2
    naming plain http, nothing is sent, and the journal (holding a batch in doubt) gets no new run."""
    from kmigrate import api
    from kmigrate.config import load_project
    from kmigrate.journal import Journal

    root, _outside = _build(tmp_path, Case("in-doubt"))
    project = load_project(root)
    env = project.environment("remote")
    [planned] = api.plan(api.Context(project, env)).changesets
    with Journal.open(env.journal_path) as journal:
        run = journal.start_run("remote")
        journal.record_changeset(planned)
        journal.mark_sent(planned.version, 0, planned.batches[0].hash, run)
        runs_before = len(journal.runs())
    (root / "kmigrate.toml").write_text(remote('base_url = "http://203.0.113.7"'))
    results = run_commands(str(root), ["-e", "remote"])
    assert [r["command"] for r in results] == ["validate", "plan", "apply"]
    for result in results:
        assert result["exit"] == 2 and result["exception"] is None, result
        assert "plain http" in result["output"] and "kmigrate.toml:" in result["output"], result["output"]
        assert result["sent"] == []
    with Journal.open(env.journal_path) as journal:
        assert len(journal.runs()) == runs_before
        assert [b.state for b in journal.in_doubt()] == ["sent"]


def test_the_journal_and_the_sandbox_store_are_private(tmp_path: Path) -> None:
    """What apply keeps (the journal, what each batch sent, the sandbox's records) holds error
    bodies, user names and host names: files 0600 in a 0700 folder, whatever the umask."""
    root, _outside = _build(tmp_path, Case("private"))
    old = os.umask(0o022)
    try:
        results = run_commands(str(root), [])
    finally:
        os.umask(old)
    assert [r["exit"] for r in results] == [0, 0, 0], results[-1]["output"]
    state = root / ".kmigrate"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    kept = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
    assert {"sandbox.db", "sandbox-sandbox.sqlite3"} <= set(kept), kept
    assert kept == dict.fromkeys(kept, 0o600)
