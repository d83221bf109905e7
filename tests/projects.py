"""Small kmigrate projects written into a temp folder, for the run tests."""

from __future__ import annotations

import csv
import shutil
import socket
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

# The repository's root is itself a kmigrate project (the example shop); these are its files.
EXAMPLE = Path(__file__).resolve().parent.parent
EXAMPLE_FILES = ("kmigrate.toml", "sandbox.yaml", "changesets", "templates")

SANDBOX_YAML = """\
apps:
  - id: 1
    name: Items
    api_tokens: [{token: "%(token)s", permissions: [view, add, edit, delete]}]
    fields:
      code: {type: SINGLE_LINE_TEXT, required: true, unique: true}
      qty: {type: NUMBER}
    process:
      enable: true
      states: [New, Checked]
      actions:
        - {name: Check, from: New, to: Checked}
"""

TOKEN = "tok-SECRET-9f8e7d6c5b4a"


def copy_example(tmp_path: Path, *, with_sum: bool = False) -> Path:
    return copy_example_to(tmp_path / "shop", with_sum=with_sum)


def copy_example_to(root: Path, *, with_sum: bool = False) -> Path:
    """The example project's files (not the rest of the repository) copied into ``root``.

    Without ``changesets/kmigrate.sum`` unless ``with_sum``: most tests add or edit changesets
    of the copy, which the sum file would (rightly) refuse; tests/test_sumfile.py keeps it.
    """
    root.mkdir(parents=True)
    for name in EXAMPLE_FILES:
        source = EXAMPLE / name
        if source.is_dir():
            ignore = None if with_sum else shutil.ignore_patterns("kmigrate.sum")
            shutil.copytree(source, root / name, ignore=ignore)
        else:
            shutil.copy2(source, root / name)
    return root


def items_project(tmp_path: Path, *, base_url: str | None = None, token: str = TOKEN) -> Path:
    """A project over one app ``items`` (unique ``code``, a two-state process)."""
    root = tmp_path / "items"
    (root / "changesets" / "data").mkdir(parents=True)
    (root / "sandbox.yaml").write_text(SANDBOX_YAML % {"token": token})
    remote = f'\n[env.remote]\nbase_url = "{base_url}"\napps = {{ items = 1 }}\n' if base_url else ""
    (root / "kmigrate.toml").write_text(
        'default_env = "sandbox"\n[env.sandbox]\nsandbox = "sandbox.yaml"\napps = { items = 1 }\n' + remote
    )
    return root


def write_items_csv(root: Path, name: str, codes: range, prefix: str = "I") -> Path:
    path = root / "changesets" / "data" / name
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["code", "qty"])
        for i in codes:
            writer.writerow([f"{prefix}{i:06d}", i % 7])
    return path


def write_changeset(root: Path, filename: str, text: str) -> Path:
    path = root / "changesets" / filename
    path.write_text(textwrap.dedent(text))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(sandbox) -> Iterator[str]:
    """``sandbox`` served on a free localhost port, in a thread; yields the base URL."""
    from kmigrate.sandbox.server import make_server

    server = make_server(sandbox, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def seed_records(root: Path, app: int, records: list[dict]) -> None:
    """Records put straight into the project's sandbox, outside any changeset: what Kintone
    already holds, which no validation can know offline."""
    from kmigrate import api
    from kmigrate.changeset import to_kintone_record
    from kmigrate.config import load_project

    env = load_project(root).environment()
    with api.connect(api.Context(load_project(root), env)) as client:
        client.request(
            "POST", "records", body={"app": app, "records": [to_kintone_record(r) for r in records]}
        )


# ---- smaller calls -------------------------------------------------------------------------------

# Records per write call when a test plans with ``small_calls`` (Kintone's: 100). A bulk then
# holds 20 calls of 10 = 200 records (19 x 10 = 190 with a journal app's marker), so a test
# about several bulks needs a tenth of the records. The call and bulk counts are Kintone's.
SMALL_CALL = 10
SMALL_BULK = 20 * SMALL_CALL


def small_calls(monkeypatch, records_per_call: int = SMALL_CALL) -> None:
    """Every plan built in this test (``api._build_plan``: ``Limits()``, or
    ``remote.session.limits_for`` with a journal app) puts ``records_per_call`` records in a
    write call. For tests whose batch structure is the point, not Kintone's sizes; the tests of
    the real sizes (100 per call, 20 calls, 19 with a marker) keep them."""
    for module, limits in small_limits(records_per_call):
        monkeypatch.setattr(module, "Limits", limits)


def small_limits(records_per_call: int) -> list[tuple[ModuleType, Any]]:
    """Where plans take their ``Limits`` from, each with one that has ``records_per_call``
    (the harness's zygote sets them before it forks: tests/harness/zygote.py)."""
    import functools

    import kmigrate.api
    import kmigrate.remote.session
    from kmigrate.planner import Limits

    small = functools.partial(Limits, records_per_call=records_per_call)
    return [(kmigrate.api, small), (kmigrate.remote.session, small)]
