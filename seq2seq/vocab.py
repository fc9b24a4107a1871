"""The vocabulary as the model sees it: sizes and special ids, read from SentencePiece."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vocab:
    """Vocabulary sizes and special ids, read from the SentencePiece models."""

    src_size: int
    tgt_size: int
    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int
