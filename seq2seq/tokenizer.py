"""SentencePiece wrapper: train, encode, decode; special ids always come from the model."""

from __future__ import annotations

import io
import itertools
import math
import os
import random
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from .config import SubwordConfig
from .errors import UserError


def normalize(text: str, form: str) -> str:
    """Unicode normalization (nfc, nfkc or none), then whitespace trimmed and runs of it
    collapsed to one space: how training text and text to translate are prepared alike."""
    if form != "none":
        text = unicodedata.normalize(form.upper(), text)
    return " ".join(text.split())


def seeded_sample(items: Iterable[str], size: int, seed: int) -> list[str]:
    """At most `size` of `items`, drawn uniformly by a seeded reservoir and kept in their order; all
    of them, in order, when there are fewer. Li's algorithm L (1994) skips ahead between
    replacements, so a long corpus costs a few random numbers per kept item, not one per line."""
    rng, stream = random.Random(seed), enumerate(items)
    kept = list(itertools.islice(stream, size))
    if len(kept) < size or size == 0:
        return [item for _, item in kept]
    log_w = _log_uniform(rng) / size  # log of the threshold w, kept in logs for precision
    while True:
        skip = math.floor(_log_uniform(rng) / _log1mexp(log_w))
        if (chosen := next(itertools.islice(stream, skip, None), None)) is None:
            return [item for _, item in sorted(kept)]
        kept[rng.randrange(size)] = chosen
        log_w += _log_uniform(rng) / size


def _log_uniform(rng: random.Random) -> float:
    """log u for u uniform in (0, 1): strictly negative."""
    while (u := rng.random()) == 0.0:
        pass
    return math.log(u)


def _log1mexp(x: float) -> float:
    """log(1 - e^x) for x < 0, accurate at both ends (Maechler, 2012)."""
    return math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))


class Tokenizer:
    """A trained SentencePiece model, held as its serialized bytes so checkpoints can carry it."""

    def __init__(self, model_proto: bytes, source: str = "the SentencePiece model"):
        self.proto = bytes(model_proto)
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        except (RuntimeError, OSError) as e:
            raise UserError(f"{source}: not a valid SentencePiece model ({e})") from None
        self.pad_id, self.unk_id = self.sp.pad_id(), self.sp.unk_id()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        if min(self.pad_id, self.bos_id, self.eos_id, self.unk_id) < 0:
            raise UserError(f"{source}: has no pad, unk, bos or eos piece; use `nmt preprocess`")

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """A SentencePiece model file; a broken one is an error naming it."""
        return cls(Path(path).read_bytes(), str(path))

    @classmethod
    def train(cls, sentences: Iterable[str], config: SubwordConfig, seed: int = 1) -> Tokenizer:
        """Train on an iterable of sentences, at most `config.input_sentence_size` of them:
        a seeded sample when there are more (drawn here: SentencePiece 0.2.2 and later draw
        their own sample differently in every process, whatever the seed)."""
        writer = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(seeded_sample(sentences, config.input_sentence_size, seed)),
                model_writer=writer,
                model_type=config.model_type,
                vocab_size=config.vocab_size,
                character_coverage=config.character_coverage,
                byte_fallback=config.byte_fallback,
                user_defined_symbols=list(config.user_symbols),
                input_sentence_size=config.input_sentence_size,  # no more than it gets
                shuffle_input_sentence=True,
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
                # JoeyNMT's layout; nothing in this code relies on the numbers.
                unk_id=0, pad_id=1, bos_id=2, eos_id=3,
                unk_piece="<unk>", pad_piece="<pad>", bos_piece="<s>", eos_piece="</s>",
            )  # fmt: skip
        except RuntimeError as e:
            message = str(e).strip().splitlines()[-1]
            limit = re.search(r"<= (\d+)", message)
            if "too high" in message or "too large" in message:
                most = f"; at most {limit.group(1)} here" if limit else ""
                raise UserError(
                    f"config key 'data.subwords.vocab_size': {config.vocab_size} is too large "
                    f"for this training data{most}"
                ) from None
            if "smaller than required" in message:
                raise UserError(
                    f"config key 'data.subwords.vocab_size': {config.vocab_size} is too small "
                    "for the characters of this data (and the 256 bytes, with byte_fallback); "
                    "raise it or lower character_coverage"
                ) from None
            raise UserError(f"SentencePiece training failed: {message}") from None
        return cls(writer.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]
