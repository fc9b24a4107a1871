"""Where outputs go: cases generated for every command that writes.

- an output that is, or resolves to, an input (or a file a run folder keeps, or a folder
  inside the input folder)
- destinations that cannot be written (a file for a folder, a missing or read-only folder,
  a special file system, a disk that fills up)
- a failed run leaves nothing new (one bad input among many, sizes beyond memory)

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import seq2seq.io as io_module

from .conftest import TINY_CONFIG, copy_run
from .workspace import (
    HERE,
    SENTENCES,
    assert_refused,
    invoke,
    refused_and_untouched,
    resolve,
    snapshot,
    spellings,
)

# --- an output that is, or resolves to, an input --------------------------------------------


def output_is_input_cases() -> list[tuple[str, list]]:
    run = "run"
    cases = []
    for spelled in spellings("in.en"):
        cases.append((f"translate -o {spelled}", ["-i", "in.en", "-o", spelled]))
        cases.append(
            (f"translate --alignments {spelled}", ["-i", "in.en", "-o", "x.de", "--alignments",
                                                   spelled])
        )  # fmt: skip
    for spelled in spellings("in.de"):
        cases.append((f"alignments = output {spelled}", ["-i", "in.en", "-o", "in.de",
                                                         "--alignments", spelled]))  # fmt: skip
    for folder in ["inbox", f"{HERE}/inbox", "./inbox", "inbox/"]:
        cases.append((f"folder into itself {folder}", ["-i", "inbox", "-o", folder]))
    cases.append(("-o the model", ["-i", "in.en", "-o", f"{HERE}/run/model/best.safetensors"]))
    translate = [(name, ["translate", "-m", run, *args, "--device", "cpu"]) for name, args in cases]
    average = [
        (f"average -o {s}", ["average", "one.safetensors", "two.safetensors", "-o", s])
        for s in spellings("one.safetensors")
    ]
    plot = [
        (f"plot-attention -o {s}", ["plot-attention", "in.align", "-o", s])
        for s in spellings("in.align")
    ]
    return translate + average + plot


OUTPUT_IS_INPUT = output_is_input_cases()


@pytest.mark.parametrize(
    "args", [a for _, a in OUTPUT_IS_INPUT], ids=[n for n, _ in OUTPUT_IS_INPUT]
)
def test_an_output_that_names_an_input_is_refused(world, args, monkeypatch):
    monkeypatch.chdir(world)
    refused_and_untouched(world, resolve(args, world), r"is the input|named twice")


def test_preprocess_refuses_a_run_folder_where_its_corpus_lives(world, tmp_path, monkeypatch):
    """A corpus that is a run's data/ folder, preprocessed into that run: outputs on inputs."""
    monkeypatch.chdir(world)
    data = world / "run" / "data"
    for run_dir in [world / "run", "run", "./run/../run"]:
        refused_and_untouched(
            world,
            ["preprocess", "tiny.yaml", "--run-dir", run_dir, f"--data.path={data}"],
            r"where preprocess writes",
        )


def test_preprocess_refuses_a_run_whose_data_folder_links_to_the_corpus(world, tmp_path):
    """run/data a symbolic link to the corpus folder: writing data/ would write the corpus."""
    run = tmp_path / "linked"
    run.mkdir()
    (run / "data").symlink_to(world / "corpus")
    for path in [run / "data", world / "corpus"]:
        refused_and_untouched(
            world,
            ["preprocess", world / "tiny.yaml", "--run-dir", run, f"--data.path={path}"],
            r"where preprocess writes",
        )


@pytest.mark.parametrize(
    "kept",
    ["spm.model", "manifest.json", "data/test.de", "model/train_state.safetensors",
     "model/best-6.safetensors", "model/last.safetensors", "train_log.jsonl"],
)  # fmt: skip
def test_no_output_lands_on_what_a_run_folder_keeps(world, kept):
    """A run folder's manifest, SentencePiece model, data and training files are read by
    later stages: translate and average refuse to write over them, however named."""
    target = world / "run" / kept
    refused_and_untouched(
        world,
        ["translate", "-m", world / "one.safetensors", "-i", world / "in.en", "-o", target],
        r"the run folder .* keeps this file",
    )
    refused_and_untouched(
        world,
        ["average", world / "one.safetensors", world / "two.safetensors", "-o", target],
        r"the run folder .* keeps this file",
    )


def test_a_folder_translates_into_a_folder_inside_it_without_touching_itself(world, tmp_path):
    """Subfolders are not inputs, so an output folder inside the input folder is safe, and a
    second run does not translate the first run's outputs."""
    inbox = shutil.copytree(world / "inbox", tmp_path / "inbox")
    before = {p.name: p.read_bytes() for p in inbox.iterdir()}
    for _ in range(2):
        result = invoke(["translate", "-m", world / "run", "-i", inbox, "-o", inbox / "out"])
        assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in inbox.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in (inbox / "out").iterdir()) == ["a.en", "b.en"]


# --- destinations that cannot be written ----------------------------------------------------


def destination_cases() -> list[tuple[str, list, str]]:
    run = "run"
    bad_folders = [  # (a folder name that cannot be one, what the message says)
        ("a_file", "not a folder"),
        ("a_file/sub", "not a folder"),
        ("/proc/nmt", "special file system"),
    ]
    bad_files = [
        ("inbox", "is a folder"),
        ("a_file/out.de", "not a folder"),
        ("missing/out.de", "does not exist"),
        ("/dev/null", "not a regular file"),
        ("/proc/out.de", "special file system|not a regular|does not exist"),
    ]
    cases = []
    for folder, says in bad_folders:
        for command in ("preprocess", "train", "pipeline"):
            cases.append((f"{command} --run-dir {folder}",
                          [command, "tiny.yaml", "--run-dir", folder], says))  # fmt: skip
        cases.append((f"translate folder -o {folder}", ["translate", "-m", run, "-i", "inbox",
                                                          "-o", folder], says))  # fmt: skip
    for file, says in bad_files:
        if file != "inbox":  # a folder takes a translated file under its own name
            cases.append(
                (f"translate -o {file}", ["translate", "-m", run, "-i", "in.en", "-o", file], says)
            )
        cases += [
            (f"translate --alignments {file}", ["translate", "-m", run, "-i", "in.en", "-o",
                                                "x.de", "--alignments", file], says),
            (f"average -o {file}", ["average", "one.safetensors", "-o", file], says),
            (f"plot-attention -o {file}", ["plot-attention", "in.align", "-o", file], says),
        ]  # fmt: skip
    return cases


DESTINATIONS = destination_cases()


@pytest.mark.parametrize(
    "args, says", [c[1:] for c in DESTINATIONS], ids=[c[0] for c in DESTINATIONS]
)
def test_a_destination_that_cannot_be_written_is_refused_up_front(world, args, says, monkeypatch):
    monkeypatch.chdir(world)
    refused_and_untouched(world, args, says)


@pytest.mark.parametrize(
    "args",
    [
        ["preprocess", "tiny.yaml", "--run-dir", "locked/run"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "locked/out.de"],
        ["translate", "-m", "run", "-i", "inbox", "-o", "locked/outbox"],
        ["average", "one.safetensors", "-o", "locked/avg.safetensors"],
        ["plot-attention", "in.align", "-o", "locked/a.png"],
    ],
    ids=lambda a: a[0] + " " + a[-1],
)
def test_a_read_only_folder_is_refused_up_front(world, args, monkeypatch):
    """Tests run as root here, who may write anywhere: the folder is made read-only for the
    permission check itself."""
    locked = world / "locked"
    locked.mkdir(exist_ok=True)
    real_access = os.access

    def access(path, mode, **kwargs):
        if Path(path).resolve() == locked.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(io_module.os, "access", access)
    monkeypatch.chdir(world)
    refused_and_untouched(world, args, "cannot write")


def test_a_write_that_fails_anyway_is_one_line(world, monkeypatch):
    """A file system that fails after the checks (a full disk, say): one line, exit 2."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/file")

    monkeypatch.setattr("pipelines.plots._save", full)
    monkeypatch.chdir(world)
    line = refused_and_untouched(world, ["plot-attention", "in.align", "-o", "a.png"])
    assert "No space left on device" in line


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(world, tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    out.mkdir()
    for args in (["-o", out / "one.de"], ["--alignments", out / "a.json", "-o", out / "two.de"]):
        result = invoke(["translate", "-m", world / "run", "-i", world / "in.en", *args])
        assert_refused(result, rf"{re.escape(str(out))}/\S+: cannot write \(No space left")
    assert list(out.iterdir()) == []


# --- a failed run leaves nothing new --------------------------------------------------------

BAD_TEXT = {
    "invalid UTF-8": b"The dog.\nbad \xff byte\n",
    "NUL byte": b"The dog.\n\x00\x01\n",
    "broken gzip": gzip.compress(b"The dog.\nThe cat.\n")[:-12],
}


@pytest.mark.parametrize("bad", list(BAD_TEXT))
@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "existing folder"])
def test_a_multi_file_run_with_one_bad_input_leaves_nothing_new(
    world, tmp_path, bad, position, existing, monkeypatch
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = ["a.en", "b.en", "c.en"]
    bad_name = {"first": "a.en", "middle": "b.en", "last": "c.en"}[position]
    for name in names:
        data = BAD_TEXT[bad] if name == bad_name else "".join(s + "\n" for s in SENTENCES).encode()
        (inbox / name).write_bytes(data)
    outbox = tmp_path / "outbox"
    if existing:
        outbox.mkdir()
        (outbox / "keep.txt").write_text("an earlier result\n")
    before = snapshot(tmp_path)
    result = invoke(["translate", "-m", world / "run", "-i", inbox, "-o", outbox])
    assert_refused(result, re.escape(bad_name))
    assert snapshot(tmp_path) == before
    many = ["translate", "-m", world / "run", "-o", outbox]
    for name in names:
        many += ["-i", inbox / name]
    assert_refused(invoke(many), re.escape(bad_name))
    assert snapshot(tmp_path) == before


def test_a_failed_preprocess_leaves_the_earlier_run_as_it_was(world, tmp_path):
    corpus = shutil.copytree(world / "corpus", tmp_path / "corpus")
    run = shutil.copytree(world / "run", tmp_path / "run")
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG.format(corpus=corpus))
    for split in ("train", "dev", "test"):
        original = (corpus / f"{split}.de").read_bytes()
        (corpus / f"{split}.de").write_bytes(original + b"bad \xff\n")
        before = snapshot(tmp_path / "run")
        assert_refused(invoke(["preprocess", config, "--run-dir", run]), rf"{split}\.de")
        assert snapshot(tmp_path / "run") == before
        (corpus / f"{split}.de").write_bytes(original)


def test_sizes_beyond_memory_are_one_line_and_leave_nothing(world, tmp_path, monkeypatch):
    """An allocation that fails (a search limit or a model too big for the machine) is the
    user's size, not a bug. The failures are injected as torch raises them, so that no test
    machine has to run out of memory for real."""
    import pipelines.train as train_module
    import seq2seq.search as search_module

    def host_full(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 39999999836200 bytes. Error code 12 (Cannot "
            "allocate memory)"
        )

    def gpu_full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)")

    monkeypatch.setattr(search_module, "beam_search", host_full)
    refused_and_untouched(
        world,
        ["translate", "-m", world / "run", "-i", world / "in.en", "-o", world / "huge.de"],
        r"out of memory \(39999999836200 bytes asked for\); .* max_len_b",
    )
    monkeypatch.setattr(train_module, "Seq2Seq", gpu_full)
    run = copy_run(world / "run", tmp_path / "run", untrained=True)
    before = snapshot(run)
    result = invoke(["train", world / "tiny.yaml", "--run-dir", run])
    assert_refused(result, r"out of memory \(20.00 GiB asked for\)")
    assert snapshot(run) == before
