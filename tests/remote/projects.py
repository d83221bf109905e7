"""Projects over an items app and a journal app, for the apply tests (in-process and served)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml

from kmigrate.remote.records import FIELDS

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
