"""Where outputs go: cases generated for every command that writes.

- an output that is, or resolves to, an input (or a file a run folder keeps, a temporary
  file of the same run, the file a standard stream is connected to, or a folder inside the
  input folder), and standard output appended to an input
- destinations that cannot be written (a file for a folder, a missing or read-only folder,
  a special file system, a disk that fills up)
- a failed run leaves nothing new (one bad input among many, sizes beyond memory)
- messages that name the user's path (a name ending in "/", a damaged tokenizer inside a
  checkpoint, a staging folder)

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import seq2seq.io as io_module
from seq2seq.checkpoint import read_safetensors, write_safetensors

from .conftest import ROOT, TINY_CONFIG, copy_run
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


KEPT = ["spm.model", "manifest.json", "data/test.de", "model/train_state.safetensors",
        "model/best-6.safetensors", "model/last.safetensors", "train_log.jsonl", "config.yaml",
        "train_runs.jsonl", "train.log", "learning_curve.png"]  # fmt: skip
WRITERS = {
    "translate": ["translate", "-m", "one.safetensors", "-i", "in.en", "-o"],
    "average": ["average", "one.safetensors", "two.safetensors", "-o"],
    "plot-attention": ["plot-attention", "in.align", "-o"],
}


@pytest.mark.parametrize("run", [f"{HERE}/run", "run", "inbox/../run/data/..", "linked_run"])
@pytest.mark.parametrize("command", list(WRITERS))
@pytest.mark.parametrize("kept", KEPT)
def test_no_output_lands_on_what_a_run_folder_keeps(world, kept, command, run, monkeypatch):
    """A run folder's manifest, SentencePiece model, data, checkpoints, training state,
    config, logs and records are read or kept by later stages: no command writes over them,
    however named (through a link to the run folder too)."""
    monkeypatch.chdir(world)
    if not (world / "linked_run").exists():
        (world / "linked_run").symlink_to(world / "run")
    args = resolve([*WRITERS[command], f"{run}/{kept}"], world)
    refused_and_untouched(world, args, r"the run folder .* keeps this file")


@pytest.mark.parametrize(
    "command, output",
    [("average", "model/averaged.safetensors"), ("translate", "translations/test.de"),
     ("plot-attention", "attention.png")],
)  # fmt: skip
def test_what_a_run_folder_is_meant_to_take_is_written(world, tmp_path, command, output):
    """The documented places: an average beside the checkpoints, a translation, a plot."""
    run = copy_run(world / "run", tmp_path / "run")
    (run / "translations").mkdir(exist_ok=True)
    args = [str(world / a) if "." in a else a for a in WRITERS[command]]
    result = invoke([*args, run / output])
    assert result.exit_code == 0, result.output
    assert (run / output).stat().st_size > 0


def temporary_cases() -> list[tuple[str, list]]:
    """Inputs and outputs that are the temporary files (`.partial`, its progress, the lock)
    of an output of the same run, however spelled."""
    cases = []
    for out in ["out.de", f"{HERE}/out.de", "./out.de", "inbox/../out.de"]:
        for temporary in ["out.de.partial", "out.de.partial.progress", ".out.de.lock"]:
            cases.append((f"-i {temporary} -o {out}", ["-i", temporary, "-o", out]))
        cases += [
            (f"--alignments {out}.partial", ["-i", "in.en", "-o", "out.de", "--alignments",
                                             f"{out}.partial"]),
            (f"-o {out}.partial --alignments out.de", ["-i", "in.en", "-o", f"{out}.partial",
                                                       "--alignments", "out.de"]),
        ]  # fmt: skip
    return cases


TEMPORARIES = temporary_cases()


@pytest.mark.parametrize("args", [a for _, a in TEMPORARIES], ids=[n for n, _ in TEMPORARIES])
def test_an_output_whose_temporary_files_are_inputs_or_outputs_is_refused(
    world, tmp_path, args, monkeypatch
):
    for name in ["in.en", "out.de.partial", "out.de.partial.progress", ".out.de.lock"]:
        shutil.copy(world / "in.en", tmp_path / name)
    (tmp_path / "inbox").mkdir()
    monkeypatch.chdir(tmp_path)
    model = ["translate", "-m", world / "run"]
    refused_and_untouched(tmp_path, model + resolve(args, tmp_path), r"over the input|named twice")


@contextlib.contextmanager
def connected(fd: int, path: Path):
    """This process's standard input (0) or output (1) connected to `path` for the block, as
    a shell's `< path` or `>> path` does."""
    saved, opened = os.dup(fd), os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_APPEND)
    os.dup2(opened, fd)
    os.close(opened)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def stream_cases() -> list[tuple[str, list, dict]]:
    """A command, and the files its standard streams are connected to: an input it reads, its
    own output (or both streams on one file), named by one of the file's spellings."""
    translate = ["translate", "-m", "run"]
    cases = []
    for f in ["f.en", "hard.en", "link.en"]:  # links to f.en
        cases += [
            (f"translate -o - >> {f}", [*translate, "-i", "f.en", "-o", "-"], {1: f}),
            (f"translate -o out.de >> {f}", [*translate, "-i", "f.en", "-o", "out.de"], {1: f}),
            (f"translate -i - < {f} -o f.en", [*translate, "-i", "-", "-o", "f.en"], {0: f}),
            (f"translate -i - -o - < {f} >> {f}", [*translate, "-i", "-", "-o", "-"], {0: f, 1: f}),
            (f"translate -o f.en >> {f}", [*translate, "-i", "in.en", "-o", "f.en"], {1: f}),
            (f"score -H f.en >> {f}", ["score", "-H", "f.en", "-r", "in.en", "--json"], {1: f}),
            (f"score -H - < {f} >> {f}", ["score", "-H", "-", "-r", "in.en"], {0: f, 1: f}),
        ]
    cases += [
        ("translate >> the model", [*translate, "-i", "in.en", "-o", "x.de"],
         {1: "run/model/best.safetensors"}),
        ("average >> an input", ["average", "one.safetensors", "two.safetensors", "-o", "a.st"],
         {1: "two.safetensors"}),
        ("plot-attention >> its input", ["plot-attention", "in.align", "-o", "a.png"],
         {1: "in.align"}),
        ("plot-attention < its output", ["plot-attention", "in.align", "-o", "f.en"], {0: "f.en"}),
        ("train >> run/train.log", ["train", "tiny.yaml", "--run-dir", "run"],
         {1: "run/train.log"}),
        ("train >> run/data/train.en", ["train", "tiny.yaml", "--run-dir", "run"],
         {1: "run/data/train.en"}),
        ("preprocess >> its corpus", ["preprocess", "tiny.yaml", "--run-dir", "new"],
         {1: "corpus/train.en"}),
    ]  # fmt: skip
    return cases


STREAMS = stream_cases()


@pytest.fixture(scope="module")
def desk(world, tmp_path_factory):
    """A copy of the workspace's files that the stream cases name (links to f.en too)."""
    root = tmp_path_factory.mktemp("desk")
    for name in ["in.en", "in.align", "one.safetensors", "two.safetensors"]:
        shutil.copy(world / name, root / name)
    shutil.copy(world / "in.en", root / "f.en")
    os.link(root / "f.en", root / "hard.en")
    (root / "link.en").symlink_to(root / "f.en")
    copy_run(world / "run", root / "run")
    corpus = shutil.copytree(world / "corpus", root / "corpus")
    (root / "tiny.yaml").write_text(TINY_CONFIG.format(corpus=corpus))
    return root


@pytest.mark.parametrize("args, streams", [c[1:] for c in STREAMS], ids=[c[0] for c in STREAMS])
def test_a_standard_stream_on_an_input_or_the_output_is_refused(desk, args, streams, monkeypatch):
    """`-o - >> input` would translate its own output forever; `-i - < output` would replace
    its input; a log line appended to a checkpoint would break it."""
    monkeypatch.chdir(desk)
    with contextlib.ExitStack() as redirected:
        for fd, name in streams.items():
            redirected.enter_context(connected(fd, desk / name))
        before = snapshot(desk)
        result = invoke(args)
    assert_refused(result, r"standard output goes to|the file on std(in|out)")
    assert snapshot(desk) == before


def test_the_shell_redirections_of_the_issue_are_refused(world, tmp_path):
    """As a shell runs them: `-o - >> f.en` and `-i - < f.en -o f.en`."""
    f = shutil.copy(world / "in.en", tmp_path / "f.en")
    nmt = [sys.executable, str(ROOT / "cli.py"), "translate", "-m", str(world / "run")]
    with open(f, "ab") as appended:
        result = subprocess.run([*nmt, "-i", f, "-o", "-"], stdout=appended, stderr=subprocess.PIPE,
                                text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and f"standard output goes to {f}, which" in result.stderr
    with open(f, "rb") as read:
        result = subprocess.run([*nmt, "-i", "-", "-o", f], stdin=read, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "is the file on stdin" in result.stderr
    assert f.read_bytes() == (world / "in.en").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.en"]


# --- messages that name the user's path -----------------------------------------------------

SLASHED = [  # a name ending in "/" is a folder: never a file of that name
    ["translate", "-m", "run", "-i", "in.en", "-o", "new/"],
    ["translate", "-m", "run", "-i", "-", "-o", "new/"],
    ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--alignments", "new/"],
    ["average", "one.safetensors", "two.safetensors", "-o", "new/"],
    ["plot-attention", "in.align", "-o", "new/"],
]


@pytest.mark.parametrize("name", ["new/", "a_file/", f"{HERE}/new/", "inbox/../new/"])
@pytest.mark.parametrize("args", SLASHED, ids=lambda a: " ".join(a[:1] + a[3:]))
def test_a_name_ending_in_a_slash_names_a_folder(world, args, name, monkeypatch):
    monkeypatch.chdir(world)
    args = resolve([name if a == "new/" else a for a in args], world)
    refused_and_untouched(world, args, re.escape(args[-1].rstrip("/")), input="The dog.\n")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_tokenizer_inside_a_checkpoint_names_the_checkpoint(world, tmp_path, damage):
    tensors, metadata = read_safetensors(world / "one.safetensors")
    proto = bytes(tensors["tokenizer.src"].numpy())
    bad = {"garbage": b"\x07not a model" * 9, "truncated": proto[: len(proto) // 3], "empty": b""}
    tensors["tokenizer.src"] = torch.tensor(list(bad[damage]), dtype=torch.uint8)
    checkpoint = tmp_path / "bad.safetensors"
    write_safetensors(checkpoint, tensors, metadata)
    for args in (
        ["translate", "-m", checkpoint, "-i", world / "in.en", "-o", tmp_path / "x.de"],
        ["average", world / "one.safetensors", checkpoint, "-o", tmp_path / "avg.safetensors"],
    ):
        where = re.escape(f"{checkpoint} (its SentencePiece model): ")
        assert_refused(invoke(args), rf"^error: {where}(not a valid SentencePiece|has no pad)")


def test_a_failed_preprocess_names_the_run_folder_not_its_staging_folder(
    world, tmp_path, monkeypatch
):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    run = tmp_path / "runs" / "new"
    line = assert_refused(invoke(["preprocess", world / "tiny.yaml", "--run-dir", run]))
    assert line.startswith(f"error: {run}/") and "No space left" in line, line
    assert ".preprocess." not in line
    assert list(tmp_path.iterdir()) == []  # nor the folders made for it


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
        assert_refused(result, rf"{re.escape(str(out))}/(one\.de|two\.de): cannot write \(No space")
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
