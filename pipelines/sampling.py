"""The training pairs as subword ids, with optional subword regularization.

Without it, the ids are those preprocess stored (data/train.<lang>.bin), the best
segmentation. With `data.subwords.sampling_alpha` > 0, each pair is segmented afresh every
time it is batched: sampled from SentencePiece's unigram lattice (Kudo, 2018, "Subword
Regularization"; `nbest_size` -1 samples from all segmentations, n > 1 from the n best, alpha
smooths the distribution: smaller is more varied), or for a bpe model with merges dropped at
random (BPE-dropout, Provilkov et al., 2020; alpha is the probability). The sample is a
function of the seed, the epoch and the batch's place in it, so a run repeats itself and
resumes exactly. Batches are still formed from the lengths of the best segmentation; dev
and test always use it.

Reads (from the run folder): data/train.<lang>.bin/.idx, and with sampling data/train.<lang>.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seq2seq.batching import TokenSequences
from seq2seq.config import SubwordConfig
from seq2seq.tokenizer import Tokenizer


class TextLines:
    """The lines of a UTF-8 file held as its bytes and line offsets: line i costs nothing
    until it is asked for, and memory is the size of the file."""

    def __init__(self, path: Path):
        self.data = path.read_bytes()
        ends = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == ord("\n"))
        self.starts = np.concatenate([[0], ends + 1])
        self.ends = ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        return self.data[self.starts[i] : self.ends[i]].decode("utf-8")


class TrainingPairs:
    """The training pairs' ids: stored (`sampling` off) or sampled per batch."""

    def __init__(
        self,
        run_root: Path,
        split: dict,
        tokenizers: tuple[Tokenizer, Tokenizer],
        subwords: SubwordConfig,
        max_pieces: int,
    ):
        self.src = TokenSequences.load(run_root / split["src_ids"])  # the best segmentation
        self.tgt = TokenSequences.load(run_root / split["tgt_ids"])
        self.tokenizers, self.subwords, self.max_pieces = tokenizers, subwords, max_pieces
        self.sampling = subwords.sampling_alpha > 0
        if self.sampling:
            self.texts = (TextLines(run_root / split["src"]), TextLines(run_root / split["tgt"]))

    def __len__(self) -> int:
        return len(self.src)

    def batch(self, indices: list[int], seed: int) -> tuple[TokenSequences, TokenSequences, list]:
        """The ids of the pairs `indices` and where they are in them: the stored sequences
        and `indices` themselves, or freshly sampled sequences and 0..n-1."""
        if not self.sampling:
            return self.src, self.tgt, indices
        sampled = []
        for side, (tokenizer, texts) in enumerate(zip(self.tokenizers, self.texts)):
            lines = [texts[i] for i in indices]
            ids = tokenizer.sample(
                lines, self.subwords.sampling_alpha, self.subwords.nbest_size, seed * 2 + side
            )
            sampled.append(TokenSequences.from_lists([seq[: self.max_pieces] for seq in ids]))
        return sampled[0], sampled[1], list(range(len(indices)))
