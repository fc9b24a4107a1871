"""Shared fixtures: a tiny corpus from the demo generator and a tiny model config."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

torch.set_num_threads(2)
# The precision rule asks whether this CPU has native bf16; the tests answer "no", so that
# `auto` means fp32 and results are alike on every machine (subprocesses inherit it).
os.environ["NMT_CPU_BF16"] = "0"


def load_generator():
    """The demo corpus generator (a script, not a package module)."""
    if "demo_generate" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "demo_generate", ROOT / "data/demo/generate.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["demo_generate"] = module
        spec.loader.exec_module(module)
    return sys.modules["demo_generate"]


@pytest.fixture(scope="session")
def generator():
    return load_generator()


def write_corpus(folder: Path, sizes: dict[str, int], seed: int = 7) -> Path:
    """Small English-German text pairs (train/dev/test) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in load_generator().generate(seed, sizes).items():
        (folder / f"{split}.en").write_text("".join(en + "\n" for en, _ in pairs), encoding="utf-8")
        (folder / f"{split}.de").write_text("".join(de + "\n" for _, de in pairs), encoding="utf-8")
    return folder


TINY_CONFIG = """\
name: tiny
data:
  path: {corpus}
  subwords: {{vocab_size: 120}}
model:
  embedding_size: 16
  encoder: {{hidden_size: 16}}
  decoder: {{hidden_size: 32}}
  attention: {{scoring: general}}
train:
  batch_size: 400
  lr: 0.003
  max_steps: 12
  validate_every: 6
  log_every: 3
search:
  beam_size: 3
  max_len_a: 1.2
  max_len_b: 5
"""


def write_config(folder: Path, corpus: Path) -> Path:
    """The tiny config, reading `corpus`, as folder/c.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "c.yaml"
    path.write_text(TINY_CONFIG.format(corpus=corpus), encoding="utf-8")
    return path


def copy_run(trained_run: Path, dest: Path, untrained: bool = False) -> Path:
    """A copy of a run folder; `untrained` keeps only what preprocess wrote."""
    run = shutil.copytree(trained_run, dest)
    if untrained:
        shutil.rmtree(run / "model")
        for name in ("train_log.jsonl", "train_runs.jsonl", "config.yaml", "train.log"):
            (run / name).unlink(missing_ok=True)
    return run


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), {"test": 20, "dev": 15, "train": 300})


@pytest.fixture
def tiny_config_file(tmp_path, tiny_corpus) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG.format(corpus=tiny_corpus), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_corpus) -> Path:
    """A run folder taken through preprocess and a short training, shared by read-only tests."""
    from pipelines.layout import RunFolder
    from pipelines.preprocess import preprocess
    from pipelines.train import train
    from seq2seq.config import load_config

    folder = tmp_path_factory.mktemp("run")
    config_path = folder / "tiny.yaml"
    config_path.write_text(TINY_CONFIG.format(corpus=tiny_corpus), encoding="utf-8")
    config = load_config(config_path)
    run = RunFolder(folder / "run")
    preprocess(config, run, log=lambda _: None)
    train(config, run, log=lambda _: None)
    return run.root


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_corpus, trained_run):
    """A workspace: corpus, config, trained run, an alignments file and some texts.

    Shared by test_reliability, test_destinations, test_numbers and test_streams (its
    helpers are in workspace.py); built once, as it trains a model for 80 steps."""
    from pipelines.layout import RunFolder
    from pipelines.train import train
    from seq2seq.config import load_config

    from .workspace import SENTENCES, invoke

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
