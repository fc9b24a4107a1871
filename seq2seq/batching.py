"""Token sequences, length bucketing, token-budget batches, padding and masks."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import UserError
from .io import atomic_open
from .vocab import Vocab


class TokenSequences:
    """Many id sequences in one flat tensor plus offsets: compact, and cheap to save and map.

    tokens (N_tokens,) int32; offsets (N + 1,) int64, sequence i is tokens[offsets[i]:offsets[i+1]].
    """

    def __init__(self, tokens: Tensor, offsets: Tensor):
        self.tokens, self.offsets = tokens, offsets

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> TokenSequences:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        flat = [token for seq in sequences for token in seq]
        return cls(torch.tensor(flat, dtype=torch.int32), offsets)

    @classmethod
    def load(cls, prefix: str | Path) -> TokenSequences:
        """Memory-map `<prefix>.bin` (int32 ids) and `<prefix>.idx` (int64 offsets)."""
        bin_path, idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx")
        for path in (bin_path, idx_path):
            if not path.is_file():
                raise UserError(f"{path}: no such file; run `nmt preprocess` first")
        count = idx_path.stat().st_size // 8
        offsets = torch.from_file(str(idx_path), size=count, dtype=torch.int64)
        size = bin_path.stat().st_size // 4
        if len(offsets) == 0 or int(offsets[-1]) != size:
            raise UserError(f"{bin_path}: size does not match {idx_path}; rerun `nmt preprocess`")
        return cls(torch.from_file(str(bin_path), size=size, dtype=torch.int32), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> Tensor:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]  # (N,)


class TokenSequenceWriter(contextlib.ExitStack):
    """Append id sequences to `<prefix>.bin` and `<prefix>.idx`; both appear only on success."""

    def __init__(self, prefix: str | Path):
        super().__init__()
        self._bin = self.enter_context(atomic_open(f"{prefix}.bin", "wb"))
        self._idx = self.enter_context(atomic_open(f"{prefix}.idx", "wb"))
        self._idx.write(torch.zeros(1, dtype=torch.int64).numpy().tobytes())
        self.count, self.num_tokens = 0, 0

    def write(self, sequences: Sequence[Sequence[int]]) -> None:
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
        flat = torch.tensor([t for s in sequences for t in s], dtype=torch.int32)
        self._bin.write(flat.numpy().tobytes())
        self._idx.write((torch.cumsum(lengths, 0) + self.num_tokens).numpy().tobytes())
        self.count += len(sequences)
        self.num_tokens += int(lengths.sum())


def pad(
    sequences: Sequence[Tensor | Sequence[int]],
    pad_id: int,
    prefix: int | None = None,
    suffix: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Right-pad id sequences into (B, L) int64, optionally adding a first and a last token.

    Returns the tokens and their lengths (B,), counting the added tokens."""
    extra = (prefix is not None) + (suffix is not None)
    lengths = torch.tensor([len(s) + extra for s in sequences], dtype=torch.int64)
    tokens = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.int64)
    start = 1 if prefix is not None else 0
    if prefix is not None:
        tokens[:, 0] = prefix
    for row, seq in enumerate(sequences):
        n = len(seq)
        tokens[row, start : start + n] = torch.as_tensor(seq, dtype=torch.int64)
        if suffix is not None:
            tokens[row, start + n] = suffix
    return tokens, lengths


@dataclass
class TargetPositions:
    """Where the real (non-pad) target positions of a batch are, for training, whose output
    layer and loss then skip the padding. Rows are sorted by target length, longest first,
    so the rows still running at position t are the first `running[t]`."""

    running: list[int]  # (T,) rows whose target reaches position t (host ints: no waiting)
    flat: Tensor  # (N,) b * T + t of each real position, by t then b (time-major)

    @classmethod
    def of(cls, lengths: Tensor) -> TargetPositions:
        """For target lengths (B,) sorted longest first."""
        width = int(lengths[0]) if len(lengths) else 0
        steps = torch.arange(width)
        running = (lengths[None, :] > steps[:, None]).sum(dim=1)  # (T,)
        rows = torch.arange(len(lengths))
        real = rows[None, :] < running[:, None]  # (T, B)
        flat = (rows[None, :] * width + steps[:, None])[real]  # (N,) time-major
        return cls(running.tolist(), flat)


@dataclass
class Batch:
    """A padded training batch; rows are sentence pairs, longest target first."""

    src: Tensor  # (B, S) source ids + end-of-sentence, padded
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (B, T) beginning-of-sentence + target ids, padded
    tgt_out: Tensor  # (B, T) target ids + end-of-sentence, padded
    num_tgt_tokens: int  # real (non-pad) tokens in tgt_out
    positions: TargetPositions

    @property
    def tgt_real(self) -> Tensor:
        """The target ids of the real positions (N,), in the order of `positions.flat`."""
        return self.tgt_out.reshape(-1).index_select(0, self.positions.flat)

    def _map(self, f) -> Batch:
        positions = TargetPositions(self.positions.running, f(self.positions.flat))
        tensors = (f(self.src), f(self.src_lengths), f(self.tgt_in), f(self.tgt_out))
        return Batch(*tensors, self.num_tgt_tokens, positions)

    def pin_memory(self) -> Batch:
        """The same batch in page-locked memory, so that copies to a GPU can run async."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))


def make_batch(
    src: TokenSequences, tgt: TokenSequences, indices: Sequence[int], vocab: Vocab
) -> Batch:
    """The pairs `indices`, padded, their rows sorted by target length (longest first)."""
    indices = sorted(indices, key=lambda i: -len(tgt[i]))
    src_tokens, src_lengths = pad([src[i] for i in indices], vocab.pad_id, suffix=vocab.eos_id)
    tgt_seqs = [tgt[i] for i in indices]
    tgt_in, tgt_lengths = pad(tgt_seqs, vocab.pad_id, prefix=vocab.bos_id)
    tgt_out, _ = pad(tgt_seqs, vocab.pad_id, suffix=vocab.eos_id)
    positions = TargetPositions.of(tgt_lengths)
    return Batch(src_tokens, src_lengths, tgt_in, tgt_out, int(tgt_lengths.sum()), positions)


def group_batches(
    order: Sequence[int], lengths: Sequence[int], batch_type: str, batch_size: int
) -> list[list[int]]:
    """Cut `order` into consecutive batches.

    batch_type "sentences": at most batch_size rows. "tokens": at most batch_size padded
    tokens, counted as rows x longest length (a longer item alone still forms a batch).
    `lengths[i]` is item i's length (for pairs: the longer side)."""
    batches: list[list[int]] = [[]]
    longest = 0
    for i in order:
        n = int(lengths[i])
        rows, width = len(batches[-1]) + 1, max(longest, n)
        if batches[-1] and (rows if batch_type == "sentences" else rows * width) > batch_size:
            batches.append([])
            longest = 0
        batches[-1].append(i)
        longest = max(longest, n)
    return batches if batches[0] else []


def weighted_pairs(sizes: list[int], weights: list[float], seed: int) -> Tensor | None:
    """The pairs one epoch draws when corpora of `sizes` pairs, one after the other, have
    `weights`: each pair of a corpus as many times as its weight's whole part, and a seeded
    sample for the fraction left (a weight of 0.5: half its pairs, others each epoch).
    None when every weight is 1: each pair once."""
    if all(weight == 1 for weight in weights):
        return None
    generator, parts, start = torch.Generator().manual_seed(seed), [], 0
    for size, weight in zip(sizes, weights):
        pairs = torch.arange(start, start + size)
        parts += [pairs] * int(weight)
        extra = round((weight - int(weight)) * size)
        parts.append(pairs[torch.randperm(size, generator=generator)[:extra]])
        start += size
    return torch.cat(parts)


def training_batches(
    src_lengths: Tensor,
    tgt_lengths: Tensor,
    batch_type: str,
    batch_size: int,
    seed: int,
    bucket: bool = True,
    pairs: Tensor | None = None,
) -> list[list[int]]:
    """One epoch of batches in a seeded random order, of every pair once or of `pairs` (indices,
    repeats allowed). With `bucket`, pairs of similar length go together (ties in length broken by a
    seeded shuffle, so batches differ from epoch to epoch), which saves padding; without, batches
    are runs of randomly shuffled pairs, as JoeyNMT and most PyTorch loaders make them."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(src_lengths), generator=generator)
    if pairs is not None:
        order = pairs[torch.randperm(len(pairs), generator=generator)]
    if bucket:  # stable sort by (target length, source length) of the shuffled pairs
        key = tgt_lengths[order] * (int(src_lengths.max()) + 1) + src_lengths[order]
        order = order[torch.sort(key, stable=True).indices]
    longer = torch.maximum(src_lengths + 1, tgt_lengths + 1).tolist()  # + eos/bos
    batches = group_batches(order.tolist(), longer, batch_type, batch_size)
    random.Random(seed).shuffle(batches)
    return batches
