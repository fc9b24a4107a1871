"""The Python API: load a trained model once, then translate text to text.

    from pipelines.translator import Translator

    translator = Translator("runs/demo")  # a run folder, a model folder or a checkpoint file
    translator.translate(["The old man sees the dog."])  # ["Der alte Mann sieht den Hund."]
    best, second = translator.generate(["The dog sleeps."], n_best=2)[0]
    best.text, best.score                                # the text and what the beam ranked by

A list of models decodes as an ensemble. `device` and `precision` are those of
`nmt translate` (auto: the GPU when there is one; bf16 where it is faster). Keyword arguments
of the constructor, `translate` and `generate` change the checkpoint's search settings (the
`search` keys of docs/config.md), as `--search.KEY=VALUE` does on the command line.

A list is translated the way `nmt translate` translates a file: in chunks of 4,000 lines,
each sorted by length and batched by the search settings, so the outputs are the same. Input
is normalized as the training data was; an empty text gives an empty translation; a text
longer than the training limit (`data.cleaning.max_pieces`) is cut to it (`truncated` counts
them). Nothing is printed unless `progress=True`. One call at a time per Translator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import SearchConfig, override_search, short
from seq2seq.cpu_paths import keep_freed_memory
from seq2seq.decoding import translate_ids
from seq2seq.device import autocast, resolve_device, resolve_precision
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError, out_of_memory
from seq2seq.graphs import GraphedModel
from seq2seq.int8 import quantize
from seq2seq.search import Hypothesis, check_beam_size
from seq2seq.tokenizer import normalize

from .layout import resolve_checkpoint
from .progress import Progress

CHUNK_LINES = 4000  # lines sorted by length and translated together (`nmt translate`'s default)


@dataclass(frozen=True)
class Alignment:
    """Attention of one hypothesis: which source piece each target piece looked at."""

    source: list[str]  # source pieces, "</s>" last
    target: list[str]  # target pieces, "</s>" last
    weights: list[list[float]]  # (target, source); rows sum to 1 (zeros without attention)


@dataclass(frozen=True)
class Translation:
    """One hypothesis for one text."""

    text: str
    score: float  # log-probability / GNMT length penalty: what the search ranked by
    log_prob: float  # sum of the token log-probabilities, end-of-sentence included
    tokens: list[int]  # target ids, end-of-sentence not included
    alignment: Alignment | None = None  # when asked for


def best(translations: list[Translation]) -> str:
    """The best text of a text's translations ("" for an empty text, which has none)."""
    return translations[0].text if translations else ""


@dataclass
class Encoded:
    """Texts normalized and tokenized."""

    lines: list[str]
    ids: list[list[int]]  # source ids of every line (cut to the model's limit)
    todo: list[int]  # the lines that are not empty


def model_paths(model: str | Path | list) -> list[Path]:
    """The checkpoint file of each model named (one, or several for an ensemble)."""
    names = [model] if isinstance(model, (str, Path)) else model
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, Path)) for n in names):
        raise UserError(f"model: expected a path or a list of paths, got {short(model)}")
    if not names:
        raise UserError("no model given: name a run folder, a model folder or a checkpoint")
    return [resolve_checkpoint(name) for name in names]


def checked_texts(texts: Any) -> list[str]:
    """`texts` as a list of strings that SentencePiece can take, or a UserError naming the
    first one that is not."""
    if isinstance(texts, (str, bytes, dict)) or not isinstance(texts, Iterable):
        raise UserError(f"texts: expected a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserError(f"texts[{i}]: expected a string, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UserError(f"texts[{i}]: not valid Unicode (a surrogate at {e.start})") from None
    return texts


def check_ensemble(checkpoints: list, paths: list[Path]) -> None:
    """Ensembled models must read and write the same pieces, prepared the same way."""
    first = checkpoints[0]
    for checkpoint, path in zip(checkpoints[1:], paths[1:]):
        for side, ours, theirs in [
            ("target", checkpoint.tgt_tokenizer, first.tgt_tokenizer),
            ("source", checkpoint.src_tokenizer, first.src_tokenizer),
        ]:
            if ours.proto != theirs.proto:
                raise UserError(
                    f"{path}: its {side} SentencePiece model is not the one of {paths[0]}; "
                    "the models of an ensemble must share their vocabularies"
                )
        for key in ("normalize", "max_pieces"):
            if checkpoint.info.get(key) != first.info.get(key):
                raise UserError(
                    f"{path}: data.cleaning.{key} {checkpoint.info.get(key)!r} differs from "
                    f"{paths[0]}'s {first.info.get(key)!r}; the models of an ensemble must "
                    "prepare input the same way"
                )


def card_sized_tokens(model, search: SearchConfig, device: torch.device, models: int = 1) -> int:
    """A source-token budget for one batch on a GPU: what a quarter of its free memory holds
    at the memory one source token costs in search (its beams' scores over the vocabulary,
    four copies of them at an average of 16 tokens a sentence, and the attention memory).
    A batch that does not fit after all is split in two and tried again."""
    free, _ = torch.cuda.mem_get_info(device)
    per_token = models * search.beam_size * 4 * (4 * model.vocab.tgt_size / 16 + 4 * 1024)
    return int(min(131_072, max(2_048, free / 4 / per_token)))


class Translator:
    """A loaded model (or an ensemble of several) with its tokenizers. The first model's
    search settings and input preparation are the ensemble's."""

    def __init__(
        self,
        model: str | Path | list,
        device: str | torch.device = "auto",
        precision: str = "auto",
        progress: bool = False,
        **search: Any,
    ):
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        resolve_precision(precision, self.device, 0)  # a precision this device cannot run: now
        keep_freed_memory()  # of the host: decoding's big tensors are on the CPU
        self.checkpoint_paths = model_paths(model)
        checkpoints = [load_checkpoint(path, self.device) for path in self.checkpoint_paths]
        check_ensemble(checkpoints, self.checkpoint_paths)
        self.checkpoint = checkpoints[0]  # the first's settings; the table (next): any member's
        self.shortlist = next((c.shortlist for c in checkpoints if c.shortlist is not None), None)
        models = [c.model for c in checkpoints]
        self.model = models[0] if len(models) == 1 else Ensemble(models).eval()
        self.search = override_search(self.checkpoint.search, search)
        asked = {"batch_size", "max_tokens"} & set(search) or self.search.max_tokens
        self.card_sized = self.device.type == "cuda" and not asked  # batches sized to the GPU
        if self.card_sized:
            tokens = card_sized_tokens(self.model, self.search, self.device, len(checkpoints))
            self.search = override_search(self.search, {"max_tokens": tokens})
        self.check(self.search)
        self.graphs = None  # the decoder step replayed as CUDA graphs (search.cuda_graphs)
        if self.search.cuda_graphs and self.device.type == "cuda":
            self.graphs = self.model = GraphedModel(self.model)
        parameters = sum(p.numel() for p in checkpoints[0].model.parameters())
        self.precision, self.precision_note = resolve_precision(precision, self.device, parameters)
        if self.precision == "int8":
            self.model = quantize(self.model)
        info = self.checkpoint.info
        self.normalize, self.max_pieces = info.get("normalize", "nfc"), info.get("max_pieces", 250)
        languages = info.get("languages") or {}
        self.src_lang, self.tgt_lang = languages.get("src"), languages.get("tgt")
        self.progress = progress
        self.truncated = 0  # texts cut to max_pieces so far
        self.seconds = {"tokenize": 0.0, "search": 0.0, "detokenize": 0.0}

    # --- text in, text out ---------------------------------------------------------------
    def translate(self, texts: list[str] | str, **search: Any) -> list[str] | str:
        """The best translation of each text (of a single text, given a string)."""
        if isinstance(texts, str):
            return self.translate([texts], **search)[0]
        return [best(hyps) for hyps in self.generate(texts, **search)]

    def generate(
        self, texts: list[str], alignments: bool = False, **search: Any
    ) -> list[list[Translation]]:
        """The n best translations of each text, best first, with their scores (and their
        attention, with alignments=True); an empty list for an empty text."""
        texts = checked_texts(texts)
        settings = self.settings(search)
        progress = Progress("translate", len(texts), "sent", enabled=self.progress)
        results: list[list[Translation]] = []
        for start in range(0, len(texts), CHUNK_LINES):
            chunk = self.encode(texts[start : start + CHUNK_LINES])
            try:
                hypotheses = self.search_chunk(chunk, alignments, settings)
            except (MemoryError, RuntimeError) as e:  # sizes asked for that do not fit
                if (message := out_of_memory(e)) is None:
                    raise
                raise UserError(message) from None
            results += self.decode(chunk, hypotheses, alignments)
            progress.update(len(chunk.lines))
        progress.close()
        return results

    def settings(self, changes: dict[str, Any]) -> SearchConfig:
        """This translator's search settings with `changes` (checked like the config file)."""
        if not changes:
            return self.search
        changes = dict(changes)
        beam = changes.get("beam_size", self.search.beam_size)
        if self.card_sized and not {"batch_size", "max_tokens"} & set(changes):
            # the GPU budget was sized for the default beam: a wider one takes fewer tokens
            scaled = self.search.max_tokens * self.search.beam_size // max(1, int(beam))
            changes["max_tokens"] = min(131_072, max(1, scaled))
        return self.check(override_search(self.search, changes))

    def check(self, settings: SearchConfig) -> SearchConfig:
        check_beam_size(settings.beam_size, self.model.vocab)
        if settings.shortlist and self.shortlist is None:
            raise UserError(f"{self.checkpoint_paths[0]}: search.shortlist needs a table that "
                            "this checkpoint lacks (resume training a step to add it)")  # fmt: skip
        return settings

    # --- the three steps, which `nmt translate` runs on separate threads on a GPU ---------
    def encode(self, lines: list[str]) -> Encoded:
        """Normalize and tokenize lines in one call (host work)."""
        start = time.perf_counter()
        texts = [normalize(line, self.normalize) for line in lines]
        ids = self.checkpoint.src_tokenizer.encode(texts)
        self.truncated += sum(len(seq) > self.max_pieces for seq in ids)
        ids = [seq[: self.max_pieces] for seq in ids]
        todo = [i for i, text in enumerate(texts) if text]
        self.seconds["tokenize"] += time.perf_counter() - start
        return Encoded(lines, ids, todo)

    def search_chunk(
        self, chunk: Encoded, with_attention: bool = False, settings: SearchConfig | None = None
    ) -> list[list[Hypothesis]]:
        """Hypothesis lists (n best, best first) for each line ([] for an empty line)."""
        start = time.perf_counter()
        results: list[list[Hypothesis]] = [[] for _ in chunk.lines]
        todo, settings = [chunk.ids[i] for i in chunk.todo], settings or self.search
        with torch.inference_mode(), autocast(self.device, self.precision):
            hypotheses = translate_ids(
                self.model, todo, settings, self.device, with_attention, self.shortlist
            )
        for i, hyps in zip(chunk.todo, hypotheses):
            # settings that forbid every ending (min_len beyond the length limit, say) leave
            # no hypothesis: the text still gets one, empty and scored -inf
            results[i] = hyps or [Hypothesis([], -math.inf, -math.inf)]
        self.seconds["search"] += time.perf_counter() - start
        return results

    def decode(
        self, chunk: Encoded, results: list[list[Hypothesis]], with_attention: bool = False
    ) -> list[list[Translation]]:
        """Hypotheses as Translations, detokenized in one call."""
        start = time.perf_counter()
        texts = iter(self.checkpoint.tgt_tokenizer.decode([h.tokens for hs in results for h in hs]))
        translations = []
        for ids, hyps in zip(chunk.ids, results):
            source = self.checkpoint.src_tokenizer.pieces(ids) + ["</s>"] if with_attention else []
            line = []
            for h in hyps:
                alignment = self._alignment(source, h) if with_attention else None
                line.append(Translation(next(texts), h.score, h.log_prob, h.tokens, alignment))
            translations.append(line)
        self.seconds["detokenize"] += time.perf_counter() - start
        return translations

    def _alignment(self, source: list[str], hypothesis: Hypothesis) -> Alignment:
        target = self.checkpoint.tgt_tokenizer.pieces(hypothesis.tokens) + ["</s>"]
        if hypothesis.attention is None:  # the empty stand-in for no hypothesis at all
            return Alignment(source, target, [[0.0] * len(source) for _ in target])
        weights = hypothesis.attention[:, : len(source)]  # (target, source)
        return Alignment(source, target, weights.tolist())
