"""The micro-batcher: callers submit one item and await their own result; items are flushed in
batches every ``wait_ms`` milliseconds after the first queued item, or as soon as ``batch_max``
are queued, with at most ``flushers`` batches in flight at once. The queue is bounded: past
``queue_max`` waiting items, ``submit`` refuses at once (503 overloaded) instead of queueing
without limit.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from shared.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
FlushFn = Callable[[list[T]], Awaitable[Sequence[R]]]


class MicroBatcher(Generic[T, R]):
    def __init__(self, flush: FlushFn, *, batch_max: int = 500, wait_ms: float = 2.0,
                 queue_max: int = 100_000, flushers: int = 2,
                 on_flush: Callable[[int, float], None] | None = None) -> None:
        assert batch_max >= 1 and flushers >= 1 and queue_max >= 1 and wait_ms >= 0
        self._flush = flush
        self.batch_max = batch_max
        self.wait_seconds = wait_ms / 1000.0
        self.queue_max = queue_max
        self._slots = asyncio.Semaphore(flushers)
        self._on_flush = on_flush
        self._items: list[T] = []
        self._futures: list[asyncio.Future] = []
        self._first_at = 0.0
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()
        self._runner: asyncio.Task | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        return len(self._items)

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Flush what is queued, wait for batches in flight, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._runner is not None:
            await self._runner
            self._runner = None
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _enqueue(self, item: T) -> asyncio.Future:
        if self._closing:
            raise Unavailable("shutting down", code="shutting_down")
        if len(self._items) >= self.queue_max:
            raise Unavailable("too many transactions waiting; retry shortly", code="overloaded")
        if self._runner is None:
            self.start()
        future = asyncio.get_running_loop().create_future()
        if not self._items:
            self._first_at = asyncio.get_running_loop().time()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) == 1 or len(self._items) >= self.batch_max:
            self._wakeup.set()
        return future

    async def submit(self, item: T) -> R:
        return await self._enqueue(item)

    async def submit_many(self, items: Sequence[T], *, return_exceptions: bool = False) -> list:
        """All of ``items`` or none (overloaded); with ``return_exceptions``, a failed flush is that
        item's result instead of the whole call's exception."""
        if len(self._items) + len(items) > self.queue_max:
            raise Unavailable("too many transactions waiting; retry shortly", code="overloaded")
        futures = [self._enqueue(item) for item in items]
        return list(await asyncio.gather(*futures, return_exceptions=return_exceptions))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = self._first_at + self.wait_seconds - loop.time()
            if len(self._items) < self.batch_max and delay > 0 and not self._closing:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                if len(self._items) < self.batch_max and self._first_at + self.wait_seconds > loop.time() \
                        and not self._closing:
                    continue
            await self._slots.acquire()
            items, futures = self._items[:self.batch_max], self._futures[:self.batch_max]
            del self._items[:self.batch_max], self._futures[:self.batch_max]
            self._first_at = loop.time()
            task = loop.create_task(self._flush_one(items, futures))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _flush_one(self, items: list[T], futures: list[asyncio.Future]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            results = await self._flush(items)
            if len(results) != len(items):
                raise AssertionError(f"flush returned {len(results)} results for {len(items)} items")
        except BaseException as exc:  # the whole batch failed: every caller learns why
            for f in futures:
                if not f.done():
                    f.set_exception(exc if isinstance(exc, Exception) else Unavailable("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._slots.release()
        for f, result in zip(futures, results):
            if not f.done():
                f.set_result(result)
        if self._on_flush is not None:
            self._on_flush(len(items), asyncio.get_running_loop().time() - started)
