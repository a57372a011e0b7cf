"""Run one pipeline stage in a background thread: ``in_background(items, name)`` returns an iterator over the
same items, produced by a thread that works on the next item while the consumer works on the current one and
then waits until the consumer takes it (a hand-over, no queue: RAM holds at most one item more than a serial run
per stage).

* Order is kept, so a chain of stages gives exactly the serial result.
* An exception in the stage is raised in the consumer, as it was raised (type and message unchanged).
* ``stop()`` asks the thread to end at its next hand-over, ``close()`` also waits for it; the thread then closes
  the stage's own iterator. A chain is ended by stopping every stage first, then closing them (the pipeline
  does this whatever happens), so no thread outlives the pipeline.
* The thread runs in a copy of the caller's context (contextvars), so hosts that keep per-task state there
  (e.g. ComfyUI's executing node for its progress bar) still see it.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.05


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class BackgroundStage(Iterator[T]):
    def __init__(self, items: Iterable[T], name: str):
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._taken = threading.Event()  # the consumer has taken the last item handed over
        self._stop = threading.Event()
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._work,), name=f"latentsync-{name}",
                                        daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Hand ``item`` over and wait until the consumer takes it; False when asked to stop first."""
        self._taken.clear()
        self._queue.put(item)  # the queue is empty here: the previous item was taken
        while not self._stop.is_set():
            if self._taken.wait(_POLL_S):
                return True
        return False

    def _work(self) -> None:
        iterator = iter(self._items)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __next__(self) -> T:
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
                self._taken.set()
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"{self._thread.name} ended without a result") from None
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def stop(self) -> None:
        """Ask the thread to stop at its next hand-over (does not wait)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the thread (it closes its stage's iterator) and wait for it."""
        self._stop.set()
        self._thread.join()
        while not self._queue.empty():  # an item handed over but never taken
            self._queue.get_nowait()

    def __del__(self):
        self._stop.set()


def in_background(items: Iterable[T], name: str) -> Iterator[T]:
    return BackgroundStage(items, name)
