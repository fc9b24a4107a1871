"""Exhausted resources: a file size limit, a full disk, a quota, a failing or read-only disk.

- every command that writes, under a real file size limit (`ulimit -f`, set in a subprocess;
  Python ignores SIGXFSZ, so writes fail with EFBIG): one line naming the file, exit code 2,
  no traceback, no temporary or partial file left, earlier outputs and checkpoints intact
- every kind of write error through each way the code writes: atomic files, logs, errors a
  library wraps in its own types (as `datasets` does), and a whole command

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py."""

from __future__ import annotations

import errno
import io
import os
import re
import resource
import shutil
import subprocess
import sys

import pytest

import seq2seq.io
from seq2seq.errors import UserError
from seq2seq.io import append_text, atomic_write_bytes, writing

from .conftest import ROOT
from .workspace import invoke, snapshot

LEFTOVERS = re.compile(r"\.tmp\d+$|\.partial|\.progress$|\.lock$|\.preprocess\.")

# --- every writing command under a file size limit ------------------------------------------

# command, arguments (in the copied workspace), the limit in bytes, the file named
COMMANDS = {
    "preprocess (the corpus cache)": (
        ["preprocess", "tiny.yaml", "--run-dir", "run"], 1000, r"run/cache"),
    "preprocess (the SentencePiece model)": (
        ["preprocess", "tiny.yaml", "--run-dir", "run"], 100_000, r"run/spm\.model"),
    "train": (
        ["train", "tiny.yaml", "--run-dir", "run", "--train.max_steps=81",
         "--train.validate_every=1"], 20_000, r"run/(model/|learning_curve)"),
    "translate": (
        ["translate", "-m", "run", "-i", "in.en", "-o", "in.de", "--alignments", "in.align",
         "--device", "cpu"], 500, r"in\.(de|align)"),
    "average": (["average", "one.safetensors", "two.safetensors", "-o", "avg.safetensors"],
                20_000, r"avg\.safetensors"),
    "plot-attention": (["plot-attention", "in.align", "-o", "in.png"], 1000, r"in\.png"),
}  # fmt: skip


def limited(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("case", list(COMMANDS))
def test_every_command_under_a_file_size_limit_leaves_what_was_there(world, tmp_path, case):
    args, limit, named = COMMANDS[case]
    work = tmp_path / "work"
    shutil.copytree(world, work, symlinks=True, ignore=shutil.ignore_patterns("inbox"))
    (work / "in.png").write_bytes(b"an earlier plot")  # earlier outputs, to be kept
    shutil.copy(work / "one.safetensors", work / "avg.safetensors")
    before = snapshot(work)
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=work, capture_output=True,
        text=True, preexec_fn=limited(limit), timeout=300,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(rf"{named}\S*: cannot write \(File too large\)", lines[0]), lines[0]
    after = snapshot(work)
    assert not [p for p in after if LEFTOVERS.search(p.name) and p not in before], sorted(after)
    logs = {"train_log.jsonl", "train.log", "train_runs.jsonl", "config.yaml"}  # train adds
    assert {p: v for p, v in after.items() if p.name not in logs} == {
        p: v for p, v in before.items() if p.name not in logs
    }


@pytest.mark.parametrize("unbuffered", ["0", "1"])
def test_translations_to_a_limited_stdout_file_are_never_cut_silently(world, tmp_path, unbuffered):
    """`-o - > file` past the limit: one line (PYTHONUNBUFFERED=1 made Python drop the rest)."""
    source = tmp_path / "in.en"
    source.write_text("The dog sleeps.\n" * 400, encoding="utf-8")
    with open(tmp_path / "out.de", "wb") as out:
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "translate", "-m", world / "run", "-i", source,
             "-o", "-", "--device", "cpu"], stdout=out, stderr=subprocess.PIPE, text=True,
            preexec_fn=limited(700), env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
            timeout=300,
        )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1] == "error: standard output: cannot write (File too large)", lines


# --- every kind of write error, every way the code writes -----------------------------------

KINDS = ["ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS"]


def failure(kind: str) -> OSError:
    code = getattr(errno, kind)
    return OSError(code, os.strerror(code))


class FailingFile(io.FileIO):
    """A file on a disk that takes `room` more bytes, then fails with `error`."""

    room, error = 3, None

    def write(self, data) -> int:
        if FailingFile.room <= 0:
            raise FailingFile.error
        taken = super().write(bytes(data)[: FailingFile.room])
        FailingFile.room -= taken
        return taken


@pytest.mark.parametrize("way", ["atomic file", "log", "wrapped by a library"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_write_error_is_one_line_naming_the_file(tmp_path, monkeypatch, kind, way):
    path = tmp_path / "out.txt"
    path.write_text("earlier\n")
    error = failure(kind)
    message = rf"^{re.escape(str(path))}: cannot write \({re.escape(error.strerror)}\)$"
    with pytest.raises(UserError, match=message):
        if way == "atomic file":

            def fsync(_):
                raise error

            monkeypatch.setattr(seq2seq.io.os, "fsync", fsync)
            atomic_write_bytes(path, b"new\n" * 1000)
        elif way == "log":  # part of the line is taken before the disk fails: none is kept
            FailingFile.room, FailingFile.error = 3, error
            opened = lambda p, mode, **_: FailingFile(p, mode)  # noqa: E731
            monkeypatch.setattr(seq2seq.io, "open", opened, raising=False)
            append_text(path, "a whole line\n")
        else:
            with writing(path):
                try:
                    raise error
                except OSError as e:
                    raise RuntimeError("An error occurred while generating the dataset") from e
    assert path.read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_write_error_stops_translate_in_one_line(world, tmp_path, monkeypatch, kind):
    """A whole command, the error injected where every output is made durable."""
    (tmp_path / "out.de").write_text("an earlier result\n")

    def fsync(_):
        raise failure(kind)

    monkeypatch.setattr(os, "fsync", fsync)
    before = snapshot(tmp_path)
    result = invoke(["translate", "-m", world / "run", "-i", world / "in.en", "-o",
                     tmp_path / "out.de", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert re.fullmatch(r"error: \S*out\.de\S*: cannot write \(.+\)\n", result.stderr)
    assert snapshot(tmp_path) == before
