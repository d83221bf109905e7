"""The lease: compare-and-swap on the record's revision, waiting, expiry and takeover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kmigrate.errors import LockedError, TransportError
from kmigrate.remote.app import JournalApp
from kmigrate.remote.lease import Lease
from kmigrate.remote.records import LeaseRecord, lease_fields

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.ticks = 0.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.ticks


def lease(app: JournalApp, run: str, clock: Clock, **kwargs) -> Lease:
    return Lease(app, run, "alice", "ci-" + run, seconds=60, clock=clock, monotonic=clock.monotonic, **kwargs)


def test_one_runner_at_a_time_the_second_is_told_who_holds_it(journal_app: JournalApp) -> None:
    clock = Clock()
    first, second = lease(journal_app, "r1", clock), lease(journal_app, "r2", clock)
    first.acquire()
    with pytest.raises(LockedError, match="held by alice@ci-r1 .run r1."):
        second.acquire(wait=0)
    first.release()
    second.acquire()
    current = journal_app.read_lease()
    assert current is not None and current.run == "r2"


def test_a_stale_revision_loses_the_swap(journal_app: JournalApp) -> None:
    clock = Clock()
    first = lease(journal_app, "r1", clock)
    first.acquire()
    first.release()
    seen = journal_app.read_lease()
    assert seen is not None
    fields = lease_fields("shop", "bob", "h", "r9", "2030-01-01T00:00:00.000Z")
    assert journal_app.swap_lease(seen.record_id, seen.revision, fields) == seen.revision + 1
    assert journal_app.swap_lease(seen.record_id, seen.revision, fields) is None  # GAIA_CO02


def test_waiting_polls_until_the_holder_releases_within_the_deadline(journal_app: JournalApp) -> None:
    clock = Clock()
    first = lease(journal_app, "r1", clock)
    first.acquire()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.ticks += seconds
        if len(waits) == 2:
            first.release()

    second = lease(journal_app, "r2", clock, sleep=sleep)
    second.acquire(wait=10, poll=1)
    assert waits == [1, 1] and second.held


def test_waiting_gives_up_at_the_deadline(journal_app: JournalApp) -> None:
    clock = Clock()
    lease(journal_app, "r1", clock).acquire()

    def sleep(seconds: float) -> None:
        clock.ticks += seconds

    with pytest.raises(LockedError):
        lease(journal_app, "r2", clock, sleep=sleep).acquire(wait=3, poll=1)
    assert clock.ticks == 3


def test_an_expired_lease_is_taken_over_and_reported_and_its_holder_stops_at_renewal(
    journal_app: JournalApp,
) -> None:
    clock = Clock()
    dead = lease(journal_app, "r1", clock)
    dead.acquire()
    taken: list[LeaseRecord] = []
    clock.now = T0 + timedelta(seconds=61)
    heir = lease(journal_app, "r2", clock, on_takeover=lambda lease, reason: taken.append(lease))
    heir.acquire()
    assert [t.run for t in taken] == ["r1"]
    with pytest.raises(LockedError, match="taken over by alice@ci-r2"):
        dead.renew(force=True)


def test_renewal_pushes_the_expiry_on_after_half_the_lease(journal_app: JournalApp) -> None:
    clock = Clock()
    mine = lease(journal_app, "r1", clock)
    mine.acquire()
    revision = mine.revision
    clock.now = T0 + timedelta(seconds=20)
    mine.renew()
    assert mine.revision == revision  # not yet: no request
    clock.now = T0 + timedelta(seconds=31)
    mine.renew()
    assert mine.revision == revision + 1
    current = journal_app.read_lease()
    assert current is not None and current.expires == "2026-01-01T09:01:31.000Z"


def test_a_lease_whose_holder_died_on_this_host_is_taken_over_at_once(journal_app: JournalApp) -> None:
    clock = Clock()
    dead = Lease(journal_app, "r1", "alice", "ci-1", seconds=60, clock=clock, pid=4242)
    dead.acquire()
    reasons: list[str] = []
    alive = {4242: False}
    # Same host, its process gone: no need to wait for the expiry.
    heir = Lease(
        journal_app,
        "r2",
        "alice",
        "ci-1",
        seconds=60,
        clock=clock,
        pid=7,
        alive=lambda pid: alive[pid],
        on_takeover=lambda lease, reason: reasons.append(reason),
    )
    heir.acquire()
    assert reasons == ["the journal app's lease holder ran on this host and its process is gone"]
    # Another host's live-looking holder is never judged by its pid.
    other = Lease(journal_app, "r3", "bob", "ci-2", seconds=60, clock=clock, pid=9, alive=lambda pid: False)
    with pytest.raises(LockedError):
        other.acquire()


class LosingAnswers:
    """A JournalApp whose next ``n`` lease writes lose their answer, having landed or not."""

    def __init__(self, app: JournalApp, n: int, land: bool = True):
        self.app, self.n, self.land = app, n, land
        self.client, self.project, self.home = app.client, app.project, app.home

    def read_lease(self):
        return self.app.read_lease()

    def _lose(self, result):
        if self.n > 0:
            self.n -= 1
            raise TransportError("answer lost", sent_maybe=True)
        return result

    def create_lease(self, fields):
        return self._lose(self.app.create_lease(fields) if self.land else None)

    def swap_lease(self, record_id, revision, fields):
        return self._lose(self.app.swap_lease(record_id, revision, fields) if self.land else None)


def test_a_lease_write_whose_answer_was_lost_is_found_to_be_ours(journal_app: JournalApp) -> None:
    clock = Clock()
    mine = lease(LosingAnswers(journal_app, 1), "r1", clock)  # type: ignore[arg-type]
    mine.acquire()
    current = journal_app.read_lease()
    assert mine.held and current is not None and current.run == "r1" and mine.revision == current.revision
    clock.now = T0 + timedelta(seconds=40)
    mine.app.n = 1  # type: ignore[attr-defined]
    mine.renew()  # landed, answer lost: read back as ours
    assert mine.revision == current.revision + 1


def test_lease_writes_that_keep_failing_stop_the_run_without_asking_for_resolve(
    journal_app: JournalApp,
) -> None:
    with pytest.raises(LockedError, match="could not be taken") as err:
        lease(LosingAnswers(journal_app, 99, land=False), "r1", Clock()).acquire()  # type: ignore[arg-type]
    assert "resolve" not in str(err.value)
