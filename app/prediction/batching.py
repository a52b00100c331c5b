"""Dynamic batching: concurrent prediction calls for one model version share a forward pass.

Each version (keyed by its artifact's sha256) gets an asyncio queue on the event loop and,
while calls are waiting, one collector task. The collector takes the oldest call, then
gathers the calls queued behind it until the batch holds ``max_batch_size`` images or the
oldest call has waited ``max_wait_s``, concatenates their images, runs ONE forward pass in
the executor given (the event loop keeps accepting requests meanwhile, and those pile up
for the next batch), and hands each caller the rows of its own images, in order.

The bounds, as in Triton's dynamic batcher and Ray Serve's ``@serve.batch``:
* a batch never holds more than ``max_batch_size`` images, except a single call larger
  than that, which runs alone (its size is bounded by ``max_predict_batch`` anyway);
* no call waits more than ``max_wait_s`` for company (plus one forward pass in progress).

Callers validate their own input before submitting, so a bad request never reaches a
batch; a call whose images do not have the version's shape is refused at ``submit``, and
a forward pass that fails fails only the calls that were in it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# (model, images [N, C, H, W] float32 or uint8) -> outputs with N rows; runs in a thread.
ForwardFn = Callable[[Any, np.ndarray], np.ndarray]  # (the model, passed through as is)


@dataclass
class _Call:
    images: np.ndarray
    future: asyncio.Future
    enqueued_at: float


@dataclass
class _VersionQueue:
    model: object
    item_shape: tuple[int, ...]
    queue: asyncio.Queue[_Call] = field(default_factory=asyncio.Queue)
    collector: asyncio.Task | None = None
    pending: _Call | None = None  # a call that did not fit the last batch goes first next


@dataclass(frozen=True)
class BatchRecord:
    """One forward pass: how many calls and images it served (kept for tests and stats)."""

    calls: int
    images: int


class DynamicBatcher:
    def __init__(self, forward: ForwardFn, max_batch_size: int = 256,
                 max_wait_s: float = 0.002, history: int = 0,
                 executor: Executor | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.forward = forward
        self.executor = executor  # where forward passes run (None: the loop's default)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queues: dict[str, _VersionQueue] = {}
        # The last ``history`` forward passes, for tests and diagnostics (0: none kept).
        self.history: deque[BatchRecord] = deque(maxlen=history)
        # Totals since start (successful passes only), kept whatever ``history`` is: a
        # benchmark or test reads them before and after to know what its own calls did.
        self.passes = 0
        self.calls = 0
        self.images = 0

    async def submit(self, key: str, model: object, images: np.ndarray) -> np.ndarray:
        """The forward pass's rows for ``images``, computed in a batch with other calls
        for the same ``key`` (one model version: ``model`` must be the same for a key)."""
        if images.ndim < 2 or len(images) == 0:
            raise ValueError("images must be a non-empty batch")
        entry = self._queues.get(key)
        if entry is None:
            entry = self._queues[key] = _VersionQueue(model, tuple(images.shape[1:]))
        elif tuple(images.shape[1:]) != entry.item_shape:
            raise ValueError(f"images have shape {tuple(images.shape[1:])}; this version's "
                             f"batches hold {entry.item_shape}")
        future = asyncio.get_running_loop().create_future()
        entry.queue.put_nowait(_Call(images, future, time.monotonic()))
        if entry.collector is None:
            entry.collector = asyncio.create_task(self._collect(key, entry))
        return await future

    async def _collect(self, key: str, entry: _VersionQueue) -> None:
        try:
            while True:
                batch = await self._gather(entry)
                if not batch:
                    return
                await self._run(entry.model, batch)
        finally:
            # Nothing is awaited between the empty check in _gather and here, so no call can
            # have been queued unseen; a later submit starts a new collector.
            entry.collector = None
            if entry.queue.empty() and entry.pending is None:
                self._queues.pop(key, None)

    async def _gather(self, entry: _VersionQueue) -> list[_Call]:
        """The next batch: the oldest call, then whoever joins before the bounds close it."""
        first = entry.pending or _next_live(entry.queue)
        entry.pending = None
        if first is None:
            return []
        batch, size = [first], len(first.images)
        deadline = first.enqueued_at + self.max_wait_s
        while size < self.max_batch_size:
            call = _next_live(entry.queue)
            if call is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    call = await asyncio.wait_for(entry.queue.get(), remaining)
                except TimeoutError:
                    break
                if call.future.done():  # its caller gave up (disconnected, cancelled)
                    continue
            if size + len(call.images) > self.max_batch_size:
                entry.pending = call  # first in line for the next batch
                break
            batch.append(call)
            size += len(call.images)
        return batch

    async def _run(self, model: object, batch: list[_Call]) -> None:
        images = _concatenate([call.images for call in batch])
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.forward, model, images)
        except Exception as error:  # the calls in this batch fail; later batches still run
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(error)
            return
        self.passes += 1
        self.calls += len(batch)
        self.images += len(images)
        if self.history.maxlen:
            self.history.append(BatchRecord(len(batch), len(images)))
        start = 0
        for call in batch:
            end = start + len(call.images)
            if not call.future.done():
                call.future.set_result(outputs[start:end])
            start = end


def _next_live(queue: asyncio.Queue[_Call]) -> _Call | None:
    """The next queued call whose caller still waits, without waiting for one."""
    while not queue.empty():
        call = queue.get_nowait()
        if not call.future.done():
            return call
    return None


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """One batch from the calls' images. uint8 stays uint8 when every call sent bytes (the
    device scales them); a mix is brought to float32 in [0, 1]."""
    if len(parts) == 1:
        return parts[0]
    if all(part.dtype == np.uint8 for part in parts):
        return np.concatenate(parts)
    return np.concatenate([part.astype(np.float32) / 255.0 if part.dtype == np.uint8 else part
                           for part in parts])
