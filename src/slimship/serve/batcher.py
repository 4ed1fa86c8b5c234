"""Dynamic batching: requests that arrive together run through the model as one batch.

Each request hands in its model inputs (``n`` rows); one worker task per model takes the oldest request, adds
every request already waiting, then waits at most ``max_wait`` for more, until the batch holds ``max_batch_size``
rows, and runs it in the inference thread. While a batch runs, new requests queue up and form the next batch, so
under load batches fill without waiting.

The wait is only spent when a request is on its way: the server calls :meth:`~Batcher.announce` for each request
as it arrives, before decoding its images, and the worker waits for announced requests only. A lone request therefore
runs at once (no batching delay at low load), and requests that arrive together wait for each other.
``max_batch_size=1`` turns batching off: every request runs alone, in arrival order.

A request larger than ``max_batch_size`` runs as its own batch; a request is never split. The queue is bounded
(``max_queued`` rows): beyond it :meth:`Batcher.submit` raises :class:`Busy` at once instead of letting latency
grow without bound.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class Busy(Exception):
    """The queue is full (or the batcher is closing): the caller should answer 503 and let the client retry."""


@dataclass(frozen=True)
class BatchingConfig:
    """``max_batch_size`` rows per runtime call (1: no batching); ``max_wait_ms`` the longest a request waits for
    company; ``max_queued`` rows waiting at most."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queued: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_wait_ms < 0 or self.max_queued < 1:
            raise ValueError(f"bad batching settings {self}: max_batch_size and max_queued >= 1, max_wait_ms >= 0")


@dataclass
class _Request:
    inputs: np.ndarray
    future: asyncio.Future = field(repr=False)

    @property
    def rows(self) -> int:
        return len(self.inputs)


class Batcher:
    """Runs ``run(batch) -> outputs`` (row i of the outputs belongs to row i of the batch) over batched requests.

    ``executor`` is where ``run`` executes (one thread: batches of all models take turns on the cores, each using
    every runtime thread); ``on_batch(rows)`` is called for every batch run (metrics). Use::

        batcher = Batcher(session, BatchingConfig(max_batch_size=32, max_wait_ms=2), executor)
        batcher.start()                      # inside the running event loop
        batcher.announce()                   # a request arrived; decode its inputs, then
        logits = await batcher.submit(x, announced=True)   # x: [n, ...] model inputs -> [n, K]
        await batcher.close()                # finishes every queued request, then stops
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], config: BatchingConfig, executor: Executor,
                 on_batch: Callable[[int], None] = lambda rows: None) -> None:
        self.run, self.config, self.executor, self.on_batch = run, config, executor, on_batch
        self._pending: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._arriving = 0  # announced requests not yet submitted (their inputs are being decoded)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def queued_rows(self) -> int:
        """Rows submitted whose batch has not started running (waiting in the queue or in the batch forming)."""
        return self._queued_rows

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._work())

    def announce(self) -> None:
        """A request has arrived and will :meth:`submit` (or :meth:`withdraw`) soon: batches forming meanwhile wait
        for it, up to max_wait."""
        self._arriving += 1

    def withdraw(self) -> None:
        """An announced request will not submit after all (it was refused)."""
        self._arriving -= 1
        if self._wake is not None:
            self._wake.set()

    async def submit(self, inputs: np.ndarray, announced: bool = False) -> np.ndarray:
        """Queue ``inputs`` [n, ...] and wait for their outputs [n, ...] (``announced``: this request called
        :meth:`announce`). Raises Busy when the queue is full or the batcher is closing; whatever ``run`` raised, for
        a batch this request was part of."""
        if announced:
            self._arriving -= 1
        if self._task is None or self._closing:
            raise Busy("the server is shutting down")
        if self._queued_rows and self._queued_rows + len(inputs) > self.config.max_queued:
            raise Busy(f"{self._queued_rows} inputs are queued already")
        req = _Request(inputs, asyncio.get_running_loop().create_future())
        self._pending.append(req)
        self._queued_rows += req.rows
        self._wake.set()
        return await req.future

    async def close(self) -> None:
        """Refuse new requests, answer every queued one, stop the worker."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = await self._collect(loop)
            await self._run(loop, batch)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        """The oldest request plus the ones behind it that fit, waiting up to max_wait for more to arrive."""
        cfg = self.config
        batch = [self._take()]
        rows = batch[0].rows
        deadline = loop.time() + cfg.max_wait_ms / 1000
        while rows < cfg.max_batch_size:
            if self._pending:
                if rows + self._pending[0].rows > cfg.max_batch_size:
                    break  # the next request would overflow: it starts the next batch
                batch.append(self._take())
                rows += batch[-1].rows
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing or self._arriving <= 0:
                break  # nobody is on the way: waiting would only delay this batch
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    def _take(self) -> _Request:
        return self._pending.popleft()  # its rows count as queued until its batch runs

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        self._queued_rows -= sum(r.rows for r in batch)
        live = [r for r in batch if not r.future.done()]  # a client that went away cancelled its future
        if not live:
            return
        inputs = live[0].inputs if len(live) == 1 else np.concatenate([r.inputs for r in live])
        self.on_batch(len(inputs))
        try:
            outputs = await loop.run_in_executor(self.executor, self.run, inputs)
        except Exception as e:  # the error belongs to the requests in this batch; the worker carries on
            for r in live:
                if not r.future.done():
                    r.future.set_exception(e)
            return
        start = 0
        for r in live:
            if not r.future.done():
                r.future.set_result(outputs[start : start + r.rows])
            start += r.rows
