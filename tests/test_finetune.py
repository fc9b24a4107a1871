"""Fine-tuning: a run that starts from another run's checkpoint, with its vocabulary."""

from __future__ import annotations

import pytest
import torch

from pipelines.layout import RunFolder
from pipelines.preprocess import preprocess
from pipelines.train import train
from pipelines.translate import translate_file
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import TranslateConfig, load_config
from seq2seq.errors import UserError

from .conftest import load_generator, write_config

QUIET = {"log": lambda _: None}
# The shifted domain: the same sentences, but this corpus calls some things otherwise.
SHIFT = {"Hund": "Köter", "Hunde": "Köter", "Mann": "Herr", "Männer": "Herren", "Buch": "Band"}


def shifted_corpus(folder, sizes):
    folder.mkdir(parents=True)
    for split, pairs in load_generator().generate(11, sizes).items():
        de = [" ".join(SHIFT.get(word, word) for word in d.split(" ")) for _, d in pairs]
        (folder / f"{split}.en").write_text("".join(e + "\n" for e, _ in pairs), encoding="utf-8")
        (folder / f"{split}.de").write_text("".join(d + "\n" for d in de), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_corpus):
    """A tiny model trained 150 steps on the demo language."""
    folder = tmp_path_factory.mktemp("base")
    overrides = ["--train.max_steps=150", "--train.validate_every=75"]
    config = load_config(write_config(folder, tiny_corpus), overrides)
    run = RunFolder(folder / "run")
    preprocess(config, run, **QUIET)
    train(config, run, **QUIET)
    return run


def chrf_on(run_or_model, test_folder, tmp_path) -> float:
    """chrF of the model on the folder's test split (the tiny model's BLEU stays near 0)."""
    from pipelines.score import score_files

    out = tmp_path / "hyp.de"
    config = TranslateConfig(device="cpu")
    translate_file(run_or_model, str(test_folder / "test.en"), str(out), config, None, **QUIET)
    return score_files(out, test_folder / "test.de")["chrf"]


def fine_tuning(folder, corpus, base, *overrides):
    config = load_config(
        write_config(folder, corpus),
        [f"--data.subwords.model={base.root}", f"--train.init_from={base.root}",
         "--train.max_steps=120", "--train.validate_every=40", "--train.lr=0.003", *overrides],
    )  # fmt: skip
    run = RunFolder(folder / "run")
    preprocess(config, run, **QUIET)
    return config, run


def test_adaptation_scores_higher_on_the_new_domain_and_resumes_exactly(tmp_path, base):
    corpus = shifted_corpus(tmp_path / "shifted", {"test": 40, "dev": 20, "train": 300})
    before = chrf_on(base.root, corpus, tmp_path)
    config, run = fine_tuning(tmp_path / "ft", corpus, base)
    assert (run.root / "spm.model").read_bytes() == (base.root / "spm.model").read_bytes()
    train(config, run, **QUIET)
    after = chrf_on(run.root, corpus, tmp_path)
    assert after > before

    # stopped half way and resumed: the same weights as without stopping
    half, halted = fine_tuning(tmp_path / "halted", corpus, base, "--train.max_steps=60")
    train(half, halted, **QUIET)
    train(config, halted, **QUIET)
    whole = load_checkpoint(run.last).model.state_dict()
    resumed = load_checkpoint(halted.last).model.state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_model_config_that_does_not_fit_is_refused_naming_the_key(tmp_path, base, tiny_corpus):
    config, run = fine_tuning(tmp_path, tiny_corpus, base, "--model.decoder.hidden_size=64")
    with pytest.raises(UserError, match="model.decoder.hidden_size': 64 here but 32 in"):
        train(config, run, **QUIET)
    config, run = fine_tuning(tmp_path / "d", tiny_corpus, base, "--model.decoder.dropout=0.5")
    train(config, run, **QUIET)  # dropout may differ: the shape is the same


def test_another_vocabulary_is_refused(tmp_path, base, tiny_corpus):
    overrides = [f"--train.init_from={base.root}", "--data.subwords.vocab_size=100"]
    config = load_config(write_config(tmp_path, tiny_corpus), overrides)
    run = RunFolder(tmp_path / "run")
    preprocess(config, run, **QUIET)  # trains a SentencePiece model of its own
    with pytest.raises(UserError, match="preprocess with --data.subwords.model="):
        train(config, run, **QUIET)


def test_a_sentencepiece_model_file_is_reused_as_it_is(tmp_path, base, tiny_corpus):
    model = base.root / "spm.model"
    config = load_config(write_config(tmp_path, tiny_corpus), [f"--data.subwords.model={model}"])
    manifest = preprocess(config, RunFolder(tmp_path / "run"), **QUIET)
    assert (tmp_path / "run" / "spm.model").read_bytes() == model.read_bytes()
    assert manifest["tokenizer"]["joint"] is True
    bad = load_config(write_config(tmp_path, tiny_corpus), ["--data.subwords.model=nowhere"])
    with pytest.raises(UserError, match="nowhere"):
        preprocess(bad, RunFolder(tmp_path / "bad"), **QUIET)


def test_the_optimizer_can_come_along(tmp_path, base, tiny_corpus):
    config, run = fine_tuning(tmp_path, tiny_corpus, base, "--train.init_optimizer=true",
                              "--train.max_steps=160")  # fmt: skip
    messages = []
    train(config, run, log=messages.append)
    assert any("optimizer and schedule taken from" in m for m in messages)
    assert load_checkpoint(run.last).info["step"] == 160  # went on from step 150
