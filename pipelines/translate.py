"""Stage 3, translate: checkpoint + text file -> translation, one line per input line.

Reads: a checkpoint (a run folder, a model folder or a .safetensors file; self-contained) and
a UTF-8 text file, one sentence a line ("-" for stdin; .gz read transparently).
Writes: the translation, line i for input line i, to a temporary name renamed on success
("-" for stdout).

The input is streamed: a chunk of lines is read, sorted by length, translated in batches
(by sentence count or by a source-token budget), put back in input order and written, so
memory stays flat however long the file is. Input is normalized as the training data was.
Empty lines give empty lines. Lines longer than the model's limit (the training data's
`max_pieces`) are cut to it, and the number cut is reported at the end.

With an alignments file, each input line also gets one JSON object there:
    {"line": 1, "source": [source pieces..., "</s>"], "target": [target pieces..., "</s>"],
     "attention": [[weight of each source piece] for each target piece]}
(empty lists for an empty line; zeros for a model without attention).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from seq2seq.checkpoint import Checkpoint, load_checkpoint
from seq2seq.config import SearchConfig
from seq2seq.device import autocast, resolve_device
from seq2seq.errors import UserError
from seq2seq.io import atomic_open, count_lines, read_lines
from seq2seq.search import translate_ids

from .layout import resolve_checkpoint
from .progress import Progress

CHUNK_LINES = 4000  # lines read, sorted and translated together


@dataclass
class TranslateOptions:
    beam_size: int | None = None  # None: the checkpoint's search defaults
    batch_size: int | None = None
    max_tokens: int | None = None
    n_best: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    errors: str = "strict"  # invalid UTF-8 in the input: "strict" or "replace"


def search_settings(checkpoint: Checkpoint, options: TranslateOptions) -> SearchConfig:
    """The checkpoint's search defaults with the options given on the command line."""
    changes = {
        k: v
        for k, v in (
            ("beam_size", options.beam_size),
            ("batch_size", options.batch_size),
            ("max_tokens", options.max_tokens),
            ("n_best", options.n_best),
        )
        if v is not None
    }
    if "beam_size" in changes and "n_best" not in changes:
        changes["n_best"] = min(checkpoint.search.n_best, changes["beam_size"])
    if "batch_size" in changes and "max_tokens" not in changes:
        changes["max_tokens"] = 0
    try:
        return replace(checkpoint.search, **changes)
    except UserError as e:
        message = str(e).replace("config key 'search.", "option '--").replace("_", "-")
        raise UserError(message) from None


class Translator:
    """A loaded model with its tokenizers, translating lists of lines."""

    def __init__(self, model_path: str | Path, options: TranslateOptions):
        self.device = resolve_device(options.device)
        self.checkpoint = load_checkpoint(resolve_checkpoint(model_path), self.device)
        self.search = search_settings(self.checkpoint, options)
        self.precision = options.precision
        if self.precision == "fp16" and self.device.type != "cuda":
            raise UserError("option '--precision fp16' needs a CUDA GPU; use bf16 on the CPU")
        info = self.checkpoint.info
        self.normalize = info.get("normalize", "nfc")
        self.max_pieces = info.get("max_pieces", 250)
        self.truncated = 0

    def prepare(self, line: str) -> str:
        if self.normalize != "none":
            line = unicodedata.normalize(self.normalize.upper(), line)
        return " ".join(line.split())

    def translate(self, lines: list[str], with_attention: bool = False):
        """Hypothesis lists (n-best, best first) for each line ([] for an empty line), and the
        source ids each was translated from."""
        texts = [self.prepare(line) for line in lines]
        ids = self.checkpoint.src_tokenizer.encode(texts)
        for i, seq in enumerate(ids):
            if len(seq) > self.max_pieces:
                ids[i] = seq[: self.max_pieces]
                self.truncated += 1
        todo = [i for i, text in enumerate(texts) if text]
        results: list[list] = [[] for _ in lines]
        with torch.inference_mode(), autocast(self.device, self.precision):
            hypotheses = translate_ids(
                self.checkpoint.model,
                [ids[i] for i in todo],
                self.search,
                self.device,
                return_attention=with_attention,
            )
        for i, hyps in zip(todo, hypotheses):
            results[i] = hyps
        return results, ids

    def alignment(self, number: int, source_ids: list[int], hypotheses: list) -> dict:
        """One line's attention as JSON-ready data: pieces on both sides, weights by row."""
        if not hypotheses:
            return {"line": number, "source": [], "target": [], "attention": []}
        best = hypotheses[0]
        source = self.checkpoint.src_tokenizer.pieces(source_ids) + ["</s>"]
        target = self.checkpoint.tgt_tokenizer.pieces(best.tokens) + ["</s>"]
        weights = best.attention[:, : len(source)]  # (target, source)
        rows = [[round(w, 4) for w in row] for row in weights.tolist()]
        return {"line": number, "source": source, "target": target, "attention": rows}

    def detokenize(self, hypotheses: list) -> list[str]:
        return self.checkpoint.tgt_tokenizer.decode([h.tokens for h in hypotheses])


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _input_lines(path: str, errors: str) -> Iterator[str]:
    if path == "-":
        for line in sys.stdin.buffer:
            try:
                yield line.decode("utf-8", errors=errors).rstrip("\n").rstrip("\r")
            except UnicodeDecodeError:
                raise UserError(
                    "stdin: invalid UTF-8; expected UTF-8 text (or pass --errors replace)"
                ) from None
        return
    yield from read_lines(path, errors=errors)


@contextlib.contextmanager
def _output(path: str):
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_open(path) as f:
        yield f


@contextlib.contextmanager
def _alignment_output(path: str | None):
    if path is None:
        yield None
        return
    with atomic_open(path) as f:
        yield f


def translate_file(
    model: str | Path,
    input_path: str,
    output_path: str,
    options: TranslateOptions,
    log: Callable[[str], None] = print,
    alignments: str | None = None,
) -> dict:
    """Translate a file line by line; returns counts and speed. With `alignments`, also write
    each line's attention weights there as JSON lines."""
    if input_path != "-" and not Path(input_path).is_file():
        raise UserError(f"{input_path}: no such input file")
    for path in (output_path, alignments):
        if path not in (None, "-") and not Path(path).parent.is_dir():
            raise UserError(f"{path}: folder {Path(path).parent} does not exist")
    translator = Translator(model, options)
    total = count_lines(input_path) if input_path != "-" else None
    progress = Progress("translate", total=total, unit="sent")
    start = time.monotonic()
    sentences = tokens = 0
    with _output(output_path) as out, _alignment_output(alignments) as aligned:
        for chunk in _chunks(_input_lines(input_path, options.errors), CHUNK_LINES):
            results, source_ids = translator.translate(chunk, with_attention=aligned is not None)
            for i, hyps in enumerate(results):
                best = hyps[:1]
                out.write((translator.detokenize(best)[0] if best else "") + "\n")
                tokens += len(best[0].tokens) + 1 if best else 0
                if aligned is not None:
                    record = translator.alignment(sentences + i + 1, source_ids[i], hyps)
                    aligned.write(json.dumps(record, ensure_ascii=False) + "\n")
            sentences += len(chunk)
            progress.update(len(chunk))
    progress.close()
    seconds = time.monotonic() - start
    if translator.truncated:
        log(
            f"translate: warning: {translator.truncated} line(s) longer than "
            f"{translator.max_pieces} pieces were cut to that length"
        )
    return {
        "sentences": sentences,
        "tgt_tokens": tokens,
        "seconds": seconds,
        "sentences_per_s": sentences / seconds if seconds else 0.0,
        "tgt_tokens_per_s": tokens / seconds if seconds else 0.0,
    }
