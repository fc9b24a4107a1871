"""Evaluation as papers report it (sacreBLEU), and a command line that says what it took."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from pipelines.score import corpus_scores, paired_test, score_files
from seq2seq.config import ScoreConfig
from seq2seq.errors import UserError

from .conftest import ROOT

REFS = ["The dog sleeps in the garden .", "A woman reads an old book ."]
HYPS = ["The dog sleeps in a garden .", "A woman reads the old book ."]
OTHER = ["A dog sleeps in the garden .", "The woman is reading an old book ."]


def files(tmp_path, **texts) -> dict:
    paths = {}
    for name, lines in texts.items():
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return paths


def test_several_references_are_all_used(tmp_path):
    one = corpus_scores(HYPS, [REFS])
    two = corpus_scores(HYPS, [REFS, HYPS])  # the second reference is the hypothesis itself
    assert one["signature"].startswith("nrefs:1") and two["signature"].startswith("nrefs:2")
    assert one["bleu"] < 100 == two["bleu"]
    paths = files(tmp_path, hyp=HYPS, ref=REFS, other=OTHER)
    assert score_files(paths["hyp"], [paths["ref"], paths["other"]])["references"] == 2


@pytest.mark.parametrize("tokenize", ["13a", "intl", "zh", "char", "none"])
def test_each_bleu_tokenizer_shows_in_the_signature(tokenize):
    result = corpus_scores(HYPS, [REFS], ScoreConfig(tokenize=tokenize))
    assert f"tok:{tokenize}" in result["signature"]


def test_chinese_is_scored_by_characters_with_zh():
    refs, hyps = ["我们今天去公园散步。"], ["我们今天去公园跑步。"]
    assert corpus_scores(hyps, [refs])["bleu"] == 0.0  # 13a sees one word, and it differs
    assert corpus_scores(hyps, [refs], ScoreConfig(tokenize="zh"))["bleu"] > 50


def test_lowercase_and_ter_and_metric_choice():
    upper = [h.upper() for h in HYPS]
    cased = corpus_scores(upper, [REFS])
    lowered = corpus_scores(upper, [REFS], ScoreConfig(lowercase=True))
    assert lowered["bleu"] > cased["bleu"] and "case:lc" in lowered["signature"]
    assert corpus_scores(REFS, [REFS])["ter"] == 0.0 < corpus_scores(HYPS, [REFS])["ter"]
    only = corpus_scores(HYPS, [REFS], ScoreConfig(metrics=("chrf",)))
    assert "chrf" in only and "bleu" not in only and "ter" not in only


def test_an_unknown_or_unavailable_tokenizer_is_one_line():
    with pytest.raises(UserError, match="score.tokenize': 'klingon' is not a sacreBLEU"):
        corpus_scores(HYPS, [REFS], ScoreConfig(tokenize="klingon"))


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_paired_tests_print_as_sacrebleu_does(tmp_path, test):
    paths = files(tmp_path, base=HYPS * 10, system=OTHER * 10, ref=REFS * 10)
    text = paired_test([paths["base"], paths["system"]], [paths["ref"]], test=test, n=200)
    assert f"Baseline: {paths['base']}" in text and "p = " in text
    assert ("bootstrap resampling" if test == "bs" else "approximate randomization") in text
    assert "BLEU" in text and "Metric signatures" in text
    rows = json.loads(paired_test([paths["base"], paths["system"]], [paths["ref"]], n=100,
                                  as_json=True))  # fmt: skip
    assert len(rows) == 2 and rows[1]["BLEU"]["p_value"] is not None


def test_score_command_takes_references_tokenizers_and_tests(tmp_path):
    paths = files(tmp_path, hyp=HYPS, other=OTHER, ref=REFS, ref2=OTHER)
    run = CliRunner().invoke
    result = run(app, ["score", "-H", str(paths["hyp"]), "-r", str(paths["ref"]), "-r",
                       str(paths["ref2"]), "--tokenize", "intl", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["signature"].startswith("nrefs:2") and "tok:intl" in scores["signature"]
    result = run(app, ["score", "-H", str(paths["hyp"]), "-H", str(paths["other"]), "-r",
                       str(paths["ref"]), "--paired-bs", "--paired-n", "100"])  # fmt: skip
    assert result.exit_code == 0 and "Paired bootstrap" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["score", "-H", "a", "-r", "b", "--json", "--json"],
        ["score", "-H", "a", "-r", "b", "--tokenize", "zh", "--tokenize", "13a"],
        ["score", "-H", "a", "-r", "b", "--tokenize", "zh", "--score.tokenize=13a"],
        ["translate", "-m", "x", "-i", "a", "-o", "b", "-o", "c"],
        ["translate", "-m", "x", "-i", "a", "-o", "b", "--beam-size", "2", "--beam-size=3"],
        ["translate", "-m", "x", "-i", "a", "-o", "b", "--search.beam_size=2",
         "--search.beam_size=3"],
        ["train", "c.yaml", "--max-steps", "3", "--train.max_steps=4"],
        ["serve", "-m", "x", "--port", "1", "--port", "2"],
    ],
)  # fmt: skip
def test_an_option_given_twice_is_refused_not_dropped(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "twice" in result.stderr and result.stderr.count("\n") == 1


def test_moses_n_best_lines(tmp_path, trained_run):
    from pipelines.translate import translate_file
    from seq2seq.config import TranslateConfig

    source = tmp_path / "in.en"
    source.write_text("The dog sleeps.\n\nA woman reads.\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    config = TranslateConfig(device="cpu", n_best_format="moses")
    translate_file(trained_run, str(source), str(out), config, {"beam_size": 3, "n_best": 3},
                   log=lambda _: None)  # fmt: skip
    lines = out.read_text(encoding="utf-8").splitlines()
    numbers = [int(line.split(" ||| ")[0]) for line in lines]
    assert numbers == [0, 0, 0, 2, 2, 2]  # no hypotheses for the empty line 1
    scores = [float(line.split(" ||| ")[2]) for line in lines[:3]]
    assert scores == sorted(scores, reverse=True) and all(
        line.count(" ||| ") == 2 for line in lines
    )


def test_help_version_and_keys():
    run = CliRunner().invoke
    assert run(app, ["-h"]).exit_code == 0 and "keys" in run(app, ["-h"]).stdout
    assert run(app, ["translate", "-h"]).exit_code == 0
    assert run(app, ["--version"]).stdout.startswith("seq2seq-nmt ")
    keys = run(app, ["keys", "train.lr"])
    assert keys.exit_code == 0 and "train.lr = 0.001" in keys.stdout and "peak" in keys.stdout
    assert run(app, ["keys", "nonsense"]).exit_code == 2


def test_help_and_score_start_without_torch(tmp_path):
    paths = files(tmp_path, hyp=HYPS, ref=REFS)
    probe = (
        "import sys, runpy; sys.argv = ['nmt'] + sys.argv[1:]\n"
        "try: runpy.run_path('cli.py', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    for args in (["--help"], ["score", "-H", str(paths["hyp"]), "-r", str(paths["ref"])]):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)  # fmt: skip
        assert result.stderr.strip().splitlines()[-1] == "False", (args, result.stderr)
