"""kmigrate's one exception tree.

Every error the library raises on purpose is a ``KmigrateError``; ``kmigrate.cli`` alone turns
it into ``Error: <message>`` on stderr and the class's ``exit_code``. Other libraries' errors
are translated once, at the seam where they happen, with ``raise ... from``.

    KmigrateError                 exit 1: failed while talking to Kintone or the journal
    ├── InputError                exit 2: the input is wrong; nothing was sent or journaled
    │   ├── ConfigError           kmigrate.toml, --env, --var, credentials in the environment
    │   ├── ChangesetError        a changeset file: YAML, Jinja, schema, refs, data files
    │   │   └── SumFileError      changesets/kmigrate.sum disagrees with the changeset files
    │   ├── SandboxDefinitionError  the sandbox file (apps, fields, process)
    │   ├── DriftError            an applied changeset changed since it was applied
    │   └── OrderError            a pending changeset is older than the newest applied one
    ├── KintoneError              Kintone (or the sandbox) answered with an error
    ├── TransportError            the request may not have reached Kintone, or its answer was lost
    └── JournalError              the journal cannot be read or written
        ├── LockedError           another run holds the journal's lock
        └── InDoubtError          a batch was sent but its answer was never journaled

``PendingWork`` (exit 3) is not a failure: ``status --check`` and ``plan --check`` raise it to
say that there is work to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where in the user's files something is: as much of it as is known."""

    file: Path | str | None = None
    line: int | None = None
    changeset: str | None = None  # e.g. "V0003__submit_orders"
    operation: int | None = None  # 1-based, as a person counts operations in a file
    record: int | None = None  # 1-based within the operation
    detail: str | None = None  # e.g. the operation's kind and app, or a data file's line

    def __str__(self) -> str:
        head = ""
        if self.file is not None:
            head = str(self.file)
            if self.line is not None:
                head += f":{self.line}"
        parts = [head] if head else []
        if self.changeset and (self.file is None or self.changeset not in str(self.file)):
            parts.append(f"changeset {self.changeset}")
        if self.operation is not None:
            parts.append(f"operation {self.operation}")
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


class KmigrateError(Exception):
    """The root of every error kmigrate raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location and str(self.location) else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(KmigrateError):
    """The input is wrong: nothing was sent and nothing was journaled."""

    exit_code = 2


class ConfigError(InputError):
    """kmigrate.toml, an --env or --var, or the credentials in the environment."""


class ChangesetError(InputError):
    """A changeset file (or a template or data file it uses) is wrong."""


class SumFileError(ChangesetError):
    """``changesets/kmigrate.sum`` and the changeset files disagree (an edit, a file added or
    gone, two branches with the same version); ``kmigrate hash`` rewrites it."""


class SandboxDefinitionError(InputError):
    """The sandbox file describing the embedded Kintone's apps is wrong."""


class DriftError(InputError):
    """An applied changeset's source or rendered content changed since it was applied."""


class OrderError(InputError):
    """A pending changeset is older than the newest applied one."""


class KintoneError(KmigrateError):
    """Kintone answered with an error body.

    ``bulk_index`` is the 0-based index of the failing inner request of a bulk request.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: dict[str, Any] | None = None,
        error_id: str | None = None,
        bulk_index: int | None = None,
        location: Location | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, location=location, hint=hint)
        self.code = code
        self.status = status
        self.errors = errors or {}
        self.error_id = error_id
        self.bulk_index = bulk_index

    def __str__(self) -> str:
        head = f"[{self.code}] " if self.code else ""
        text = head + super().__str__()
        for key, value in self.errors.items():
            messages = value.get("messages", value) if isinstance(value, dict) else value
            text += f"\n  {key}: {messages}"
        return text


class TransportError(KmigrateError):
    """The request may not have reached Kintone, or its answer was lost on the way back.

    ``sent_maybe`` is False only when the request certainly never reached Kintone (the
    connection was never made): then nothing was applied. When True, Kintone may have run it,
    so a write must be treated as in doubt, never blindly sent again.
    """

    def __init__(
        self,
        message: str,
        *,
        sent_maybe: bool = True,
        location: Location | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, location=location, hint=hint)
        self.sent_maybe = sent_maybe


class JournalError(KmigrateError):
    """The journal cannot be read or written, or its state forbids the run."""


class LockedError(JournalError):
    """Another run holds the journal's lock."""


class InDoubtError(JournalError):
    """A batch was sent but its answer was never journaled: it must be settled first."""


class PendingWork(KmigrateError):
    """Not a failure: there is work to do (``status --check``, ``plan --check``)."""

    exit_code = 3
