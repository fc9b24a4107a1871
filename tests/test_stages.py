"""Each stage alone, through its files."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from pipelines.layout import RunFolder
from pipelines.preprocess import preprocess
from pipelines.score import score_files
from pipelines.train import train
from pipelines.translate import translate_file
from seq2seq.batching import TokenSequences
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import TranslateConfig, load_config
from seq2seq.errors import UserError
from seq2seq.tokenizer import Tokenizer

from .conftest import write_config, write_corpus

QUIET = {"log": lambda _: None}


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_preprocess_writes_what_the_manifest_names(trained_run):
    run = RunFolder(trained_run)
    manifest = run.read_manifest()
    assert set(manifest["splits"]) == {"train", "dev", "test"}
    tokenizer = Tokenizer((trained_run / manifest["tokenizer"]["src"]).read_bytes())
    for entry in manifest["splits"].values():
        src_lines = (trained_run / entry["src"]).read_text(encoding="utf-8").splitlines()
        tgt_lines = (trained_run / entry["tgt"]).read_text(encoding="utf-8").splitlines()
        assert len(src_lines) == len(tgt_lines) == entry["pairs"]
        ids = TokenSequences.load(trained_run / entry["src_ids"])
        assert len(ids) == entry["pairs"]
        assert ids[0].tolist() == tokenizer.encode([src_lines[0]])[0]
        assert int(ids.lengths.sum()) == entry["src_tokens"]
    assert manifest["cleaning"]["train"]["input"] == 300
    assert manifest["inputs"]["train"]["src"]["sha256"]
    assert manifest["data"]["src_lang"] == "en" and "train" not in manifest  # data only


def test_preprocess_cleans_train_but_keeps_every_dev_and_test_line(tmp_path, tiny_corpus):
    corpus = shutil.copytree(tiny_corpus, tmp_path / "corpus")
    train_en = (corpus / "train.en").read_text(encoding="utf-8").splitlines()
    train_de = (corpus / "train.de").read_text(encoding="utf-8").splitlines()
    # two duplicates, one empty side, one line with odd whitespace and a decomposed umlaut
    train_en += [train_en[0], train_en[1], "", "  The   dog  sleeps. "]
    train_de += [train_de[0], train_de[1], "Leer.", "Der Hund schla\u0308ft."]
    (corpus / "train.en").write_text("\n".join(train_en) + "\n", encoding="utf-8")
    (corpus / "train.de").write_text("\n".join(train_de) + "\n", encoding="utf-8")
    (corpus / "test.en").write_text("\n\n" + (corpus / "test.en").read_text(), encoding="utf-8")
    (corpus / "test.de").write_text("a\nb\n" + (corpus / "test.de").read_text(), encoding="utf-8")
    config_path = write_config(tmp_path, corpus)
    run = RunFolder(tmp_path / "run")
    manifest = preprocess(load_config(config_path), run, **QUIET)
    counts = manifest["cleaning"]["train"]
    assert counts["duplicate"] == 2 and counts["empty"] == 1
    assert counts["kept"] == 301
    train_text = run.text("train", "de").read_text(encoding="utf-8")
    assert "Der Hund schläft." in train_text  # NFC composed
    assert "The dog sleeps." in run.text("train", "en").read_text(encoding="utf-8")
    assert manifest["splits"]["test"]["pairs"] == 22


def test_failed_preprocess_leaves_the_run_folder_as_it_was(tmp_path, tiny_corpus, trained_run):
    run_copy = shutil.copytree(trained_run, tmp_path / "run")
    before = snapshot(run_copy)
    corpus = shutil.copytree(tiny_corpus, tmp_path / "corpus")
    with open(corpus / "dev.de", "a", encoding="utf-8") as f:
        f.write("one line too many\n")
    config_path = write_config(tmp_path, corpus)
    with pytest.raises(UserError, match=r"dev\.en has 15 lines but .*dev\.de has 16"):
        preprocess(load_config(config_path), RunFolder(run_copy), **QUIET)
    assert snapshot(run_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "corpus", "run"]


def test_train_writes_checkpoints_log_and_curve(trained_run):
    run = RunFolder(trained_run)
    for path in (run.best, run.last, run.train_state):
        assert path.is_file()
    records = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert [r["step"] for r in records if "dev_bleu" in r] == [6, 12]
    assert all(r["train_loss"] > 0 for r in records if "train_loss" in r)
    assert run.learning_curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = load_checkpoint(run.best)
    assert checkpoint.info["step"] in (6, 12)
    assert checkpoint.search.beam_size == 3


def test_train_resumes_where_it_stopped(tmp_path, trained_run, tiny_corpus):
    run = RunFolder(shutil.copytree(trained_run, tmp_path / "run"))
    config_path = write_config(tmp_path, tiny_corpus)
    config = load_config(config_path, ["--train.max_steps=18"])
    result = train(config, run, **QUIET)
    assert result["step"] == 18
    records = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert [r["step"] for r in records if "dev_bleu" in r] == [6, 12, 18]


def test_translate_keeps_lines_in_order_and_repeats_exactly(tmp_path, trained_run):
    source = tmp_path / "in.txt"
    lines = ["The dog sleeps.", "", "A woman reads the book in the garden.", "Heute.", "", "x"]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = (TranslateConfig(device="cpu"), {"beam_size": 2, "batch_size": 2})
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    translate_file(trained_run, str(source), str(first), *options, **QUIET)
    translate_file(
        trained_run / "model" / "best.safetensors", str(source), str(second), *options, **QUIET
    )
    out = first.read_text(encoding="utf-8").split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    assert out[1] == "" and out[4] == ""
    assert first.read_bytes() == second.read_bytes()


def test_a_copied_model_folder_still_translates(tmp_path, trained_run):
    copied = shutil.copytree(trained_run / "model", tmp_path / "elsewhere" / "model")
    source = tmp_path / "in.txt"
    source.write_text("The dog sleeps.\n", encoding="utf-8")
    options = (TranslateConfig(device="cpu"), {})
    translate_file(copied, str(source), str(tmp_path / "a.txt"), *options, **QUIET)
    translate_file(trained_run, str(source), str(tmp_path / "b.txt"), *options, **QUIET)
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()


def test_score_reports_bleu_chrf_and_signatures(tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("Der Hund schläft.\nDie Katze liest ein Buch.\n", encoding="utf-8")
    perfect = score_files(refs, refs)
    assert perfect["bleu"] == 100.0 and perfect["chrf"] == 100.0
    assert perfect["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    hyps = tmp_path / "hyps.txt"
    hyps.write_text("der hund schläft.\nDie Katze liest.\n", encoding="utf-8")
    assert score_files(hyps, refs)["bleu"] < 100.0
    hyps.write_text("Der Hund schläft.\n", encoding="utf-8")
    with pytest.raises(UserError, match="has 1 lines but .* has 2"):
        score_files(hyps, refs)


def test_stages_refuse_a_run_folder_that_was_not_preprocessed(tmp_path, tiny_config_file):
    with pytest.raises(UserError, match="run `nmt preprocess` first"):
        train(load_config(tiny_config_file), RunFolder(tmp_path / "nothing"), **QUIET)


def test_preprocess_carves_dev_and_test_out_of_train(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", {"train": 200})
    config_path = write_config(tmp_path, corpus)
    config = load_config(
        config_path,
        ["--data.dev=null", "--data.test=null", "--data.dev_size=10", "--data.test_size=12"],
    )
    manifest = preprocess(config, RunFolder(tmp_path / "run"), **QUIET)
    assert [manifest["splits"][s]["pairs"] for s in ("train", "dev", "test")] == [178, 10, 12]


def test_alignments_hold_one_attention_matrix_per_line(tmp_path, trained_run):
    source = tmp_path / "in.txt"
    source.write_text("The dog sleeps.\n\nA woman reads the old book.\n", encoding="utf-8")
    aligned = tmp_path / "align.jsonl"
    options = (TranslateConfig(device="cpu"), {"beam_size": 3})
    translate_file(
        trained_run,
        str(source),
        str(tmp_path / "out.txt"),
        *options,
        **QUIET,
        alignments=str(aligned),
    )
    records = [json.loads(line) for line in aligned.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[1] == {"line": 2, "source": [], "target": [], "attention": []}
    for record in (records[0], records[2]):
        assert record["source"][-1] == "</s>" and record["target"][-1] == "</s>"
        assert len(record["attention"]) == len(record["target"])
        for row in record["attention"]:
            assert len(row) == len(record["source"])
            assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_kept_checkpoints_average_into_one(tmp_path, tiny_corpus, trained_run):
    from typer.testing import CliRunner

    from cli import app

    run = RunFolder(shutil.copytree(trained_run, tmp_path / "run"))
    config_path = write_config(tmp_path, tiny_corpus)
    config = load_config(
        config_path, ["--train.keep_best=2", "--train.keep_last=3", "--train.validate_every=3"]
    )
    train(config, run, fresh=True, **QUIET)
    assert [p.name for p in run.kept_checkpoints("last")] == [
        "last-6.safetensors",
        "last-9.safetensors",
        "last-12.safetensors",
    ]
    assert len(run.kept_checkpoints("best")) == 2
    out = tmp_path / "avg.safetensors"
    result = CliRunner().invoke(app, ["average", str(run.root), "--last", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    averaged = load_checkpoint(out).model.state_dict()
    a = load_checkpoint(run.kept("last", 9)).model.state_dict()
    b = load_checkpoint(run.kept("last", 12)).model.state_dict()
    for key, value in averaged.items():
        if value.is_floating_point():
            assert torch.allclose(value, (a[key] + b[key]) / 2, atol=1e-6), key
    source = tmp_path / "in.txt"
    source.write_text("The dog sleeps.\n", encoding="utf-8")
    translate_file(
        out, str(source), str(tmp_path / "o.txt"), TranslateConfig(device="cpu"), **QUIET
    )
    bad = CliRunner().invoke(app, ["average", str(run.root), "--best", "5", "-o", str(out)])
    assert bad.exit_code == 2 and "2 kept 'best' checkpoints, asked for 5" in bad.stderr
    chosen = tmp_path / "chosen.safetensors"
    result = CliRunner().invoke(app, ["average", str(run.root), "--choose", "-o", str(chosen)])
    assert result.exit_code == 0, result.output
    scores = dict(
        re.findall(r"average: (.+?) \(\d+ checkpoints\): dev BLEU ([\d.]+)", result.stdout)
    )
    assert set(scores) == {"best checkpoint", "last 2", "last 3", "best 2"}
    count, picked = re.search(
        r"chose (\d+) checkpoint\(s\), dev BLEU ([\d.]+)", result.stdout
    ).groups()
    assert float(picked) == max(map(float, scores.values()))  # never below the best alone
    written = load_checkpoint(chosen)
    assert len(written.info.get("averaged", [run.best])) == int(count)
    if int(count) == 1:
        best = load_checkpoint(run.best).model.state_dict()
        assert all(torch.equal(v, best[k]) for k, v in written.model.state_dict().items())
    # a run that trained with train.metric loss is averaged by dev loss, lowest chosen
    used = run.used_config.read_text(encoding="utf-8").replace("metric: bleu", "metric: loss")
    run.used_config.write_text(used, encoding="utf-8")
    result = CliRunner().invoke(app, ["average", str(run.root), "--choose", "-o", str(chosen)])
    assert result.exit_code == 0, result.output
    losses = re.findall(r"\): dev loss ([\d.]+)", result.stdout)
    picked = re.search(r"chose \d+ checkpoint\(s\), dev loss ([\d.]+)", result.stdout).group(1)
    assert len(losses) == 4 and float(picked) == min(map(float, losses))
