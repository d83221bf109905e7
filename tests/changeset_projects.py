"""Changeset projects in a temp folder, loaded the way the commands load them (for the
loader, templating and changeset-file tests)."""

from __future__ import annotations

from pathlib import Path

from kmigrate import loader
from kmigrate.config import load_project

CONFIG = """\
default_env = "sandbox"
[vars]
region = "eu"
products = [{sku = "A", price = 10}, {sku = "B", price = 20}]
[env.sandbox]
sandbox = "sandbox.yaml"
apps = { orders = 1, customers = 2 }
[env.production]
base_url = "https://example.cybozu.com"
apps = { orders = 101, customers = 102 }
vars = { region = "jp" }
"""


def project(tmp_path: Path, files: dict[str, str | bytes], config: str = CONFIG):
    (tmp_path / "kmigrate.toml").write_text(config)
    (tmp_path / "changesets").mkdir(exist_ok=True)
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    return load_project(tmp_path)


def load(
    tmp_path: Path,
    files: dict[str, str | bytes],
    env: str | None = None,
    overrides=None,
    config: str = CONFIG,
):
    proj = project(tmp_path, files, config)
    return loader.load_project_changesets(proj, proj.environment(env, overrides))


def errors(tmp_path: Path, files: dict[str, str | bytes]) -> list[str]:
    proj = project(tmp_path, files)
    _loaded, errs = loader.load_all(proj, proj.environment())
    return [str(e) for e in errs]
