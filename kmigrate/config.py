"""kmigrate.toml -> a resolved ``Project`` and its ``Environment``s.

The file is parsed with the standard library's tomllib and validated by pydantic models that
forbid unknown keys, so a typo is an error rather than a silently ignored setting. Credentials
never live in the file: they come from the process environment (see ``Credentials``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError, Location
from .kintone import MAX_API_TOKENS, MAX_PARALLEL
from .paths import MB, inside_project, read_project_file

CONFIG_FILE = "kmigrate.toml"
MAX_CONFIG_BYTES = 1 << 20  # kmigrate.toml: read before [limits] is known
STATE_DIR = ".kmigrate"


# Every model is strict: a TOML value of the wrong type is an error naming the key, never
# coerced (`insecure_http = "yes"` is not true, `timeout = "60"` is not 60).
_STRICT = ConfigDict(extra="forbid", strict=True)
AppId = Annotated[int, Field(gt=0)]


class AppRef(BaseModel):
    """An app alias's full form: ``orders = {id = 5, guest_space_id = 12}``."""

    model_config = _STRICT
    id: AppId
    guest_space_id: AppId | None = None


class InputLimits(BaseModel):
    """``[limits]``: how much work a changeset may cause, so hostile input is refused in seconds.

    Sizes in MB (1 MB = 2**20 bytes; for the YAML and render budgets, characters)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    file_mb: float = Field(default=16, gt=0, allow_inf_nan=False)  # a changeset, template, sandbox file
    data_file_mb: float = Field(default=1024, gt=0, allow_inf_nan=False)  # a data file (streamed)
    yaml_mb: float = Field(default=64, gt=0, allow_inf_nan=False)  # a YAML document expanded, aliases counted
    render_seconds: float = Field(default=10, gt=0, allow_inf_nan=False)  # rendering one changeset file
    render_output_mb: float = Field(default=64, gt=0, allow_inf_nan=False)  # its rendered text

    @property
    def file_bytes(self) -> int:
        return int(self.file_mb * MB)

    @property
    def data_file_bytes(self) -> int:
        return int(self.data_file_mb * MB)

    @property
    def yaml_chars(self) -> int:
        return int(self.yaml_mb * MB)

    @property
    def render_output_chars(self) -> int:
        return int(self.render_output_mb * MB)


class ClientCertConfig(BaseModel):
    """``client_cert = { cert = "certs/me.pem", key = "certs/me.key" }``: the certificate Kintone's
    secure access asks for (``key`` may be left out when the cert file holds it too)."""

    model_config = _STRICT
    cert: str = Field(min_length=1)
    key: str | None = None


class EnvConfig(BaseModel):
    model_config = _STRICT

    sandbox: str | None = None  # the sandbox file: the embedded Kintone
    sandbox_store: str | None = None  # where the sandbox keeps its records
    base_url: str | None = None
    guest_space_id: AppId | None = None
    insecure_http: bool = False  # a security switch: only the TOML booleans true/false
    journal: str | None = None
    # The journal kept in the target Kintone (docs/journal.md): an app id or alias, or one per
    # guest space, e.g. {default = 50, "3" = 61} (a bulk request cannot leave its space).
    journal_app: AppId | str | dict[str, AppId | str] | None = None
    # The apps' definitions to validate against, in the sandbox file's shape (`sandbox pull --out`).
    schema_file: str | None = Field(default=None, alias="schema")
    apps: dict[str, AppId | AppRef] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    # Talking to Kintone
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # seconds to wait for an answer
    retries: int | None = Field(default=None, ge=0)  # sends again of a request Kintone did not run
    retry_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # the retries' total time
    # Bulks in flight at once where they are independent (`apply --parallel N` wins over it).
    parallel: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    # TLS from where companies are: a CA bundle (a proxy that re-signs TLS) and a client certificate.
    ca_bundle: str | None = None
    client_cert: ClientCertConfig | None = None

    @model_validator(mode="after")
    def _one_target(self) -> EnvConfig:
        if (self.sandbox is None) == (self.base_url is None):
            raise ValueError(
                'an environment needs exactly one of `sandbox = "FILE"` or `base_url = "https://..."`'
            )
        return self


class ProjectConfig(BaseModel):
    model_config = _STRICT

    # Names the project in the journal app's markers; must stay the same on every machine and
    # clone, so it is written down rather than taken from the folder's name.
    project: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=40)
    changesets: str = "changesets"
    templates: str = "templates"
    default_env: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, EnvConfig] = Field(default_factory=dict)
    limits: InputLimits = Field(default_factory=InputLimits)

    @model_validator(mode="after")
    def _default_env_exists(self) -> ProjectConfig:
        if not self.env:
            raise ValueError(
                'at least one environment is needed, e.g. [env.sandbox] with sandbox = "sandbox.yaml"'
            )
        if self.default_env is not None and self.default_env not in self.env:
            raise ValueError(
                f"default_env = {self.default_env!r} names no [env.*] table; known: {', '.join(sorted(self.env))}"
            )
        return self


@dataclass(frozen=True)
class App:
    """An app as kmigrate addresses it: its id and, when it lives in one, its guest space."""

    id: int
    guest_space_id: int | None = None


@dataclass(frozen=True)
class Environment:
    """One ``[env.NAME]`` with every path made absolute and app aliases resolved."""

    name: str
    root: Path
    apps: Mapping[str, App]
    vars: Mapping[str, Any]
    journal_path: Path
    limits: InputLimits = field(default_factory=InputLimits)
    sandbox_file: Path | None = None
    sandbox_store: Path | None = None
    base_url: str | None = None
    guest_space_id: int | None = None
    insecure_http: bool = False
    # The journal app per guest space (None: apps outside guest spaces); empty: local journal only.
    journal_apps: Mapping[int | None, App] = field(default_factory=dict)
    project: str | None = None  # the project's name in the journal app's markers
    timeout: float | None = None  # seconds; None: the client's default (120 s)
    retries: int | None = None  # None: the client's default (5)
    retry_seconds: float | None = None  # None: the client's default (60 s)
    parallel: int | None = None  # bulks in flight at once (None: one)
    ca_bundle: Path | None = None  # None: the system's CAs (or SSL_CERT_FILE, as httpx reads it)
    client_cert: tuple[Path, Path | None] | None = None  # (cert file, key file or None)
    schema_file: Path | None = None  # the apps' definitions (sandbox file shape), for validation

    @property
    def is_sandbox(self) -> bool:
        return self.sandbox_file is not None

    def app(self, name_or_id: object) -> App:
        """An alias from the config, or a numeric app id (in the env's guest space, if any), as a
        changeset or a command names it."""
        if isinstance(name_or_id, bool) or not isinstance(name_or_id, (str, int)):
            raise ConfigError(f"`app` must be an alias or a numeric app id, not {name_or_id!r}")
        if isinstance(name_or_id, int) or name_or_id.isdigit():
            return App(int(name_or_id), self.guest_space_id)
        try:
            return self.apps[name_or_id]
        except KeyError:
            known = ", ".join(sorted(self.apps)) or "none"
            raise ConfigError(
                f"unknown app alias {name_or_id!r} in environment {self.name!r} (known: {known})",
                hint=f"add it under [env.{self.name}] apps in {CONFIG_FILE}, or use the numeric app id",
            ) from None


@dataclass(frozen=True)
class Project:
    root: Path
    config: ProjectConfig
    config_file: Path = field(default=Path(CONFIG_FILE))

    @property
    def changesets_dir(self) -> Path:
        return self.root / self.config.changesets

    @property
    def templates_dir(self) -> Path:
        return self.root / self.config.templates

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def env_name(self, name: str | None = None) -> str:
        if name is None:
            name = self.config.default_env or (
                next(iter(self.config.env)) if len(self.config.env) == 1 else None
            )
            if name is None:
                raise ConfigError(
                    f"{self.config_file}: several environments and no default_env",
                    hint="pass -e NAME or set default_env",
                )
        if name not in self.config.env:
            known = ", ".join(sorted(self.config.env))
            line = None
            try:
                line = toml_key_line(
                    self.config_file.read_text(encoding="utf-8"), ("env", next(iter(self.config.env)))
                )
            except OSError:
                pass
            raise ConfigError(
                f"no environment {name!r} (known: {known})",
                hint="pass -e with one of those",
                location=Location(file=self.config_file, line=line),
            )
        return name

    def environment(
        self,
        name: str | None = None,
        var_overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Environment:
        """``[env.NAME]`` resolved; ``KMIGRATE_TIMEOUT`` in ``environ`` (default: the process
        environment) wins over the file's ``timeout`` (a ``--timeout`` flag wins over both)."""
        name = self.env_name(name)
        cfg = self.config.env[name]
        apps = {
            alias: App(ref, cfg.guest_space_id)
            if isinstance(ref, int)
            else App(ref.id, ref.guest_space_id or cfg.guest_space_id)
            for alias, ref in cfg.apps.items()
        }
        variables = {**self.config.vars, **cfg.vars, **(var_overrides or {})}
        journal = self.root / cfg.journal if cfg.journal else self.state_dir / f"{name}.db"
        sandbox_file = self.root / cfg.sandbox if cfg.sandbox else None
        sandbox_store = None
        if sandbox_file is not None:
            sandbox_store = (
                self.root / cfg.sandbox_store
                if cfg.sandbox_store
                else self.state_dir / f"sandbox-{name}.sqlite3"
            )
        journal_apps = resolve_journal_apps(self, name, cfg.journal_app, apps, cfg.guest_space_id)
        if journal_apps and self.config.project is None:
            raise ConfigError(
                f'[env.{name}] has journal_app, but {CONFIG_FILE} has no `project = "NAME"`',
                location=Location(file=self.config_file, line=1),
                hint='add e.g. `project = "shop"` at the top: the journal app\'s markers are keyed by it, '
                "and it must be the same on every machine and clone (a folder name is not)",
            )
        return Environment(
            name=name,
            root=self.root,
            apps=apps,
            vars=variables,
            journal_path=journal,
            limits=self.config.limits,
            sandbox_file=sandbox_file,
            sandbox_store=sandbox_store,
            base_url=cfg.base_url.rstrip("/") if cfg.base_url else None,
            guest_space_id=cfg.guest_space_id,
            insecure_http=cfg.insecure_http,
            journal_apps=journal_apps,
            project=self.config.project,
            timeout=timeout_from_environ(os.environ if environ is None else environ) or cfg.timeout,
            retries=cfg.retries,
            retry_seconds=cfg.retry_seconds,
            parallel=cfg.parallel,
            ca_bundle=self.root / cfg.ca_bundle if cfg.ca_bundle else None,
            client_cert=(
                (
                    self.root / cfg.client_cert.cert,
                    self.root / cfg.client_cert.key if cfg.client_cert.key else None,
                )
                if cfg.client_cert
                else None
            ),
            schema_file=self.root / cfg.schema_file if cfg.schema_file else None,
        )


def resolve_journal_apps(
    project: Project,
    env_name: str,
    setting: int | str | Mapping[str, int | str] | None,
    apps: Mapping[str, App],
    env_guest_space: int | None,
) -> dict[int | None, App]:
    """``journal_app`` -> guest space (None: none) -> the journal app there.

    ``journal_app = 50`` or ``"alias"`` names one app; ``{default = 50, "3" = 61}`` one per
    guest space, ``default`` being the environment's own space (none unless
    ``guest_space_id`` is set at the environment's level)."""
    if setting is None:
        return {}
    where = Location(file=project.config_file, line=_line_of(project, ("env", env_name, "journal_app")))

    def one(value: int | str, space: int | None, label: str) -> App:
        if isinstance(value, int) or value.isdigit():
            if int(value) <= 0:
                raise ConfigError(f"[env.{env_name}] {label}: an app id is a positive number", location=where)
            return App(int(value), space)
        if value not in apps:
            known = ", ".join(sorted(apps)) or "none"
            raise ConfigError(
                f"[env.{env_name}] {label} = {value!r} is neither an app id nor an alias in `apps` (known: {known})",
                location=where,
            )
        app = apps[value]
        if app.guest_space_id != space:
            raise ConfigError(
                f"[env.{env_name}] {label} = {value!r} is app {app.id} in "
                + (f"guest space {app.guest_space_id}" if app.guest_space_id else "no guest space")
                + ", but it is named for "
                + (f"guest space {space}" if space else "apps outside guest spaces"),
                location=where,
                hint="a bulk request cannot leave its space: each space needs its own journal app",
            )
        return app

    if not isinstance(setting, Mapping):
        alias = apps.get(setting) if isinstance(setting, str) else None
        resolved = one(setting, alias.guest_space_id if alias else env_guest_space, "journal_app")
        return {resolved.guest_space_id: resolved}
    out: dict[int | None, App] = {}
    for key, value in setting.items():
        if key == "default":
            space = env_guest_space
        elif key.isdigit() and int(key) > 0:
            space = int(key)
        else:
            raise ConfigError(
                f"[env.{env_name}] journal_app key {key!r}: use `default` or a guest space id, "
                'e.g. journal_app = {default = 50, "3" = 61}',
                location=where,
            )
        if space in out:
            raise ConfigError(f"[env.{env_name}] journal_app names two apps for one space", location=where)
        out[space] = one(value, space, f"journal_app.{key}")
    return out


def _line_of(project: Project, loc: tuple[str, ...]) -> int | None:
    try:
        return toml_key_line(project.config_file.read_text(encoding="utf-8"), loc)
    except OSError:
        return None


def env_key_location(env: Environment, key: str) -> Location:
    """Where ``key`` of ``[env.NAME]`` is written in kmigrate.toml, for a message about its value."""
    path = env.root / CONFIG_FILE
    try:
        line = toml_key_line(path.read_text(encoding="utf-8"), ("env", env.name, key))
    except OSError:
        line = None
    return Location(file=path, line=line)


TIMEOUT_VARIABLE = "KMIGRATE_TIMEOUT"


def timeout_from_environ(environ: Mapping[str, str]) -> float | None:
    """``KMIGRATE_TIMEOUT`` as seconds (None when unset or empty); a ``ConfigError`` otherwise."""
    text = environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return None
    return parse_timeout(text, TIMEOUT_VARIABLE)


def parse_timeout(text: str, source: str) -> float:
    """Seconds, a positive finite number, from ``--timeout`` or ``KMIGRATE_TIMEOUT``."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 and seconds != float("inf")):
        raise ConfigError(
            f"{source} = {text!r}: the timeout is a number of seconds greater than 0", hint="e.g. 60 or 2.5"
        )
    return seconds


def load_project(root: Path | str = ".") -> Project:
    """Read ``kmigrate.toml`` from ``root``; every problem is a ``ConfigError`` naming the file."""
    root = Path(root).resolve()
    path = root / CONFIG_FILE
    if not os.path.lexists(path):
        raise ConfigError(
            f"no {CONFIG_FILE} in {root}",
            hint="run `kmigrate init` to make a project, or pass -C DIR pointing at one",
        )
    raw = read_project_file(
        root,
        path,
        what=CONFIG_FILE,
        max_bytes=MAX_CONFIG_BYTES,
        error=ConfigError,
        location=Location(file=path),
    )
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        if line is None:  # Python < 3.14 has the line only in the message: "... (at line 3, column 7)"
            found = re.search(r"at line (\d+)", str(exc))
            line = int(found.group(1)) if found else None
        raise ConfigError(
            f"not valid TOML: {exc.args[0] if exc.args else exc}", location=Location(file=path, line=line)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read: {exc}", location=Location(file=path)) from None
    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"]) or (("default_env",) if "default_env" in first["msg"] else ())
        line = toml_key_line(text, loc) if loc else None
        raise ConfigError(_describe_validation(exc, text), location=Location(file=path, line=line)) from None
    _check_folders(root, config, path, text=text)
    return Project(root=root, config=config, config_file=path)


def _check_folders(root: Path, config: ProjectConfig, path: Path, text: str) -> None:
    """The folders and files kmigrate.toml names lie inside the project (``paths``' rule): a
    changeset from a pull request may change kmigrate.toml too."""
    for key in ("changesets", "templates"):
        where = Location(file=path, line=toml_key_line(text, (key,)))
        inside_project(
            root,
            getattr(config, key),
            what=f"the {key} folder",
            error=ConfigError,
            location=where,
            kind="folder",
        )
    for name, env in config.env.items():
        if env.sandbox is not None:
            where = Location(file=path, line=toml_key_line(text, ("env", name, "sandbox")))
            inside_project(
                root, env.sandbox, what="the sandbox file", error=ConfigError, location=where, kind="file"
            )
        if env.sandbox_store is not None:  # read back as records: the project's own state only
            where = Location(file=path, line=toml_key_line(text, ("env", name, "sandbox_store")))
            inside_project(
                root, env.sandbox_store, what="the sandbox store", error=ConfigError, location=where
            )


_TOML_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def toml_key_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line of kmigrate.toml where the key at ``loc`` (a pydantic error path)
    is written, or of the nearest enclosing table; for messages only."""
    names = [str(p) for p in loc if isinstance(p, (str, int))]
    lines = text.splitlines()
    headers: list[tuple[int, list[str]]] = []  # (line index, dotted path) of every [table]
    for i, line in enumerate(lines):
        match = _TOML_HEADER.match(line)
        if match:
            headers.append((i, [part.strip().strip("\"'") for part in match.group(1).split(".")]))
    # The longest prefix of the path that is a [table] header, then the rest as keys inside it.
    start, end, depth = 0, (headers[0][0] if headers else len(lines)), 0
    for index, (line_index, path) in enumerate(headers):
        if len(path) > depth and names[: len(path)] == path:
            following = headers[index + 1][0] if index + 1 < len(headers) else len(lines)
            start, end, depth = line_index, following, len(path)
    best = start + 1 if depth else None
    for name in names[depth:]:
        pattern = re.compile(r"(^|[\s{,.])[\"']?" + re.escape(name) + r"[\"']?\s*[=.]")
        for i in range(start, end):
            if pattern.search(lines[i].split("#", 1)[0]):
                best, start = i + 1, i
                break
        else:
            break
    return best


_UNION_BRANCH = re.compile(r"^(int|str|float|bool|AppRef|EnvConfig|constrained-.*|function-.*|.*\[.*)$")
_TYPE_ERRORS = {"int_type", "int_parsing", "model_type", "dict_type", "string_type", "model_attributes_type"}


def _describe_validation(exc: ValidationError, text: str = "") -> str:
    # Drop pydantic's names of union branches from the paths, and the "wrong type" complaint of a
    # branch when another branch explains the problem in more detail.
    errors: list[dict[str, Any]] = [
        {**e, "loc": tuple(p for p in e["loc"] if not (isinstance(p, str) and _UNION_BRANCH.match(p)))}
        for e in exc.errors()
    ]
    kept: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for err in errors:
        deeper = any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"] for o in errors
        )
        if err["type"] in _TYPE_ERRORS and deeper:
            continue
        if err["type"] in _TYPE_ERRORS and err["loc"] in seen:
            continue
        seen.add(err["loc"])
        kept.append(err)
    lines = []
    for position, err in enumerate(kept):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        line = toml_key_line(text, tuple(err["loc"])) if text and err["loc"] and position else None
        at = f" (line {line})" if line else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key `{where}`{at}: remove it or check its spelling")
        elif err["type"] == "bool_type":
            lines.append(f"`{where}`{at}: must be true or false (a TOML boolean, not quoted)")
        elif err["type"] in _TYPE_ERRORS and len(err["loc"]) == 4 and err["loc"][2] == "apps":
            lines.append(f"`{where}`{at}: an app is its numeric id or {{id = N, guest_space_id = M}}")
        else:
            lines.append(f"`{where}`{at}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def parse_var_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--var key=value`` pairs; the value is read as YAML so numbers and lists keep their type."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--var {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@dataclass(frozen=True, repr=False)
class Credentials:
    """Secrets from the process environment, named as cli-kintone names them. Never printed."""

    api_tokens: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    basic_username: str | None = None
    basic_password: str | None = None

    def __repr__(self) -> str:  # a secret must not leak through a repr in a traceback or log
        kinds = [
            k
            for k, v in (
                ("api_tokens", self.api_tokens),
                ("password", self.password),
                ("basic", self.basic_password),
            )
            if v
        ]
        return f"Credentials({', '.join(kinds) or 'none'})"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (*self.api_tokens, self.password, self.basic_password) if s)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        tokens = tuple(t.strip() for t in env.get("KINTONE_API_TOKEN", "").split(",") if t.strip())
        username, password = env.get("KINTONE_USERNAME") or None, env.get("KINTONE_PASSWORD") or None
        if (username is None) != (password is None):
            raise ConfigError("set both KINTONE_USERNAME and KINTONE_PASSWORD, or neither")
        basic_user, basic_pass = (
            env.get("KINTONE_BASIC_AUTH_USERNAME") or None,
            env.get("KINTONE_BASIC_AUTH_PASSWORD") or None,
        )
        if (basic_user is None) != (basic_pass is None):
            raise ConfigError(
                "set both KINTONE_BASIC_AUTH_USERNAME and KINTONE_BASIC_AUTH_PASSWORD, or neither"
            )
        if len(tokens) > MAX_API_TOKENS:
            raise ConfigError(
                f"KINTONE_API_TOKEN holds {len(tokens)} tokens; Kintone accepts at most {MAX_API_TOKENS} per request"
            )
        return cls(tokens, username, password, basic_user, basic_pass)
