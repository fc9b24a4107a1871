"""Nothing lost, no tracebacks: cases generated per class of failure, for every command.

Here: a diverging run never publishes bad weights; one message, one line; and the run
folders, config files and checkpoints that are refused up front. The other classes live in

- test_destinations.py: an output that is an input, destinations that cannot be written,
  a failed run leaves nothing new
- test_numbers.py: numbers as people write them, non-finite, integer and negative values
- test_streams.py: standard streams in every combination, every text input read the same
  way, what an input may not hold

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import load_config
from seq2seq.errors import UserError

from .conftest import ROOT, copy_run
from .workspace import PROGRESS, assert_refused, invoke, refused_and_untouched, snapshot

# --- a diverging run never publishes bad weights --------------------------------------------


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


# --- one message, one line ------------------------------------------------------------------

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


def test_a_bare_nmt_shows_the_commands_and_no_empty_error():
    result = invoke([])
    assert "pipeline" in result.output and "translate" in result.output
    assert not result.stderr.strip().startswith("error")


# --- run folders, config files and checkpoints refused up front -----------------------------


def test_config_files_say_what_is_wrong_with_them(tmp_path):
    (tmp_path / "twice.yaml").write_text("train:\n  lr: 0.1\n  max_steps: 5\n  lr: 0.2\n")
    assert_refused(
        invoke(["train", tmp_path / "twice.yaml"]), r"twice\.yaml:4: key 'lr' is given twice"
    )
    assert_refused(invoke(["train", tmp_path]), r"is a folder; expected a YAML config file")


def test_yaml_merge_keys_still_work_and_odd_keys_are_one_line(tmp_path):
    path = tmp_path / "merged.yaml"
    path.write_text("defaults: &d {lr: 0.1, max_steps: 5}\ntrain:\n  <<: *d\n  lr: 0.2\n")
    with pytest.raises(UserError, match="unknown config key 'defaults'"):
        load_config(path)  # the merge itself was read
    path.write_text("train:\n  <<: {lr: 0.1, max_steps: 5}\n  lr: 0.2\n")
    assert load_config(path).train.lr == 0.2 and load_config(path).train.max_steps == 5
    path.write_text("? [x, y]\n: 1\n")
    assert_refused(invoke(["train", path]), r"merged\.yaml:1: a list cannot be a key")


def test_a_beam_wider_than_the_target_vocabulary_is_refused(world):
    args = ["translate", "-m", world / "run", "-i", world / "in.en", "-o", world / "wide.de",
            "--beam-size", "100000"]  # fmt: skip
    refused_and_untouched(world, args, r"'search.beam_size': expected at most the target vocab")


def test_a_dev_beam_wider_than_the_vocabulary_is_refused_before_training(world, tmp_path):
    run = copy_run(world / "run", tmp_path / "run")
    args = ["train", world / "tiny.yaml", "--run-dir", run, "--train.dev_beam_size=100000"]
    refused_and_untouched(tmp_path, args, r"'train.dev_beam_size': expected at most the target")


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


def test_average_of_a_run_folder_asks_which_checkpoints(world, tmp_path):
    args = ["average", world / "run", "-o", tmp_path / "a.safetensors"]
    refused_and_untouched(tmp_path, args, r"is a folder; .* --best K, --last K or --choose")


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
