"""The runner's helpers for overlapping work with the wire (``kmigrate.runner``).

- ``Ahead``: the items of an iterable made on a thread of their own, a few ahead of the one
  consuming them, in order. The runner prepares the next bulks with it (compiled, refs
  resolved where the ids are known, JSON-encoded) while the current one is in flight. The
  thread never touches the journal or the network: a bulk prepared and not sent leaves no
  trace, and an error raised while preparing reaches the consumer at that item's place.
- ``Senders``: threads that only exchange bulks with Kintone for ``apply --parallel N``; the
  journal is written by the runner's own thread, before each send and as each answer lands.

Both are daemon threads: Ctrl-C or a crash of the run never waits for them, and a bulk in
flight when the run stops is left ``sent`` in the journal, in doubt, as without them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_END = object()
_POLL = 0.1  # seconds: how often a blocked producer looks whether the consumer went away


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Ahead(Generic[T]):
    """Iterate ``items`` on a thread of its own, at most ``depth`` items ahead of the consumer.

    Iterating an ``Ahead`` gives the items in order; an exception raised by ``items`` is raised
    to the consumer where it happened. ``close()`` (or leaving the ``with``) stops the thread
    at its next item; it must be called if the consumer stops early."""

    def __init__(self, items: Iterable[T], depth: int = 1):
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(items,), name="kmigrate-ahead", daemon=True
        )
        self._thread.start()

    def _produce(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Raised(exc))
            return
        self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item

    def close(self) -> None:
        self._closed.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Senders:
    """``count`` threads running the calls ``submit`` gives them (one bulk exchange each)."""

    def __init__(self, count: int):
        self._jobs: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"kmigrate-send-{i}", daemon=True) for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - the runner's thread handles it
                future.set_exception(exc)

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, call))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def __enter__(self) -> Senders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Ahead", "Senders"]
