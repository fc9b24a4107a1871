"""Stage 3, translate: checkpoint + text file(s) -> translations, one line per input line.

Reads: a checkpoint (a run folder, a model folder or a .safetensors file; self-contained) and
UTF-8 text, one sentence a line: a file ("-" for stdin; .gz read transparently), several
files, or a folder of them. It searches as the checkpoint's `search` section says, with the
changes asked for (`--search.beam_size=8`, or its alias `--beam-size 8`).
Writes: for each input, its translation, line i for input line i ("-" for stdout; several
inputs go to an output folder, one file each under the input's name less .gz), under its
final name only when all is done; outputs.py says how partial outputs are kept, resumed and
merged across ranks. With n-best > 1 a line holds each hypothesis and its score,
tab-separated, or with `translate.n_best_format: moses` each hypothesis is a line
`i ||| hypothesis ||| score`. With an alignments file, each input line also gets one JSON
object there (empty lists for an empty line; zeros for a model without attention):
    {"line": 1, "source": [source pieces..., "</s>"], "target": [target pieces..., "</s>"],
     "attention": [[weight of each source piece] for each target piece]}

The input is streamed: a chunk of lines is read, sorted by length, translated in batches
(by sentence count or by a source-token budget), put back in input order and written, so
memory stays flat however long the file is. Under torchrun (WORLD_SIZE > 1) rank r translates
the chunks k with k % WORLD_SIZE == r. Lines typed or piped one at a time on stdin are
answered as they arrive. Input is normalized as the training data was; empty lines give empty
lines; lines longer than the model's limit (the training data's `max_pieces`) are cut to it,
and the number cut is reported at the end. On a GPU, reading and tokenizing the next chunk,
and detokenizing and writing the last one, run on background threads while the GPU searches.

Every input is read once (UTF-8 unless errors="replace") and every destination checked before
anything is written; a run that fails on bad input anyway removes what it created.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seq2seq.config import TranslateConfig, to_dict
from seq2seq.errors import UserError, out_of_memory
from seq2seq.io import StreamLines, count_lines, hold, is_stream, read_lines, stream_lines

from .background import Behind, ahead, worth_it
from .distributed import Ranks
from .outputs import FileSink, Job, Plan, StdoutSink, commit, lock_of, plan_jobs
from .progress import Progress, is_terminal
from .translator import Encoded, Translation, Translator, model_paths


def output_lines(translations: list[Translation], n_best: int, form: str, number: int) -> str:
    """A line's output: the best translation, or with n-best, each hypothesis and its score,
    tab-separated on one line, or as Moses n-best lines (`number ||| hypothesis ||| score`,
    numbered from 0, none for an empty input line). An empty input line gives an empty line."""
    if n_best == 1 or (form == "tab" and not translations):
        return (translations[0].text if translations else "") + "\n"
    if form == "moses":
        return "".join(f"{number} ||| {t.text} ||| {t.score:.4f}\n" for t in translations)
    return "\t".join(f"{t.text}\t{t.score:.4f}" for t in translations) + "\n"


def alignment_line(number: int, translations: list[Translation]) -> str:
    """One line's attention as a JSON line: pieces on both sides, weights by row."""
    record = {"line": number, "source": [], "target": [], "attention": []}
    if translations:
        best = translations[0].alignment
        rows = [[round(w, 4) for w in row] for row in best.weights]
        record.update(source=best.source, target=best.target, attention=rows)
    return json.dumps(record, ensure_ascii=False) + "\n"


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


def _prompted(lines: StreamLines) -> Iterator[list[str]]:
    """A person typing at a terminal: a prompt on stderr before each line, and each line
    answered on its own. A line ended by Ctrl-D rather than Enter, and Ctrl-C, first move
    the cursor to a new line, so that nothing is written after what was typed."""
    lines_read = iter(lines)
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        try:
            line = next(lines_read, None)
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            raise
        if line is None or lines.ended:
            sys.stderr.write("\n")
        if line is None:
            return
        yield [line]


def input_chunks(path: str, size: int, errors: str) -> Iterator[list[str]]:
    if not is_stream(path):  # stdin, a pipe (-i <(zcat a.gz)): read once, as lines arrive
        return _chunks(read_lines(path, errors=errors), size, lambda: False)
    stream = stream_lines(path, errors)
    typed = is_terminal(stream.stream)
    return _prompted(stream) if typed else _chunks(stream, size, stream.waiting)


@dataclass
class Session:
    """What every job of one `nmt translate` shares."""

    translator: Translator
    config: TranslateConfig
    search: dict[str, Any]  # the changes asked for to the checkpoint's search
    ranks: Ranks  # under torchrun; a plain run is rank 0 of 1
    plan: Plan
    log: Callable[[str], None]

    def fingerprint(self, job: Job) -> dict:
        """What must not change for `--resume` to continue a job."""
        source = Path(job.input).stat()
        models = [(path.resolve(), path.stat()) for path in self.translator.checkpoint_paths]
        return {
            "input": [str(Path(job.input).resolve()), source.st_size, source.st_mtime_ns],
            "model": [[str(path), stat.st_size, stat.st_mtime_ns] for path, stat in models],
            "search": self.search,
            "precision": self.translator.precision,
            "translate": to_dict(self.config),
            "alignments": job.alignments is not None,
            "world": self.ranks.world,
        }

    def sink(self, job: Job):
        if job.output == "-":
            return StdoutSink(job.alignments, self.plan.created)
        fingerprint = None if is_stream(job.input) else self.fingerprint(job)
        total = None if is_stream(job.input) else count_lines(job.input)
        chunk_lines = self.config.chunk_lines
        return FileSink(job, self.plan, self.ranks, chunk_lines, total, fingerprint, self.log)


def _run_job(session: Session, job: Job) -> tuple[int, int]:
    """Translate this rank's share of one input into its sink; returns sentences, tgt tokens."""
    translator, config = session.translator, session.config
    sink, size, with_alignments = session.sink(job), config.chunk_lines, job.alignments is not None
    quiet = job.input == "-" and is_terminal(sys.stdin)  # no progress over what a person types
    progress = Progress("translate", sink.total, "sent", done=sink.done_lines, enabled=not quiet)
    counts = [0, 0]  # sentences, target tokens

    def finish(k: int, chunk: Encoded, hypotheses: list) -> None:
        results = translator.decode(chunk, hypotheses, with_alignments)
        first = counts[0] if is_stream(job.input) else k * size  # a stream's chunks vary
        form, n_best = config.n_best_format, translator.search.n_best
        texts = ["".join(output_lines(t, n_best, form, first + i) for i, t in enumerate(results))]
        if with_alignments:
            texts.append("".join(alignment_line(first + i + 1, t) for i, t in enumerate(results)))
        sink.append(k, texts)
        counts[0] += len(chunk.lines)
        counts[1] += sum(len(t[0].tokens) + 1 for t in results if t)
        progress.update(len(chunk.lines))

    read = enumerate(input_chunks(job.input, size, config.errors))
    chunks = ((k, lines) for k, lines in read if sink.wants(k))
    # Not for stdin: a thread waiting there for a line could not be stopped.
    overlap = worth_it(translator.device) and not is_stream(job.input)
    encoded = ahead(lambda item: (item[0], translator.encode(item[1])), chunks, overlap)
    try:
        with Behind(enabled=overlap) as behind:
            for k, chunk in encoded:
                behind.submit(finish, k, chunk, translator.search_chunk(chunk, with_alignments))
    except BaseException:
        sink.close()
        raise
    progress.close()
    sink.finish()
    return counts[0], counts[1]


def translate_files(
    model: str | Path | list,
    inputs: str | list[str],
    output: str,
    config: TranslateConfig = TranslateConfig(),
    search: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    alignments: str | None = None,
    resume: bool = False,
) -> dict:
    """Translate one file (or "-"), several, or a folder with one model or an ensemble (a list
    of models), `search` changing the checkpoint's search; returns this rank's counts, speed."""
    inputs = [inputs] if isinstance(inputs, str) else inputs
    ranks, search = Ranks(), search or {}
    start = time.monotonic()
    plan = plan_jobs(inputs, output, alignments, resume, model_paths(model), ranks.world)
    for job in plan.jobs:  # bad text stops the run before anything is written
        if not is_stream(job.input):  # (a stream is read once, as it is translated)
            for _ in read_lines(job.input, errors=config.errors):
                pass
    outputs = [plan.folder] if plan.folder else [t for job in plan.jobs for t in job.targets()]
    with contextlib.ExitStack() as held:  # each output kept to this run, by rank 0 for all
        for target in outputs if ranks.main else []:
            held.enter_context(hold(lock_of(target), target))
        translator = Translator(model, ranks.device(config.device), config.precision, **search)
        session = Session(translator, config, search, ranks, plan, log)
        if ranks.main:
            log(f"translate: {translator.precision_note}")
        ranks.start(translator.device)
        loaded = time.monotonic()
        try:
            plan.create_folder()
            counts = [_run_job(session, job) for job in plan.jobs]
            if ranks.main:
                commit(plan)
        except (UserError, MemoryError, RuntimeError) as e:
            if isinstance(e, UserError) or out_of_memory(e):  # not a bug: leave nothing new
                plan.remove_created()
            raise
    seconds = time.monotonic() - loaded
    sentences, tokens = (sum(column) for column in zip(*counts))
    ranks.stop()
    if translator.truncated:
        cut, most = translator.truncated, translator.max_pieces
        log(f"translate: warning: {cut} line(s) longer than {most} pieces were cut to that length")
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


translate_file = translate_files  # the same, by the name that callers of one input use
