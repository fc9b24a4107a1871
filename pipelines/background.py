"""Host work on background threads, so that a GPU does not wait for it: the next item made
ahead (batches, tokenized chunks), the last one finished behind (detokenized, written).

Both take `enabled`, which `worth_it(device)` answers: on the CPU the threads would only compete
with the computation for the same cores, so there the work runs in line, in the same order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

_END = object()
BACKGROUND_DEVICES = {"cuda"}  # where host work overlaps the device's


def worth_it(device) -> bool:
    return device.type in BACKGROUND_DEVICES


def ahead(work: Callable, items: Iterable, enabled: bool) -> Iterator:
    """`work(item)` for each item in turn. When enabled, a background thread takes the next
    item and works on it while the caller uses the current result."""
    if not enabled:
        yield from map(work, items)
        return
    items = iter(items)

    def next_result():
        item = next(items, _END)
        return _END if item is _END else work(item)

    with ThreadPoolExecutor(1, thread_name_prefix="ahead") as pool:
        pending = pool.submit(next_result)
        while (current := pending.result()) is not _END:
            pending = pool.submit(next_result)
            yield current


class Behind:
    """Runs tasks in order on one background thread (when enabled) while the caller goes on.
    At most `backlog` wait at a time; an error in a task is raised in the caller at the next
    submit, or when the block ends (which waits for every task)."""

    def __init__(self, enabled: bool, backlog: int = 2):
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="behind") if enabled else None
        self.pending: deque[Future] = deque()
        self.backlog = backlog

    def submit(self, task: Callable, *args) -> None:
        if self.pool is None:
            task(*args)
            return
        self.pending.append(self.pool.submit(task, *args))
        while len(self.pending) > self.backlog or (self.pending and self.pending[0].done()):
            self.pending.popleft().result()

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.pool is None:
            return
        try:
            while self.pending:
                future = self.pending.popleft()
                if kind is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self.pool.shutdown(wait=True)
