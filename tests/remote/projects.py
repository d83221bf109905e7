"""Projects over an items app and a journal app, for the apply tests (in-process and served)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml

from kmigrate.remote.records import FIELDS
from tests.harness.common import make_copy, run_apply, serve, set_served_port

JOURNAL_APP = 90


def sandbox_yaml() -> str:
    apps = [
        {
            "id": 1,
            "name": "Items",
            "fields": {
                "code": {"type": "SINGLE_LINE_TEXT", "required": True, "unique": True},
                "qty": {"type": "NUMBER"},
            },
            "process": {
                "enable": True,
                "states": ["New", "Checked"],
                "actions": [{"name": "Check", "from": "New", "to": "Checked"}],
            },
        },
        {"id": JOURNAL_APP, "name": "kmigrate journal", "fields": FIELDS},
    ]
    return yaml.safe_dump({"apps": apps}, sort_keys=False)


def toml(*, base_url: str | None = None, store: Path | None = None, journal_app: bool = True) -> str:
    """The runner's kmigrate.toml. ``store`` (the Kintone the runners share) is not written: a
    project keeps its files inside its folder, and the in-process tests reach the shared
    sandbox through an injected client."""
    head = 'project = "items"\ndefault_env = "target"\n[env.target]\n'
    target = f'base_url = "{base_url}"\n' if base_url else 'sandbox = "sandbox.yaml"\n'
    return (
        head + target + "apps = { items = 1 }\n" + (f"journal_app = {JOURNAL_APP}\n" if journal_app else "")
    )


V1 = """\
description: add items and check the first ones
operations:
  - add:
      app: items
      ref: first
      records_from: data/items.csv
  - status:
      app: items
      records: {ref: first}
      action: Check
"""

V2 = """\
description: one more item
operations:
  - add:
      app: items
      records:
        - {code: LATE-1, qty: 1}
"""


def items_csv(count: int) -> str:
    return "code,qty\n" + "".join(f"I{i:05d},{i % 5}\n" for i in range(count))


def write_project(root: Path, *, records: int = 250, changesets: int = 2, **kwargs: object) -> Path:
    """A runner's folder: the same project files a clone would hold, no .kmigrate/."""
    (root / "changesets" / "data").mkdir(parents=True, exist_ok=True)
    (root / "kmigrate.toml").write_text(toml(**kwargs))  # type: ignore[arg-type]
    (root / "sandbox.yaml").write_text(sandbox_yaml())
    (root / "changesets" / "data" / "items.csv").write_text(items_csv(records))
    (root / "changesets" / "V0001__items.yaml").write_text(textwrap.dedent(V1))
    if changesets > 1:
        (root / "changesets" / "V0002__late.yaml").write_text(textwrap.dedent(V2))
    return root


def item_codes(records: list[dict]) -> list[str]:
    return sorted(r["code"]["value"] for r in records)


def dump(value: object) -> str:
    return json.dumps(value, sort_keys=True)


# ---- the harness's project with a journal app (tests/harness --journal-app) -------------------

HARNESS_PROJECT = "shop"


def with_journal_app(root: Path) -> Path:
    """The harness's project (tests/harness/common.make_project) with a journal app in its
    sandbox file and `project` named; ``point_at`` names the app in the served environment."""
    sandbox = yaml.safe_load((root / "sandbox.yaml").read_text(encoding="utf-8"))
    sandbox["apps"].append({"id": JOURNAL_APP, "name": "kmigrate journal", "fields": FIELDS})
    (root / "sandbox.yaml").write_text(yaml.safe_dump(sandbox, sort_keys=False), encoding="utf-8")
    text = (root / "kmigrate.toml").read_text(encoding="utf-8")
    (root / "kmigrate.toml").write_text(f'project = "{HARNESS_PROJECT}"\n' + text, encoding="utf-8")
    return root


def point_at(root: Path, url: str) -> None:
    """The served environment (the file's last table, tests/harness/common.set_served_port)
    with the journal app named."""
    set_served_port(root, int(url.rsplit(":", 1)[1]))
    with (root / "kmigrate.toml").open("a", encoding="utf-8") as handle:
        handle.write(f"journal_app = {JOURNAL_APP}\n")


def runner_folders(template: Path, run_dir: Path, count: int) -> list[Path]:
    """``count`` fresh copies of the project (no .kmigrate/), the runners that take turns: one
    is the harness's usual ``project`` folder."""
    if count <= 1:
        return [make_copy(template, run_dir / "project")]
    return [make_copy(template, run_dir / f"runner-{i}") for i in range(count)]


def point(root: Path, url: str, *, journal_app: bool) -> None:
    if journal_app:
        point_at(root, url)
    else:
        set_served_port(root, int(url.rsplit(":", 1)[1]))


def journal_app_requests(template: Path, work: Path, semantics: str, *, timeout: float) -> int:
    """The requests of a fault-free apply with the journal app (the crash matrix's grid)."""
    run_dir = work / "reference-journal"
    run_dir.mkdir(parents=True, exist_ok=True)
    project = make_copy(template, run_dir / "project")
    with serve(project, run_dir, bulk_semantics=semantics) as served:
        point_at(project, served.url)
        attempt = run_apply(project, timeout=timeout)
        if not attempt.done:
            raise RuntimeError(f"the fault-free run with the journal app failed:\n{attempt.output}")
        return int(served.counters()["requests"])
