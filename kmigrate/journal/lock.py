"""The journal's lock: at most one run writes a journal at a time.

The lock is the single row of the ``lock`` table, inserted inside ``BEGIN IMMEDIATE``, so of
two processes exactly one gets it. The clock and the sleep between tries are injected, so a
test of ``wait`` runs in no time and decides nothing by timing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from ..errors import JournalError, LockedError
from .records import Actor


@dataclass(frozen=True)
class LockHolder:
    run_id: int | None
    user: str
    host: str
    pid: int
    since: str

    def __str__(self) -> str:
        run = f", run {self.run_id}" if self.run_id is not None else ""
        return f"{self.user}@{self.host} (pid {self.pid}{run}) since {self.since}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


# Logs an ``unlocked`` event inside the lock's own transaction: (holder, run_id, detail).
UnlockLogger = Callable[[LockHolder, int | None, dict[str, Any]], None]


class Lock:
    """The lock of one journal. ``tx`` opens one committed write transaction of that journal."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        tx: Callable[[], AbstractContextManager[Any]],
        *,
        actor: Actor,
        now: Callable[[], str],
        log_unlocked: UnlockLogger,
        where: str = "journal",
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        alive: Callable[[int], bool] = pid_alive,
    ):
        self._db = db
        self._tx = tx
        self.actor = actor
        self._now = now
        self._log_unlocked = log_unlocked
        self._where = where
        self._monotonic = monotonic
        self._sleep = sleep
        self._alive = alive

    def holder(self) -> LockHolder | None:
        row = next(self._db.table("lock").rows_where("id = 1"), None)
        return None if row is None else LockHolder(**{k: v for k, v in row.items() if k != "id"})

    def is_stale(self, holder: LockHolder) -> bool:
        """The holder ran on this host and its process is gone (a lock from another host is
        never judged stale: its process cannot be seen from here)."""
        return holder.host == self.actor.host and not self._alive(holder.pid)

    def acquire(
        self,
        run_id: int | None = None,
        *,
        wait: float = 0.0,
        poll: float = 0.1,
        take_over_stale: bool = False,
    ) -> LockHolder:
        """Take the lock, atomically, or raise ``LockedError`` naming its holder.

        ``wait`` seconds to keep trying while a live run holds it. A stale lock (its process is
        gone) is only taken over when asked (``take_over_stale``), and that is logged."""
        deadline = self._monotonic() + wait
        while True:
            with self._tx():
                holder = self.holder()
                if holder is not None and take_over_stale and self.is_stale(holder):
                    self._db.table("lock").delete(1)
                    self._log_unlocked(holder, run_id, {"reason": "stale: its process is gone"})
                    holder = None
                if holder is None:
                    a = self.actor
                    mine = LockHolder(run_id, a.user, a.host, a.pid, self._now())
                    self._db.table("lock").insert({"id": 1, **asdict(mine)})
                    return mine
            if self.is_stale(holder):
                raise LockedError(
                    f"{self._where} is locked by {holder}, but that process is gone: the lock is stale",
                    hint="if no kmigrate is running for this environment, free it with `kmigrate unlock`",
                )
            if self._monotonic() >= deadline:
                raise LockedError(
                    f"{self._where} is locked by {holder}: another kmigrate is running on this environment",
                    hint="wait for it to finish; if it is gone, `kmigrate unlock` frees the lock",
                )
            self._sleep(poll)

    def release(self) -> bool:
        """Free the lock if this process holds it; False if it did not."""
        with self._tx():
            cursor = self._db.execute(
                "DELETE FROM lock WHERE id = 1 AND host = ? AND pid = ?", [self.actor.host, self.actor.pid]
            )
            return cursor.rowcount == 1

    def force_unlock(self, reason: str | None = None) -> LockHolder | None:
        """Free the lock whoever holds it (``kmigrate unlock``), logging an ``unlocked`` event."""
        with self._tx():
            holder = self.holder()
            if holder is None:
                return None
            self._db.table("lock").delete(1)
            detail: dict[str, Any] = {"stale": self.is_stale(holder)}
            if reason:
                detail["reason"] = reason
            self._log_unlocked(holder, holder.run_id, detail)
            return holder

    @contextmanager
    def held(self, run_id: int | None = None, **kwargs: Any) -> Iterator[LockHolder]:
        holder = self.acquire(run_id, **kwargs)
        try:
            yield holder
        except BaseException:
            # The error in flight says what happened and what to do; a release that fails too
            # (the journal unwritable) must not replace it. The lock is stale once we exit.
            try:
                self.release()
            except JournalError:
                pass
            raise
        self.release()
