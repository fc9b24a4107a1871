"""Nothing lost, no tracebacks: cases generated per class of failure, for every command.

1. an output that is, or resolves to, an input      5. one message, one line
2. destinations that cannot be written              6. a failed multi-file run leaves nothing
3. numbers as people write them, and non-finite     7. standard streams in every combination
4. a diverging run never publishes bad weights      8. every text input read the same way

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import seq2seq.io as io_module
from cli import app
from pipelines.layout import RunFolder
from pipelines.train import train
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import Config, from_dict, load_config, to_dict
from seq2seq.errors import UserError

from .conftest import ROOT, TINY_CONFIG, copy_run

PROGRESS = re.compile(r"^train \| \d+/\d+ steps")  # the plain progress line off a terminal

runner = CliRunner()
SENTENCES = ["The dog sleeps.", "The old man sees the cat.", "", "A woman reads a book."]


def invoke(args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def snapshot(root: Path) -> dict:
    """Every file under `root` with its bytes and time stamp (links as their target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[path.relative_to(root)] = ("link", os.readlink(path))
        elif path.is_file():
            found[path.relative_to(root)] = (path.stat().st_mtime_ns, path.read_bytes())
        elif path.is_dir():
            found[path.relative_to(root)] = "folder"
    return found


def assert_refused(result, pattern: str = "") -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error"), lines[0]
    assert "Traceback" not in result.output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def refused_and_untouched(root: Path, args, pattern: str = "", input=None) -> str:
    before = snapshot(root)
    result = invoke(args, input=input)
    line = assert_refused(result, pattern)
    assert snapshot(root) == before, "files were created or changed"
    return line


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_corpus, trained_run):
    """A workspace: corpus, config, trained run, an alignments file and some texts."""
    root = tmp_path_factory.mktemp("reliability")
    corpus = shutil.copytree(tiny_corpus, root / "corpus")
    (root / "tiny.yaml").write_text(TINY_CONFIG.format(corpus=corpus), encoding="utf-8")
    # Trained a little longer than the shared run, so that its translations are not empty.
    run = copy_run(trained_run, root / "run", untrained=True)
    overrides = ["--train.max_steps=80", "--train.validate_every=40", "--train.lr=0.01"]
    train(load_config(root / "tiny.yaml", overrides), RunFolder(run), log=lambda _: None)
    (root / "in.en").write_text("".join(s + "\n" for s in SENTENCES), encoding="utf-8")
    (root / "inbox").mkdir()
    for name in ("a.en", "b.en"):
        shutil.copy(root / "in.en", root / "inbox" / name)
    os.symlink(root / "in.en", root / "link.en")
    os.link(root / "in.en", root / "hard.en")
    (root / "a_file").write_text("not a folder\n")
    checkpoint = run / "model" / "best.safetensors"
    shutil.copy(checkpoint, root / "one.safetensors")
    shutil.copy(checkpoint, root / "two.safetensors")
    result = invoke(
        ["translate", "-m", run, "-i", root / "in.en", "-o", root / "in.de", "--alignments",
         root / "in.align", "--device", "cpu"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all((root / "in.de").read_text().splitlines()[i] for i in (0, 1, 3))
    return root


HERE = "@"  # stands for the workspace's absolute path in the cases, filled in by `resolve`


def resolve(args: list, root: Path) -> list[str]:
    return [str(a).replace(HERE, str(root)) for a in args]


def spellings(name: str) -> list[str]:
    """Ways to name the workspace's file `name`: relative, absolute, with . and .., a
    symbolic link, a hard link (the last two exist for in.en only)."""
    names = [name, f"{HERE}/{name}", f"./{name}", f"inbox/../{name}"]
    if name == "in.en":
        names += ["link.en", "hard.en"]
    return names


# --- 1. an output that is, or resolves to, an input -----------------------------------------


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


# --- 2. destinations that cannot be written -------------------------------------------------


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


# --- 3. numbers as people write them --------------------------------------------------------


def numeric_keys(cls=Config, prefix="") -> list[tuple[str, type, object]]:
    """Every int and float key of the config tree: (dotted key, type, default)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        tp, default = hints[field.name], getattr(cls(), field.name)
        if dataclasses.is_dataclass(tp):
            keys += numeric_keys(tp, key + ".")
        elif tp in (int, float):
            keys.append((key, tp, default))
    return keys


def exponent_spellings(value: float) -> list[str]:
    """The same number as people write it with exponents: 1e-3, 1E-3, 1.0e-3, +1e-3."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    exponent = int(exponent)
    return [f"{mantissa}e{exponent}", f"{mantissa}E{exponent}", f"{float(mantissa)}e{exponent}",
            f"+{mantissa}e{exponent}"]  # fmt: skip


FLOAT_KEYS = [(k, d) for k, tp, d in numeric_keys() if tp is float]
NUMERIC_KEYS = [k for k, _, _ in numeric_keys()]
NON_FINITE = ["nan", ".nan", "NaN", "inf", ".inf", "-.inf", "Infinity", "-inf"]


def test_every_float_key_is_found():
    assert {"train.lr", "train.min_lr", "search.length_penalty"} <= {k for k, _ in FLOAT_KEYS}


@pytest.mark.parametrize("key, default", FLOAT_KEYS, ids=[k for k, _ in FLOAT_KEYS])
def test_every_float_key_takes_exponent_spellings_in_yaml_and_overrides(tmp_path, key, default):
    value = default if default else 0.5
    if key.endswith("max_ratio") or key.endswith("max_len_a"):
        value = max(value, 1.5)
    section, *rest = key.split(".")
    for spelled in exponent_spellings(value):
        nested = spelled
        for part in reversed(rest):
            nested = {part: nested}
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({section: nested}) if rest else f"{key}: {spelled}\n")
        # JSON is YAML: the value is a string, as PyYAML reads 1e-3 from a file
        from_yaml = load_config(path)
        empty = tmp_path / "empty.yaml"
        empty.write_text("")
        from_override = load_config(empty, [f"--{key}={spelled}"])
        for config in (from_yaml, from_override):
            got = to_dict(config)
            for part in key.split("."):
                got = got[part]
            assert math.isclose(got, value), (spelled, got)


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_numeric_key_refuses_non_finite_values(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    for spelled in NON_FINITE:
        with pytest.raises(UserError, match=rf"'{re.escape(key)}': expected a finite number"):
            load_config(path, [f"--{key}={spelled}"])
    section, *rest = key.split(".")
    raw: dict = {}
    node = raw
    for part in [section, *rest[:-1]]:
        node = node.setdefault(part, {})
    node[(rest or [section])[-1]] = float("inf")
    with pytest.raises(UserError, match="expected a finite number"):
        from_dict(Config, raw)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "tiny.yaml", "--run-dir", "run", "--max-time", "inf"],
        ["train", "tiny.yaml", "--run-dir", "run", "--train.lr=.nan"],
        ["preprocess", "tiny.yaml", "--run-dir", "fresh", "--data.cleaning.max_ratio=.inf"],
        ["pipeline", "tiny.yaml", "--run-dir", "fresh", "--search.length_penalty=nan"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--length-penalty", "nan"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--search.max_len_a=inf"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--search.max_len_b=1e400"],
    ],
    ids=lambda a: a[0] + " " + " ".join(a[-2:]),
)
def test_non_finite_options_are_one_line_on_every_command(world, args, monkeypatch):
    monkeypatch.chdir(world)
    refused_and_untouched(world, args, "finite number")


def test_documented_defaults_work_as_overrides(world, monkeypatch):
    """docs/config.md's own spellings of numbers, given back on the command line, are
    accepted."""
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| `((?:data|model|train|search)\.[a-z_.]+)` \| `([-+0-9.e]+)` \|", page, re.M
    )
    overrides = [f"--{key}={value}" for key, value in rows]
    assert len(rows) > 20 and "--train.min_lr=1e-06" in overrides
    config = load_config(world / "tiny.yaml", overrides)
    assert config.train.min_lr == 1e-6


# --- 4. a diverging run never publishes bad weights -----------------------------------------


def strict_json_lines(path: Path) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"bare {constant} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def finite(path: Path) -> bool:
    state = load_checkpoint(path).model.state_dict()
    return all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("poison_at", [2, 9, 14])
@pytest.mark.parametrize("how", ["NaN weights", "inf loss"])
def test_a_diverging_run_never_writes_non_finite_weights(world, tmp_path, poison_at, how):
    """From step `poison_at` on (validations every 6 steps) the weights turn NaN, or every
    loss is infinite: the run stops in one line naming a checkpoint that is good (the best
    by dev BLEU), or saying there is none."""
    run = tmp_path / "run"
    shutil.copytree(world / "run", run, ignore=shutil.ignore_patterns("model", "*.jsonl"))
    driver = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import torch
import pipelines.train as tr
real_step, real_loss = tr.Trainer.train_step, tr.label_smoothed_nll
def poisoned(self, step):
    self.poisoned = self.state.step + 1 >= {poison_at}
    real_step(self, step)
    if {how == "NaN weights"!r} and self.poisoned:
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("nan"))
def infinite(log_probs, *args):
    loss, nll = real_loss(log_probs, *args)
    return (loss * float("inf"), nll) if log_probs.requires_grad and poisoning() else (loss, nll)
trainers = []
poisoning = lambda: trainers and getattr(trainers[0], "poisoned", False)
real_init = tr.Trainer.__init__
tr.Trainer.__init__ = lambda self, *a, **k: (trainers.append(self), real_init(self, *a, **k))[1]
tr.Trainer.train_step = poisoned
tr.label_smoothed_nll = infinite if {how == "inf loss"!r} else real_loss
sys.argv = ["nmt", "train", {str(world / "tiny.yaml")!r}, "--run-dir", {str(run)!r},
            "--train.max_steps=60", "--train.validate_every=6", "--train.log_every=1"]
from cli import app
app()
"""
    result = subprocess.run(
        [sys.executable, "-c", driver], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    # On a slow or busy machine training may also print its progress line (every 30 s)
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS.match(line)]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "diverged" in lines[0], lines
    for checkpoint in (run / "model").glob("*.safetensors"):
        if checkpoint.name != "train_state.safetensors":
            assert finite(checkpoint), checkpoint
    named = re.search(r"checkpoint is (\S+) \(dev BLEU", lines[0])
    if how == "NaN weights":  # only validations before the poison could save anything
        assert bool(named) == (poison_at > 6), lines[0]
    if named:
        assert finite(Path(named.group(1)))
    else:
        assert "no checkpoint" in lines[0]
    strict_json_lines(run / "train_log.jsonl")


# --- 5. one message, one line ---------------------------------------------------------------

COMMANDS = {
    "preprocess": ("pipelines.preprocess._build", ["preprocess", "tiny.yaml", "--run-dir", "p"]),
    "train": ("pipelines.train.Trainer.run", ["train", "tiny.yaml", "--run-dir", "run"]),
    "translate": ("pipelines.translate.Translator.search_chunk",
                  ["translate", "-m", "run", "-i", "in.en", "-o", "x.de"]),
    "score": ("pipelines.score.corpus_scores", ["score", "-H", "in.en", "-r", "in.en"]),
    "average": ("pipelines.average.average_checkpoints",
                ["average", "one.safetensors", "two.safetensors", "-o", "avg.safetensors"]),
    "plot-attention": ("pipelines.plots.draw_attention",
                       ["plot-attention", "in.align", "-o", "a.png"]),
    "pipeline": ("pipelines.preprocess._build", ["pipeline", "tiny.yaml", "--run-dir", "p"]),
}  # fmt: skip

LIBRARY_MESSAGES = [
    UserError("first line\nsecond line\n  third, indented"),
    UserError("ends with a newline\n"),
    OSError(20, "Not a directory", "/a/b\nc"),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("error", range(len(LIBRARY_MESSAGES)))
def test_every_command_prints_any_message_on_one_line(world, command, error, monkeypatch):
    target, args = COMMANDS[command]

    def fails(*_, **__):
        raise LIBRARY_MESSAGES[error]

    monkeypatch.setattr(target, fails)
    monkeypatch.chdir(world)
    before = snapshot(world)
    assert_refused(invoke(args))
    new = set(snapshot(world)) - set(before)
    assert not any(not str(p).startswith(("p", "x.de")) for p in new), new


def test_a_checkpoint_with_a_wrong_shape_is_one_line(world, tmp_path, monkeypatch):
    """torch's own message for a size mismatch spans lines."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source = world / "run" / "model" / "best.safetensors"
    with safe_open(str(source), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(source))
    name = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    monkeypatch.chdir(world)
    refused_and_untouched(world, ["translate", "-m", bad, "-i", "in.en", "-o", "x.de"], "match")
    refused_and_untouched(world, ["average", bad, "one.safetensors", "-o", "y.safetensors"])


# --- 6. a failed multi-file run leaves nothing new ------------------------------------------

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


# --- 7. standard streams in every combination ------------------------------------------------

INPUTS = {"file": "in.en", "folder": "inbox", "stdin": "-"}
OUTPUTS = {"file": "out.de", "folder": "outbox", "stdout": "-"}
# The output file and folder exist: a file is replaced, a folder filled (a single file
# goes into it under its own name, as cp does).
WORKS = {("file", "file"), ("file", "stdout"), ("stdin", "file"), ("stdin", "stdout"),
         ("folder", "folder"), ("file", "folder")}  # fmt: skip


@pytest.mark.parametrize("source", list(INPUTS))
@pytest.mark.parametrize("dest", list(OUTPUTS))
@pytest.mark.parametrize("aligned", [False, True], ids=["", "alignments"])
def test_every_pairing_of_files_folders_and_streams(
    world, tmp_path, source, dest, aligned, monkeypatch
):
    work = tmp_path / "work"
    shutil.copytree(world, work, ignore=shutil.ignore_patterns("run", "corpus"), symlinks=True)
    monkeypatch.chdir(work)
    Path("out.de").write_text("an earlier result\n")
    Path("outbox").mkdir()
    args = ["translate", "-m", world / "run", "-i", INPUTS[source], "-o", OUTPUTS[dest]]
    if aligned:
        args += ["--alignments", "out.align"]
    text = "".join(s + "\n" for s in SENTENCES)
    expected = (world / "in.de").read_text(encoding="utf-8")
    works = (source, dest) in WORKS and not (aligned and source == "folder")
    if not works:
        refused_and_untouched(work, args, input=text)
        return
    result = invoke(args, input=text)
    assert result.exit_code == 0, result.output
    if dest == "stdout":
        assert result.stdout == expected
    elif dest == "file":
        assert Path("out.de").read_text(encoding="utf-8") == expected
    else:
        names = ["a.en", "b.en"] if source == "folder" else ["in.en"]
        assert sorted(os.listdir("outbox")) == names
        assert all((Path("outbox") / n).read_text() == expected for n in names)
    if aligned:
        assert Path("out.align").read_text() == (world / "in.align").read_text()


def test_score_reads_hypotheses_or_references_from_stdin(world, monkeypatch):
    monkeypatch.chdir(world)
    plain = invoke(["score", "-H", "in.de", "-r", "in.de", "--json"])
    text = (world / "in.de").read_text(encoding="utf-8")
    for args in (["-H", "-", "-r", "in.de"], ["-H", "in.de", "-r", "-"]):
        result = invoke(["score", *args, "--json"], input=text)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == json.loads(plain.stdout)
    refused_and_untouched(world, ["score", "-H", "-", "-r", "-"], "stdin", input=text)


def test_lines_typed_one_at_a_time_are_answered_as_they_arrive(world):
    """A program writes a line and waits for its answer, as with fairseq-interactive."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "translate", "-m", str(world / "run"), "-i", "-",
         "-o", "-", "--device", "cpu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    expected = (world / "in.de").read_text(encoding="utf-8").splitlines()
    try:
        for sentence, translation in zip(SENTENCES, expected):
            process.stdin.write((sentence + "\n").encode())
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, f"no answer to {sentence!r} while the input stays open"
            assert process.stdout.readline().decode().rstrip("\n") == translation
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


# --- 8. every text input read the same way ---------------------------------------------------


def variants(text: str) -> dict[str, bytes]:
    """One text as editors and tools save it."""
    data = text.encode("utf-8")
    bom = b"\xef\xbb\xbf"
    return {
        "plain": data,
        "byte-order mark": bom + data,
        "CRLF": data.replace(b"\n", b"\r\n"),
        "BOM and CRLF": bom + data.replace(b"\n", b"\r\n"),
        "no final newline": data.rstrip(b"\n"),
        "gzip": gzip.compress(data),
        "gzip with BOM": gzip.compress(bom + data),
        "gzip padded with zeros": gzip.compress(data) + bytes(512),
        "gzip in two members": gzip.compress(data[:3]) + gzip.compress(data[3:]),
    }


VARIANTS = list(variants("x\n"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_score_reads_every_variant_like_the_plain_file(world, tmp_path, variant):
    text = (world / "in.de").read_text(encoding="utf-8")
    (tmp_path / "v.de").write_bytes(variants(text)[variant])
    plain = invoke(["score", "-H", world / "in.de", "-r", world / "in.de", "--json"])
    for args, input in ((["-H", tmp_path / "v.de", "-r", world / "in.de"], None),
                        (["-H", world / "in.de", "-r", tmp_path / "v.de"], None),
                        (["-H", "-", "-r", world / "in.de"], variants(text)[variant])):  # fmt: skip
        result = invoke(["score", *args, "--json"], input=input)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == json.loads(plain.stdout)


@pytest.mark.parametrize("variant", VARIANTS)
def test_translate_reads_every_variant_like_the_plain_file(world, tmp_path, variant):
    text = "".join(s + "\n" for s in SENTENCES)
    (tmp_path / "v.en").write_bytes(variants(text)[variant])
    for source, input in ((tmp_path / "v.en", None), ("-", variants(text)[variant])):
        result = invoke(["translate", "-m", world / "run", "-i", source, "-o", tmp_path / "o.de"],
                        input=input)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (tmp_path / "o.de").read_text() == (world / "in.de").read_text()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not v.startswith("gzip")])
@pytest.mark.parametrize("form", ["text", "tsv", "csv", "json"])
def test_preprocess_reads_every_variant_like_the_plain_file(world, tmp_path, variant, form):
    """The same corpus in each table format and spelling gives the same cleaned text."""
    corpus = world / "corpus"
    pairs = {
        split: list(zip(*(
            (corpus / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            for lang in ("en", "de")
        )))
        for split in ("train", "dev", "test")
    }  # fmt: skip
    folder = tmp_path / "corpus"
    folder.mkdir()
    overrides = []
    for split, rows in pairs.items():
        if form == "text":
            for i, lang in enumerate(("en", "de")):
                text = "".join(row[i] + "\n" for row in rows)
                (folder / f"{split}.{lang}").write_bytes(variants(text)[variant])
            continue
        if form == "json":
            text = "".join(json.dumps({"en": en, "de": de}) + "\n" for en, de in rows)
        elif form == "tsv":
            text = "en\tde\n" + "".join(f"{en}\t{de}\n" for en, de in rows)
        else:
            table = io.StringIO()
            csv.writer(table, lineterminator="\n").writerows([("en", "de"), *rows])
            text = table.getvalue()
        (folder / f"{split}.{form}").write_bytes(variants(text)[variant])
        overrides.append(f"--data.{split}={split}.{form}")
    if form != "text":
        overrides.append(f"--data.format={form}")
    config = tmp_path / "c.yaml"
    config.write_text(TINY_CONFIG.format(corpus=folder))
    result = invoke(["preprocess", config, "--run-dir", tmp_path / "run", *overrides])
    assert result.exit_code == 0, result.output
    for split in ("train", "dev", "test"):
        for lang in ("en", "de"):
            got = (tmp_path / "run" / "data" / f"{split}.{lang}").read_text(encoding="utf-8")
            want = (world / "run" / "data" / f"{split}.{lang}").read_text(encoding="utf-8")
            assert got == want, (split, lang)


def test_a_config_file_with_a_byte_order_mark_or_crlf_reads_the_same(world, tmp_path):
    text = (world / "tiny.yaml").read_text(encoding="utf-8")
    plain = load_config(world / "tiny.yaml")
    for variant in ("byte-order mark", "CRLF", "BOM and CRLF"):
        path = tmp_path / "tiny.yaml"
        path.write_bytes(variants(text)[variant])
        assert load_config(path) == plain


def test_plot_attention_reads_a_crlf_alignments_file(world, tmp_path):
    text = (world / "in.align").read_text(encoding="utf-8")
    for variant in ("byte-order mark", "CRLF", "gzip"):
        path = tmp_path / "v.align"
        path.write_bytes(variants(text)[variant])
        result = invoke(["plot-attention", path, "--line", 2, "-o", tmp_path / f"{variant}.png"])
        assert result.exit_code == 0, result.output


def test_stdin_waits_are_not_busy(world):
    """While the input is silent, an interactive run sleeps instead of spinning a core."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "translate", "-m", str(world / "run"), "-i", "-",
         "-o", "-", "--device", "cpu"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        process.stdin.write(b"The dog sleeps.\n")
        process.stdin.flush()
        select.select([process.stdout], [], [], 60)
        process.stdout.readline()
        before = _cpu_seconds(process.pid)
        time.sleep(1.0)
        assert _cpu_seconds(process.pid) - before < 0.3
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


INT_KEYS = [k for k, tp, _ in numeric_keys() if tp is int]


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_integer_key_refuses_numbers_no_tensor_holds(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    for spelled in ("1e100", "99999999999999999999999", "-1e30"):
        with pytest.raises(UserError, match=rf"'{re.escape(key)}': expected an integer below"):
            load_config(path, [f"--{key}={spelled}"])


@pytest.mark.parametrize("key", [k for k in NUMERIC_KEYS if k != "data.subwords.nbest_size"])
def test_no_numeric_key_but_nbest_size_takes_a_negative_number(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(UserError, match=re.escape(key)):
        load_config(path, [f"--{key}=-1"])


def test_a_beam_wider_than_the_target_vocabulary_is_refused(world):
    args = ["translate", "-m", world / "run", "-i", world / "in.en", "-o", world / "wide.de",
            "--beam-size", "100000"]  # fmt: skip
    refused_and_untouched(world, args, r"'search.beam_size': expected at most the target vocab")


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


def test_a_checkpoint_with_a_non_finite_weight_is_refused_by_every_reader(world, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source = world / "one.safetensors"
    with safe_open(source, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(source)
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[name][0] = float("nan")
    poisoned = tmp_path / "nan.safetensors"
    save_file(tensors, poisoned, metadata=metadata)
    pattern = r"nan\.safetensors: weight .* holds NaN or infinite values"
    for args in (
        ["translate", "-m", poisoned, "-i", world / "in.en", "-o", tmp_path / "out.de"],
        ["average", poisoned, world / "two.safetensors", "-o", tmp_path / "avg.safetensors"],
    ):
        refused_and_untouched(tmp_path, args, pattern)


def test_a_bare_nmt_shows_the_commands_and_no_empty_error():
    result = invoke([])
    assert "pipeline" in result.output and "translate" in result.output
    assert not result.stderr.strip().startswith("error")


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


@pytest.mark.parametrize("odd", ["broken link", "pipe"])
def test_a_folder_holding_something_that_is_not_a_file_is_refused(world, tmp_path, odd):
    inbox = tmp_path / "inbox"
    shutil.copytree(world / "inbox", inbox)
    if odd == "pipe":
        os.mkfifo(inbox / "c.en")
    else:
        (inbox / "c.en").symlink_to(tmp_path / "gone.en")
    (inbox / "sub").mkdir()  # a subfolder is not translated, and not an error
    args = ["translate", "-m", world / "run", "-i", inbox, "-o", tmp_path / "out"]
    refused_and_untouched(tmp_path, args, r"c\.en: not a regular file")


def test_a_corpus_with_a_split_both_plain_and_gzipped_is_refused(world, tmp_path):
    corpus = shutil.copytree(world / "corpus", tmp_path / "corpus")
    (corpus / "dev.de.gz").write_bytes(gzip.compress((corpus / "dev.de").read_bytes()))
    args = ["preprocess", world / "tiny.yaml", "--run-dir", tmp_path / "run",
            f"--data.path={corpus}"]  # fmt: skip
    refused_and_untouched(tmp_path, args, r"dev\.de: both it and dev\.de\.gz exist")


@pytest.mark.parametrize(
    "spoil",
    ["a row short", "a weight short", "a NaN weight", "a weight of 2", "a string weight",
     "no rows"],
)  # fmt: skip
def test_plot_attention_refuses_weights_that_do_not_fit_the_pieces(world, tmp_path, spoil):
    record = json.loads((world / "in.align").read_text().splitlines()[0])
    rows = record["attention"]
    if spoil == "a row short":
        rows.pop()
    elif spoil == "a weight short":
        rows[0].pop()
    elif spoil == "no rows":
        record["attention"] = {}
    else:
        rows[0][0] = {"a NaN weight": float("nan"), "a weight of 2": 2.0}.get(spoil, "0.5")
    (tmp_path / "a.jsonl").write_text(json.dumps(record) + "\n")
    args = ["plot-attention", tmp_path / "a.jsonl", "-o", tmp_path / "a.png"]
    refused_and_untouched(tmp_path, args, r"a\.jsonl:1: attention")


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


def test_config_files_say_what_is_wrong_with_them(tmp_path):
    (tmp_path / "twice.yaml").write_text("train:\n  lr: 0.1\n  max_steps: 5\n  lr: 0.2\n")
    assert_refused(
        invoke(["train", tmp_path / "twice.yaml"]), r"twice\.yaml:4: key 'lr' is given twice"
    )
    assert_refused(invoke(["train", tmp_path]), r"is a folder; expected a YAML config file")


def test_a_run_folder_names_its_broken_parts_up_front(world, tmp_path):
    run = copy_run(world / "run", tmp_path / "run")
    (run / "train_log.jsonl").unlink()
    (run / "train_log.jsonl").mkdir()
    refused_and_untouched(
        tmp_path,
        ["train", world / "tiny.yaml", "--run-dir", run],
        r"train_log\.jsonl: exists and is not a file",
    )
    (run / "train_log.jsonl").rmdir()
    (run / "spm.model").write_bytes(b"not a model")
    refused_and_untouched(
        tmp_path,
        ["train", world / "tiny.yaml", "--run-dir", run, "--fresh"],
        r"spm\.model: not a valid SentencePiece",
    )


def test_average_of_a_run_folder_asks_which_checkpoints(world, tmp_path):
    args = ["average", world / "run", "-o", tmp_path / "a.safetensors"]
    refused_and_untouched(tmp_path, args, r"is a folder; .* --best K, --last K or --choose")


def test_a_fresh_start_drops_the_earlier_run_s_kept_checkpoints(world, tmp_path):
    run = copy_run(world / "run", tmp_path / "run")
    overrides = ["--train.keep_last=3", "--train.keep_best=3", "--train.validate_every=3"]
    first = invoke(["train", world / "tiny.yaml", "--run-dir", run, "--fresh",
                    "--train.max_steps=9", *overrides])  # fmt: skip
    assert first.exit_code == 0, first.output
    again = invoke(["train", world / "tiny.yaml", "--run-dir", run, "--fresh",
                    "--train.max_steps=3", *overrides])  # fmt: skip
    assert again.exit_code == 0, again.output
    kept = sorted(p.name for p in (run / "model").glob("*-*.safetensors"))
    assert kept == ["best-3.safetensors", "last-3.safetensors"]


def test_yaml_merge_keys_still_work_and_odd_keys_are_one_line(tmp_path):
    path = tmp_path / "merged.yaml"
    path.write_text("defaults: &d {lr: 0.1, max_steps: 5}\ntrain:\n  <<: *d\n  lr: 0.2\n")
    with pytest.raises(UserError, match="unknown config key 'defaults'"):
        load_config(path)  # the merge itself was read
    path.write_text("train:\n  <<: {lr: 0.1, max_steps: 5}\n  lr: 0.2\n")
    assert load_config(path).train.lr == 0.2 and load_config(path).train.max_steps == 5
    path.write_text("? [x, y]\n: 1\n")
    assert_refused(invoke(["train", path]), r"merged\.yaml:1: a list cannot be a key")


def test_a_dev_beam_wider_than_the_vocabulary_is_refused_before_training(world, tmp_path):
    run = copy_run(world / "run", tmp_path / "run")
    args = ["train", world / "tiny.yaml", "--run-dir", run, "--train.dev_beam_size=100000"]
    refused_and_untouched(tmp_path, args, r"'train.dev_beam_size': expected at most the target")
