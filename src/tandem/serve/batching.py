"""Adaptive micro-batching (Triton's dynamic batcher): requests that arrive together run together.

Nothing ever waits for company by default. A request queued for a model schedules the queue's
drain for the end of the current turn of the event loop, so every request read in that turn
(the event loop reads all connections that have data before it runs scheduled callbacks) joins
the same model run, up to ``max_batch_rows``; a request that arrives alone runs alone in the same
turn. With ``queue_delay_s`` (Triton's ``max_queue_delay``) a batch that is not full waits up to
that long after its first request for more rows.

Batches that take longer than ``OFFLOAD_ABOVE_S`` run in a thread when the process may use more
than one CPU, so the event loop reads and parses the next requests meanwhile (they form the next
batch). The queue is bounded in rows (``QueueFull`` past it: the server answers 429), and a
request that waits longer than ``timeout_s`` is failed with ``TimeoutError`` (503).

Everything is callbacks on the event loop: a queued request costs a deque entry and one call of
its ``on_done``, not a task and a future. A batch's outputs are checked for NaN and infinity once;
a request whose rows produced one gets ``NonFiniteOutput`` instead of its outputs.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from tandem.bundle.inputs import EncodedInputs
from tandem.inference.predictor import Predictor

OFFLOAD_ABOVE_S = 0.0005  # batches that take longer than this run in a thread, off the event loop
CAN_OVERLAP = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1

Outputs = dict[str, np.ndarray]


class RunOutputs:
    """One model run's outputs, shared by the requests whose rows it ran: each answers from its rows
    ``[start, stop)``. ``cache`` keeps what is worth converting once per run (decoded labels, lists)."""

    __slots__ = ("out", "cache")

    def __init__(self, out: Outputs):
        self.out = out
        self.cache: dict = {}

    def rows(self, start: int, stop: int) -> Outputs:
        if start == 0 and stop == len(next(iter(self.out.values()))):
            return self.out
        return {k: v[start:stop] for k, v in self.out.items()}


OnDone = Callable[[RunOutputs | BaseException, int, int], None]


class QueueFull(Exception):
    """The batcher's queue holds its maximum number of rows."""


class NonFiniteOutput(Exception):
    """The model answered NaN or infinity for a request's rows (its inputs were finite)."""


def all_finite(out: Outputs) -> bool:
    """No NaN or infinity in any floating-point output."""
    for values in out.values():
        if values.dtype.kind == "f" and not math.isfinite(values.sum()):
            return False
    return True


class Batcher:
    """One model's queue, drained on the event loop it was first used on."""

    def __init__(self, predictor: Predictor, *, max_batch_rows: int, queue_delay_s: float, max_queue_rows: int,
                 timeout_s: float, observe: Callable[[float, float, int], None]):
        self.predictor = predictor
        self.max_batch_rows = max_batch_rows
        self.queue_delay_s = queue_delay_s
        self.max_queue_rows = max_queue_rows
        self.timeout_s = timeout_s
        self.observe = observe  # (queue seconds, compute seconds, rows) of each model run
        self.queue: deque[tuple[EncodedInputs, OnDone, float]] = deque()
        self.queued_rows = 0
        self.scheduled = False  # a drain is due on the loop
        self.running = False  # a batch is in the model right now (in a thread)
        self.compute_s = 0.0  # moving average of a batch's run time
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def idle(self) -> bool:
        """Nothing queued, nothing running."""
        return not self.queue and not self.running and not self.scheduled

    def submit(self, enc: EncodedInputs, on_done: OnDone) -> None:
        """Queue ``enc``; ``on_done(run, start, stop)`` gets the run that had its rows (at ``start:stop``), or
        ``on_done(exception, 0, 0)``; it must not raise. QueueFull at once when the queue cannot take the rows."""
        if self.queued_rows + enc.n_rows > self.max_queue_rows:
            raise QueueFull
        self.queue.append((enc, on_done, time.perf_counter()))
        self.queued_rows += enc.n_rows
        if not self.scheduled and not self.running:
            self.scheduled = True
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self.scheduled = False
        if self.running or not self.queue:
            return
        if self.queue_delay_s > 0 and self.queued_rows < self.max_batch_rows:
            wait = self.queue[0][2] + self.queue_delay_s - time.perf_counter()
            if wait > 0:  # not full yet: give the others a moment
                self.scheduled = True
                self.loop.call_later(wait, self._drain)
                return
        batch = self._take()
        if not batch:
            return
        merged = EncodedInputs.concat([enc for enc, _, _ in batch])
        started = time.perf_counter()
        if self.compute_s < OFFLOAD_ABOVE_S or not CAN_OVERLAP:  # a thread hop would cost more than it frees
            try:
                out: Outputs | BaseException = self.predictor.run(merged)
            except Exception as exc:  # a bug or a broken model: every waiter hears of it
                out = exc
            self._deliver(batch, out, started)
            return
        self.running = True
        future = self.loop.run_in_executor(None, self.predictor.run, merged)
        future.add_done_callback(lambda f: self._ran(batch, f, started))
        self._arm_watchdog()

    def _ran(self, batch: list, future: asyncio.Future, started: float) -> None:
        self.running = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        out = future.exception() if not future.cancelled() else asyncio.CancelledError()
        self._deliver(batch, out if out is not None else future.result(), started)

    def _take(self) -> list[tuple[EncodedInputs, OnDone, float]]:
        batch, rows = [], 0
        expired_before = time.perf_counter() - self.timeout_s
        while self.queue and (not batch or rows + self.queue[0][0].n_rows <= self.max_batch_rows):
            item = self.queue.popleft()
            self.queued_rows -= item[0].n_rows
            if item[2] < expired_before:
                item[1](TimeoutError(), 0, 0)
                continue
            batch.append(item)
            rows += item[0].n_rows
        return batch

    def _deliver(self, batch: list, out: Outputs | BaseException, started: float) -> None:
        took = time.perf_counter() - started
        self.compute_s = 0.8 * self.compute_s + 0.2 * took
        rows = sum(enc.n_rows for enc, _, _ in batch)
        self.observe(started - batch[0][2], took, rows)
        if isinstance(out, BaseException):
            for _, on_done, _ in batch:
                on_done(out, 0, 0)
        else:
            run = RunOutputs(out)
            checked = all_finite(out)  # once for the batch; only if it fails, request by request
            offset = 0
            for enc, on_done, _ in batch:
                stop = offset + enc.n_rows
                if checked or all_finite(run.rows(offset, stop)):
                    on_done(run, offset, stop)
                else:
                    on_done(NonFiniteOutput(), 0, 0)
                offset = stop
        if self.queue and not self.scheduled:  # rows left over (a full batch, or queued while it ran)
            self.scheduled = True
            self.loop.call_soon(self._drain)

    def _arm_watchdog(self) -> None:
        """While a batch runs in a thread, requests queued behind it still get their 503 on time."""
        if self.queue:
            wait = max(self.queue[0][2] + self.timeout_s - time.perf_counter(), 0.0)
        else:
            wait = self.timeout_s
        self._watchdog = self.loop.call_later(wait + 1e-3, self._expire_overdue)

    def _expire_overdue(self) -> None:
        expired_before = time.perf_counter() - self.timeout_s
        while self.queue and self.queue[0][2] < expired_before:
            enc, on_done, _ = self.queue.popleft()
            self.queued_rows -= enc.n_rows
            on_done(TimeoutError(), 0, 0)
        if self.running:
            self._arm_watchdog()
