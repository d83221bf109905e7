"""One command's use of the journal app: the planning limits, the marker in every bulk, the
lease, and settling a bulk's outcome by its marker. ``api`` opens it; ``Runner`` calls it.

    limits_for(env)         19 calls per bulk where the marker takes one of Kintone's 20
    RemoteRun.bulk(...)     request [0] the marker, then the batch; a refusal at [0] or a lost
                            answer is settled by reading the marker (applied, or sent again)
    RemoteRun.after_applied the ids the batch created, written to its marker; a write that
                            fails is owed: tried again before the next bulk, which is not sent
                            until it lands (see ``settle_owed``)
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Environment
from ..errors import DriftError, JournalError, KintoneError, KmigrateError, TransportError
from ..journal import Actor
from ..kintone import MAX_BULK_REQUESTS
from ..plan import Batch, ChangesetPlan, canonical_json
from ..planner import Limits
from .app import JournalApp
from .lease import LEASE_SECONDS, Lease
from .records import KIND_BATCH, LeaseRecord, Marker, Markers, partial_kind

if TYPE_CHECKING:  # only handed in: nothing imports the HTTP client where nothing is sent
    from ..client import Client, EncodedBulk

# A lost answer is settled by reading the marker; absent, the batch is sent again (safe: a
# late first copy and the resend cannot both apply, the marker's key is unique). This many
# sends in all before the batch is left in doubt for the next run.
SEND_ATTEMPTS = 3


def limits_for(env: Environment) -> Limits:
    """The planner's limits for ``env``: one call of every bulk is the marker's."""
    if Markers.for_env(env) is None:
        return Limits()
    return Limits(calls_per_bulk=MAX_BULK_REQUESTS - 1)


def run_token(actor: Actor, run_id: int | None) -> str:
    """Names a run across machines (local run ids are only unique in one journal)."""
    return f"{actor.user}@{actor.host}#{run_id if run_id is not None else '-'}.{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Outcome:
    """What a bulk came to: ``results`` of the batch's own calls (the marker's left out) and
    the marker's record id; or, settled by reading it, the ``marker`` of an applied batch, or
    the ``partial`` marker of a batch whose first calls applied (the runner sends the rest)."""

    results: list[dict[str, Any]] | None = None
    marker_id: int | None = None
    marker: Marker | None = None
    partial: Marker | None = None


# Writing a marker's `partial:K`: tries before the run stops (the runner's journal keeps what
# it learnt, and its next start writes it).
PARTIAL_WRITES = 5

# Writing the ids of an applied batch into its marker, when the write right after the answer
# failed: tries before the next bulk, and before the run stops rather than send it.
IDS_WRITES = 3


@dataclass(frozen=True)
class _OwedIds:
    """Ids an applied batch created that its marker does not hold yet."""

    version: str
    index: int
    marker_id: int
    guest_space_id: int | None
    created: Mapping[str, Sequence[int]]
    reason: str


@dataclass
class RemoteRun:
    client: Client
    markers: Markers
    run: str
    lease: Lease | None = None
    warnings: list[str] = field(default_factory=list)
    owed: list[_OwedIds] = field(default_factory=list)  # ids not yet in their markers

    @property
    def app(self) -> JournalApp:
        return JournalApp(self.client, self.markers)

    def before_batch(self) -> None:
        """Before a bulk: the lease renewed, and the ids owed to earlier markers written. A
        marker without its ids is read back by content (the probe it holds), which only works
        while the records are as the batch left them, and a later bulk may change them: so no
        bulk leaves while ids are owed. Stops the run (nothing more sent) if they cannot be
        written now: any runner's next apply reads them back, with nothing changed since."""
        if self.lease is not None:
            self.lease.renew()
        self.settle_owed(attempts=IDS_WRITES)
        if self.owed:
            first = self.owed[0]
            raise TransportError(
                f"V{first.version} batch {first.index}: the ids it created could not be written to its marker in "
                f"the journal app ({first.reason}); nothing more was sent, so that they can be read back",
                sent_maybe=False,
                hint="run `kmigrate apply` again (on any machine) once Kintone answers: "
                "it writes or reads them back first",
            )

    def settle_owed(self, attempts: int = 1) -> None:
        """Write the owed ids, each up to ``attempts`` times; those still failing stay owed."""
        still: list[_OwedIds] = []
        for owed in self.owed:
            for attempt in range(1, attempts + 1):
                try:
                    self.app.write_ids(owed.marker_id, owed.guest_space_id, owed.created)
                    break
                except KmigrateError as exc:
                    if attempt == attempts:
                        still.append(dataclasses.replace(owed, reason=exc.message))
        self.owed = still

    def finish(self) -> None:
        """At the end of a run: owed ids written if Kintone answers now, else said."""
        self.settle_owed(attempts=IDS_WRITES)
        for owed in self.owed:
            self.warnings.append(
                f"V{owed.version} batch {owed.index}: its ids could not be written to its marker ({owed.reason}); "
                "the next kmigrate command on this machine writes them, and any other runner reads them "
                "back from Kintone"
            )

    def bulk(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]] | EncodedBulk,
        probe: Any = None,
        partial: Marker | None = None,
    ) -> Outcome:
        """Send the batch behind its marker (holding ``probe``, what was read before the send):
        a new marker, or with ``partial`` (its first calls applied already; ``requests`` are the
        rest) that marker made whole by revision. A refusal at [0] or a lost answer is settled
        by reading the marker; a refusal past it is raised with ``bulk_index`` among
        ``requests`` (the runner then reads the marker: under the "prefix" reading of a failed
        bulk it stayed, with the calls before the refused one)."""
        from ..client import bulk_with_head  # sending: the client is loaded already

        if partial is None:
            head = self.markers.request(cs, batch, self.run, probe=probe)
        else:
            head = self.markers.continuation(cs, batch, partial, self.run, probe=probe)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                results = self.client.bulk(bulk_with_head([head], requests), batch.guest_space_id)
            except KintoneError as exc:
                if exc.bulk_index != 0:
                    raise _without_marker(exc) from exc
                outcome = self._settled(cs, batch, self.read(cs, batch), partial)
                if outcome is None:  # the journal app itself refused the marker (fields, rights)
                    raise KintoneError(
                        f"the journal app refused this batch's marker (request 0): {exc.message}",
                        code=exc.code,
                        status=exc.status,
                        errors=exc.errors,
                        error_id=exc.error_id,
                        hint="check the journal app's fields (docs/journal.md) and that the credentials "
                        "may add and edit its records",
                    ) from exc
                return outcome
            except TransportError as exc:
                if not exc.sent_maybe:
                    raise
                try:
                    found = self.read(cs, batch)
                except TransportError:
                    raise exc from None  # cannot tell: in doubt, settled at the next start
                outcome = self._settled(cs, batch, found, partial)
                if outcome is not None:
                    return outcome
                if attempt == SEND_ATTEMPTS:
                    raise
                continue  # not applied: send it again
            marker_id = int(results[0]["id"]) if partial is None else partial.record_id
            return Outcome(results=results[1:], marker_id=marker_id)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _settled(
        self, cs: ChangesetPlan, batch: Batch, found: Marker | None, before: Marker | None
    ) -> Outcome | None:
        """What the marker read after a send says: applied whole, applied in part, or None
        (this send did not apply: no marker, or the partial one still at the revision read)."""
        if found is None or (before is not None and found.revision == before.revision):
            return None
        if found.applied_calls is not None:
            return Outcome(partial=found)
        return Outcome(marker=self._checked(cs, batch, found))

    def read(self, cs: ChangesetPlan, batch: Batch) -> Marker | None:
        """The batch's marker as it is now, of any kind."""
        return self.app.read_marker(cs.version, batch.index, batch.guest_space_id)

    def mark_partial(self, marker: Marker, calls: int, calls_hash: str, results: Sequence[Any]) -> Marker:
        """Make ``marker`` say ``partial:calls`` (revision-checked; a lost answer or a conflict
        is read again): the marker as written. Raises when Kintone cannot be written now."""
        current = marker
        for attempt in range(1, PARTIAL_WRITES + 1):
            try:
                revision = self.app.set_partial(current, calls, calls_hash, results)
                if revision is not None:
                    return Marker.from_record(
                        _as_record(current, calls, calls_hash, results, revision), current.guest_space_id
                    )
            except (TransportError, KintoneError) as exc:
                if isinstance(exc, KintoneError) and exc.status is not None and exc.status < 500:
                    raise
                if attempt == PARTIAL_WRITES:
                    raise
            found = self._reread(current, attempt)
            if found is None:
                continue
            if found.applied_calls == calls and found.hash == calls_hash:
                return found  # the write landed (its answer was lost)
            if found.revision != current.revision:
                raise JournalError(
                    f"V{found.version} batch {found.index}: its marker changed in the journal app while this "
                    f"run settled it (now {found.kind})",
                    hint="run `kmigrate apply` again: it reads the marker first",
                )
        raise JournalError(
            f"V{marker.version} batch {marker.index}: its marker could not be written",
            hint="run `kmigrate apply` again on this machine: its journal knows what applied",
        )

    def _reread(self, marker: Marker, attempt: int) -> Marker | None:
        try:
            return self.app.read_marker(marker.version, marker.index, marker.guest_space_id)
        except (TransportError, KintoneError):
            if attempt == PARTIAL_WRITES:
                raise
            return None

    def marker(self, cs: ChangesetPlan, batch: Batch) -> Marker | None:
        """The batch's marker, read now (a batch left in doubt by an earlier run), checked
        against the planned batch when it says the batch applied whole."""
        found = self.read(cs, batch)
        if found is None or found.applied_calls is not None:
            return found
        return self._checked(cs, batch, found)

    def write_found_ids(
        self, cs: ChangesetPlan, marker: Marker, batch: Batch, created: Mapping[str, Sequence[int]]
    ) -> None:
        """Ids read back from Kintone for a marker that had none (owed if the write fails)."""
        if marker.ids is None and created:
            self.after_applied(cs, batch, Outcome(marker_id=marker.record_id), created)

    def _checked(self, cs: ChangesetPlan, batch: Batch, found: Marker) -> Marker:
        if found.kind != KIND_BATCH:
            raise JournalError(
                f"{cs.id} batch {batch.index}: its marker in the journal app is of an unknown kind ({found.kind})",
                hint="a newer kmigrate wrote it? upgrade kmigrate; see docs/journal.md for the kinds",
            )
        if found.hash != batch.hash:
            raise DriftError(
                f"{cs.id} batch {batch.index} was applied by run {found.run} with other content "
                f"(hash {found.hash[:12]}..., planned here {batch.hash[:12]}...)",
                hint="another runner applied different files: compare the project's versions; "
                "`kmigrate status` shows the drift once this runner's journal is synced",
            )
        return found

    def after_applied(
        self, cs: ChangesetPlan, batch: Batch, outcome: Outcome, created: Mapping[str, Sequence[int]]
    ) -> None:
        """The ids ``batch`` created, written to its marker; owed if that fails (``before_batch``)."""
        if outcome.marker_id is None or not created:
            return
        try:
            self.app.write_ids(outcome.marker_id, batch.guest_space_id, created)
        except KmigrateError as exc:
            self.owed.append(
                _OwedIds(
                    cs.version, batch.index, outcome.marker_id, batch.guest_space_id, created, exc.message
                )
            )

    def release(self) -> None:
        if self.lease is not None:
            try:
                self.lease.release()
            except KmigrateError:
                pass  # the lease expires on its own


def _as_record(
    marker: Marker, calls: int, calls_hash: str, results: Sequence[Any], revision: int
) -> dict[str, Any]:
    """``marker`` as a record once ``JournalApp.set_partial`` wrote it."""
    fields = {
        "key": marker.key,
        "kind": partial_kind(calls),
        "version": marker.version,
        "name": marker.name,
        "batch": str(marker.index),
        "batches": str(marker.batches),
        "hash": calls_hash,
        "source_checksum": marker.source_checksum,
        "rendered_checksum": marker.rendered_checksum,
        "run": marker.run,
        "refs": canonical_json(marker.refs),
        "ids": canonical_json(list(results)),
        "probe": canonical_json(marker.probe) if marker.probe else "",
        "$id": str(marker.record_id),
        "$revision": str(revision),
    }
    return {k: {"value": v} for k, v in fields.items()}


def _without_marker(exc: KintoneError) -> KintoneError:
    """The refusal with ``bulk_index`` counted among the batch's own calls, as the runner
    locates it (the message keeps Kintone's index, which the plan's JSON shows too)."""
    return KintoneError(
        exc.message,
        code=exc.code,
        status=exc.status,
        errors=exc.errors,
        error_id=exc.error_id,
        bulk_index=None if exc.bulk_index is None else exc.bulk_index - 1,
        location=exc.location,
        hint=exc.hint,
    )


def open_lease(
    client: Client,
    markers: Markers,
    run: str,
    actor: Actor,
    *,
    wait: float,
    seconds: float = LEASE_SECONDS,
    on_takeover: Callable[[LeaseRecord, str], None] = lambda lease, reason: None,
) -> Lease:
    app = JournalApp(client, markers)
    lease = Lease(app, run, actor.user, actor.host, seconds=seconds, on_takeover=on_takeover, pid=actor.pid)
    lease.acquire(wait=wait)
    return lease
