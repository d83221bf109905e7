"""The journal app's records, pure: field codes, keys, the marker request and parsing.

A **marker** is the record a bulk request adds to the journal app as its request [0]. Its key
(``<project>:<version>:<batch>``) is unique in the app, so the marker exists exactly when the
batch applied (the bulk is all-or-nothing) and a second send of the batch fails on it and rolls
back whole. The ids the batch created are written to the marker right after the answer.

The **lease** record (key ``<project>:lease``) says which runner's turn it is; see ``lease``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import App, Environment
from ..errors import ConfigError
from ..journal import BatchRecord
from ..kintone import api_path
from ..plan import FAILED, Batch, ChangesetPlan, Plan, canonical_json

KIND_BATCH = "batch"  # one applied (or baselined) batch
KIND_LEASE = "lease"
KIND_PARTIAL = "partial"  # "partial:K": the batch's first K calls applied, the rest not (yet)

# What `kmigrate plan` shows where the run's token and the probe go: known only when `apply` runs.
RUN_PLACEHOLDER = "{run}"
PROBE_PLACEHOLDER = "{probe}"

# The journal app's fields (Kintone's shape for POST preview/app/form/fields.json): what
# `journal init` creates, and what docs/journal.md lists for making the app by hand.
FIELDS: dict[str, dict[str, Any]] = {
    "key": {
        "type": "SINGLE_LINE_TEXT",
        "label": "Key",
        "required": True,
        "unique": True,  # the whole protocol rests on this: a resend fails on it
    },
    "kind": {"type": "SINGLE_LINE_TEXT", "label": "Kind"},  # batch, lease, or partial:K
    "project": {"type": "SINGLE_LINE_TEXT", "label": "Project"},
    "version": {"type": "SINGLE_LINE_TEXT", "label": "Changeset version"},
    "name": {"type": "SINGLE_LINE_TEXT", "label": "Changeset name"},
    "batch": {"type": "NUMBER", "label": "Batch"},
    "batches": {"type": "NUMBER", "label": "Batches in the changeset"},
    "hash": {"type": "SINGLE_LINE_TEXT", "label": "Batch hash"},
    "source_checksum": {"type": "SINGLE_LINE_TEXT", "label": "Source checksum"},
    "rendered_checksum": {"type": "SINGLE_LINE_TEXT", "label": "Rendered checksum"},
    "run": {"type": "SINGLE_LINE_TEXT", "label": "Run"},
    "refs": {"type": "MULTI_LINE_TEXT", "label": "Records created per ref"},
    "ids": {"type": "MULTI_LINE_TEXT", "label": "Ids created per ref"},
    # What was read before the send (the reconciliation's probe), so any runner can read back
    # the ids of a batch whose answer was lost; empty while kmigrate reads nothing first.
    "probe": {"type": "MULTI_LINE_TEXT", "label": "Read before the send"},
    "holder": {"type": "SINGLE_LINE_TEXT", "label": "Lease holder"},
    "host": {"type": "SINGLE_LINE_TEXT", "label": "Lease host"},
    "pid": {"type": "SINGLE_LINE_TEXT", "label": "Lease process id"},
    "expires": {"type": "SINGLE_LINE_TEXT", "label": "Lease expires (UTC)"},
}


def partial_kind(calls: int) -> str:
    return f"{KIND_PARTIAL}:{calls}"


def marker_key(project: str, version: str, index: int) -> str:
    return f"{project}:{version}:{index}"


def lease_key(project: str) -> str:
    return f"{project}:lease"


def query_text(value: str) -> str:
    """A string literal of Kintone's query language."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def created_counts(batch: Batch) -> dict[str, int]:
    """Per ref, how many records the batch creates (or upserts) under it, in order."""
    counts: dict[str, int] = {}
    for call in batch.calls:
        if call.method in ("POST", "PUT"):
            for seg in call.segments:
                if seg.ref:
                    counts[seg.ref] = counts.get(seg.ref, 0) + seg.count
    return counts


def _value(value: Any) -> dict[str, Any]:
    return {"value": value}


@dataclass(frozen=True)
class Markers:
    """What a plan needs to write markers: the project's name and the journal app per space.

    ``request`` is the pure builder of request [0]; ``kmigrate plan`` shows it with
    ``RUN_PLACEHOLDER`` where ``apply`` puts the run's token.
    """

    project: str
    apps: Mapping[int | None, App]

    @classmethod
    def for_env(cls, env: Environment) -> Markers | None:
        if not env.journal_apps or env.project is None:
            return None
        return cls(env.project, env.journal_apps)

    def app_for(self, guest_space_id: int | None) -> App:
        app = self.apps.get(guest_space_id)
        if app is None:
            where = f"guest space {guest_space_id}" if guest_space_id is not None else "no guest space"
            raise ConfigError(
                f"a batch goes to apps in {where}, but journal_app names no journal app there: "
                "a bulk request cannot leave its space, so its marker cannot either",
                hint='name one per space, e.g. journal_app = {default = 50, "3" = 61} (see docs/journal.md)',
            )
        return app

    def check_spaces(self, plan: Plan) -> None:
        """Refuse, before anything is sent, a plan with batches in a space without a journal app."""
        for cs in plan.pending:
            for op in cs.operations:
                self.app_for(op.guest_space_id)

    def record(
        self, cs: ChangesetPlan, batch: Batch, run: str, probe: Any = PROBE_PLACEHOLDER
    ) -> dict[str, Any]:
        counts = created_counts(batch)
        return {
            "key": _value(marker_key(self.project, cs.version, batch.index)),
            "kind": _value(KIND_BATCH),
            "project": _value(self.project),
            "version": _value(cs.version),
            "name": _value(cs.name),
            "batch": _value(str(batch.index)),
            "batches": _value(str(len(cs.batches))),
            "hash": _value(batch.hash),
            "source_checksum": _value(cs.source_checksum),
            "rendered_checksum": _value(cs.rendered_checksum),
            "run": _value(run),
            "refs": _value(canonical_json(counts)),
            # Nothing to record later when the batch creates nothing a ref names.
            "ids": _value("" if counts else "{}"),
            "probe": _value(probe if isinstance(probe, str) else canonical_json(probe) if probe else ""),
        }

    def request(
        self, cs: ChangesetPlan, batch: Batch, run: str = RUN_PLACEHOLDER, probe: Any = PROBE_PLACEHOLDER
    ) -> dict[str, Any]:
        """Request [0] of the batch's bulk: POST record.json to the journal app of its space."""
        app = self.app_for(batch.guest_space_id)
        return {
            "method": "POST",
            "api": api_path("record", app.guest_space_id),
            "payload": {"app": app.id, "record": self.record(cs, batch, run, probe)},
        }

    def continuation(
        self, cs: ChangesetPlan, batch: Batch, partial: Marker, run: str, probe: Any = None
    ) -> dict[str, Any]:
        """Request [0] of the bulk that sends the rest of a batch applied in part: its marker
        made whole (kind ``batch``, the batch's hash), **if it is still at the revision read**.
        A second copy of this bulk fails there (Kintone's revision conflict) and applies nothing,
        as a resent first bulk fails on the marker's unique key."""
        app = self.app_for(batch.guest_space_id)
        record = self.record(cs, batch, run, probe)
        del record["key"]
        if created_counts(batch):  # the first calls' ids stay until all are written after the answer
            record["ids"] = _value(canonical_json(list(partial.prefix_results or [])))
        return {
            "method": "PUT",
            "api": api_path("record", app.guest_space_id),
            "payload": {
                "app": app.id,
                "id": partial.record_id,
                "revision": partial.revision,
                "record": record,
            },
        }


# ---- a send's marker, journaled in the local probe (kmigrate.runner) ---------------------------

# The probe's key for the marker as the send left: {"run": token, "revision": R, "from": K}
# (R 0: a new marker; else the partial one made whole at revision R; K: the calls sent before).
SENT_MARKER = "marker"


def sent_marker(run: str, partial: Marker | None, done: int) -> dict[str, Any]:
    return {"run": run, "revision": partial.revision if partial is not None else 0, "from": done}


def kept_by_refusal(record: BatchRecord, found: Marker) -> int | None:
    """How many calls of the batch applied, where its last send was refused past its marker
    and ``found`` is that send's own marker write (same run, the very next revision): under the
    "prefix" reading of a failed bulk the marker stayed with the calls before the refused one,
    and it claims the batch until it is made ``partial:K``. None in any other case."""
    probe = record.probe
    sent = probe.get(SENT_MARKER) if isinstance(probe, Mapping) else None
    failing = (record.error or {}).get("bulk_index")
    if record.state != FAILED or not isinstance(sent, Mapping) or failing is None or found.kind != KIND_BATCH:
        return None
    if found.run != sent.get("run") or found.revision != int(sent.get("revision", 0)) + 1:
        return None
    return int(sent.get("from", 0)) + int(failing)


def _text(record: Mapping[str, Any], code: str) -> str:
    field = record.get(code)
    value = field.get("value") if isinstance(field, Mapping) else None
    return "" if value is None else str(value)


def _json(text: str, default: Any) -> Any:
    if not text.strip():
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


@dataclass(frozen=True)
class Marker:
    """A marker record read back from the journal app."""

    key: str
    version: str
    name: str
    index: int
    kind: str
    batches: int
    hash: str
    source_checksum: str
    rendered_checksum: str
    run: str
    refs: dict[str, int]  # per ref, how many records the batch created under it
    ids: dict[str, list[int]] | None  # None: not written yet (the answer, or its PUT, was lost)
    probe: Any  # what was read before the send (None: nothing)
    record_id: int
    revision: int
    guest_space_id: int | None = None  # the space of the journal app it was read from
    # partial:K: what is known of the results of those K calls (per call: {"ids": [...]} for a
    # call whose records a ref keeps, else {}), kept in ``ids``; ``hash`` is then theirs.
    prefix_results: list[Any] | None = None

    @property
    def applied_calls(self) -> int | None:
        """K for a marker of kind ``partial:K``; None for any other kind."""
        head, _, count = self.kind.partition(":")
        return int(count) if head == KIND_PARTIAL and count.isdigit() else None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], guest_space_id: int | None = None) -> Marker:
        ids = _json(_text(record, "ids"), None)
        return cls(
            prefix_results=ids if isinstance(ids, list) else None,
            guest_space_id=guest_space_id,
            key=_text(record, "key"),
            kind=_text(record, "kind"),
            version=_text(record, "version"),
            name=_text(record, "name"),
            index=int(_text(record, "batch") or 0),
            batches=int(_text(record, "batches") or 0),
            hash=_text(record, "hash"),
            source_checksum=_text(record, "source_checksum"),
            rendered_checksum=_text(record, "rendered_checksum"),
            run=_text(record, "run"),
            refs={str(k): int(v) for k, v in _json(_text(record, "refs"), {}).items()},
            probe=_json(_text(record, "probe"), None),
            ids=None if not isinstance(ids, dict) else {str(k): [int(i) for i in v] for k, v in ids.items()},
            record_id=int(_text(record, "$id") or 0),
            revision=int(_text(record, "$revision") or 0),
        )


@dataclass(frozen=True)
class LeaseRecord:
    """The lease as read: who holds it until when (``run`` empty: free)."""

    holder: str
    host: str
    run: str
    expires: str  # UTC ISO 8601; empty when never taken
    record_id: int
    revision: int
    pid: int | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LeaseRecord:
        return cls(
            holder=_text(record, "holder"),
            host=_text(record, "host"),
            run=_text(record, "run"),
            expires=_text(record, "expires"),
            record_id=int(_text(record, "$id") or 0),
            revision=int(_text(record, "$revision") or 0),
            pid=int(_text(record, "pid")) if _text(record, "pid").isdigit() else None,
        )

    def __str__(self) -> str:
        return f"{self.holder}@{self.host} (run {self.run}) until {self.expires}"


def lease_fields(
    project: str, holder: str, host: str, run: str, expires: str, pid: int | None = None
) -> dict[str, Any]:
    return {
        "pid": _value("" if pid is None else str(pid)),
        "key": _value(lease_key(project)),
        "kind": _value(KIND_LEASE),
        "project": _value(project),
        "holder": _value(holder),
        "host": _value(host),
        "run": _value(run),
        "expires": _value(expires),
    }
