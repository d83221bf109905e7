"""What each applied batch sent, kept beside the journal so ``repair`` can show a diff.

The journal keeps a hash per batch (enough to see that content changed, not what changed). This
side file (``.kmigrate/<env>.sent.db``) keeps each applied batch's requests as planned (refs
unresolved), written after the journal marked the batch applied. It is a convenience for the
eyes: losing it loses only the old half of ``repair``'s diff, never any state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils

from .paths import create_private


def content_path(journal_path: Path) -> Path:
    return journal_path.with_name(journal_path.stem + ".sent.db")


def save(journal_path: Path, version: str, index: int, requests: list[dict[str, Any]]) -> None:
    """Keep what batch ``index`` of ``version`` sent (replacing what an earlier content sent)."""
    path = content_path(journal_path)
    create_private(path)  # 0600 as the journal: it holds the records sent
    db = sqlite_utils.Database(path)
    try:
        db.table("sent").upsert(
            {"changeset": version, "idx": index, "requests": json.dumps(requests, ensure_ascii=False)},
            pk=("changeset", "idx"),
        )
    finally:
        db.close()


def load(journal_path: Path) -> dict[str, dict[int, Any]]:
    """Changeset version -> batch index -> the requests it sent (empty when nothing is kept)."""
    path = content_path(journal_path)
    if not path.exists():
        return {}
    db = sqlite_utils.Database(path)
    try:
        if "sent" not in db.table_names():
            return {}
        out: dict[str, dict[int, Any]] = {}
        for row in db.table("sent").rows:
            out.setdefault(row["changeset"], {})[row["idx"]] = json.loads(row["requests"])
        return out
    finally:
        db.close()
