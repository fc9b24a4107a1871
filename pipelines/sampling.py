"""The training pairs as subword ids, with optional subword regularization.

Without it, the ids are those preprocess stored (data/train.<lang>.bin), the best
segmentation. With `data.subwords.sampling_alpha` > 0, each pair is segmented afresh every
time it is batched: sampled from SentencePiece's unigram lattice (Kudo, 2018, "Subword
Regularization"; `nbest_size` -1 samples from all segmentations, n > 1 from the n best, alpha
smooths the distribution: smaller is more varied), or for a bpe model with merges dropped at
random (BPE-dropout, Provilkov et al., 2020; alpha is the probability). The sample is a
function of the seed, the epoch and the batch's place in it, drawn by seq2seq/segmentation.py
(not inside SentencePiece, whose randomness differs between processes), so a run repeats
itself and resumes exactly. Batches are still formed from the lengths of the best
segmentation; dev and test always use it. Worker processes (`train.sampling_workers`) can
sample the coming batches while the model trains: the same samples, sooner.

Reads (from the run folder): data/train.<lang>.bin/.idx, and with sampling data/train.<lang>.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from seq2seq.batching import TokenSequences
from seq2seq.config import SubwordConfig
from seq2seq.tokenizer import Tokenizer


class TextLines:
    """The lines of a UTF-8 file, memory-mapped (so sampling workers share its pages) with
    their offsets: line i costs nothing until it is asked for."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            empty = os.fstat(f.fileno()).st_size == 0  # (mmap refuses an empty file)
            self.data = b"" if empty else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ends = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == ord("\n"))
        self.starts = np.concatenate([[0], ends + 1])
        self.ends = ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        return self.data[self.starts[i] : self.ends[i]].decode("utf-8")


def sampling_workers(configured: int | None, device) -> int:
    """Worker processes for sampling: as configured; else none on a CPU (training has its
    cores) and, beside a GPU, up to 4 per training process on this machine (torchrun's
    LOCAL_WORLD_SIZE), leaving a core to each."""
    if configured is not None:
        return configured
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_process = (cores or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(4, per_process - 1))


class TrainingPairs:
    """The training pairs' ids: stored (`sampling` off) or sampled per batch, in this process
    or, with `workers` > 0, ahead of time in worker processes (see `plan`)."""

    def __init__(
        self,
        run_root: Path,
        split: dict,
        tokenizers: tuple[Tokenizer, Tokenizer],
        subwords: SubwordConfig,
        max_pieces: int,
        workers: int = 0,
        log: Callable[[str], None] = print,
    ):
        self.src = TokenSequences.load(run_root / split["src_ids"])  # the best segmentation
        self.tgt = TokenSequences.load(run_root / split["tgt_ids"])
        self.tokenizers, self.subwords, self.max_pieces = tokenizers, subwords, max_pieces
        self.sampling = subwords.sampling_alpha > 0
        self.workers, self.log = workers if self.sampling else 0, log
        self.pool: SamplingPool | None = None  # started by the first plan
        if self.sampling:
            self.texts = (TextLines(run_root / split["src"]), TextLines(run_root / split["tgt"]))
        self.run_root, self.split = run_root, split

    def __len__(self) -> int:
        return len(self.src)

    def plan(self, batches: list[tuple[list[int], int]]) -> None:
        """The (indices, seed) of the batches about to be asked for, in order: worker
        processes start sampling them."""
        if self.workers and self.pool is None:
            # A starting worker is sent where the SentencePiece models are and their digest
            # (sending the models themselves would hold the trainer up while workers start).
            models = tuple(
                (t.path, _digest(t.proto)) if t.path else t.proto for t in self.tokenizers
            )
            pairs = (self.run_root, self.split, models, self.subwords, self.max_pieces)
            self.pool = SamplingPool(self.workers, pairs, self.log)
        if self.pool is not None:
            self.pool.plan(batches)

    def batch(self, indices: list[int], seed: int) -> tuple[TokenSequences, TokenSequences, list]:
        """The ids of the pairs `indices` and where they are in them: the stored sequences
        and `indices` themselves, or freshly sampled sequences and 0..n-1."""
        if not self.sampling:
            return self.src, self.tgt, indices
        sampled = self.pool.take(indices, seed) if self.pool is not None else None
        src, tgt = sampled if sampled is not None else self.sample(indices, seed)
        return (
            TokenSequences.from_lists(src),
            TokenSequences.from_lists(tgt),
            list(range(len(indices))),
        )

    def sample(self, indices: list[int], seed: int) -> tuple[list[list[int]], list[list[int]]]:
        """Sampled source and target ids of the pairs `indices`: a function of `seed`."""
        sampled = []
        for side, (tokenizer, texts) in enumerate(zip(self.tokenizers, self.texts)):
            lines = [texts[i] for i in indices]
            ids = tokenizer.sample(
                lines, self.subwords.sampling_alpha, self.subwords.nbest_size, seed * 2 + side
            )
            sampled.append([seq[: self.max_pieces] for seq in ids])
        return sampled[0], sampled[1]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


class SamplingPool:
    """Samples planned batches in worker processes, up to two per worker ahead of the one
    asked for. Each batch's samples are a function of its seed, so they are the ones this
    process would have drawn."""

    def __init__(self, workers: int, pairs: tuple, log: Callable[[str], None]):
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a threaded process
            initializer=_start_worker,
            initargs=(os.getpid(), *pairs),
        )
        self.most = 2 * workers
        self.waiting: deque[tuple[list[int], int]] = deque()
        self.running: deque[tuple[tuple, Future]] = deque()
        self.served = 0  # batches taken from the workers
        self.broken = False  # a worker died: sample in this process from then on
        self.log = log
        # All workers start now (one per task given while none is free) with Ctrl-C blocked
        # from their first instruction (they inherit the mask; the first thing a worker
        # does is ignore it): one interrupted while importing would break the pool, and
        # Ctrl-C is the trainer's to handle. Blocked, not ignored, here: a Ctrl-C while
        # the workers are created waits and reaches the trainer after. (SIGTERM is left
        # alone: the pool stops its workers with it.)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _ in range(workers):
                self.executor.submit(int)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def plan(self, batches: list[tuple[list[int], int]]) -> None:
        for _, future in self.running:
            future.cancel()
        self.running.clear()
        self.waiting = deque(batches)
        self._fill()

    def _fill(self) -> None:
        while self.waiting and len(self.running) < self.most and not self.broken:
            indices, seed = self.waiting.popleft()
            try:
                future = self.executor.submit(_sample_in_worker, indices, seed)
            except BrokenProcessPool:
                self._give_up()
                return
            self.running.append(((seed, tuple(indices)), future))

    def _give_up(self) -> None:
        """A worker died (killed, out of memory): sample in this process from now on."""
        self.log(
            "train: note: a sampling worker stopped; the trainer samples from here on "
            "(the same samples, more slowly)"
        )
        self.broken = True
        self.running.clear()
        self.close()

    def take(self, indices: list[int], seed: int) -> tuple[list, list] | None:
        """The samples of the next planned batch, if that is this one; None otherwise (and
        once a worker has died: the same samples come from this process)."""
        if self.broken or not self.running:
            return None
        if self.running[0][0] != (seed, tuple(indices)):  # not as planned: drop the plan
            self.plan([])
            return None
        _, future = self.running.popleft()
        try:
            sampled = future.result()
        except BrokenProcessPool:
            self._give_up()
            return None
        self._fill()
        self.served += 1
        return sampled

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return list(self.executor._processes)  # (no public way to ask)


_PAIRS: TrainingPairs | None = None  # a worker process's own


def _start_worker(trainer: int, run_root, split, models, subwords, max_pieces) -> None:
    global _PAIRS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    threading.Thread(target=_exit_without, args=(trainer,), daemon=True).start()
    tokenizers = tuple(_load(model) for model in models)
    _PAIRS = TrainingPairs(run_root, split, tokenizers, subwords, max_pieces)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load(model: tuple[Path, str] | bytes) -> Tokenizer:
    """A SentencePiece model from bytes, or from a file that must still hold the trainer's."""
    if isinstance(model, bytes):
        return Tokenizer(model)
    path, digest = model
    tokenizer = Tokenizer.load(path)
    if _digest(tokenizer.proto) != digest:
        raise RuntimeError(f"{path} changed since training started")
    return tokenizer


def _exit_without(trainer: int) -> None:
    """Ends this worker once the trainer is gone (killed, it cannot say so)."""
    while os.getppid() == trainer:
        time.sleep(0.5)
    os._exit(0)


def _sample_in_worker(indices: list[int], seed: int) -> tuple[list, list]:
    return _PAIRS.sample(indices, seed)
