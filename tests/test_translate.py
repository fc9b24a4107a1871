"""Batch translation of files: several inputs, n-best, resume, out-of-memory, torchrun."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

import pytest
import torch

from pipelines import outputs as outputs_module
from pipelines.translate import translate_file, translate_files
from seq2seq.config import TranslateConfig
from seq2seq.errors import UserError

from .conftest import ROOT

QUIET = {"log": lambda _: None}


def sentences(tiny_corpus, n: int = 20) -> list[str]:
    lines = (tiny_corpus / "test.en").read_text(encoding="utf-8").splitlines()[:n]
    return lines[:5] + [""] + lines[5:]


@pytest.fixture
def source(tmp_path, tiny_corpus):
    path = tmp_path / "in.en"
    path.write_text("\n".join(sentences(tiny_corpus)) + "\n", encoding="utf-8")
    return path


RUN_OPTIONS = {"device", "precision", "errors", "chunk_lines"}


def options(**changes) -> tuple[TranslateConfig, dict]:
    """Beam 2 on the CPU, chunks of 4 lines; other keywords change search keys."""
    run = {
        "device": "cpu",
        "chunk_lines": 4,
        **{k: v for k, v in changes.items() if k in RUN_OPTIONS},
    }
    search = {"beam_size": 2, **{k: v for k, v in changes.items() if k not in RUN_OPTIONS}}
    return TranslateConfig(**run), search


def reference(trained_run, source, tmp_path, **changes) -> str:
    out = tmp_path / "reference.txt"
    translate_file(trained_run, str(source), str(out), *options(**changes), **QUIET)
    return out.read_text(encoding="utf-8")


def test_several_files_and_a_folder_go_to_an_output_folder(tmp_path, trained_run, source):
    expected = reference(trained_run, source, tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.en").write_bytes(source.read_bytes())
    (inputs / "b.en").write_text("The dog sleeps.\n", encoding="utf-8")
    result = translate_files(trained_run, [str(inputs)], str(tmp_path / "out"), *options(), **QUIET)
    assert result["files"] == 2
    assert (tmp_path / "out" / "a.en").read_text(encoding="utf-8") == expected
    assert len((tmp_path / "out" / "b.en").read_text().splitlines()) == 1
    translate_files(
        trained_run,
        [str(inputs / "a.en"), str(inputs / "b.en")],
        str(tmp_path / "out2"),
        *options(),
        **QUIET,
    )
    assert (tmp_path / "out2" / "a.en").read_text(encoding="utf-8") == expected
    with pytest.raises(UserError, match="same file name"):
        translate_files(
            trained_run,
            [str(inputs / "a.en"), str(inputs / "a.en")],
            str(tmp_path / "out3"),
            *options(),
            **QUIET,
        )


def test_n_best_lines_hold_hypotheses_and_scores(tmp_path, trained_run, source):
    best = reference(trained_run, source, tmp_path, beam_size=4).splitlines()
    out = tmp_path / "nbest.txt"
    translate_file(trained_run, str(source), str(out), *options(beam_size=4, n_best=3), **QUIET)
    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    sources = source.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(best) == len(sources)
    for line, one_best, src in zip(lines, best, sources):
        if not src.strip():
            assert line == ""
            continue
        fields = line.split("\t")
        assert len(fields) == 6
        assert fields[0] == one_best
        scores = [float(x) for x in fields[1::2]]
        assert scores == sorted(scores, reverse=True)


def test_an_interrupted_translation_resumes_after_its_last_chunk(
    tmp_path, trained_run, source, monkeypatch
):
    expected = reference(trained_run, source, tmp_path)
    out = tmp_path / "out.txt"
    original = outputs_module.FileSink.append
    calls = []

    def append_then_die(self, chunk, texts):
        if len(calls) == 2:
            self.files[0].write(b"half a chunk")  # as if killed mid-write
            raise KeyboardInterrupt
        calls.append(chunk)
        original(self, chunk, texts)

    monkeypatch.setattr(outputs_module.FileSink, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        translate_file(trained_run, str(source), str(out), *options(), **QUIET)
    assert not out.exists()
    assert (tmp_path / "out.txt.partial").is_file()
    monkeypatch.setattr(outputs_module.FileSink, "append", original)
    with pytest.raises(UserError, match="cannot resume, search changed"):
        translate_file(
            trained_run, str(source), str(out), *options(beam_size=3), **QUIET, resume=True
        )
    result = translate_file(trained_run, str(source), str(out), *options(), **QUIET, resume=True)
    assert out.read_text(encoding="utf-8") == expected
    assert result["sentences"] == len(sentences_in(source)) - 8  # two chunks were done
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out.txt"]


def sentences_in(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_out_of_memory_splits_the_batch(tmp_path, trained_run, source, monkeypatch):
    expected = reference(trained_run, source, tmp_path, batch_size=16)
    import seq2seq.decoding as decoding

    real_search = decoding.search
    sizes = []

    def small_device(model, src, *args, **kwargs):
        sizes.append(src.size(0))
        if src.size(0) > 3:
            raise torch.cuda.OutOfMemoryError("pretend the batch does not fit")
        return real_search(model, src, *args, **kwargs)

    monkeypatch.setattr(decoding, "search", small_device)
    out = tmp_path / "out.txt"
    translate_file(
        trained_run, str(source), str(out), *options(batch_size=16, chunk_lines=100), **QUIET
    )
    assert out.read_text(encoding="utf-8") == expected
    assert max(sizes) > 3 and sizes[-1] <= 3


def test_long_lines_are_cut_and_counted(tmp_path, trained_run):
    source = tmp_path / "long.en"
    source.write_text("The dog sleeps. " * 200 + "\nThe cat reads.\n", encoding="utf-8")
    messages = []
    translate_file(
        trained_run, str(source), str(tmp_path / "o.txt"), *options(), log=messages.append
    )
    assert any("1 line(s) longer than 250 pieces were cut" in m for m in messages)


def test_invalid_utf8_names_the_line_unless_replaced(tmp_path, trained_run):
    source = tmp_path / "bad.en"
    source.write_bytes(b"The dog sleeps.\nThe \xff cat.\n")
    with pytest.raises(UserError, match=r"bad\.en:2: invalid UTF-8"):
        translate_file(trained_run, str(source), str(tmp_path / "o.txt"), *options(), **QUIET)
    assert not (tmp_path / "o.txt").exists()
    translate_file(
        trained_run, str(source), str(tmp_path / "o.txt"), *options(errors="replace"), **QUIET
    )
    assert len((tmp_path / "o.txt").read_text().splitlines()) == 2


def test_two_torchrun_ranks_merge_in_input_order(tmp_path, trained_run, source):
    expected = reference(trained_run, source, tmp_path, chunk_lines=3)
    out = tmp_path / "ranks.txt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "cli.py"),
        "translate",
        "-m",
        str(trained_run),
        "-i",
        str(source),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--beam-size",
        "2",
        "--chunk-lines",
        "3",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_text(encoding="utf-8") == expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ranks")) == ["ranks.txt"]


def test_length_penalty_option_overrides_the_checkpoint_and_is_checked(trained_run):
    from pipelines.translator import Translator

    plain = Translator(trained_run, "cpu").search
    changed = Translator(trained_run, "cpu", length_penalty=plain.length_penalty + 1.5).search
    assert changed.length_penalty == plain.length_penalty + 1.5
    assert changed.beam_size == plain.beam_size
    with pytest.raises(UserError, match="search.length_penalty"):
        Translator(trained_run, "cpu", length_penalty=-1.0)


def test_stdout_cannot_take_the_output_of_several_ranks(tmp_path, trained_run):
    """Under torchrun every rank would print its share to one stdout: refused up front."""
    from pipelines.outputs import plan_jobs

    source = tmp_path / "in.en"
    source.write_text("The dog sleeps.\n")
    model = [trained_run / "model" / "best.safetensors"]
    assert plan_jobs([str(source)], "-", None, False, model, world=1).jobs[0].output == "-"
    with pytest.raises(UserError, match="cannot take the output of several ranks"):
        plan_jobs([str(source)], "-", None, False, model, world=2)


def _read_until(fd: int, marker, seen: bytearray, seconds: float = 120) -> None:
    """Read `fd` into `seen` until `marker` is there, or with an int, until `seen` holds
    that many lines (a failure after `seconds`)."""
    import os
    import select
    import time

    deadline = time.monotonic() + seconds
    while (seen.count(b"\n") < marker) if isinstance(marker, int) else (marker not in seen):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"waited for {marker!r}; got {bytes(seen)[-300:]!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a terminal whose other end closed
            chunk = b""
        assert chunk, f"{marker!r} never came; got {bytes(seen)[-300:]!r}"
        seen += chunk


def test_a_person_at_a_terminal_gets_a_prompt_and_no_redrawn_progress(trained_run):
    """stdin and stderr on a terminal, as when someone types: each line is answered at
    once after a prompt, and nothing is drawn over the typing."""
    import os
    import pty

    main, terminal = pty.openpty()
    command = [sys.executable, "cli.py", "translate", "-m", str(trained_run), "-i", "-", "-o", "-"]
    process = subprocess.Popen(
        [*command, "--device", "cpu"], stdin=terminal, stderr=terminal, stdout=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    os.close(terminal)
    shown, answers = bytearray(), bytearray()
    try:
        _read_until(main, b"> ", shown)
        for n, sentence in enumerate((b"The dog sleeps.", b"The old man sees the dog."), 1):
            os.write(main, sentence + b"\n")
            _read_until(process.stdout.fileno(), n, answers)  # answered at once
            _read_until(main, sentence + b"\r\n> ", shown)
        os.write(main, b"A dog\x04")  # Ctrl-D in the middle of a line, then to end
        os.write(main, b"\x04")
        _read_until(process.stdout.fileno(), 3, answers)  # the last line answered
        assert process.wait(timeout=60) == 0
        _read_until(main, b"A dog\r\n", shown)  # the answer went below, not after the text
    finally:
        process.kill()
        os.close(main)
    assert b"\x1b[2K" not in shown  # rich's redraw, which erased typed text


def test_output_piped_away_stays_out_of_the_terminal(trained_run, tiny_corpus):
    """stderr on a terminal shows progress; the translation still goes to stdout (rich
    used to send it to the terminal, above its bar, leaving the redirected output empty)."""
    import os
    import pty

    lines = (tiny_corpus / "test.en").read_bytes()
    main, terminal = pty.openpty()
    command = [sys.executable, "cli.py", "translate", "-m", str(trained_run), "-i", "-", "-o", "-"]
    process = subprocess.Popen(
        [*command, "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=terminal, cwd=ROOT,
    )  # fmt: skip
    os.close(terminal)
    shown = bytearray()  # what the terminal shows, read as it comes so that it never fills

    def drain():
        with contextlib.suppress(OSError):
            while chunk := os.read(main, 4096):
                shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = process.communicate(lines, timeout=300)
    finally:
        os.close(main)
    assert process.returncode == 0
    assert len(out.splitlines()) == len(lines.splitlines())
