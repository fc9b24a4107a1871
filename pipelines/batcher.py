"""Request batching for `nmt serve`: the texts of requests that arrive together are
translated together, on the thread the model belongs to.

While the model works on one batch the next gathers. When the last batch held several
requests, a new batch waits up to `serve.max_wait_ms` for as many, up to
`serve.batch_tokens` source tokens; one client alone never waits. At most `serve.max_queue`
texts wait; beyond that `submit` raises queue.Full, so memory stays flat under overload.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import queue
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seq2seq.config import SearchConfig, ServeConfig

from .translator import Translation, Translator


def split_by(items: list, sizes: list[int]) -> list[list]:
    """`items` cut into consecutive runs of the given sizes."""
    starts = list(itertools.accumulate(sizes, initial=0))
    return [items[a:b] for a, b in zip(starts, starts[1:])]


class ModelThread:
    """Runs the model's work on the thread that calls `work_until` (the main thread) for the event
    loop on another. libgomp throttles the spinning of torch's OpenMP threads between the many small
    parallel regions of a search once a second thread has used them: searching from a worker thread
    was 1.7-2.5x slower per sentence (`benchmarks/profile_translate.py --in-thread`)."""

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()

    async def run(self, work: Callable, *args: Any) -> Any:
        """`work(*args)` on the model's thread; awaits its result (from the event loop)."""
        future = concurrent.futures.Future()
        self.jobs.put((work, args, future))
        return await asyncio.wrap_future(future)

    def work_until(self, done: Callable[[], bool]) -> None:
        while not done():
            try:
                work, args, future = self.jobs.get(timeout=0.05)
            except queue.Empty:
                continue
            if future.set_running_or_notify_cancel():  # not cancelled meanwhile
                try:
                    future.set_result(work(*args))
                except Exception as error:  # noqa: BLE001 - the request that waits hears of it
                    future.set_exception(error)


def settle(future: asyncio.Future, outcome: Any) -> None:
    """Give a waiting request its result (an exception: its error), unless it went away."""
    if not future.done() and isinstance(outcome, BaseException):
        future.set_exception(outcome)
    elif not future.done():
        future.set_result(outcome)


@dataclass
class Waiting:
    """One request's texts, waiting for their batch."""

    texts: list[str]
    settings: SearchConfig
    future: asyncio.Future
    tokens: int  # an estimate, for the batch's budget: tokenizing happens on the model thread


class Batcher:
    """Gathers the texts of concurrent requests into batches for one translator."""

    def __init__(self, translator: Translator, config: ServeConfig, model: ModelThread):
        self.translator, self.config, self.model = translator, config, model
        self.queue: deque[Waiting] = deque()
        self.arrived = asyncio.Event()
        self.last_batch = 1  # requests in the last batch: how many the next one waits for
        # texts waiting, in the batch being translated, translated, failed; batches translated
        self.queued = self.working = self.served = self.failed = self.batches = 0

    def submit(self, texts: list[str], settings: SearchConfig) -> asyncio.Future:
        """Queue texts for translation (their future gets, for each text, its n best)."""
        if self.queued + len(texts) > self.config.max_queue:
            raise queue.Full(self.queued)
        tokens = sum(len(text) // 4 + 2 for text in texts)  # about 4 characters a piece
        waiting = Waiting(texts, settings, asyncio.get_running_loop().create_future(), tokens)
        self.queue.append(waiting)
        self.queued += len(texts)
        self.arrived.set()
        return waiting.future

    def start(self) -> asyncio.Task:
        return asyncio.create_task(self.run())

    async def run(self) -> None:
        """Batch until cancelled; should the loop ever die, every waiting request hears why."""
        try:
            while True:
                while not self.queue:
                    self.arrived.clear()
                    await self.arrived.wait()
                await self._gather()
                if not (batch := self._take()):  # their clients all went away
                    continue
                self.last_batch = len(batch)
                self.working = sum(len(waiting.texts) for waiting in batch)
                try:
                    outcomes = await self.model.run(self._translate, batch)
                    self.served, self.batches = self.served + self.working, self.batches + 1
                except Exception as error:  # noqa: BLE001 - every request of the batch hears of it
                    outcomes = [error] * len(batch)
                    self.failed += self.working
                for waiting, outcome in zip(batch, outcomes):
                    settle(waiting.future, outcome)
                self.working = 0
        except Exception as error:  # noqa: BLE001 - a bug: logged, and told to those waiting
            traceback.print_exception(error)
            while self.queue:
                settle(self.queue.popleft().future, error)

    async def _gather(self) -> None:
        """Wait briefly for as many requests as the last batch had, if it had several."""
        loop, budget = asyncio.get_running_loop(), self.config.batch_tokens
        deadline = loop.time() + self.config.max_wait_ms / 1000
        while len(self.queue) < self.last_batch and sum(w.tokens for w in self.queue) < budget:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
            except (TimeoutError, asyncio.TimeoutError):
                return

    def _take(self) -> list[Waiting]:
        """The first waiting request and those after it with the same search settings, up to
        the token budget; the others keep their places, and those whose clients went away go."""
        batch, kept, tokens = [], deque(), 0
        for waiting in [w for w in self.queue if not w.future.done()]:  # the others went away
            fits = tokens + waiting.tokens <= self.config.batch_tokens
            if not batch or (fits and waiting.settings == batch[0].settings):
                batch.append(waiting)
                tokens += waiting.tokens
            else:
                kept.append(waiting)
        self.queue, self.queued = kept, sum(len(waiting.texts) for waiting in kept)
        return batch

    def _translate(self, batch: list[Waiting]) -> list[list[list[Translation]]]:
        """One search over the texts of every request in the batch (on the model's thread)."""
        chunk = self.translator.encode([text for waiting in batch for text in waiting.texts])
        hypotheses = self.translator.search_chunk(chunk, False, batch[0].settings)
        translations = self.translator.decode(chunk, hypotheses)
        return split_by(translations, [len(waiting.texts) for waiting in batch])
