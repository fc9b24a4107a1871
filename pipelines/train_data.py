"""The training data: pairs of subword ids, the batches of each epoch, this rank's rows of a step.

Reads (from the run folder): the SentencePiece model(s), data/train.<lang>.bin/.idx (the ids
preprocess stored, the best segmentation) and, with subword regularization, data/train.<lang>.

With `data.subwords.sampling_alpha` > 0, each pair is segmented afresh every time it is batched, by
SentencePiece itself: sampled from the unigram lattice (Kudo, 2018; `nbest_size` -1 samples from all
segmentations, n > 1 from the n best, smaller alpha is more varied), or for a bpe model with merges
dropped at random (BPE-dropout; alpha is the probability). Batches are still formed from the lengths
of the best segmentation; dev and test always use it. The limit: SentencePiece >= 0.2.2 draws its
samples differently in every process, whatever seed it is given, so a run with sampling neither
repeats itself nor resumes bit-exactly (without sampling, both hold).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seq2seq.batching import Batch, TokenSequences, make_batch, training_batches, weighted_pairs
from seq2seq.config import Config
from seq2seq.errors import UserError
from seq2seq.tokenizer import Tokenizer
from seq2seq.vocab import Vocab

from .distributed import Ranks
from .layout import RunFolder


def load_tokenizers(run: RunFolder, manifest: dict) -> tuple[Tokenizer, Tokenizer]:
    """The SentencePiece models preprocess wrote, each checked against the manifest's hash."""
    files = manifest["tokenizer"]
    src = Tokenizer.load(run.root / files["src"])
    tgt = src if files["tgt"] == files["src"] else Tokenizer.load(run.root / files["tgt"])
    for side, tokenizer in (("src", src), ("tgt", tgt)):
        if files.get(f"{side}_sha256", proto_sha256(tokenizer)) != proto_sha256(tokenizer):
            raise UserError(
                f"{run.root / files[side]}: not the SentencePiece model {run.manifest} was made "
                "with (another sha256); put it back, or run `nmt preprocess` again"
            )
    return src, tgt


def proto_sha256(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.proto).hexdigest()


def make_vocab(src: Tokenizer, tgt: Tokenizer) -> Vocab:
    special = ("pad_id", "unk_id", "bos_id", "eos_id")
    if [getattr(src, s) for s in special] != [getattr(tgt, s) for s in special]:
        raise UserError("the source and target SentencePiece models use different special ids")
    return Vocab(src.vocab_size, tgt.vocab_size, tgt.pad_id, tgt.unk_id, tgt.bos_id, tgt.eos_id)


class TextLines:
    """The lines of a UTF-8 file, memory-mapped: line i costs nothing until it is asked for."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            empty = os.fstat(f.fileno()).st_size == 0  # (mmap refuses an empty file)
            self.data = b"" if empty else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.ends = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == ord("\n"))
        self.starts = np.concatenate([[0], self.ends + 1])

    def __getitem__(self, i: int) -> str:
        return self.data[self.starts[i] : self.ends[i]].decode("utf-8")


@dataclass
class Step:
    """The batches of one optimizer step, as this rank sees them."""

    parts: list[tuple[Batch, float]]  # this rank's rows of each batch, and their loss weight
    batches: int  # batches in the step
    tgt_tokens: int  # target tokens of the whole step (all ranks), end-of-sentence included
    src_tokens: int  # source tokens likewise


class TrainingData:
    """The training pairs of a run folder, batched an epoch at a time."""

    def __init__(self, run: RunFolder, manifest: dict, config: Config, ranks: Ranks, device):
        self.tokenizers = load_tokenizers(run, manifest)
        self.vocab = make_vocab(*self.tokenizers)
        self.config, self.ranks, self.device = config, ranks, device
        split = manifest["splits"]["train"]
        self.src = TokenSequences.load(run.root / split["src_ids"])  # the best segmentation
        self.tgt = TokenSequences.load(run.root / split["tgt_ids"])
        self.subwords = config.data.subwords
        if self.subwords.sampling_alpha > 0:
            self.texts = (TextLines(run.root / split["src"]), TextLines(run.root / split["tgt"]))
        data, sizes = config.data, split.get("corpora", [split["pairs"]])
        weights = [data.weight] + [corpus.weight for corpus in data.corpora]
        if len(sizes) != len(weights):
            raise UserError(
                f"data.corpora names {len(weights) - 1} more corpora, but {run.manifest} "
                f"was made with {len(sizes) - 1}; run nmt preprocess again"
            )
        self.corpora = (sizes, weights)  # the pairs of each training corpus, and its weight

    def __len__(self) -> int:
        return len(self.src)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The pairs of each batch of `epoch`, in training order (a function of the seed)."""
        tc = self.config.train
        seed = tc.seed * 1_000_003 + epoch
        pairs = weighted_pairs(*self.corpora, seed)
        if pairs is not None and not len(pairs):
            raise UserError("data.weight and data.corpora's weights draw no pair an epoch")
        return training_batches(
            self.src.lengths, self.tgt.lengths, tc.batch_type, tc.batch_size,
            seed=seed, bucket=tc.bucket, pairs=pairs,
        )  # fmt: skip

    def pairs(self, indices: list[int]) -> tuple[TokenSequences, TokenSequences, list[int]]:
        """The ids of the pairs `indices` and where they are in them: the stored sequences
        and `indices` themselves, or freshly sampled segmentations and 0..n-1."""
        if self.subwords.sampling_alpha <= 0:
            return self.src, self.tgt, indices
        limit, sampled = self.config.data.cleaning.max_pieces, []
        for tokenizer, texts in zip(self.tokenizers, self.texts):
            sp, alpha, nbest = tokenizer.sp, self.subwords.sampling_alpha, self.subwords.nbest_size
            ids = [
                sp.encode(texts[i], enable_sampling=True, alpha=alpha, nbest_size=nbest)[:limit]
                for i in indices
            ]
            sampled.append(TokenSequences.from_lists(ids))
        return sampled[0], sampled[1], list(range(len(indices)))

    def step(self, group: list[list[int]]) -> Step:
        """This rank's rows of each batch of one step, padded (pinned for a GPU). Each rank
        takes rows rank::world of every batch; the loss weight divides by the target tokens
        of the whole step (all ranks) and multiplies by the number of ranks, so the gradients
        DDP averages are those of one process training on the whole batch."""
        ranks, vocab = self.ranks, self.vocab
        pairs = [self.pairs(idx) for idx in group]
        tgt_tokens = sum(int(tgt.lengths[idx].sum()) + len(idx) for _, tgt, idx in pairs)  # + eos
        src_tokens = sum(int(src.lengths[idx].sum()) + len(idx) for src, _, idx in pairs)
        parts = []
        for src, tgt, idx in pairs:
            rows, weight = idx[ranks.rank :: ranks.world], ranks.world / tgt_tokens
            if not rows:  # fewer rows than ranks: a zero-weight row keeps the all-reduce in step
                rows, weight = idx[:1], 0.0
            batch = make_batch(src, tgt, rows, vocab)
            parts.append((batch.pin_memory() if self.device.type == "cuda" else batch, weight))
        return Step(parts, len(group), tgt_tokens, src_tokens)
