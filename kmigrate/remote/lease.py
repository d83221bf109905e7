"""Runners take turns through a lease record in the journal app.

The lease says who may run (holder, host, run) until when (``expires``). It is taken and
renewed by revision compare-and-swap: a PUT of the record with the revision it was read at;
of two runners that read the same revision, Kintone accepts one PUT and answers the other
``GAIA_CO02``. An expired lease (its holder died, or stalled past the expiry) is taken over
and the caller logs it.

Safety never rests on the lease: the markers alone keep every batch applied exactly once.
The lease only keeps runners from racing each other for the same batches. Expiry is judged by
the local clock against the holder's, so machines need roughly right clocks (NTP); a skew only
makes a takeover come early or late, never a batch apply twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..errors import KintoneError, LockedError, TransportError
from ..journal import pid_alive
from .app import JournalApp
from .records import LeaseRecord, lease_fields

LEASE_SECONDS = 300.0  # renewed before each batch once half of it has passed
WRITE_ATTEMPTS = 3  # lease writes whose answer was lost, before giving up for this run


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class Lease:
    app: JournalApp
    run: str  # this run's token, unique across machines
    holder: str  # user
    host: str
    seconds: float = LEASE_SECONDS
    clock: Callable[[], datetime] = _utc_now
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    on_takeover: Callable[[LeaseRecord, str], None] = lambda lease, reason: None
    pid: int | None = None  # this process, so a later run on this host can tell it died
    alive: Callable[[int], bool] = pid_alive
    record_id: int | None = field(default=None, init=False)
    revision: int | None = field(default=None, init=False)
    taken_at: datetime | None = field(default=None, init=False)

    @property
    def held(self) -> bool:
        return self.revision is not None

    def _fields(self, now: datetime, *, free: bool = False) -> dict[str, object]:
        expires = now if free else now + timedelta(seconds=self.seconds)
        run, pid = ("", None) if free else (self.run, self.pid)
        return lease_fields(self.app.project, self.holder, self.host, run, _iso(expires), pid)

    def expired(self, lease: LeaseRecord, now: datetime) -> bool:
        expires = _parse(lease.expires)
        return expires is None or expires <= now

    def _stale(self, lease: LeaseRecord, now: datetime) -> str:
        """Why a held lease may be taken over ("" if it may not): it expired, or its holder ran
        on this host and its process is gone (as with the local journal's lock)."""
        if not lease.run:
            return ""
        if self.expired(lease, now):
            return "the journal app's lease had expired"
        if lease.host == self.host and lease.pid is not None and not self.alive(lease.pid):
            return "the journal app's lease holder ran on this host and its process is gone"
        return ""

    def acquire(self, wait: float = 0.0, poll: float = 1.0) -> None:
        """Take the lease, waiting up to ``wait`` seconds while a live run holds it; else a
        ``LockedError`` naming the holder."""
        deadline = self.monotonic() + wait
        lost = 0  # lease writes whose answer was lost: read again, they may have landed
        while True:
            current = self.app.read_lease()
            now = self.clock()
            try:
                if self._try_take(current, now):
                    return
            except TransportError as exc:
                lost += 1  # (the client already retried what it safely could)
                if lost < WRITE_ATTEMPTS:
                    continue
                raise self._unreachable(exc) from exc
            remaining = deadline - self.monotonic()
            if current is not None and current.run and remaining <= 0:
                raise LockedError(
                    f"the journal app's lease is held by {current}: another kmigrate is applying to this environment",
                    hint="wait for it (`kmigrate apply --wait SECONDS` queues); a lease whose holder died "
                    "is taken over once it expires",
                )
            if current is not None and current.run:
                self.sleep(min(poll, remaining))

    def _try_take(self, current: LeaseRecord | None, now: datetime) -> bool:
        """One compare-and-swap on the lease as read; True when this run holds it after it."""
        if current is None:
            try:
                record_id, revision = self.app.create_lease(self._fields(now))
            except KintoneError:
                if self.app.read_lease() is None:
                    raise  # not a race with another creator: the app refused it
                return False  # another runner created it first (unique key): read who
            self._took(record_id, revision, now)
            return True
        if current.run == self.run:  # ours: an earlier write's answer was lost
            self._took(current.record_id, current.revision, now)
            return True
        reason = self._stale(current, now)
        if current.run and not reason:
            return False
        swapped = self.app.swap_lease(current.record_id, current.revision, self._fields(now))
        if swapped is None:
            return False  # another runner swapped first: read who
        self._took(current.record_id, swapped, now)
        if reason:
            self.on_takeover(current, reason)
        return True

    @staticmethod
    def _unreachable(exc: TransportError) -> LockedError:
        return LockedError(
            f"the journal app's lease could not be taken: {exc.message}",
            hint="nothing was sent to the apps; check the network and run `kmigrate apply` again",
        )

    def _took(self, record_id: int, revision: int, now: datetime) -> None:
        self.record_id, self.revision, self.taken_at = record_id, revision, now

    def renew(self, force: bool = False) -> None:
        """Push the expiry on once half of the lease has passed (or now, with ``force``).

        Raises ``LockedError`` when another runner took the lease over meanwhile (ours had
        expired): stopping before the next batch keeps the two from racing."""
        if self.record_id is None or self.revision is None or self.taken_at is None:
            raise LockedError("the journal app's lease is not held")
        now = self.clock()
        if not force and now < self.taken_at + timedelta(seconds=self.seconds / 2):
            return
        try:
            revision = self.app.swap_lease(self.record_id, self.revision, self._fields(now))
        except TransportError as exc:
            if exc.sent_maybe:
                revision = None  # it may have landed: the read below tells
            else:
                raise self._unreachable(exc) from exc
        if revision is None:
            current = self.app.read_lease()
            if current is not None and current.run == self.run:  # our last write's answer was lost
                self._took(current.record_id, current.revision, now)
                return
            self.revision = None
            raise LockedError(
                f"the journal app's lease expired and was taken over by {current}: "
                "this run stopped before its next batch",
                hint="every batch journaled as applied stays applied; `kmigrate apply` goes on from there",
            )
        self._took(self.record_id, revision, now)

    def release(self) -> None:
        """Free the lease if this run still holds it (best effort: an expiry frees it anyway)."""
        if self.record_id is None or self.revision is None:
            return
        record_id, revision = self.record_id, self.revision
        self.revision = None
        self.app.swap_lease(record_id, revision, self._fields(self.clock(), free=True))
