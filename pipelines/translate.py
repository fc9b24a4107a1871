"""Stage 3, translate: checkpoint + text file(s) -> translations, one line per input line.

Reads: a checkpoint (a run folder, a model folder or a .safetensors file; self-contained) and
UTF-8 text, one sentence a line: a file ("-" for stdin; .gz read transparently), several
files, or a folder of them.
Writes: for each input, its translation, line i for input line i ("-" for stdout; several
inputs go to an output folder, one file each under the input's name). Finished chunks go to
`<output>.partial` (with `<output>.partial.progress`) and the file takes its final name only
when all is done; `--resume` continues an interrupted run after its last finished chunk.
With n-best > 1 a line holds each hypothesis and its score, tab-separated.

What to search for is the checkpoint's `search` section with the changes asked for
(`--search.beam_size=8`, or its alias `--beam-size 8`).

Under torchrun (WORLD_SIZE > 1) rank r translates the chunks k with k % WORLD_SIZE == r into
`<output>.rank<r>`, and rank 0 merges them in input order.

The input is streamed: a chunk of lines is read, sorted by length, translated in batches
(by sentence count or by a source-token budget), put back in input order and written, so
memory stays flat however long the file is. Lines typed or piped one at a time on stdin are
answered as they arrive. Input is normalized as the training data was. Empty lines give empty
lines. Lines longer than the model's limit (the training data's `max_pieces`) are cut to it,
and the number cut is reported at the end. On a GPU, reading and tokenizing the next chunk,
and detokenizing and writing the last one, run on background threads while the GPU searches.

With an alignments file, each input line also gets one JSON object there:
    {"line": 1, "source": [source pieces..., "</s>"], "target": [target pieces..., "</s>"],
     "attention": [[weight of each source piece] for each target piece]}
(empty lists for an empty line; zeros for a model without attention).

Before anything is written, every input is checked (it exists, and is UTF-8 text unless
errors="replace"), and so is every destination (writable, not an input, not the model);
if a run fails on bad input anyway, what it created is removed.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import SearchConfig, override_search
from seq2seq.device import autocast, resolve_device, resolve_precision
from seq2seq.ensemble import Ensemble
from seq2seq.errors import UserError, out_of_memory
from seq2seq.graphs import GraphedModel
from seq2seq.io import StreamLines, count_lines, read_lines
from seq2seq.search import Hypothesis, check_beam_size, translate_ids

from .background import Behind, ahead, worth_it
from .distributed import Ranks
from .layout import resolve_checkpoint
from .outputs import FileSink, Job, Plan, StdoutSink, commit, plan_jobs
from .progress import Progress


@dataclass(frozen=True)
class TranslateOptions:
    search: dict[str, Any] = field(default_factory=dict)  # changes to the checkpoint's search
    device: str = "auto"
    precision: str = "auto"  # see seq2seq.device.resolve_precision
    errors: str = "strict"  # invalid UTF-8 in the input: "strict" or "replace"
    chunk_lines: int = 4000  # lines read, sorted by length and translated together

    def __post_init__(self):
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(
                f"option '--precision': expected auto, fp32, bf16 or fp16, got {self.precision!r}"
            )
        if self.errors not in ("strict", "replace"):
            raise UserError(f"option '--errors': expected strict or replace, got {self.errors!r}")
        if self.chunk_lines < 1:
            raise UserError(
                f"option '--chunk-lines': expected an integer >= 1, got {self.chunk_lines}"
            )


def card_sized_tokens(model, search: SearchConfig, device: torch.device, models: int = 1) -> int:
    """A source-token budget for one batch on a GPU: what a quarter of its free memory holds
    at the memory one source token costs in search (its beams' scores over the vocabulary,
    four copies of them at an average of 16 tokens a sentence, and the attention memory).
    A batch that does not fit after all is split in two and tried again."""
    free, _ = torch.cuda.mem_get_info(device)
    per_token = models * search.beam_size * 4 * (4 * model.vocab.tgt_size / 16 + 4 * 1024)
    return int(min(131_072, max(2_048, free / 4 / per_token)))


@dataclass
class Encoded:
    """One chunk's lines, normalized and tokenized."""

    lines: list[str]
    ids: list[list[int]]  # source ids of every line (cut to the model's limit)
    todo: list[int]  # the lines that are not empty


def model_paths(model: str | Path | list) -> list[Path]:
    """The checkpoint file of each model named (one, or several for an ensemble)."""
    names = [model] if isinstance(model, (str, Path)) else list(model)
    return [resolve_checkpoint(name) for name in names]


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


class Translator:
    """A loaded model (or an ensemble of several) with its tokenizers, translating lists of
    lines. The first model's search section and input preparation are the ensemble's."""

    def __init__(
        self,
        model: str | Path | list,
        options: TranslateOptions,
        device: torch.device | None = None,
    ):
        self.device = device or resolve_device(options.device)
        self.checkpoint_paths = model_paths(model)
        checkpoints = [load_checkpoint(path, self.device) for path in self.checkpoint_paths]
        check_ensemble(checkpoints, self.checkpoint_paths)
        self.checkpoint = checkpoints[0]
        self.model = (
            checkpoints[0].model
            if len(checkpoints) == 1
            else Ensemble([c.model for c in checkpoints]).eval()
        )
        self.search = override_search(self.checkpoint.search, options.search)
        asked = {"batch_size", "max_tokens"} & set(options.search)
        if self.device.type == "cuda" and not asked and not self.search.max_tokens:
            tokens = card_sized_tokens(self.model, self.search, self.device, len(checkpoints))
            self.search = override_search(self.search, {"max_tokens": tokens})
        check_beam_size(self.search.beam_size, self.model.vocab)
        self.graphs = None  # the decoder step replayed as CUDA graphs (search.cuda_graphs)
        if self.search.cuda_graphs and self.device.type == "cuda":
            self.graphs = self.model = GraphedModel(self.model)
        if options.precision == "fp16" and self.device.type != "cuda":
            raise UserError("option '--precision fp16' needs a CUDA GPU; use bf16 on the CPU")
        parameters = sum(p.numel() for p in checkpoints[0].model.parameters())
        self.precision, self.precision_note = resolve_precision(
            options.precision, self.device, parameters
        )
        info = self.checkpoint.info
        self.normalize = info.get("normalize", "nfc")
        self.max_pieces = info.get("max_pieces", 250)
        self.truncated = 0
        self.seconds = {"tokenize": 0.0, "search": 0.0, "detokenize": 0.0}

    def prepare(self, line: str) -> str:
        if self.normalize != "none":
            line = unicodedata.normalize(self.normalize.upper(), line)
        return " ".join(line.split())

    def encode(self, lines: list[str]) -> Encoded:
        """Normalize and tokenize a chunk in one call (host work, done ahead on a GPU)."""
        start = time.perf_counter()
        texts = [self.prepare(line) for line in lines]
        ids = self.checkpoint.src_tokenizer.encode(texts)
        for i, seq in enumerate(ids):
            if len(seq) > self.max_pieces:
                ids[i] = seq[: self.max_pieces]
                self.truncated += 1
        todo = [i for i, text in enumerate(texts) if text]
        self.seconds["tokenize"] += time.perf_counter() - start
        return Encoded(lines, ids, todo)

    def search_chunk(self, chunk: Encoded, with_attention: bool = False) -> list[list[Hypothesis]]:
        """Hypothesis lists (n-best, best first) for each line ([] for an empty line)."""
        start = time.perf_counter()
        results: list[list[Hypothesis]] = [[] for _ in chunk.lines]
        with torch.inference_mode(), autocast(self.device, self.precision):
            hypotheses = translate_ids(
                self.model,
                [chunk.ids[i] for i in chunk.todo],
                self.search,
                self.device,
                return_attention=with_attention,
            )
        for i, hyps in zip(chunk.todo, hypotheses):
            results[i] = hyps
        self.seconds["search"] += time.perf_counter() - start
        return results

    def translate(self, lines: list[str], with_attention: bool = False):
        """Hypothesis lists for each line, and the source ids each was translated from."""
        chunk = self.encode(lines)
        return self.search_chunk(chunk, with_attention), chunk.ids

    def texts(self, chunk: Encoded, results: list, first_line: int, with_alignments: bool):
        """The text each output gets for one chunk (detokenized in one call), and the target
        tokens produced."""
        start = time.perf_counter()
        hypotheses = [h for hyps in results for h in hyps]
        decoded = iter(self.checkpoint.tgt_tokenizer.decode([h.tokens for h in hypotheses]))
        lines, aligned, tokens = [], [], 0
        for i, hyps in enumerate(results):
            tokens += len(hyps[0].tokens) + 1 if hyps else 0
            texts = [next(decoded) for _ in hyps]
            lines.append(self.format(texts, hyps) + "\n")
            if with_alignments:
                record = self.alignment(first_line + i, chunk.ids[i], hyps)
                aligned.append(json.dumps(record, ensure_ascii=False) + "\n")
        self.seconds["detokenize"] += time.perf_counter() - start
        return ["".join(lines)] + (["".join(aligned)] if with_alignments else []), tokens

    def format(self, texts: list[str], hypotheses: list[Hypothesis]) -> str:
        """A line's output: the best translation, or with n-best, each hypothesis and its
        score, tab-separated. An empty input line gives an empty line."""
        if not hypotheses:
            return ""
        if self.search.n_best == 1:
            return texts[0]
        return "\t".join(f"{t}\t{h.score:.4f}" for t, h in zip(texts, hypotheses))

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


# --- reading --------------------------------------------------------------------------------


def _chunks(lines: Iterable[str], size: int, waiting: Callable[[], bool]) -> Iterator[list[str]]:
    """Lines in chunks of `size`; a chunk is cut short when the next line is not there yet."""
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size or waiting():
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def input_chunks(path: str, size: int, errors: str) -> Iterator[list[str]]:
    if path == "-":
        stream = StreamLines(sys.stdin.buffer, "stdin", errors)
        return _chunks(stream, size, stream.waiting)
    return _chunks(read_lines(path, errors=errors), size, lambda: False)


def check_inputs(jobs: list[Job], errors: str) -> None:
    """Read every input file once, so that bad text stops the run before anything is
    written (stdin can only be read once, as it is translated)."""
    for job in jobs:
        if job.input != "-":
            for _ in read_lines(job.input, errors=errors):
                pass


# --- running a job --------------------------------------------------------------------------


class Shard(Ranks):
    """This process's share under torchrun: rank r of w translates the chunks k with
    k % w == r; rank 0 merges the parts in input order. A plain run is rank 0 of 1."""

    def mine(self, chunk: int) -> bool:
        return chunk % self.world == self.rank


def _fingerprint(job: Job, translator: Translator, options: TranslateOptions, world: int) -> dict:
    """What must not change for `--resume` to continue a job."""
    source = Path(job.input).stat()
    models = [(path.resolve(), path.stat()) for path in translator.checkpoint_paths]
    return {
        "input": [str(Path(job.input).resolve()), source.st_size, source.st_mtime_ns],
        "model": [[str(path), stat.st_size, stat.st_mtime_ns] for path, stat in models],
        "search": options.search,
        "precision": translator.precision,
        "errors": options.errors,
        "chunk_lines": options.chunk_lines,
        "alignments": job.alignments is not None,
        "world": world,
    }


def _open_sink(job, translator, options, shard, resume, plan, log):
    if job.output == "-":
        return StdoutSink(job.alignments, plan.created)
    if job.input == "-":
        fingerprint, total = None, None
    else:
        fingerprint = _fingerprint(job, translator, options, shard.world)
        total = count_lines(job.input)
    return FileSink(job, shard, options.chunk_lines, total, fingerprint, resume, plan.created, log)


def _run_job(
    translator: Translator,
    job: Job,
    options: TranslateOptions,
    shard: Shard,
    resume: bool,
    plan: Plan,
    log: Callable[[str], None],
) -> tuple[int, int]:
    """Translate one input (this rank's share of it) into its sink; returns sentences and
    target tokens. On a GPU the chunk ahead is read and tokenized, and the chunk behind
    detokenized and written, on background threads."""
    sink = _open_sink(job, translator, options, shard, resume, plan, log)
    with_alignments = job.alignments is not None
    size = options.chunk_lines
    progress = Progress("translate", total=sink.total, unit="sent", done=sink.done_lines)
    counts = [0, 0]  # sentences, target tokens

    def finish(k: int, chunk: Encoded, results: list) -> None:
        texts, tokens = translator.texts(chunk, results, k * size + 1, with_alignments)
        sink.append(k, texts)
        counts[0], counts[1] = counts[0] + len(chunk.lines), counts[1] + tokens
        progress.update(len(chunk.lines))

    chunks = (
        (k, lines)
        for k, lines in enumerate(input_chunks(job.input, size, options.errors))
        if sink.wants(k)
    )
    # Not for stdin: a thread waiting there for a line could not be stopped.
    overlap = worth_it(translator.device) and job.input != "-"
    try:
        with Behind(enabled=overlap) as behind:
            for k, chunk in ahead(
                lambda item: (item[0], translator.encode(item[1])), chunks, overlap
            ):
                results = translator.search_chunk(chunk, with_alignments)
                behind.submit(finish, k, chunk, results)
    except BaseException:
        sink.close()
        raise
    progress.close()
    sink.finish()
    return counts[0], counts[1]


def translate_files(
    model: str | Path | list,
    inputs: list[str],
    output: str,
    options: TranslateOptions,
    log: Callable[[str], None] = print,
    alignments: str | None = None,
    resume: bool = False,
) -> dict:
    """Translate one file, several, or a folder with one model or an ensemble (a list of
    models); returns counts and speed (this rank's)."""
    shard = Shard()
    start = time.monotonic()
    plan = plan_jobs(inputs, output, alignments, resume, model_paths(model), shard.world)
    check_inputs(plan.jobs, options.errors)
    translator = Translator(model, options, shard.device(options.device))
    if shard.main:
        log(f"translate: {translator.precision_note}")
    shard.start(translator.device)
    loaded = time.monotonic()
    sentences = tokens = 0
    try:
        plan.create_folder()
        for job in plan.jobs:
            done, produced = _run_job(translator, job, options, shard, resume, plan, log)
            sentences, tokens = sentences + done, tokens + produced
        commit(plan, shard.main)
    except (UserError, MemoryError, RuntimeError) as e:
        if isinstance(e, UserError) or out_of_memory(e):  # not a bug: leave nothing new
            plan.remove_created()
        raise
    seconds = time.monotonic() - loaded
    shard.stop()
    if translator.truncated:
        log(
            f"translate: warning: {translator.truncated} line(s) longer than "
            f"{translator.max_pieces} pieces were cut to that length"
        )
    for note in translator.graphs.notes if translator.graphs else []:
        log(f"translate: cuda graphs: {note}")  # shapes that ran eagerly, and why
    return {
        "sentences": sentences,
        "tgt_tokens": tokens,
        "seconds": seconds,
        "load_seconds": loaded - start,
        "stage_seconds": dict(translator.seconds),
        "sentences_per_s": sentences / seconds if seconds else 0.0,
        "tgt_tokens_per_s": tokens / seconds if seconds else 0.0,
        "files": len(plan.jobs),
    }


def translate_file(
    model: str | Path | list,
    input_path: str,
    output_path: str,
    options: TranslateOptions,
    log: Callable[[str], None] = print,
    alignments: str | None = None,
    resume: bool = False,
) -> dict:
    """Translate one file (or "-"), line by line; returns counts and speed."""
    return translate_files(model, [input_path], output_path, options, log, alignments, resume)
