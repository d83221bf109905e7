"""One command's use of the journal app: the planning limits, the marker in every bulk, the
lease, and settling a bulk's outcome by its marker. ``api`` opens it; ``Runner`` calls it.

    limits_for(env)         19 calls per bulk where the marker takes one of Kintone's 20
    RemoteRun.bulk(...)     request [0] the marker, then the batch; a refusal at [0] or a lost
                            answer is settled by reading the marker (applied, or sent again)
    RemoteRun.after_applied the ids the batch created, written to its marker (best effort: a
                            runner that has them writes them at its next start, see ``sync``)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Environment
from ..errors import DriftError, JournalError, KintoneError, KmigrateError, TransportError
from ..journal import Actor
from ..kintone import MAX_BULK_REQUESTS
from ..plan import Batch, ChangesetPlan
from ..planner import Limits
from .app import JournalApp
from .lease import LEASE_SECONDS, Lease
from .records import KIND_BATCH, KIND_PARTIAL, LeaseRecord, Marker, Markers

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
    the marker's record id; or, settled by reading it, the ``marker`` of an applied batch."""

    results: list[dict[str, Any]] | None = None
    marker_id: int | None = None
    marker: Marker | None = None


@dataclass
class RemoteRun:
    client: Client
    markers: Markers
    run: str
    lease: Lease | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def app(self) -> JournalApp:
        return JournalApp(self.client, self.markers)

    def before_batch(self) -> None:
        if self.lease is not None:
            self.lease.renew()

    def bulk(
        self,
        cs: ChangesetPlan,
        batch: Batch,
        requests: Sequence[Mapping[str, Any]] | EncodedBulk,
        probe: Any = None,
    ) -> Outcome:
        """Send the batch behind its marker (holding ``probe``, what was read before the send);
        see the module's docstring."""
        from ..client import bulk_with_head  # sending: the client is loaded already

        marker_request = self.markers.request(cs, batch, self.run, probe=probe)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                results = self.client.bulk(bulk_with_head([marker_request], requests), batch.guest_space_id)
            except KintoneError as exc:
                if exc.bulk_index != 0:
                    self._check_rolled_back(cs, batch, exc)
                    raise _without_marker(exc) from exc
                found = self._marker(cs, batch)
                if found is None:  # the journal app itself refused the marker (fields, rights)
                    raise KintoneError(
                        f"the journal app refused this batch's marker (request 0): {exc.message}",
                        code=exc.code,
                        status=exc.status,
                        errors=exc.errors,
                        error_id=exc.error_id,
                        hint="check the journal app's fields (docs/journal.md) and that the credentials "
                        "may add and edit its records",
                    ) from exc
                return Outcome(marker=found)
            except TransportError as exc:
                if not exc.sent_maybe:
                    raise
                try:
                    found = self._marker(cs, batch)
                except TransportError:
                    raise exc from None  # cannot tell: in doubt, settled at the next start
                if found is not None:
                    return Outcome(marker=found)
                if attempt == SEND_ATTEMPTS:
                    raise
                continue  # not applied: send it again
            return Outcome(results=results[1:], marker_id=int(results[0]["id"]))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _check_rolled_back(self, cs: ChangesetPlan, batch: Batch, exc: KintoneError) -> None:
        """A bulk refused after its marker: Kintone rolls it back whole, the marker too. Where it
        kept the requests before the refused one instead (a "prefix" reading of a failed bulk),
        the marker would say the batch applied while its later calls never ran: mark it partial
        (markers of another kind are not read as applied) and stop for a person."""
        try:
            found = self.app.read_marker(cs.version, batch.index, batch.guest_space_id)
        except KmigrateError:
            return  # cannot tell now; the refusal is reported as it is
        if found is None or found.kind != KIND_BATCH:
            return
        self.app.set_kind(found.record_id, batch.guest_space_id, f"{KIND_PARTIAL}:{exc.bulk_index}")
        raise JournalError(
            f"{cs.id} batch {batch.index}: Kintone refused request {exc.bulk_index} of its bulk "
            f"({exc.message}) but kept the requests before it, the journal app's marker among them: "
            "the batch applied in part",
            hint=f"its marker is now kind {KIND_PARTIAL!r}; check what Kintone holds, undo or complete the part "
            "that applied, delete the marker, then `kmigrate apply` again",
        )

    def marker(self, cs: ChangesetPlan, batch: Batch) -> Marker | None:
        """The batch's marker, read now (a batch left in doubt by an earlier run)."""
        return self._marker(cs, batch)

    def write_found_ids(self, marker: Marker, batch: Batch, created: Mapping[str, Sequence[int]]) -> None:
        """Ids read back from Kintone for a marker that had none (best effort)."""
        if marker.ids is None and created:
            self.after_applied(batch, Outcome(marker_id=marker.record_id), created)

    def _marker(self, cs: ChangesetPlan, batch: Batch) -> Marker | None:
        found = self.app.read_marker(cs.version, batch.index, batch.guest_space_id)
        if found is not None and found.kind != KIND_BATCH:
            raise JournalError(
                f"{cs.id} batch {batch.index}: its marker in the journal app says it applied in part ({found.kind})",
                hint="check what Kintone holds, undo or complete the part that applied, delete the marker, "
                "then `kmigrate apply` again",
            )
        if found is not None and found.hash != batch.hash:
            raise DriftError(
                f"{cs.id} batch {batch.index} was applied by run {found.run} with other content "
                f"(hash {found.hash[:12]}..., planned here {batch.hash[:12]}...)",
                hint="another runner applied different files: compare the project's versions; "
                "`kmigrate status` shows the drift once this runner's journal is synced",
            )
        return found

    def after_applied(self, batch: Batch, outcome: Outcome, created: Mapping[str, Sequence[int]]) -> None:
        if outcome.marker_id is None or not created:
            return
        try:
            self.app.write_ids(outcome.marker_id, batch.guest_space_id, created)
        except KmigrateError as exc:
            self.warnings.append(
                f"batch {batch.index}: its ids could not be written to its marker ({exc.message}); "
                "the next kmigrate command on this machine writes them"
            )

    def release(self) -> None:
        if self.lease is not None:
            try:
                self.lease.release()
            except KmigrateError:
                pass  # the lease expires on its own


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
