"""`journal init` and `journal baseline`, through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kmigrate import api
from kmigrate.cli import main
from kmigrate.client import Client
from kmigrate.config import Credentials, load_project
from kmigrate.errors import ConfigError
from kmigrate.journal import Journal
from kmigrate.remote.records import FIELDS
from kmigrate.sandbox import SANDBOX_BASE_URL, Sandbox
from tests.projects import served

from .projects import JOURNAL_APP, item_codes, sandbox_yaml, write_project
from .test_apply import Recorder, apply, client_over, runner

USER = {"KINTONE_USERNAME": "admin", "KINTONE_PASSWORD": "pw-SECRET-1"}


def test_journal_init_creates_a_working_journal_app(tmp_path: Path) -> None:
    (tmp_path / "sandbox.yaml").write_text(sandbox_yaml())
    with Sandbox.open(tmp_path / "sandbox.yaml", tmp_path / "k.sqlite3") as box:
        root = write_project(tmp_path / "p", base_url="https://example.cybozu.com", journal_app=False)
        env = load_project(root).environment()
        with Client(
            SANDBOX_BASE_URL, Credentials(username="admin", password="pw"), transport=box.transport()
        ) as c:
            app = api.journal_init(api.Context(load_project(root), env), client=c)
            fields = c.app_form_fields(app)
        assert app not in (1, JOURNAL_APP)
        assert {code: fields[code]["type"] for code in FIELDS} == {c: f["type"] for c, f in FIELDS.items()}
        assert fields["key"]["unique"] is True and fields["key"]["required"] is True


def test_journal_init_refuses_tokens_before_sending_anything(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", base_url="https://example.cybozu.com", journal_app=False)
    env = load_project(root).environment()
    with pytest.raises(ConfigError, match="API tokens cannot create apps") as err:
        api.journal_init(api.Context(load_project(root), env), credentials=Credentials(api_tokens=("t",)))
    assert err.value.exit_code == 2


def test_journal_init_cli_prints_the_setting_on_stderr_and_the_id_last_on_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sandbox.yaml").write_text(sandbox_yaml())
    with Sandbox.open(tmp_path / "sandbox.yaml", tmp_path / "k.sqlite3") as box, served(box) as url:
        root = write_project(tmp_path / "p", base_url=url, journal_app=False)
        for key, value in USER.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(main, ["-C", str(root), "-e", "target", "journal", "init"])
        assert result.exit_code == 0, result.output
        app = int(result.stdout.strip().splitlines()[-1])
        assert f"journal_app = {app}" in result.stderr and "pw-SECRET-1" not in result.output
        # The printed line makes a working environment: apply writes markers into that app.
        (root / "kmigrate.toml").write_text((root / "kmigrate.toml").read_text() + f"journal_app = {app}\n")
        applied = CliRunner().invoke(main, ["-C", str(root), "apply", "--yes"])
        assert applied.exit_code == 0, applied.output
        assert len([r for r in box.records(app) if r["kind"]["value"] == "batch"]) == 3


def test_baseline_records_without_sending_and_apply_sends_only_what_comes_after(
    tmp_path: Path,
) -> None:
    store = tmp_path / "k.sqlite3"
    write_project(tmp_path / "definition", store=store)
    with Sandbox.open(tmp_path / "definition" / "sandbox.yaml", store) as box:
        # V0001 reached Kintone before kmigrate did (applied from a project without a journal).
        old_project, old_env = runner(tmp_path, "old", store, changesets=1, journal_app=False)
        apply(old_project, old_env, Recorder(box))
        before = item_codes(box.records(1))
        project, env = runner(tmp_path, "a", store)
        recorder = Recorder(box)
        with client_over(recorder) as client:
            done = api.baseline(api.Context(project, env), "V0001", client=client, note="adopted")
        assert done == ["V0001__items"]
        assert recorder.data_writes() == []
        assert len([r for r in box.records(JOURNAL_APP) if r["kind"]["value"] == "batch"]) == 2
        with Journal.open(env.journal_path) as journal:
            assert [e.kind for e in journal.events(kinds=["baseline"])] == ["baseline", "baseline"]
        recorder = Recorder(box)
        result = apply(project, env, recorder)
        assert result.summary is not None and result.summary.applied_changesets == ["V0002__late"]
        bulks = [body for _, path, body in recorder.sent if path.endswith("bulkRequest.json")]
        assert len(bulks) == 1 and "LATE-1" in json.dumps(bulks[0])
        assert item_codes(box.records(1)) == sorted([*before, "LATE-1"])
        # A fresh runner knows the baseline from the markers: nothing to do.
        fresh_project, fresh_env = runner(tmp_path, "fresh", store)
        assert apply(fresh_project, fresh_env, Recorder(box)).nothing_to_do


def test_baseline_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "k.sqlite3"
    write_project(tmp_path / "definition", store=store)
    with Sandbox.open(tmp_path / "definition" / "sandbox.yaml", store) as box:
        project, env = runner(tmp_path, "a", store)
        with (
            client_over(Recorder(box)) as client,
            pytest.raises(Exception, match="no changeset V9 ") as err,
        ):
            api.baseline(api.Context(project, env), "9", client=client)
        assert getattr(err.value, "exit_code", None) == 2


def test_kmigrate_init_names_the_project_and_leaves_journal_app_ready_to_fill_in(tmp_path: Path) -> None:
    folder = tmp_path / "my shop!"
    api.init_project(folder)
    text = (folder / "kmigrate.toml").read_text()
    assert 'project = "my-shop"' in text and "# journal_app = 0" in text
    (folder / "kmigrate.toml").write_text(text.replace("# journal_app = 0", "journal_app = 150"))
    env = load_project(folder).environment("production")
    assert env.project == "my-shop" and env.journal_apps[None].id == 150
