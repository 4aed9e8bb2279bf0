"""Dynamic batching: requests that arrive together share one forward pass.

Each served model has a `Batcher`: a bounded queue and one inference thread (torch releases
the GIL inside its kernels, and the event loop never waits on a forward pass). The thread takes
the first waiting item, then gathers more until it has `max_batch` or `max_wait` seconds have
passed since that first one, and runs `run_batch` on all of them. Under load the queue is never
empty, so batches fill without waiting; alone, a request waits at most `max_wait`.

A full queue refuses (`QueueFull`, the app answers 503 with Retry-After) instead of growing:
memory stays bounded and a client learns at once that it should come back. `close()` refuses
new items and lets the thread finish everything already queued (graceful shutdown).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError


class QueueFull(Exception):
    """The queue holds `queue_size` items already."""


class ShuttingDown(Exception):
    """The batcher was closed: no new work is accepted."""


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[list], list],
        max_batch: int = 16,
        max_wait: float = 0.005,
        queue_size: int = 64,
        name: str = "model",
        on_batch: Callable[[int, float], None] | None = None,
    ):
        if max_batch < 1 or queue_size < 1 or max_wait < 0:
            raise ValueError("max_batch and queue_size must be at least 1, max_wait at least 0")
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait
        self.on_batch = on_batch  # (batch size, seconds) after each forward pass: metrics
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # orders submit's check against the thread's last look
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"convzoo-serve-{name}", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, item) -> Future:
        """A Future for `item`'s result; QueueFull or ShuttingDown instead of waiting."""
        future: Future = Future()
        with self._lock:
            if self._closing:
                raise ShuttingDown()
            try:
                self.queue.put_nowait((item, future))
            except queue.Full:
                raise QueueFull() from None
        return future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new items, finish the queued ones, stop the thread."""
        with self._lock:
            self._closing = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _gather(self) -> list:
        try:
            batch = [self.queue.get(timeout=0.05)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            if not batch:
                with self._lock:
                    if self._closing and self.queue.empty():
                        return
                continue
            # a client that went away cancelled its future: no forward pass for it
            batch = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list) -> None:
        start = time.perf_counter()
        try:
            results = self.run_batch([item for item, _ in batch])
        except Exception as e:  # noqa: BLE001 - handed to every waiting request, the thread lives on
            for _, f in batch:
                _settle(f, exception=e)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - start)
        for (_, f), r in zip(batch, results):
            _settle(f, result=r)


def _settle(future: Future, result=None, exception: BaseException | None = None) -> None:
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled meanwhile
        pass
