"""Where translations go: the jobs of a run (an input and its outputs), the checks made
before any work, and the sinks that take finished chunks (stdout, or resumable files).

A file output is written as `<output>.partial` (under torchrun, `<output>.rank<r>` for each rank,
merged by rank 0), chunk by chunk, each flushed to disk and recorded in `<output>.partial.progress`.
Outputs take their final names only when every job of the run is done, so a run that fails leaves no
half-done result under a final name, and no earlier result is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from seq2seq.errors import UserError
from seq2seq.io import atomic_open, atomic_write_text, check_streams, same_file, writing

from .layout import check_output


@dataclass
class Job:
    """One input file and where its outputs go (one line per input line in each)."""

    input: str
    output: str
    alignments: str | None = None

    def targets(self) -> list[str]:
        """The files written (not stdout), output first, as the user named them."""
        return [name for name in (self.output, self.alignments) if name and name != "-"]


@dataclass
class Plan:
    """The jobs of one run, its output folder (several inputs), and whether it resumes."""

    jobs: list[Job]
    folder: Path | None = None
    resume: bool = False
    created: list[Path] = field(default_factory=list)  # what this run made, to undo on failure

    def create_folder(self) -> None:
        if self.folder is not None and not self.folder.exists():
            self.folder.mkdir()
            self.created.append(self.folder)

    def remove_created(self) -> None:
        for path in reversed(self.created):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _files_of(inputs: list[str]) -> list[Path]:
    """The files named, and those each folder named holds (not subfolders, nor hidden files);
    anything else in a folder (a broken link, a pipe, a device) is refused, not skipped."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if name == "-":
            raise UserError("'-' (stdin) cannot be one of several inputs")
        if path.is_file():
            files.append(path)
        elif not path.is_dir():
            raise UserError(f"{path}: no such input file or folder")
        else:
            held = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            odd = next((p for p in held if not p.is_file() and not p.is_dir()), None)
            if odd is not None:
                raise UserError(
                    f"{odd}: not a regular file (a broken link, a pipe or a device); "
                    f"move it out of {path} or name the files to translate"
                )
            files += [p for p in held if p.is_file()]
    return files


def plan_jobs(inputs: list[str], output: str, alignments, resume: bool, models, world) -> Plan:
    """One job for one input file; several files or a folder go to an output folder. Every
    pairing that cannot work is refused here, before anything is read or written."""
    if alignments == "-":
        raise UserError("--alignments needs a file name; '-' is for -i and -o")
    if len(inputs) == 1 and not Path(inputs[0]).is_dir():
        if inputs[0] != "-" and output != "-" and Path(output).is_dir():  # as cp does
            output = str(Path(output) / Path(inputs[0]).name.removesuffix(".gz"))
        plan = Plan([Job(inputs[0], output, alignments)], resume=resume)
    else:
        if output == "-" or alignments is not None:
            raise UserError("several inputs need -o FOLDER (and no --alignments file)")
        if not (files := _files_of(inputs)):
            raise UserError(f"{', '.join(inputs)}: no files to translate")
        named: dict[str, Path] = {}
        for path in files:  # x.en.gz is read as text, so its translation is x.en
            if (name := path.name.removesuffix(".gz")) in named:
                raise UserError(
                    f"{named[name]} and {path} have the same file name once .gz is dropped; "
                    "their outputs would collide"
                )
            named[name] = path
        folder = Path(output)
        check_output(folder, folder=True)
        plan = Plan([Job(str(p), str(folder / name)) for name, p in named.items()], folder, resume)
    _check_plan(plan, models, world)
    return plan


def lock_of(target: str | Path) -> Path:
    """The lock file that keeps an output to one process: hidden, beside it, removed after."""
    return Path(target).with_name(f".{Path(target).name}.lock")


def temporaries(target: str, world: int) -> list[Path]:
    """What a run writes beside `target`: partial output and progress (each rank's), lock."""
    tags = ["partial", *(f"rank{r}" for r in range(world if world > 1 else 0))]
    names = [f"{target}.{tag}{end}" for tag in tags for end in ("", ".progress")]
    return [*map(Path, names), lock_of(target)]


def _check_plan(plan: Plan, models: list[Path], world: int) -> None:
    reads = [job.input for job in plan.jobs] + models
    for source in reads:
        if source != "-" and not Path(source).exists():  # a pipe or device is read as a stream
            raise UserError(f"{source}: no such input file")
    check_streams(reads)
    written: list[Path] = []
    for job in plan.jobs:
        if plan.resume and not Path(job.input).is_file():
            raise UserError("--resume needs an input file; a stream cannot be read again")
        if job.output == "-":
            if plan.resume:
                raise UserError("--resume needs an output file, not stdout")
            if world > 1:
                raise UserError("-o - (stdout) cannot take the output of several ranks; use a file")
        for target in job.targets():
            ours = [target, *temporaries(target, world)]
            check_output(target, reads, ours[1:], parents=plan.folder is not None)
            if any(same_file(mine, theirs) for mine in ours for theirs in written):
                raise UserError(f"{target}: named twice as an output (or as its temporary file)")
            written += ours


def _new_file(path: Path, created: list[Path], size: int = 0):
    """Open `path` for writing from byte `size` on, noting it in `created` if it is new."""
    if not path.exists():
        created.append(path)
    f = open(path, "r+b" if size else "wb")
    f.truncate(size)
    f.seek(size)
    return f


class StdoutSink:
    """Writes each chunk to stdout at once; alignments to `<alignments>.partial` until `commit`."""

    def __init__(self, alignments: str | None, created: list[Path]):
        self.total, self.done_lines = None, 0
        self.aligned = _new_file(Path(f"{alignments}.partial"), created) if alignments else None

    def wants(self, chunk: int) -> bool:
        return True

    def append(self, chunk: int, texts: list[str]) -> None:
        with writing("standard output"):
            try:
                sys.stdout.write(texts[0])
                sys.stdout.flush()
            except OSError:  # what stays buffered must not fail again in the flush at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise
        if self.aligned is not None:
            self.aligned.write(texts[1].encode("utf-8"))

    def close(self) -> None:
        if self.aligned is not None:
            self.aligned.close()

    def finish(self) -> None:
        if self.aligned is not None:
            self.aligned.flush()
            os.fsync(self.aligned.fileno())
            self.aligned.close()


class FileSink:
    """The outputs of one job while they are written. After each chunk is on disk, the
    progress file (replaced atomically) records the next chunk and the bytes written, so
    `--resume` truncates a half-written chunk and goes on after the last complete one."""

    def __init__(self, job: Job, plan: Plan, ranks, chunk_lines: int, total, fingerprint, log):
        self.targets, self.ranks, self.chunk_lines = job.targets(), ranks, chunk_lines
        tag = "partial" if ranks.world == 1 else f"rank{ranks.rank}"
        self.paths = [Path(f"{t}.{tag}") for t in self.targets]
        self.progress_path = Path(f"{self.targets[0]}.{tag}.progress")
        self.fingerprint = fingerprint
        self.next_chunk, sizes = 0, [0] * len(self.targets)
        if plan.resume:
            if (state := self._read_progress()) is None:
                log(f"translate: nothing to resume for {job.output}; starting from the beginning")
            else:
                self.next_chunk, sizes = state["next_chunk"], state["bytes"]
                log(f"translate: resuming {job.output} at chunk {self.next_chunk}")
        self.files = [_new_file(p, plan.created, size) for p, size in zip(self.paths, sizes)]
        if not self.progress_path.exists():
            plan.created.append(self.progress_path)
        self.lines = total
        self.total = None if total is None else total / ranks.world
        self.done_lines = min(self.total or 0, self.next_chunk * chunk_lines / ranks.world)

    def _read_progress(self) -> dict | None:
        if not self.progress_path.is_file():
            return None
        try:
            state = json.loads(self.progress_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if state.get("fingerprint") != self.fingerprint:
            before = state.get("fingerprint") or {}
            changed = [k for k in self.fingerprint if before.get(k) != self.fingerprint[k]]
            raise UserError(
                f"{self.targets[0]}: cannot resume, {', '.join(changed)} changed "
                "since; run without --resume to start over"
            )
        written = zip(self.paths, state["bytes"])
        return state if all(p.is_file() and p.stat().st_size >= n for p, n in written) else None

    def wants(self, chunk: int) -> bool:
        return chunk >= self.next_chunk and chunk % self.ranks.world == self.ranks.rank

    def append(self, chunk: int, texts: list[str]) -> None:
        """Write one finished chunk to every output, then record it as done."""
        for f, path, text in zip(self.files, self.targets, texts):
            with writing(path):
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        self.next_chunk = chunk + 1
        sizes = [f.tell() for f in self.files]
        state = {"next_chunk": self.next_chunk, "bytes": sizes, "fingerprint": self.fingerprint}
        atomic_write_text(self.progress_path, json.dumps(state) + "\n")

    def close(self) -> None:
        with contextlib.ExitStack() as closing:  # every file closed, even after a failure
            for f, path in zip(self.files, self.targets):
                closing.enter_context(writing(path))  # closing flushes what a full disk refused
                closing.callback(f.close)

    def finish(self) -> None:
        """Every output complete as `<output>.partial` (rank 0 merges the ranks' parts)."""
        self.close()
        if self.ranks.world == 1:
            return
        self.ranks.barrier()
        if self.ranks.rank == 0:
            self._merge()
        self.ranks.barrier()
        for path in [*self.paths, self.progress_path]:
            path.unlink(missing_ok=True)

    def _merge(self) -> None:
        """Interleave the ranks' parts chunk by chunk, in input order."""
        world, size, total = self.ranks.world, self.chunk_lines, self.lines or 0
        for target in self.targets:
            names = [f"{target}.rank{r}" for r in range(world)]
            with contextlib.ExitStack() as opened:
                parts = [opened.enter_context(open(name, encoding="utf-8")) for name in names]
                out = opened.enter_context(atomic_open(f"{target}.partial"))
                for k in range((total + size - 1) // size):
                    for _ in range(min(size, total - k * size)):
                        out.write(parts[k % world].readline())


def commit(plan: Plan) -> None:
    """Give every finished output its final name, once all jobs are done."""
    for job in plan.jobs:
        for target in job.targets():
            os.replace(f"{target}.partial", target)
        Path(f"{job.output}.partial.progress").unlink(missing_ok=True)
