"""The Python API: text in, text out, the same outputs as `nmt translate`, and quiet."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.translate import translate_file
from pipelines.translator import Translator
from seq2seq.config import TranslateConfig
from seq2seq.errors import UserError

from .conftest import ROOT


@pytest.fixture(scope="module")
def lines(tiny_corpus) -> list[str]:
    text = (tiny_corpus / "test.en").read_text(encoding="utf-8").splitlines()[:14]
    return text[:4] + ["", "  "] + text[4:]


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator(trained_run, "cpu")


@pytest.mark.parametrize(
    "search",
    [{"beam_size": 1}, {"beam_size": 3}, {"beam_size": 3, "n_best": 3, "length_penalty": 0.0}],
)
def test_the_api_gives_what_the_translate_stage_writes(tmp_path, trained_run, lines, search):
    """The stage reads the file in chunks of 4 lines, the API takes the list at once."""
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, aligned = tmp_path / "out.de", tmp_path / "out.align"
    config = TranslateConfig(device="cpu", chunk_lines=4)
    translate_file(trained_run, str(source), str(out), config, search, lambda _: None, str(aligned))
    results = Translator(trained_run, "cpu").generate(lines, alignments=True, **search)
    written = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in aligned.read_text(encoding="utf-8").splitlines()]
    assert len(results) == len(written) == len(records) == len(lines)
    for hyps, line, record in zip(results, written, records):
        fields = line.split("\t") if line else []
        if search.get("n_best", 1) == 1:
            assert line == (hyps[0].text if hyps else "")
        else:
            assert fields == [x for t in hyps for x in (t.text, f"{t.score:.4f}")]
        if hyps:
            best = hyps[0].alignment
            assert (record["source"], record["target"]) == (best.source, best.target)
            # chunks of 4 and the whole list are different batches: float sums may differ
            assert len(record["attention"]) == len(best.weights)
            for written_row, row in zip(record["attention"], best.weights):
                assert written_row == pytest.approx(row, abs=2e-4)


def test_the_command_line_writes_what_the_api_returns(tmp_path, trained_run, lines, translator):
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "cli.py", "translate", "-m", str(trained_run), "-i", str(source)]
    command += ["-o", "-", "--device", "cpu", "--beam-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == translator.translate(lines, beam_size=2)


def test_text_in_text_out_and_nothing_printed(trained_run, lines, capfd):
    translator = Translator(trained_run, "cpu")
    out = translator.translate(lines)
    assert isinstance(out, list) and all(isinstance(t, str) for t in out)
    assert out[4] == out[5] == ""  # empty and blank lines give empty translations
    assert translator.translate(lines[0]) == out[0]  # one string gives one string
    assert capfd.readouterr() == ("", "")
    Translator(trained_run, "cpu", progress=True).translate(lines)
    assert "translate" in capfd.readouterr().err


def test_n_best_are_ranked_and_scored(translator, lines):
    for hyps in translator.generate(lines, beam_size=4, n_best=3):
        assert len(hyps) in (0, 3)
        scores = [t.score for t in hyps]
        assert scores == sorted(scores, reverse=True)
        assert all(t.log_prob <= 0 for t in hyps)


def test_an_ensemble_of_one_model_twice_translates_as_the_model(trained_run, lines, translator):
    twice = Translator([trained_run, trained_run / "model" / "best.safetensors"], "cpu")
    assert twice.translate(lines) == translator.translate(lines)


def test_the_settings_of_a_call_do_not_stay(translator, lines):
    before = translator.search
    translator.translate(lines[:2], beam_size=1, length_penalty=0.5)
    assert translator.search == before


@pytest.mark.parametrize(
    "texts, search, message",
    [
        (["a", 3], {}, r"texts\[1\]: expected a string, got int"),
        ([b"bytes"], {}, r"texts\[0\]: expected a string, got bytes"),
        (["a"], {"beam_size": 0}, "search.beam_size"),
        (["a"], {"beam_size": 10**6}, "search.beam_size"),
        (["a"], {"n_best": 9}, "search.n_best"),
        (["a"], {"colour": "red"}, "unknown config key 'search.colour'"),
        (None, {}, "texts: expected a list of strings, got NoneType"),
        (5, {}, "texts: expected a list of strings, got int"),
        (b"The dog", {}, "texts: expected a list of strings, got bytes"),
        ({"a": 1}, {}, "texts: expected a list of strings, got dict"),
        (["a", "\ud800"], {}, r"texts\[1\]: not valid Unicode"),
        (["a"], {"max_len_b": 10**12, "max_len_a": 0}, "search.max_len_b"),
    ],
)
def test_bad_calls_name_what_is_wrong(translator, texts, search, message):
    with pytest.raises(UserError, match=message):
        translator.generate(texts, **search)


def test_bad_construction_names_what_is_wrong(trained_run, tmp_path):
    with pytest.raises(UserError, match="precision: expected auto, fp32"):
        Translator(trained_run, "cpu", precision="fp8")
    with pytest.raises(UserError, match="no such model folder"):
        Translator(tmp_path / "missing", "cpu")
    with pytest.raises(UserError, match="no model given"):
        Translator([], "cpu")
    for model in (None, 5, [5]):
        with pytest.raises(UserError, match="model: expected a path or a list of paths"):
            Translator(model, "cpu")


def test_settings_that_let_no_text_end_still_give_every_text_a_translation(translator, lines):
    """min_len beyond every length limit, and no token may repeat: no hypothesis can end."""
    search = {"min_len": 500, "max_len_a": 0, "max_len_b": 600, "no_repeat_ngram": 1}
    results = translator.generate(lines[:3], beam_size=2, **search)
    assert [len(hyps) for hyps in results] == [1, 1, 1]
    assert all(hyps[0].text == "" and hyps[0].score == float("-inf") for hyps in results)
