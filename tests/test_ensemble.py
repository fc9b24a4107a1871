"""Ensembles: the mean of the models' log-probabilities each step, through the same search
code as one model; on the command line, `translate -m A -m B`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from seq2seq.batching import pad
from seq2seq.config import SearchConfig
from seq2seq.ensemble import Ensemble
from seq2seq.search import search

from .conftest import ROOT, TINY_CONFIG, copy_run
from .test_model import random_sentences
from .test_search import SOME, VOCAB, build, teacher_forced_log_prob

MIXES = [SOME[:2], SOME[1:4], [SOME[0], SOME[4]]]  # models of different shapes, one vocabulary


def ensemble(names, seed=0) -> Ensemble:
    return Ensemble([build(name, seed=seed + i) for i, name in enumerate(names)]).eval()


def hypotheses(model, sentences, config, attention=False):
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    return search(model, src, src_lengths, config, return_attention=attention)


@pytest.mark.parametrize("names", MIXES, ids=["+".join(m) for m in MIXES])
def test_each_step_is_the_mean_of_the_models_log_probabilities(names):
    models = ensemble(names)
    src, src_lengths = pad(random_sentences(4, seed=2), VOCAB.pad_id, suffix=VOCAB.eos_id)
    tgt_in, _ = pad(random_sentences(4, seed=3), VOCAB.pad_id, prefix=VOCAB.bos_id)
    with torch.no_grad():
        each = torch.stack([m(src, src_lengths, tgt_in) for m in models.models])
        assert torch.allclose(models(src, src_lengths, tgt_in), each.mean(dim=0))


def test_an_ensemble_of_copies_decodes_like_the_model():
    model = build(SOME[0])
    twins = Ensemble([model, model]).eval()
    config = SearchConfig(beam_size=4, n_best=2)
    sentences = random_sentences(12, seed=4)
    for one, two in zip(hypotheses(model, sentences, config), hypotheses(twins, sentences, config)):
        assert [h.tokens for h in one] == [h.tokens for h in two]
        assert [h.score for h in one] == [h.score for h in two]


@pytest.mark.parametrize("names", MIXES, ids=["+".join(m) for m in MIXES])
@pytest.mark.parametrize("beam_size", [1, 4])
def test_search_over_an_ensemble_keeps_the_invariants(names, beam_size):
    """Scores are the teacher-forced ensemble log-probabilities; a sentence gets the same
    result alone as in a batch; attention rows are the models' mean and sum to one."""
    models = ensemble(names)
    sentences = random_sentences(10, seed=5)
    config = SearchConfig(beam_size=beam_size, n_best=min(2, beam_size), length_penalty=0.0)
    batched = hypotheses(models, sentences, config, attention=True)
    for source, hyps in zip(sentences, batched):
        alone = hypotheses(models, [source], config, attention=True)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        for h in hyps:
            assert h.log_prob == pytest.approx(
                teacher_forced_log_prob(models, source, h.tokens), abs=1e-4
            )
            rows = h.attention.sum(dim=-1)
            has_attention = any(m.decoder.attention is not None for m in models.models)
            if has_attention:
                assert torch.allclose(rows, torch.ones_like(rows), atol=1e-4)


def test_beam_of_one_is_greedy_for_an_ensemble():
    models = ensemble(SOME[:3])
    sentences = random_sentences(10, seed=6)
    from seq2seq.search import beam_search, greedy_search

    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    config = SearchConfig(beam_size=1)
    for g, b in zip(
        greedy_search(models, src, src_lengths, config),
        beam_search(models, src, src_lengths, config),
    ):
        assert g[0].tokens == b[0].tokens and g[0].score == b[0].score


# --- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_corpus, trained_run):
    """Two models trained on one preprocessed folder with different seeds, and one with
    another vocabulary."""
    from pipelines.layout import RunFolder
    from pipelines.preprocess import preprocess
    from pipelines.train import train
    from seq2seq.config import load_config

    root = tmp_path_factory.mktemp("ensemble")
    (root / "tiny.yaml").write_text(TINY_CONFIG.format(corpus=tiny_corpus))
    other = copy_run(trained_run, root / "seed2", untrained=True)
    train(load_config(root / "tiny.yaml", ["--train.seed=2"]), RunFolder(other), log=print)
    foreign = RunFolder(root / "foreign")
    config = load_config(root / "tiny.yaml", ["--data.subwords.vocab_size=100"])
    preprocess(config, foreign, log=print)
    train(config, foreign, log=print)
    (root / "in.en").write_text("The dog sleeps.\nThe old man sees the cat.\n\nA woman reads.\n")
    return root, trained_run, other, foreign.root


def test_translate_takes_several_models(two_runs):
    root, one, two, _ = two_runs
    args = ["translate", "-i", str(root / "in.en"), "--n-best", "2", "--beam-size", "3"]
    for models, name in (([one], "one"), ([one, two], "two"), ([one, one], "same")):
        result = CliRunner().invoke(
            app,
            [*args, *[f"-m{m}" for m in models], "-o", str(root / f"{name}.de"),
             "--alignments", str(root / f"{name}.align")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    lines = {n: (root / f"{n}.de").read_text().splitlines() for n in ("one", "two", "same")}
    assert len(lines["two"]) == 4 and lines["two"][2] == ""
    texts = {n: [line.split("\t")[::2] for line in lines[n]] for n in lines}
    assert texts["same"] == texts["one"]  # two copies of a model decode as the model


def test_models_of_another_vocabulary_are_refused_in_one_line(two_runs):
    root, one, _, foreign = two_runs
    before = sorted(p.name for p in root.iterdir())
    result = CliRunner().invoke(
        app, ["translate", "-m", str(one), "-m", str(foreign), "-i", str(root / "in.en"),
              "-o", str(root / "mixed.de")],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SentencePiece model is not the one of" in lines[0], lines
    assert sorted(p.name for p in root.iterdir()) == before


def test_the_ensemble_is_chosen_on_dev_the_smaller_on_a_tie():
    from benchmarks.ensemble_quality import choose

    assert choose({1: 30.0, 2: 31.5, 3: 31.2}) == 2
    assert choose({1: 30.0, 2: 30.0, 3: 29.0}) == 1
    assert choose({1: 30.0, 2: 29.0, 3: 30.5, 4: 30.5}) == 3


def test_ensemble_quality_scores_dev_then_test_for_the_choice(two_runs, tmp_path):
    root, one, two, _ = two_runs
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ensemble_quality.py"), "-m", str(one),
         "-m", str(two), "--data", str(one / "data"), "--src", "en", "--tgt", "de",
         "--beam-size", "2", "--work", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| best")]
    assert [row.split("|")[1].split()[:2] for row in rows] == [["best", "1"], ["best", "2"]]
    assert sum("(chosen)" in row for row in rows) == 1
    assert "--" not in rows[0]  # the best single model is always scored on test
    chosen = next(row for row in rows if "(chosen)" in row)
    assert "--" not in chosen  # and so is the chosen ensemble
