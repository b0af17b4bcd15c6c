"""The micro-batcher in process, on a real bundle: what one loop turn queues shares one model run,
each request gets its own rows back, and a full queue, a deadline and a slow model behave."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from helpers import linear_churn, mixed_frame
from tandem.inference.predictor import Predictor
from tandem.serve.batching import Batcher, QueueFull, RunOutputs


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    home = tmp_path_factory.mktemp("batching-home")
    model = linear_churn(home)[1]()
    rows = mixed_frame(12, task="binary", seed=3).drop(columns=["churn"])
    return Predictor(model.path, threads=1), rows


def _batcher(p: Predictor, runs: list, **kw) -> Batcher:
    options = dict(max_batch_rows=64, queue_delay_s=0.0, max_queue_rows=100, timeout_s=5.0)
    options.update(kw)
    return Batcher(p, observe=lambda q, c, n: runs.append(n), **options)


def _collect(results: list, i: int):
    def on_done(result, start, stop):
        results.append((i, result, start, stop))
    return on_done


def test_requests_queued_in_one_loop_turn_share_one_run_and_get_their_own_rows(predictor):
    p, rows = predictor
    encs = [p.encode(rows.iloc[i: i + n]) for i, n in ((0, 1), (1, 3), (4, 1))]
    runs, results = [], []

    async def scenario():
        b = _batcher(p, runs)
        for i, enc in enumerate(encs):
            b.submit(enc, _collect(results, i))
        assert b.queued_rows == 5 and not b.idle()
        await asyncio.sleep(0.01)
        assert b.idle()

    asyncio.run(scenario())
    assert runs == [5]  # one model run for the three requests
    assert [(i, start, stop) for i, _, start, stop in results] == [(0, 0, 1), (1, 1, 4), (2, 4, 5)]
    for i, run, start, stop in results:
        assert isinstance(run, RunOutputs)
        alone = p.run(encs[i])
        assert np.allclose(run.rows(start, stop)["probabilities"], alone["probabilities"], atol=1e-6)
        assert run.rows(start, stop)["label"].tolist() == alone["label"].tolist()


def test_batches_are_capped_in_rows(predictor):
    p, rows = predictor
    runs, results = [], []

    async def scenario():
        b = _batcher(p, runs, max_batch_rows=4)
        for i in range(10):
            b.submit(p.encode(rows.iloc[i: i + 1]), _collect(results, i))
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert runs == [4, 4, 2]
    assert sorted(i for i, *_ in results) == list(range(10))


def test_a_full_queue_refuses_at_once(predictor):
    p, rows = predictor
    runs, results = [], []

    async def scenario():
        b = _batcher(p, runs, max_queue_rows=3)
        b.submit(p.encode(rows.iloc[0:2]), _collect(results, 0))
        with pytest.raises(QueueFull):
            b.submit(p.encode(rows.iloc[2:4]), _collect(results, 1))
        b.submit(p.encode(rows.iloc[4:5]), _collect(results, 2))  # still fits
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert runs == [3] and [i for i, *_ in results] == [0, 2]


def test_queue_delay_waits_for_company_and_the_deadline_fails_late_requests(predictor):
    p, rows = predictor
    runs, results = [], []

    async def scenario():
        b = _batcher(p, runs, queue_delay_s=0.05)
        b.submit(p.encode(rows.iloc[0:1]), _collect(results, 0))
        await asyncio.sleep(0.01)
        assert results == []  # waiting for company, within the delay
        b.submit(p.encode(rows.iloc[1:2]), _collect(results, 1))
        await asyncio.sleep(0.1)
        late = _batcher(p, runs, queue_delay_s=0.05, timeout_s=0.01)
        late.submit(p.encode(rows.iloc[2:3]), _collect(results, 2))
        await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert runs == [2]  # the first two shared a run after the delay; the late one never ran
    assert [i for i, *_ in results] == [0, 1, 2]
    assert isinstance(results[2][1], TimeoutError) and results[2][2:] == (0, 0)


def test_slow_batches_run_in_a_thread_while_the_loop_queues_the_next(predictor):
    p, rows = predictor
    runs, results = [], []

    async def scenario():
        b = _batcher(p, runs, timeout_s=0.5)
        b.compute_s = 1.0  # as if the model took a second a batch: it goes to a thread
        b.submit(p.encode(rows.iloc[0:2]), _collect(results, 0))
        await asyncio.sleep(0)  # the drain hands the batch to a thread (inline on a single CPU)
        for i in range(1, 4):
            b.submit(p.encode(rows.iloc[2 * i: 2 * i + 2]), _collect(results, i))
        for _ in range(200):
            if len(results) == 4:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert runs[0] == 2 and sum(runs) == 8 and len(runs) == 2  # the three queued meanwhile ran together
    assert sorted(i for i, *_ in results) == [0, 1, 2, 3]
    assert all(isinstance(r, RunOutputs) for _, r, _, _ in results)
