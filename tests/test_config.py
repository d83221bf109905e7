from pathlib import Path

import pytest

from kmigrate.config import App, Credentials, load_project, parse_var_overrides
from kmigrate.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "kmigrate.toml").write_text(text)
    return tmp_path


def test_environment_resolves_paths_apps_and_vars(tmp_path):
    write(
        tmp_path,
        """
default_env = "sandbox"
vars = {region = "eu", tier = 1}
[env.sandbox]
sandbox = "sandbox.yaml"
apps = {orders = 1, hr = {id = 7, guest_space_id = 3}}
vars = {tier = 2}
[env.production]
base_url = "https://example.cybozu.com/"
guest_space_id = 12
apps = {orders = 101}
""",
    )
    project = load_project(tmp_path)
    env = project.environment(var_overrides={"extra": True})
    assert env.name == "sandbox" and env.is_sandbox
    assert env.sandbox_file == tmp_path.resolve() / "sandbox.yaml"
    assert env.sandbox_store == tmp_path.resolve() / ".kmigrate" / "sandbox-sandbox.sqlite3"
    assert env.journal_path == tmp_path.resolve() / ".kmigrate" / "sandbox.db"
    assert env.vars == {"region": "eu", "tier": 2, "extra": True}
    assert env.app("orders") == App(1) and env.app("hr") == App(7, 3) and env.app(42) == App(42)
    prod = project.environment("production")
    assert prod.base_url == "https://example.cybozu.com" and prod.app("orders") == App(101, 12)
    with pytest.raises(ConfigError, match="unknown app alias 'nope'.*known: hr, orders"):
        env.app("nope")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[env.a]\nsandbox = 'x'\ntypo = 1\n", "unknown key `env.a.typo`"),
        ("colour = 1\n[env.a]\nsandbox = 'x'\n", "unknown key `colour`"),
        ("[env.a]\n", "exactly one of"),
        ("[env.a]\nsandbox = 'x'\nbase_url = 'https://x'\n", "exactly one of"),
        ("default_env = 'b'\n[env.a]\nsandbox = 'x'\n", "names no \\[env.\\*\\] table"),
        ("[env.a\n", "not valid TOML"),
        ("", "at least one environment"),
    ],
)
def test_bad_config_names_the_file(tmp_path, text, message):
    write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_project(tmp_path)
    assert "kmigrate.toml" in str(info.value)
    assert info.value.exit_code == 2


def test_missing_config_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="kmigrate init"):
        load_project(tmp_path)


def test_unknown_environment(tmp_path):
    write(tmp_path, "[env.a]\nsandbox = 'x'\n[env.b]\nsandbox = 'y'\n")
    project = load_project(tmp_path)
    with pytest.raises(ConfigError, match="several environments"):
        project.environment()
    with pytest.raises(ConfigError, match="no environment 'c'"):
        project.environment("c")


def test_var_overrides_keep_yaml_types():
    assert parse_var_overrides(["n=3", "s=hello", "l=[1, 2]", "e="]) == {
        "n": 3,
        "s": "hello",
        "l": [1, 2],
        "e": "",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_var_overrides(["novalue"])


def test_credentials_never_show_in_repr():
    creds = Credentials.from_environ(
        {"KINTONE_API_TOKEN": "tok-a, tok-b", "KINTONE_USERNAME": "u", "KINTONE_PASSWORD": "s3cret"}
    )
    assert creds.api_tokens == ("tok-a", "tok-b")
    assert "tok-a" not in repr(creds) and "s3cret" not in repr(creds)
    with pytest.raises(ConfigError, match="both"):
        Credentials.from_environ({"KINTONE_USERNAME": "u"})
    with pytest.raises(ConfigError, match="at most 9"):
        Credentials.from_environ({"KINTONE_API_TOKEN": ",".join(f"t{i}" for i in range(10))})


# ---- timeout and retries ---------------------------------------------------------------------

NET = "[env.prod]\nbase_url = 'https://x.cybozu.com'\n"


def test_timeout_and_retries_are_read_per_environment(tmp_path):
    write(tmp_path, NET + "timeout = 30\nretries = 2\nretry_seconds = 12.5\n[env.other]\nsandbox = 'x'\n")
    project = load_project(tmp_path)
    env = project.environment("prod", environ={})
    assert (env.timeout, env.retries, env.retry_seconds) == (30.0, 2, 12.5)
    other = project.environment("other", environ={})
    assert (other.timeout, other.retries, other.retry_seconds) == (None, None, None)  # the client's defaults


def test_kmigrate_timeout_wins_over_the_file(tmp_path):
    write(tmp_path, NET + "timeout = 30\n")
    project = load_project(tmp_path)
    assert project.environment(environ={"KMIGRATE_TIMEOUT": "4.5"}).timeout == 4.5
    assert project.environment(environ={"KMIGRATE_TIMEOUT": ""}).timeout == 30.0


@pytest.mark.parametrize("value", ["soon", "0", "-3", "inf", "nan"])
def test_a_bad_kmigrate_timeout_is_a_config_error_naming_it(tmp_path, value):
    write(tmp_path, NET)
    with pytest.raises(ConfigError, match=f"KMIGRATE_TIMEOUT = '{value}'") as info:
        load_project(tmp_path).environment(environ={"KMIGRATE_TIMEOUT": value})
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "line, key, why",
    [
        ("timeout = true", "timeout", "valid number"),
        ("timeout = '60'", "timeout", "valid number"),
        ("timeout = 0", "timeout", "greater than 0"),
        ("timeout = inf", "timeout", "finite"),
        ("retries = true", "retries", "valid integer"),
        ("retries = 2.0", "retries", "valid integer"),
        ("retries = '3'", "retries", "valid integer"),
        ("retries = -1", "retries", "greater than or equal to 0"),
        ("retry_seconds = false", "retry_seconds", "valid number"),
        ("retry_seconds = -1", "retry_seconds", "greater than or equal to 0"),
    ],
)
def test_timeout_and_retry_settings_are_strictly_typed(tmp_path, line, key, why):
    write(tmp_path, NET + line + "\n")
    with pytest.raises(ConfigError, match=why) as info:
        load_project(tmp_path)
    assert f"`env.prod.{key}`" in str(info.value) and "kmigrate.toml" in str(info.value)
