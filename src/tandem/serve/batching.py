"""Adaptive micro-batching (Triton's dynamic batcher): requests that wait together run together.

A request never waits for company when the server is idle: the first one runs at once, and
whatever arrives while a batch runs forms the next batch (up to ``max_batch_rows``). With a queue
delay, a batch also waits up to that long for more rows, but only while other requests are in
flight. The queue is bounded in rows: past it, a request is refused at once (429 + Retry-After)
rather than left to time out; each request also has a deadline (503 when it passes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from tandem.bundle.inputs import EncodedInputs
from tandem.inference.predictor import Predictor

OFFLOAD_ABOVE_S = 0.0005  # batches that take longer than this run in a thread, off the event loop
CAN_OVERLAP = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1


class QueueFull(Exception):
    """The batcher's queue holds its maximum number of rows."""


class Batcher:
    """One model's queue and the task that drains it."""

    def __init__(self, predictor: Predictor, *, max_batch_rows: int, queue_delay_s: float, max_queue_rows: int,
                 in_flight: Callable[[], int], observe: Callable[[float, float, int], None]):
        self.predictor = predictor
        self.max_batch_rows = max_batch_rows
        self.queue_delay_s = queue_delay_s
        self.max_queue_rows = max_queue_rows
        self.in_flight = in_flight
        self.observe = observe  # (queue seconds, compute seconds, rows) of each batch
        self.queue: deque[tuple[EncodedInputs, asyncio.Future, float]] = deque()
        self.queued_rows = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.running = False  # a batch is in the model right now
        self.compute_s = 0.0  # moving average of a batch's run time

    def idle(self) -> bool:
        """Nothing queued and nothing running: a request may run at once, without the queue."""
        return not self.queue and not self.running

    async def submit(self, enc: EncodedInputs, timeout_s: float) -> dict[str, np.ndarray]:
        """Queue ``enc`` and wait for its outputs; QueueFull or TimeoutError when it cannot be served."""
        if self.queued_rows + enc.n_rows > self.max_queue_rows:
            raise QueueFull
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain())
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append((enc, future, time.perf_counter()))
        self.queued_rows += enc.n_rows
        self.wakeup.set()
        deadline = loop.call_later(timeout_s, _expire, future)  # lighter than asyncio.wait_for
        try:
            return await future
        finally:
            deadline.cancel()

    def _take(self) -> list[tuple[EncodedInputs, asyncio.Future, float]]:
        batch, rows = [], 0
        while self.queue and (not batch or rows + self.queue[0][0].n_rows <= self.max_batch_rows):
            item = self.queue.popleft()
            self.queued_rows -= item[0].n_rows
            if item[1].done():  # its request timed out or went away
                continue
            batch.append(item)
            rows += item[0].n_rows
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            if self.in_flight() > len(self.queue):
                # others are being read: one turn of the loop lets those already arrived join this batch
                await asyncio.sleep(0)
            if self.queue_delay_s > 0 and self.in_flight() > len(self.queue) and self.queued_rows < self.max_batch_rows:
                await asyncio.sleep(self.queue_delay_s)  # others are on their way: give them a moment
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            merged = _concat([enc for enc, _, _ in batch])
            self.running = True
            try:
                if self.compute_s < OFFLOAD_ABOVE_S or not CAN_OVERLAP:  # a thread hop would cost more than it frees
                    out = self.predictor.run(merged)
                else:  # long runs leave the loop free to read and parse the next requests meanwhile
                    out = await loop.run_in_executor(None, self.predictor.run, merged)
            except Exception as exc:  # a bug or a broken model: every waiter hears of it
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self.running = False
            took = time.perf_counter() - started
            self.compute_s = 0.8 * self.compute_s + 0.2 * took
            self.observe(started - min(t for _, _, t in batch), took, merged.n_rows)
            offset = 0
            for enc, future, _ in batch:
                n = enc.n_rows
                if not future.done():
                    future.set_result({k: v[offset: offset + n] for k, v in out.items()})
                offset += n


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


def _concat(parts: list[EncodedInputs]) -> EncodedInputs:
    if len(parts) == 1:
        return parts[0]
    num = None if parts[0].num is None else np.concatenate([p.num for p in parts])
    cat = None if parts[0].cat is None else np.concatenate([p.cat for p in parts])
    return EncodedInputs(num, cat)
