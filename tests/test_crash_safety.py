"""Kill tests: SIGKILL (or SIGINT, SIGTERM, SIGINT twice) at chosen moments, resume, and get
what an uninterrupted run gets, weights and log alike.

A driver process runs the real stage with a few functions wrapped to print where it is
(STEP, VALIDATE, WRITE in the middle of a checkpoint write; CHUNK, APPEND between a chunk's
write and its progress record), and to dwell there a little, so that the test can kill it
exactly in each kind of moment."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from seq2seq.checkpoint import load_checkpoint

from .conftest import ROOT, copy_run, write_config

TRAIN_DRIVER = """
import sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
import pipelines.train as tr
import seq2seq.checkpoint as ck
from seq2seq.io import atomic_open
from seq2seq.config import load_config
from pipelines.layout import RunFolder
from pathlib import Path

def say(word, pause=0.0):
    print(word, flush=True)
    time.sleep(pause)

def slow_write(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        say("WRITE", 0.15)
        f.write(data[len(data) // 2 :])

ck.atomic_write_bytes = slow_write
real_validate, real_step = tr.Trainer.validate, tr.Trainer.train_step
tr.Trainer.validate = lambda self: (say("VALIDATE", 0.05), real_validate(self))[1]
tr.Trainer.train_step = lambda self, group: (say("STEP"), real_step(self, group))[1]
config = load_config(sys.argv[1], ["--train.max_steps=24", "--train.validate_every=4",
                                   "--train.log_every=3", "--train.threads=1"])
try:
    tr.train(config, RunFolder(Path(sys.argv[2])), log=lambda _: None)
except tr.Stopped:  # SIGINT or SIGTERM: saved, and stopped
    sys.exit(130)
say("DONE")
"""

TRANSLATE_DRIVER = """
import sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
import pipelines.translate as tl
from seq2seq.io import atomic_write_text

def say(word, pause=0.0):
    print(word, flush=True)
    time.sleep(pause)

real_decode = tl.Translator.decode
tl.Translator.decode = lambda *a, **k: (say("CHUNK"), real_decode(*a, **k))[1]
import pipelines.outputs as out
real_write = out.atomic_write_text
def progress_write(path, text):
    say("APPEND", 0.1)  # the chunk is on disk, its progress record not yet
    real_write(path, text)
out.atomic_write_text = progress_write
from seq2seq.config import TranslateConfig
config = TranslateConfig(device="cpu", chunk_lines=3)
tl.translate_file(sys.argv[1], sys.argv[2], sys.argv[3], config, {{"beam_size": 2}},
                  log=lambda _: None, resume=True)
say("DONE")
"""


def run_until(
    command: list[str], marker: str | None, nth: int, rng: random.Random, signals=(signal.SIGKILL,)
) -> bool:
    """Run the driver; send it `signals` just after its nth `marker` line. True if it
    finished. What it prints after the signals is read to the end (it may be saving)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen, finished, sent = 0, False, False
    for line in process.stdout:
        word = line.strip()
        finished = finished or (word == "DONE" and not sent)
        if word == marker and not sent:
            seen += 1
            if seen == nth:
                time.sleep(rng.uniform(0.0, 0.04))
                for signum in signals:
                    process.send_signal(signum)
                    time.sleep(0.01)
                sent = True
    process.stdout.close()
    process.wait()
    return finished


def state_of(path):
    return load_checkpoint(path).model.state_dict()


def test_killed_training_resumes_to_the_same_weights(tmp_path, tiny_corpus, trained_run):
    config = write_config(tmp_path, tiny_corpus)
    driver = TRAIN_DRIVER.format(root=str(ROOT))
    runs = {}
    for name in ("straight", "killed"):
        runs[name] = copy_run(trained_run, tmp_path / name, untrained=True)
    assert run_until(
        [sys.executable, "-c", driver, str(config), str(runs["straight"])],
        None,
        0,
        random.Random(0),
    )
    rng = random.Random(1)
    kill, stop, term = (signal.SIGKILL,), (signal.SIGINT,), (signal.SIGTERM,)
    plan = [
        ("STEP", 2, kill),
        ("STEP", 2, stop),  # in the middle of a log line's steps
        ("VALIDATE", 1, stop),
        ("WRITE", 2, term),
        ("STEP", 4, stop * 2),
        ("WRITE", 1, kill),
        ("VALIDATE", 1, term),
        ("WRITE", 3, stop),
    ]
    command = [sys.executable, "-c", driver, str(config), str(runs["killed"])]
    for marker, nth, signals in plan:
        finished = run_until(command, marker, nth, rng, signals)
        assert not finished, f"finished before the {marker} {signals}"
        assert not any(
            p.name.endswith(".safetensors") and p.stat().st_size == 0
            for p in (runs["killed"] / "model").glob("*")
        )
    assert run_until(command, None, 0, rng)
    expected = state_of(runs["straight"] / "model" / "last.safetensors")
    got = state_of(runs["killed"] / "model" / "last.safetensors")
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert not list((runs["killed"] / "model").glob(".*tmp*"))
    assert log_values(runs["killed"]) == log_values(runs["straight"])


def log_values(run) -> list[tuple]:
    """What the training log says, without the timings."""
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train_loss"), r.get("dev_loss"), r.get("dev_bleu")) for r in records]


def test_killed_translation_resumes_to_the_same_output(tmp_path, tiny_corpus, trained_run):
    source = tmp_path / "in.en"
    lines = (tiny_corpus / "test.en").read_text(encoding="utf-8").splitlines()
    source.write_text("\n".join(lines[:10] + [""] + lines[10:20]) + "\n", encoding="utf-8")
    driver = TRANSLATE_DRIVER.format(root=str(ROOT))
    straight, killed = tmp_path / "straight.txt", tmp_path / "killed.txt"
    assert run_until(
        [sys.executable, "-c", driver, str(trained_run), str(source), str(straight)],
        None,
        0,
        random.Random(0),
    )
    rng = random.Random(2)
    command = [sys.executable, "-c", driver, str(trained_run), str(source), str(killed)]
    for marker, nth in [("CHUNK", 2), ("APPEND", 1), ("CHUNK", 2), ("APPEND", 2)]:
        assert not run_until(command, marker, nth, rng)
        assert not killed.exists()  # never a final name before the end
    assert run_until(command, None, 0, rng)
    assert (
        killed.read_text(encoding="utf-8").splitlines()
        == straight.read_text(encoding="utf-8").splitlines()
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("killed")) == [
        "killed.txt"
    ]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_saves_whole_steps_and_resumes_exactly(
    tmp_path, tiny_corpus, trained_run, signum, code
):
    """Ctrl-C, or SIGTERM as a scheduler sends it before it kills."""
    config = write_config(tmp_path, tiny_corpus)
    overrides = [
        "--train.max_steps=24",
        "--train.validate_every=12",
        "--train.log_every=1",
        "--train.threads=1",
    ]
    runs = {}
    for name in ("straight", "interrupted"):
        runs[name] = copy_run(trained_run, tmp_path / name, untrained=True)
    cli = [sys.executable, str(ROOT / "cli.py"), "train", str(config)]
    subprocess.run(
        [*cli, "--run-dir", str(runs["straight"]), *overrides],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    process = subprocess.Popen(
        [*cli, "--run-dir", str(runs["interrupted"]), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    log = runs["interrupted"] / "train_log.jsonl"
    deadline = time.monotonic() + 60
    while (not log.is_file() or log.read_text().count("\n") < 3) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "interrupted at step" in out
    assert "Traceback" not in err
    subprocess.run(
        [*cli, "--run-dir", str(runs["interrupted"]), *overrides],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    expected = state_of(runs["straight"] / "model" / "last.safetensors")
    got = state_of(runs["interrupted"] / "model" / "last.safetensors")
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_kills_at_random_moments_resume_to_identical_results(tmp_path, tiny_corpus, trained_run):
    """The short version of benchmarks/kill_test.py: two random stops of each command, with
    SIGKILL and with SIGINT."""
    from benchmarks import kill_test

    config = write_config(tmp_path, tiny_corpus)
    preprocessed = copy_run(trained_run, tmp_path / "preprocessed", untrained=True)
    rng = random.Random(5)
    trials = [(rng.uniform(0.3, 0.95), kind) for kind in ("SIGKILL", "SIGINT")]
    said = []
    assert kill_test.train_trials(config, preprocessed, tmp_path, trials, said.append) == 2, said
    source = tmp_path / "source.en"
    lines = (tiny_corpus / "test.en").read_text(encoding="utf-8").splitlines()
    source.write_text("\n".join(lines * 5) + "\n", encoding="utf-8")
    model = tmp_path / "train-straight"
    assert kill_test.translate_trials(model, source, tmp_path, trials, said.append) == 2, said
    assert kill_test.preprocess_trials(config, tmp_path, trials, said.append) == 2, said
