"""Feeding a GPU: background host work, one wait for the device a step, and the GPU
benchmark. The GPU paths are taken on the CPU here (the choice is a switch), so that they
are tried on every machine; they must give exactly what the plain paths give."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest
import torch

import pipelines.background as background
import seq2seq.search as search_module
from benchmarks.host_overhead import count_ops, tiny_model
from pipelines.background import Behind, ahead
from pipelines.layout import RunFolder
from pipelines.train import train
from pipelines.translate import translate_file
from seq2seq.batching import pad
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import SearchConfig, TranslateConfig, load_config

from .conftest import ROOT, copy_run, write_config
from .test_model import random_sentences
from .test_search import SOME, VOCAB, build


@pytest.mark.parametrize("enabled", [False, True])
def test_work_ahead_and_behind_keeps_order_and_raises_errors(enabled):
    threads = set()

    def square(x):
        threads.add(threading.current_thread().name)
        return x * x

    assert list(ahead(square, range(7), enabled)) == [x * x for x in range(7)]
    assert any(name.startswith("ahead") for name in threads) == enabled
    done = []
    with Behind(enabled) as behind:
        for x in range(7):
            behind.submit(done.append, x)
    assert done == list(range(7))

    def fails(x):
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 0"):
        list(ahead(fails, range(3), enabled))
    with pytest.raises(ValueError, match="bad 1"):
        with Behind(enabled) as behind:
            behind.submit(lambda: None)
            behind.submit(fails, 1)


@pytest.mark.parametrize("name", SOME)
@pytest.mark.parametrize("beam_size", [1, 4])
def test_the_gpu_rule_for_finished_rows_gives_the_same_hypotheses(name, beam_size, monkeypatch):
    """On a GPU finished rows linger until half are done; the results must not change."""
    model = build(name)
    src, src_lengths = pad(random_sentences(24, seed=9, high=14), VOCAB.pad_id, suffix=3)
    config = SearchConfig(beam_size=beam_size, n_best=min(2, beam_size), length_penalty=1.0)
    plain = search_module.search(model, src, src_lengths, config, return_attention=True)
    monkeypatch.setattr(
        search_module, "_worth_compacting", lambda running, rows, device: running <= rows // 2
    )
    lingering = search_module.search(model, src, src_lengths, config, return_attention=True)
    for a, b in zip(plain, lingering):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == [h.score for h in b]
        assert all(torch.equal(x.attention, y.attention) for x, y in zip(a, b))


@pytest.mark.parametrize("beam_size", [1, 5])
def test_search_waits_for_the_device_about_once_a_step(beam_size):
    model = tiny_model()
    sentences = random_sentences(200, seed=3, low=15, high=25)
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    config = SearchConfig(beam_size=beam_size, max_len_a=1.0, max_len_b=5)
    ops, waits, steps = count_ops(model, src, src_lengths, config)
    # one a step, plus the few times finished rows leave and the unpacking at the end
    assert steps > 10 and waits <= 1.8 * steps


def test_translation_with_background_threads_is_identical(tmp_path, trained_run, monkeypatch):
    source = tmp_path / "in.en"
    lines = (trained_run / "data" / "test.en").read_text(encoding="utf-8").splitlines()
    source.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n", encoding="utf-8")
    options = (TranslateConfig(device="cpu", chunk_lines=4), {"beam_size": 3})
    plain, threaded = tmp_path / "plain.txt", tmp_path / "threaded.txt"
    translate_file(trained_run, str(source), str(plain), *options, log=lambda _: None)
    monkeypatch.setattr(background, "BACKGROUND_DEVICES", {"cpu", "cuda"})
    translate_file(trained_run, str(source), str(threaded), *options, log=lambda _: None)
    assert threaded.read_bytes() == plain.read_bytes()


def test_training_with_batches_made_ahead_is_identical(
    tmp_path, tiny_corpus, trained_run, monkeypatch
):
    config = load_config(
        write_config(tmp_path, tiny_corpus), ["--train.max_steps=5", "--train.validate_every=5"]
    )
    plain = RunFolder(copy_run(trained_run, tmp_path / "plain", untrained=True))
    train(config, plain, log=lambda _: None)
    monkeypatch.setattr(background, "BACKGROUND_DEVICES", {"cpu", "cuda"})
    ahead_run = RunFolder(copy_run(trained_run, tmp_path / "ahead", untrained=True))
    train(config, ahead_run, log=lambda _: None)
    a = load_checkpoint(plain.last).model.state_dict()
    b = load_checkpoint(ahead_run.last).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_gpu_benchmark_runs_on_the_cpu_at_small_sizes(tmp_path, trained_run):
    run = copy_run(trained_run, tmp_path / "run")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu.py"),
        "--run",
        str(run),
        "--small",
        "--device",
        "cpu",
        "--train-seconds",
        "2",
        "--validate-every",
        "4",
        "--work",
        str(tmp_path / "work"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    trained = [line for line in table if "GNMT" in line or "quality |" in line]
    decoded = [line for line in table if line.startswith(("| beam 5 |", "| greedy |"))]
    assert len(trained) == 4 and len(decoded) == 12  # CUDA graphs only where there is CUDA
    assert all(line.endswith("| yes |") for line in decoded if "| fp32 |" in line)
    assert "where the time goes" in result.stdout


def test_the_decoding_profile_runs_and_names_where_the_time_goes(tmp_path, trained_run):
    source = tmp_path / "in.en"
    source.write_text("The dog sleeps.\nA woman reads.\nThe old man sees the cat.\n" * 2)
    script = str(ROOT / "benchmarks" / "profile_translate.py")
    command = [sys.executable, script, str(trained_run), str(source), "--batch-size", "2",
               "--timed", "1", "--profile", "1", "--threads", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"beam 5, input-order batches of 2, fp32, 1 threads: [\d.]+ sentences/s",
                     result.stdout), result.stdout  # fmt: skip
    share = re.search(r"matrix products .*: (\d+)%; the attention's own math: ([\d.]+)%; "
                      r"everything else: ([\d.]+)%", result.stdout)  # fmt: skip
    assert share and 0 < int(share[1]) <= 100, result.stdout
    assert float(share[2]) > 0, result.stdout  # the attention's work was found
    assert 98 <= sum(map(float, share.groups())) <= 102, result.stdout  # the three add up
    too_few = subprocess.run([*command[:4], "--batch-size", "64"], capture_output=True, text=True,
                             cwd=ROOT, timeout=300)  # fmt: skip
    assert too_few.returncode != 0 and "batches of 64 lines" in too_few.stderr
