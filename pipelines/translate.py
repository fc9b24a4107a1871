"""Stage 3, translate: checkpoint + text file(s) -> translations, one line per input line.

Reads: a checkpoint (a run folder, a model folder or a .safetensors file; self-contained) and
UTF-8 text, one sentence a line: a file ("-" for stdin; .gz read transparently), several
files, or a folder of them.
Writes: for each input, its translation, line i for input line i ("-" for stdout; several
inputs go to an output folder, one file each under the input's name). Finished chunks go to
`<output>.partial` (with `<output>.partial.progress`) and the file takes its final name only
when all is done; `--resume` continues an interrupted run after its last finished chunk.
With n-best > 1 a line holds each hypothesis and its score, tab-separated.

Under torchrun (WORLD_SIZE > 1) rank r translates the chunks k with k % WORLD_SIZE == r into
`<output>.rank<r>`, and rank 0 merges them in input order.

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
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from seq2seq.checkpoint import Checkpoint, load_checkpoint
from seq2seq.config import SearchConfig
from seq2seq.device import autocast, resolve_device
from seq2seq.errors import UserError
from seq2seq.io import atomic_open, atomic_write_text, count_lines, read_lines
from seq2seq.search import translate_ids

from .distributed import Ranks
from .layout import resolve_checkpoint
from .progress import Progress


@dataclass
class TranslateOptions:
    beam_size: int | None = None  # None: the checkpoint's search defaults
    batch_size: int | None = None
    max_tokens: int | None = None
    n_best: int | None = None  # > 1: "hypothesis<TAB>score" for each, tab-separated
    length_penalty: float | None = None
    device: str = "auto"
    precision: str = "fp32"
    errors: str = "strict"  # invalid UTF-8 in the input: "strict" or "replace"
    chunk_lines: int = 4000  # lines read, sorted by length and translated together


def search_settings(checkpoint: Checkpoint, options: TranslateOptions) -> SearchConfig:
    """The checkpoint's search defaults with the options given on the command line."""
    changes = {
        k: v
        for k, v in (
            ("beam_size", options.beam_size),
            ("batch_size", options.batch_size),
            ("max_tokens", options.max_tokens),
            ("n_best", options.n_best),
            ("length_penalty", options.length_penalty),
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

    def __init__(
        self, model_path: str | Path, options: TranslateOptions, device: torch.device | None = None
    ):
        self.device = device or resolve_device(options.device)
        self.checkpoint_path = resolve_checkpoint(model_path)
        self.checkpoint = load_checkpoint(self.checkpoint_path, self.device)
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

    def format(self, hypotheses: list) -> str:
        """A line's output: the best translation, or with n-best, each hypothesis and its
        score, tab-separated. An empty input line gives an empty line."""
        if not hypotheses:
            return ""
        texts = self.checkpoint.tgt_tokenizer.decode([h.tokens for h in hypotheses])
        if self.search.n_best == 1:
            return texts[0]
        return "\t".join(f"{t}\t{h.score:.4f}" for t, h in zip(texts, hypotheses))


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


@dataclass
class Job:
    """One input file and where its outputs go (one line per input line in each)."""

    input: str
    output: str
    alignments: str | None = None


class Shard(Ranks):
    """This process's share under torchrun: rank r of w translates the chunks k with
    k % w == r; rank 0 merges the parts in input order. A plain run is rank 0 of 1."""

    def mine(self, chunk: int) -> bool:
        return chunk % self.world == self.rank

    def tag(self) -> str:
        return "partial" if self.world == 1 else f"rank{self.rank}"


class Parts:
    """The outputs of one job while they are written.

    Each completed chunk is appended to `<output>.<tag>` for every output and flushed to
    disk; then `<output>.<tag>.progress` (replaced atomically) records the next chunk and
    the bytes written, so `--resume` truncates any half-written chunk and goes on after the
    last completed one."""

    def __init__(
        self,
        targets: list[Path],
        tag: str,
        fingerprint: dict,
        resume: bool,
        log: Callable[[str], None],
    ):
        self.paths = [Path(f"{t}.{tag}") for t in targets]
        self.progress_path = Path(f"{targets[0]}.{tag}.progress")
        self.fingerprint = fingerprint
        self.next_chunk, sizes = 0, [0] * len(targets)
        if resume:
            state = self._read_progress()
            if state is None:
                log(f"translate: nothing to resume for {targets[0]}; starting from the beginning")
            else:
                self.next_chunk, sizes = state["next_chunk"], state["bytes"]
                log(f"translate: resuming {targets[0]} at chunk {self.next_chunk}")
        self.files = []
        for path, size in zip(self.paths, sizes):
            f = open(path, "r+b" if size else "wb")
            f.truncate(size)
            f.seek(size)
            self.files.append(f)

    def _read_progress(self) -> dict | None:
        if not self.progress_path.is_file():
            return None
        try:
            state = json.loads(self.progress_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if state.get("fingerprint") != self.fingerprint:
            changed = [
                k
                for k in self.fingerprint
                if state.get("fingerprint", {}).get(k) != self.fingerprint[k]
            ]
            raise UserError(
                f"{self.progress_path}: cannot resume, {', '.join(changed)} changed "
                "since; run without --resume to start over"
            )
        if any(not p.is_file() or p.stat().st_size < n for p, n in zip(self.paths, state["bytes"])):
            return None
        return state

    def append(self, chunk: int, texts: list[str]) -> None:
        """Write one finished chunk to every output, then record it as done."""
        for f, text in zip(self.files, texts):
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self.next_chunk = chunk + 1
        state = {
            "next_chunk": self.next_chunk,
            "bytes": [f.tell() for f in self.files],
            "fingerprint": self.fingerprint,
        }
        atomic_write_text(self.progress_path, json.dumps(state) + "\n")

    def close(self) -> None:
        for f in self.files:
            f.close()

    def remove(self) -> None:
        for path in [*self.paths, self.progress_path]:
            path.unlink(missing_ok=True)


def _fingerprint(job: Job, translator: Translator, options: TranslateOptions, world: int) -> dict:
    source = Path(job.input).stat()
    model = translator.checkpoint_path.stat()
    return {
        "input": [str(Path(job.input).resolve()), source.st_size, source.st_mtime_ns],
        "model": [str(translator.checkpoint_path.resolve()), model.st_size, model.st_mtime_ns],
        "options": asdict(options),
        "alignments": job.alignments is not None,
        "world": world,
    }


def _merge(targets: list[Path], world: int, total: int, chunk_lines: int) -> None:
    """Rank 0: interleave the ranks' parts chunk by chunk into the final outputs."""
    chunks = (total + chunk_lines - 1) // chunk_lines
    for target in targets:
        parts = [open(f"{target}.rank{r}", encoding="utf-8") for r in range(world)]
        try:
            with atomic_open(target) as out:
                for k in range(chunks):
                    for _ in range(min(chunk_lines, total - k * chunk_lines)):
                        out.write(parts[k % world].readline())
        finally:
            for part in parts:
                part.close()


def _chunk_texts(
    translator: Translator, chunk: list[str], first_line: int, with_alignments: bool
) -> tuple[list[str], int]:
    """The text each output gets for one chunk, and the target tokens produced."""
    results, source_ids = translator.translate(chunk, with_attention=with_alignments)
    lines, aligned, tokens = [], [], 0
    for i, hyps in enumerate(results):
        tokens += len(hyps[0].tokens) + 1 if hyps else 0
        lines.append(translator.format(hyps) + "\n")
        if with_alignments:
            record = translator.alignment(first_line + i, source_ids[i], hyps)
            aligned.append(json.dumps(record, ensure_ascii=False) + "\n")
    texts = ["".join(lines)] + (["".join(aligned)] if with_alignments else [])
    return texts, tokens


def _run_job(
    translator: Translator,
    job: Job,
    options: TranslateOptions,
    shard: Shard,
    resume: bool,
    log: Callable[[str], None],
) -> tuple[int, int]:
    """Translate one file (this rank's share of it); returns sentences and target tokens."""
    lines = _input_lines(job.input, options.errors)
    with_alignments = job.alignments is not None
    if job.output == "-":  # streamed as it comes; alignments (if any) still land atomically
        sentences = tokens = 0
        progress = Progress("translate", unit="sent")
        aligned = atomic_open(job.alignments) if with_alignments else contextlib.nullcontext()
        with aligned as aligned_file:
            for k, chunk in enumerate(_chunks(lines, options.chunk_lines)):
                texts, n = _chunk_texts(
                    translator, chunk, k * options.chunk_lines + 1, with_alignments
                )
                sys.stdout.write(texts[0])
                sys.stdout.flush()
                if with_alignments:
                    aligned_file.write(texts[1])
                sentences, tokens = sentences + len(chunk), tokens + n
                progress.update(len(chunk))
        progress.close()
        return sentences, tokens

    total = count_lines(job.input)
    targets = [Path(job.output)] + ([Path(job.alignments)] if with_alignments else [])
    fingerprint = _fingerprint(job, translator, options, shard.world)
    parts = Parts(targets, shard.tag(), fingerprint, resume, log)
    share = total / shard.world
    progress = Progress("translate", total=share, unit="sent")
    progress.update(min(share, parts.next_chunk * options.chunk_lines / shard.world))
    sentences = tokens = 0
    try:
        for k, chunk in enumerate(_chunks(lines, options.chunk_lines)):
            if k < parts.next_chunk or not shard.mine(k):
                continue
            texts, n = _chunk_texts(translator, chunk, k * options.chunk_lines + 1, with_alignments)
            parts.append(k, texts)
            sentences, tokens = sentences + len(chunk), tokens + n
            progress.update(len(chunk))
    except UserError:
        parts.close()
        parts.remove()  # bad input: nothing to resume (the input must change)
        raise
    finally:
        parts.close()
    progress.close()
    if shard.world == 1:
        for part, target in zip(parts.paths, targets):
            os.replace(part, target)
        parts.remove()
    else:
        shard.barrier()
        if shard.rank == 0:
            _merge(targets, shard.world, total, options.chunk_lines)
        shard.barrier()
        parts.remove()
    return sentences, tokens


def _check_paths(jobs: list[Job], resume: bool) -> None:
    for job in jobs:
        if job.input != "-" and not Path(job.input).is_file():
            raise UserError(f"{job.input}: no such input file")
        for path in (job.output, job.alignments):
            if path not in (None, "-") and not Path(path).parent.is_dir():
                raise UserError(f"{path}: folder {Path(path).parent} does not exist")
            if path not in (None, "-") and Path(path).is_dir():
                raise UserError(f"{path}: is a folder; expected a file name")
        if resume and job.output == "-":
            raise UserError("--resume needs an output file, not stdout")


def plan_jobs(inputs: list[str], output: str, alignments: str | None) -> list[Job]:
    """One job for one input file; several files or a folder go to an output folder."""
    if len(inputs) == 1 and not Path(inputs[0]).is_dir():
        return [Job(inputs[0], output, alignments)]
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if name == "-":
            raise UserError("'-' (stdin) cannot be one of several inputs")
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            files.append(path)
    if output == "-" or alignments is not None:
        raise UserError("several inputs need -o FOLDER (and no --alignments file)")
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; several inputs need -o FOLDER")
    if not folder.parent.is_dir():
        raise UserError(f"{folder}: folder {folder.parent} does not exist")
    names = [p.name for p in files]
    if len(set(names)) != len(names):
        raise UserError("two inputs have the same file name; their outputs would collide")
    if not files:
        raise UserError(f"{', '.join(inputs)}: no files to translate")
    folder.mkdir(exist_ok=True)
    return [Job(str(p), str(folder / p.name)) for p in files]


def translate_files(
    model: str | Path,
    inputs: list[str],
    output: str,
    options: TranslateOptions,
    log: Callable[[str], None] = print,
    alignments: str | None = None,
    resume: bool = False,
) -> dict:
    """Translate one file, several, or a folder; returns counts and speed (this rank's)."""
    jobs = plan_jobs(inputs, output, alignments)
    _check_paths(jobs, resume)
    shard = Shard()
    translator = Translator(model, options, shard.device(options.device))
    shard.start(translator.device)
    start = time.monotonic()
    sentences = tokens = 0
    for job in jobs:
        done, produced = _run_job(translator, job, options, shard, resume, log)
        sentences, tokens = sentences + done, tokens + produced
    seconds = time.monotonic() - start
    shard.stop()
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
        "files": len(jobs),
    }


def translate_file(
    model: str | Path,
    input_path: str,
    output_path: str,
    options: TranslateOptions,
    log: Callable[[str], None] = print,
    alignments: str | None = None,
    resume: bool = False,
) -> dict:
    """Translate one file (or "-"), line by line; returns counts and speed."""
    return translate_files(model, [input_path], output_path, options, log, alignments, resume)
