"""kmigrate.toml's `project` and `journal_app` keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmigrate.config import App, load_project
from kmigrate.errors import ConfigError

HEAD = 'project = "shop"\n'


def env(tmp_path: Path, body: str, head: str = HEAD):
    (tmp_path / "kmigrate.toml").write_text(head + '[env.prod]\nbase_url = "https://x.cybozu.com"\n' + body)
    return load_project(tmp_path).environment("prod")


def test_journal_app_by_id_by_alias_and_per_guest_space(tmp_path: Path) -> None:
    assert env(tmp_path, "journal_app = 50\n").journal_apps == {None: App(50)}
    assert env(tmp_path, "guest_space_id = 4\njournal_app = 50\n").journal_apps == {4: App(50, 4)}
    aliased = env(tmp_path, 'apps = { journal = {id = 61, guest_space_id = 3} }\njournal_app = "journal"\n')
    assert aliased.journal_apps == {3: App(61, 3)} and aliased.project == "shop"
    spaces = env(tmp_path, 'journal_app = { default = 50, "3" = 61 }\n')
    assert spaces.journal_apps == {None: App(50), 3: App(61, 3)}
    assert env(tmp_path, "").journal_apps == {}


def test_a_journal_app_needs_the_project_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='no `project = "NAME"`') as err:
        env(tmp_path, "journal_app = 50\n", head="")
    assert err.value.exit_code == 2 and "clone" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('journal_app = "nope"\n', "neither an app id nor an alias"),
        (
            'apps = { j = {id = 61, guest_space_id = 3} }\njournal_app = { default = "j" }\n',
            "cannot leave its space",
        ),
        ("journal_app = { space3 = 61 }\n", "use `default` or a guest space id"),
        ("journal_app = 0\n", "journal_app`: Input should be greater than 0"),
    ],
)
def test_bad_journal_app_settings_are_named(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        env(tmp_path, body)


def test_a_project_name_must_fit_in_a_marker_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="project"):
        env(tmp_path, "journal_app = 50\n", head='project = "my:shop"\n')
