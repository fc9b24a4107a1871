"""Corpora in every shape through `datasets`, and bad input refused without losing work."""

from __future__ import annotations

import csv
import gzip
import json
import shutil

import pytest
from typer.testing import CliRunner

from cli import app
from pipelines.layout import RunFolder
from pipelines.preprocess import preprocess
from seq2seq.config import load_config

from .conftest import write_config, write_corpus
from .test_stages import snapshot

SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}


def pairs(tiny_corpus, split: str) -> list[tuple[str, str]]:
    en = (tiny_corpus / f"{split}.en").read_text(encoding="utf-8").splitlines()
    de = (tiny_corpus / f"{split}.de").read_text(encoding="utf-8").splitlines()
    return list(zip(en, de))


def run_preprocess(tmp_path, corpus_path, overrides: list[str]) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = write_config(tmp_path, corpus_path)
    config = load_config(config_path, overrides)
    return preprocess(config, RunFolder(tmp_path / "run"), log=lambda _: None)


def expected_counts(tiny_corpus) -> list[int]:
    return [len(pairs(tiny_corpus, s)) for s in ("train", "dev", "test")]


def counts(manifest) -> list[int]:
    return [manifest["splits"][s]["pairs"] for s in ("train", "dev", "test")]


def test_text_pairs_read_gzip_transparently(tmp_path, tiny_corpus):
    folder = tmp_path / "gz"
    folder.mkdir()
    for path in tiny_corpus.iterdir():
        (folder / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    manifest = run_preprocess(tmp_path, folder, [])
    assert counts(manifest) == expected_counts(tiny_corpus)
    assert manifest["inputs"]["train"]["src"]["path"].endswith("train.en.gz")


@pytest.mark.parametrize("fmt", ["tsv", "csv", "json", "json.gz", "parquet"])
def test_table_formats_with_named_columns(tmp_path, tiny_corpus, fmt):
    import datasets

    folder = tmp_path / "tables"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        rows = pairs(tiny_corpus, split)
        path = folder / f"{split}.{fmt}"
        if fmt == "tsv":
            path.write_text(
                "source\ttarget\n" + "".join(f"{e}\t{d}\n" for e, d in rows), encoding="utf-8"
            )
        elif fmt == "csv":
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["source", "target"])
                writer.writerows(rows)
        elif fmt.startswith("json"):
            text = "".join(json.dumps({"source": e, "target": d}) + "\n" for e, d in rows)
            data = text.encode()
            path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
        else:
            datasets.Dataset.from_dict(
                {"source": [e for e, _ in rows], "target": [d for _, d in rows]}
            ).to_parquet(str(path))
    manifest = run_preprocess(
        tmp_path,
        folder,
        [
            f"--data.format={fmt.split('.')[0]}",
            f"--data.train=train.{fmt}",
            f"--data.dev=dev.{fmt}",
            f"--data.test=test.{fmt}",
            "--data.src_column=source",
            "--data.tgt_column=target",
        ],
    )
    assert counts(manifest) == expected_counts(tiny_corpus)
    test_src = (tmp_path / "run" / manifest["splits"]["test"]["src"]).read_text(encoding="utf-8")
    assert test_src.splitlines() == [e for e, _ in pairs(tiny_corpus, "test")]


def test_saved_dataset_with_a_nested_translation_column(tmp_path, tiny_corpus):
    import datasets

    splits = {
        name: datasets.Dataset.from_dict(
            {"translation": [{"en": e, "de": d} for e, d in pairs(tiny_corpus, split)]}
        )
        for split, name in SPLIT_NAMES.items()
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    manifest = run_preprocess(
        tmp_path,
        tmp_path / "saved",
        ["--data.source=disk", "--data.dev=validation", "--data.translation_field=translation"],
    )
    assert counts(manifest) == expected_counts(tiny_corpus)
    assert manifest["inputs"]["dev"]["split"] == "validation"


@pytest.mark.parametrize("schema", ["flat", "nested"])
def test_hub_loader_on_a_local_folder_of_data_files(tmp_path, tiny_corpus, schema):
    """`datasets.load_dataset(path, config, split=...)`, the hub call itself, given a folder
    laid out like a hub dataset repository (bentrevett/multi30k or wmt16 style)."""
    folder = tmp_path / "hub_like"
    folder.mkdir()
    for split, name in SPLIT_NAMES.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for e, d in pairs(tiny_corpus, split):
                row = {"en": e, "de": d}
                if schema == "nested":
                    row = {"translation": row}
                f.write(json.dumps(row) + "\n")
    overrides = ["--data.source=hub", f"--data.path={folder}", "--data.dev=validation"]
    if schema == "nested":
        overrides.append("--data.translation_field=translation")
    manifest = run_preprocess(tmp_path, folder, overrides)
    assert counts(manifest) == expected_counts(tiny_corpus)
    assert manifest["inputs"]["train"]["hub"] == str(folder)


def test_sampling_at_most_n_pairs_is_seeded(tmp_path, tiny_corpus):
    first = run_preprocess(tmp_path / "a", tiny_corpus, ["--data.max_pairs=100"])
    run_preprocess(tmp_path / "b", tiny_corpus, ["--data.max_pairs=100"])
    assert first["splits"]["train"]["pairs"] == 100
    assert (tmp_path / "a/run/data/train.en").read_bytes() == (
        tmp_path / "b/run/data/train.en"
    ).read_bytes()


@pytest.mark.parametrize(
    "options",
    [
        ["--data.subwords.model_type=bpe", "--data.subwords.joint=false"],
        [
            "--data.subwords.byte_fallback=true",
            "--data.subwords.vocab_size=500",
            "--data.subwords.user_symbols=[<tag>]",
            "--data.subwords.character_coverage=0.9995",
        ],
        [
            "--data.cleaning.normalize=nfkc",
            "--data.cleaning.max_pieces=40",
            "--data.cleaning.max_ratio=1.5",
            "--data.cleaning.filter_dev_test=true",
        ],
    ],
)
def test_subword_and_cleaning_options(tmp_path, tiny_corpus, options):
    manifest = run_preprocess(tmp_path, tiny_corpus, options)
    run = tmp_path / "run"
    from seq2seq.tokenizer import Tokenizer

    for side in ("src", "tgt"):
        tokenizer = Tokenizer((run / manifest["tokenizer"][side]).read_bytes())
        assert tokenizer.pad_id >= 0 and tokenizer.eos_id >= 0
    if "--data.subwords.joint=false" in options:
        assert manifest["tokenizer"]["src"] == "spm.en.model"
        assert manifest["tokenizer"]["tgt"] == "spm.de.model"
    if "--data.subwords.user_symbols=[<tag>]" in options:
        tokenizer = Tokenizer((run / "spm.model").read_bytes())
        assert "<tag>" in tokenizer.pieces(tokenizer.encode(["a <tag> b"])[0])
    if "--data.cleaning.max_pieces=40" in options:
        cleaning = manifest["cleaning"]
        assert cleaning["train"]["too_many_pieces"] > 0
        assert cleaning["test"]["too_many_pieces"] + cleaning["test"]["length_ratio"] > 0
        assert manifest["splits"]["test"]["pairs"] < len(pairs(tiny_corpus, "test"))


# --- bad input: one line, exit code 2, no traceback, nothing lost ---------------------------


def bad_corpus(tmp_path, tiny_corpus, problem: str):
    corpus = shutil.copytree(tiny_corpus, tmp_path / "corpus")
    overrides = []
    if problem == "mismatched":
        with open(corpus / "train.de", "a", encoding="utf-8") as f:
            f.write("Noch ein Satz.\n")
    elif problem == "utf8":
        lines = (corpus / "dev.en").read_bytes().split(b"\n")
        lines[6] = b"Caf\xe9 au lait."
        (corpus / "dev.en").write_bytes(b"\n".join(lines))
    elif problem == "missing_column":
        (corpus / "train.tsv").write_text("english\tgerman\nA.\tB.\n", encoding="utf-8")
        overrides = ["--data.format=tsv", "--data.train=train.tsv"]
    elif problem == "empty_file":
        (corpus / "test.en").write_text("")
        (corpus / "test.de").write_text("")
    elif problem == "empty_after_cleaning":
        overrides = ["--data.cleaning.max_chars=3"]
    elif problem == "missing_file":
        (corpus / "dev.de").unlink()
    elif problem == "unknown_key":
        overrides = ["--data.cleaning.lowercase=true"]
    elif problem == "wrong_type":
        overrides = ["--data.subwords.vocab_size=lots"]
    return corpus, overrides


BAD = {
    "mismatched": r"train\.en has 300 lines but .*train\.de has 301",
    "utf8": r"dev\.en:7: invalid UTF-8",
    "missing_column": r"no column 'en'.*columns are: english, german",
    "empty_file": r"test.*no sentence pairs",
    "empty_after_cleaning": r"training split is empty after cleaning",
    "missing_file": r"dev\.de: no such file",
    "unknown_key": r"unknown config key 'data\.cleaning\.lowercase'",
    "wrong_type": r"'data\.subwords\.vocab_size': expected an integer",
}


@pytest.mark.parametrize("problem", BAD)
def test_bad_input_is_one_line_and_leaves_the_run_folder_alone(
    tmp_path, tiny_corpus, trained_run, problem
):
    import re

    corpus, overrides = bad_corpus(tmp_path, tiny_corpus, problem)
    run = shutil.copytree(trained_run, tmp_path / "run")
    before = snapshot(run)
    config_path = write_config(tmp_path, corpus)
    listing = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(
        app, ["preprocess", str(config_path), "--run-dir", str(run), *overrides]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(BAD[problem], lines[0]), result.stderr
    assert "Traceback" not in result.output
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_the_sentencepiece_sample_is_seeded_uniform_and_in_order():
    from seq2seq.tokenizer import seeded_sample

    items = [f"s{i}" for i in range(1000)]
    sample = seeded_sample(iter(items), 100, seed=3)
    assert len(sample) == 100 == len(set(sample))
    assert sample == sorted(sample, key=items.index)  # corpus order kept
    assert sample == seeded_sample(iter(items), 100, seed=3)
    assert sample != seeded_sample(iter(items), 100, seed=4)
    assert seeded_sample(iter(items[:50]), 100, seed=3) == items[:50]  # fewer: all of them
    # each item is kept with probability 100/1000: the later half is not left out
    assert 30 <= sum(int(s[1:]) >= 500 for s in sample) <= 70


def test_sentencepiece_trained_on_a_sample_is_the_same_in_every_process(tmp_path, tiny_corpus):
    """SentencePiece 0.2.2 and later draw their own sample differently in each process."""
    import subprocess
    import sys

    from .conftest import ROOT

    script = (
        "import sys, hashlib; from seq2seq.tokenizer import Tokenizer; "
        "from seq2seq.config import SubwordConfig; "
        "lines = open(sys.argv[1], encoding='utf-8').read().splitlines(); "
        "config = SubwordConfig(vocab_size=60, input_sentence_size=len(lines) // 2); "
        "print(hashlib.sha256(Tokenizer.train(lines, config, seed=5).proto).hexdigest())"
    )
    source = str(tiny_corpus / "train.en")
    digests = {
        subprocess.run(
            [sys.executable, "-c", script, source],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout  # fmt: skip
        for _ in range(2)
    }
    assert len(digests) == 1


# --- corpora as people have them --------------------------------------------------------


@pytest.mark.parametrize("order", [("en", "de"), ("de", "en")])
def test_tables_without_a_header_row_name_their_columns_in_order(tmp_path, tiny_corpus, order):
    """Marian's --tsv: no header row; every line is a pair, the first one too."""
    folder = tmp_path / "tsv"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        rows = [dict(zip(("en", "de"), pair)) for pair in pairs(tiny_corpus, split)]
        text = "".join("\t".join(row[lang] for lang in order) + "\n" for row in rows)
        (folder / f"{split}.tsv").write_text(text, encoding="utf-8")
    overrides = ["--data.format=tsv", f"--data.columns=[{order[0]}, {order[1]}]"]
    overrides += [f"--data.{split}={split}.tsv" for split in ("train", "dev", "test")]
    manifest = run_preprocess(tmp_path, folder, overrides)
    assert counts(manifest) == expected_counts(tiny_corpus)
    run = tmp_path / "run"
    first = pairs(tiny_corpus, "dev")[0]
    assert (run / "data" / "dev.en").read_text(encoding="utf-8").splitlines()[0] == first[0]
    assert (run / "data" / "dev.de").read_text(encoding="utf-8").splitlines()[0] == first[1]


def test_columns_are_refused_for_formats_with_named_fields(tmp_path, tiny_corpus):
    from seq2seq.errors import UserError

    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "train.json").write_text('{"en": "a", "de": "b"}\n', encoding="utf-8")
    overrides = ["--data.format=json", "--data.columns=[en, de]", "--data.train=train.json"]
    with pytest.raises(UserError, match="data.columns': only for tsv and csv"):
        run_preprocess(tmp_path, folder, overrides)


def test_weighted_corpora_are_seen_as_often_as_their_weights_say(tmp_path, tiny_corpus):
    from pipelines.train import Trainer

    extra = write_corpus(tmp_path / "in_domain", {"test": 5, "dev": 5, "train": 40}, seed=99)
    overrides = [f"--data.corpora=[{{path: {extra}, weight: 3}}]", "--data.weight=0.5"]
    manifest = run_preprocess(tmp_path, tiny_corpus, overrides)
    general, in_domain = manifest["splits"]["train"]["corpora"]
    assert general + in_domain == manifest["splits"]["train"]["pairs"] and in_domain == 40
    config = load_config(tmp_path / "c.yaml", overrides)
    trainer = Trainer(config, RunFolder(tmp_path / "run"), log=lambda _: None)
    for epoch in (0, 1):
        drawn = [i for batch in trainer.data.epoch_batches(epoch) for i in batch]
        assert sum(i >= general for i in drawn) == 3 * in_domain  # each in-domain pair 3 times
        firsts = sorted(i for i in drawn if i < general)
        assert len(firsts) == round(general / 2) and len(set(firsts)) == len(firsts)
    halves = [{i for b in trainer.data.epoch_batches(e) for i in b if i < general} for e in (0, 1)]
    assert halves[0] != halves[1]  # another half every epoch


def test_a_weight_change_needs_no_new_preprocess(tmp_path, tiny_corpus):
    from pipelines.pipeline import _stale

    extra = write_corpus(tmp_path / "more", {"test": 5, "dev": 5, "train": 30}, seed=5)
    first = [f"--data.corpora=[{{path: {extra}, weight: 2}}]"]
    run_preprocess(tmp_path, tiny_corpus, first)
    run = RunFolder(tmp_path / "run")
    again = load_config(tmp_path / "c.yaml", [f"--data.corpora=[{{path: {extra}, weight: 5}}]"])
    assert _stale(again, run) is None
    other = load_config(tmp_path / "c.yaml", [f"--data.corpora=[{{path: {extra}, train: dev}}]"])
    assert _stale(other, run) == "the data config changed"


def test_a_script_without_spaces_works_end_to_end(tmp_path, tiny_corpus):
    """English to a made-up language written in CJK characters without spaces: cleaning
    counts characters, SentencePiece splits the script, and BLEU tokenizes it as zh (13a
    would see one word a sentence)."""
    from pipelines.pipeline import pipeline

    folder = tmp_path / "cjk"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        en = (tiny_corpus / f"{split}.en").read_text(encoding="utf-8").splitlines()
        de = (tiny_corpus / f"{split}.de").read_text(encoding="utf-8").splitlines()
        cjk = ["".join(chr(0x4E00 + sum(map(ord, w)) % 150) for w in d.split()) + "。" for d in de]
        (folder / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (folder / f"{split}.zh").write_text("\n".join(cjk) + "\n", encoding="utf-8")
    overrides = ["--data.tgt_lang=zh", "--score.tokenize=zh", "--data.cleaning.max_chars=30"]
    overrides.append("--data.subwords.vocab_size=250")
    config = load_config(write_config(tmp_path, folder), overrides)
    run = RunFolder(tmp_path / "run")
    pipeline(config, run, log=lambda _: None)
    score = json.loads(run.score.read_text(encoding="utf-8"))
    assert "tok:zh" in score["signature"]
    translations = (run.root / "translations" / "test.zh").read_text(encoding="utf-8")
    assert all(" " not in line for line in translations.splitlines())
    longest = max(len(line) for line in (run.root / "data" / "train.zh").read_text().splitlines())
    assert longest <= 30  # max_chars counted characters, not words
    manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    assert manifest["cleaning"]["train"]["too_many_chars"] > 0
