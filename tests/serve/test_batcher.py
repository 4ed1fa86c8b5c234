"""Dynamic batching (slimship.serve.batcher) with a stand-in model: which requests share a runtime call, and that
every request gets its own rows back. Requests submitted together are all queued before the worker runs (asyncio
runs ready tasks in order), so batch composition is deterministic; nothing is timed."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from slimship.serve.batcher import BatchingConfig, Batcher, Busy


def _serve(sizes: list[int], config: BatchingConfig, run=None):
    """Submit requests of ``sizes`` rows together; return (batch sizes run, outputs per request or exception)."""
    batches: list[int] = []

    def model(x: np.ndarray) -> np.ndarray:
        batches.append(len(x))
        return run(x) if run else x * 2

    async def go():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(model, config, pool)
            b.start()
            reqs = [np.full((n, 2), i, np.float32) for i, n in enumerate(sizes)]
            outs = await asyncio.gather(*(b.submit(r) for r in reqs), return_exceptions=True)
            await b.close()
            return reqs, outs

    reqs, outs = asyncio.run(go())
    return batches, reqs, outs


def test_requests_that_arrive_together_share_a_batch_up_to_the_maximum():
    batches, reqs, outs = _serve([1, 1, 1, 1, 1], BatchingConfig(max_batch_size=4, max_wait_ms=1))
    assert batches == [4, 1]
    for r, o in zip(reqs, outs):
        np.testing.assert_array_equal(o, r * 2)  # each request gets exactly its own rows


def test_a_request_is_never_split_and_order_is_kept():
    batches, reqs, outs = _serve([3, 2, 2, 5], BatchingConfig(max_batch_size=4, max_wait_ms=1))
    assert batches == [3, 4, 5]  # 3+2 would overflow; the oversized request runs alone
    for r, o in zip(reqs, outs):
        np.testing.assert_array_equal(o, r * 2)


def test_no_batching_runs_every_request_alone():
    batches, _, _ = _serve([1, 1, 1], BatchingConfig(max_batch_size=1, max_wait_ms=0))
    assert batches == [1, 1, 1]


def test_a_failing_batch_fails_its_requests_and_the_worker_carries_on():
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("runtime fell over")
        return x + 1

    batches, reqs, outs = _serve([1, 1, 1], BatchingConfig(max_batch_size=2, max_wait_ms=1), run=flaky)
    assert batches == [2, 1]
    assert all(isinstance(o, RuntimeError) for o in outs[:2])
    np.testing.assert_array_equal(outs[2], reqs[2] + 1)


def test_a_full_queue_refuses_at_once():
    _, _, outs = _serve([1, 1, 1], BatchingConfig(max_batch_size=8, max_wait_ms=1, max_queued=2))
    assert isinstance(outs[2], Busy) and not isinstance(outs[0], Exception)


def test_close_answers_what_is_queued_then_refuses():
    async def go():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(lambda x: x, BatchingConfig(max_batch_size=2, max_wait_ms=10_000), pool)
            b.start()
            pending = [asyncio.ensure_future(b.submit(np.ones((1, 1), np.float32))) for _ in range(3)]
            await asyncio.sleep(0)  # let the submits queue
            await b.close()  # does not wait out max_wait: closing flushes
            with pytest.raises(Busy):
                await b.submit(np.ones((1, 1), np.float32))
            return [p.result() for p in pending]

    assert [o.shape for o in asyncio.run(go())] == [(1, 1)] * 3


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        BatchingConfig(max_batch_size=0)


def test_a_batch_waits_for_announced_requests_only():
    """Announced requests (arrived, inputs being decoded) are waited for; a lone request is not delayed, and a
    withdrawn announcement releases the batch at once. wait_for only guards against a hang."""
    batches: list[int] = []

    def model(x):
        batches.append(len(x))
        return x

    async def go():
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(model, BatchingConfig(max_batch_size=8, max_wait_ms=600_000), pool)
            b.start()
            b.announce()
            b.announce()
            first = asyncio.ensure_future(b.submit(np.ones((1, 1), np.float32), announced=True))
            for _ in range(5):
                await asyncio.sleep(0)  # the worker takes the first request and waits for the announced one
            second = asyncio.ensure_future(b.submit(np.ones((2, 1), np.float32), announced=True))
            await asyncio.wait_for(asyncio.gather(first, second), 60)
            b.announce()
            third = asyncio.ensure_future(b.submit(np.ones((1, 1), np.float32)))
            for _ in range(5):
                await asyncio.sleep(0)
            b.withdraw()  # the announced request was refused: nothing left to wait for
            await asyncio.wait_for(third, 60)
            await asyncio.wait_for(b.submit(np.ones((1, 1), np.float32)), 60)  # alone: runs at once
            await b.close()

    asyncio.run(go())
    assert batches == [3, 1, 1]
