"""A run folder whose parts do not belong together is refused before any work, in one line
that says what to do; so is a checkpoint whose metadata was damaged or edited. A killed
preprocess leaves nothing behind for good."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from seq2seq.checkpoint import read_safetensors, write_safetensors

from .conftest import ROOT, copy_run, write_config
from .workspace import invoke, refused_and_untouched


def preprocessed(tmp_path, corpus, name: str, *overrides: str):
    config = write_config(tmp_path / f"{name}-config", corpus)
    run = tmp_path / name
    result = invoke(["preprocess", config, "--run-dir", run, *overrides])
    assert result.exit_code == 0, result.output
    return config, run


def swap_tokenizer(run, other, corpus):
    shutil.copyfile(other / "spm.model", run / "spm.model")


def state_from_other_run(run, other, corpus):
    shutil.rmtree(other / "model", ignore_errors=True)
    shutil.copytree(run / "model", other / "model")
    return other


def preprocess_again(run, other, corpus):
    config = write_config(run.parent / "again", corpus)
    assert invoke(["preprocess", config, "--run-dir", run]).exit_code == 0


def delete_state(run, other, corpus):
    (run / "model" / "train_state.safetensors").unlink()


OTHER_DATA = r"train_state\.safetensors: trained on other data .*--fresh"
CASES = {
    "a SentencePiece model from another run": (swap_tokenizer, r"spm\.model: not the .*preprocess"),
    "a training state from another run": (state_from_other_run, OTHER_DATA),
    "a corpus preprocessed again under the model": (preprocess_again, OTHER_DATA),
    "a deleted training state": (delete_state, r"state\.safetensors: missing, but .*--fresh"),
}


@pytest.mark.parametrize("case", CASES)
def test_training_refuses_parts_that_do_not_belong_together(
    tmp_path, tiny_corpus, trained_run, case
):
    mutate, message = CASES[case]
    run = copy_run(trained_run, tmp_path / "run")
    _, other = preprocessed(tmp_path, tiny_corpus, "other", "--data.subwords.vocab_size=100")
    target = mutate(run, other, tiny_corpus) or run
    config = write_config(tmp_path / "config", tiny_corpus)
    refused_and_untouched(
        target, ["train", config, "--run-dir", target, "--train.max_steps=20"], message
    )
    if case != "a SentencePiece model from another run":  # --fresh is the way out it names
        fresh = invoke(["train", config, "--run-dir", target, "--train.max_steps=2", "--fresh"])
        assert fresh.exit_code == 0, fresh.output


def test_the_pipeline_refuses_a_corpus_that_changed_under_a_trained_run(tmp_path, tiny_corpus):
    corpus = shutil.copytree(tiny_corpus, tmp_path / "corpus")
    config = write_config(tmp_path, corpus)
    run = tmp_path / "run"
    steps = ["--train.max_steps=2", "--train.validate_every=2"]
    assert invoke(["pipeline", config, "--run-dir", run, *steps]).exit_code == 0
    with open(corpus / "train.en", "a", encoding="utf-8") as f:
        f.write("One more line.\n")
    with open(corpus / "train.de", "a", encoding="utf-8") as f:
        f.write("Noch eine Zeile.\n")
    line = refused_and_untouched(run, ["pipeline", config, "--run-dir", run, *steps], "--fresh")
    assert "train.en changed" in line or "train.de changed" in line
    assert invoke(["pipeline", config, "--run-dir", run, *steps, "--fresh"]).exit_code == 0


def edit_metadata(path, out, change):
    tensors, metadata = read_safetensors(path)
    change(tensors, metadata)
    write_safetensors(out, tensors, metadata)


def edit_json(key, field, value):
    def change(tensors, metadata):
        data = json.loads(metadata[key])
        data[field] = value
        metadata[key] = json.dumps(data)

    return change


def damage_tokenizer(tensors, metadata):
    tensors["tokenizer.src"] = tensors["tokenizer.src"][: len(tensors["tokenizer.src"]) // 2]


EDITS = {
    "normalization": edit_json("info", "normalize", "nfd"),
    "length limit": edit_json("info", "max_pieces", -4),
    "length limit text": edit_json("info", "max_pieces", "many"),
    "languages": edit_json("info", "languages", ["en", "de"]),
    "language code": edit_json("info", "languages", {"src": 3, "tgt": None}),
    "info not a mapping": lambda t, m: m.update(info="[1, 2]"),
    "end-of-sentence id": edit_json("vocab", "eos_id", 7),
    "vocabulary size": edit_json("vocab", "tgt_size", 99),
    "special id as text": edit_json("vocab", "pad_id", "0"),
    "tokenizer": damage_tokenizer,
}


@pytest.mark.parametrize("edit", EDITS)
def test_damaged_checkpoint_metadata_is_refused_naming_the_file(tmp_path, trained_run, edit):
    checkpoint = tmp_path / "edited.safetensors"
    edit_metadata(trained_run / "model" / "best.safetensors", checkpoint, EDITS[edit])
    source = tmp_path / "in.en"
    source.write_text("The dog sleeps.\n", encoding="utf-8")
    args = ["translate", "-m", checkpoint, "-i", source, "-o", tmp_path / "out.de"]
    refused_and_untouched(tmp_path, args, f"^error: {re.escape(str(checkpoint))}[: ]")


def test_a_killed_preprocess_leaves_no_staging_folder_for_good(tmp_path, tiny_corpus):
    config = write_config(tmp_path, tiny_corpus)
    run = tmp_path / "runs" / "run"
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "preprocess",
        str(config),
        "--run-dir",
        str(run),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not list(run.parent.glob(".run.preprocess.*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(run.parent.glob(".run.preprocess.*")), "the kill came too late to test anything"
    assert invoke(["preprocess", config, "--run-dir", run]).exit_code == 0
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]
    assert json.loads((run / "manifest.json").read_text())["splits"]["train"]["pairs"] > 0
    assert invoke(["train", config, "--run-dir", run, "--train.max_steps=1"]).exit_code == 0
