"""Data-parallel training: two CPU ranks (gloo) train what one process does on the whole batch."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from seq2seq.checkpoint import load_checkpoint

from .conftest import ROOT, copy_run, write_config

# No dropout: the two runs then do the same arithmetic, in a different order of sums.
OVERRIDES = [
    "--model.embedding_dropout=0",
    "--model.output_dropout=0",
    "--train.threads=1",
    "--train.batch_size=600",
    "--train.validate_every=4",
    "--train.log_every=3",  # the 2-rank run stops inside a log line's steps
]


def train(config, run, steps: int, ranks: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [
        *launcher,
        str(ROOT / "cli.py"),
        "train",
        str(config),
        "--run-dir",
        str(run),
        "--max-steps",
        str(steps),
        *OVERRIDES,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_weights(a, b):
    first = load_checkpoint(a / "model" / "last.safetensors").model.state_dict()
    second = load_checkpoint(b / "model" / "last.safetensors").model.state_dict()
    for key in first:
        assert torch.allclose(first[key], second[key], atol=2e-4, rtol=1e-3), key


def test_two_ranks_equal_one_process_on_the_combined_batch(tmp_path, tiny_corpus, trained_run):
    config = write_config(tmp_path, tiny_corpus)
    single, ranks = (
        copy_run(trained_run, tmp_path / "single", untrained=True),
        copy_run(trained_run, tmp_path / "ddp", untrained=True),
    )
    train(config, single, steps=8)
    result = train(config, ranks, steps=4, ranks=2)
    # one writer: each validation is logged once and announced once
    log = [json.loads(line) for line in (ranks / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "dev_bleu" in r] == [4]
    assert [r["step"] for r in log if "train_loss" in r] == [3]
    assert result.stdout.count("train: step 4: dev loss") == 1
    assert load_checkpoint(ranks / "model" / "last.safetensors").info["step"] == 4
    # the same 4 steps in one process
    single_4 = copy_run(trained_run, tmp_path / "single_4", untrained=True)
    train(config, single_4, steps=4)
    assert_same_weights(single_4, ranks)
    # resume the 2-rank run in one process: it continues as if it had been one all along
    train(config, ranks, steps=8)
    assert_same_weights(single, ranks)
    # and its log line at step 6 averages steps 4 to 6, step 4's losses from both ranks
    losses = []
    for run in (single, ranks):
        records = map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
        losses.append({r["step"]: r["train_loss"] for r in records if "train_loss" in r})
    assert abs(losses[0][6] - losses[1][6]) < 1e-3 * losses[0][6], losses
