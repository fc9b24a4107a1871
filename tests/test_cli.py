"""The command line end to end, through Typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def test_help_lists_the_five_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("preprocess", "train", "translate", "score", "pipeline"):
        assert command in result.output


def test_pipeline_end_to_end(tmp_path, tiny_config_file):
    run = tmp_path / "run"
    result = invoke("pipeline", tiny_config_file, "--run-dir", run, "--train.max_steps=6")
    assert result.exit_code == 0, result.output
    score = json.loads((run / "score.json").read_text())
    assert isinstance(score["bleu"], float) and isinstance(score["chrf"], float)
    assert score["signature"].startswith("nrefs:1|case:mixed")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["splits"]["test"]["src"] == "data/test.en"
    hyps = (run / "translations" / "test.de").read_text().splitlines()
    assert len(hyps) == manifest["splits"]["test"]["pairs"]
    for artifact in ("manifest.json", "best.safetensors", "learning_curve.png", "score.json"):
        assert artifact in result.output
    # a second run finds the preprocessed data and the finished training, and agrees
    again = invoke("pipeline", tiny_config_file, "--run-dir", run, "--train.max_steps=6")
    assert again.exit_code == 0, again.output
    assert "up to date" in again.output
    assert json.loads((run / "score.json").read_text())["bleu"] == score["bleu"]


def test_stages_one_by_one_with_stdin_and_stdout(tmp_path, tiny_config_file, trained_run):
    run = tmp_path / "run"
    assert invoke("preprocess", tiny_config_file, "--run-dir", run).exit_code == 0
    result = invoke(
        "train", tiny_config_file, "--run-dir", run, "--max-steps", 3, "--train.validate_every=3"
    )
    assert result.exit_code == 0, result.output
    assert (run / "model" / "best.safetensors").is_file()
    result = invoke(
        "translate",
        "-m",
        trained_run,
        "-i",
        "-",
        "-o",
        "-",
        "--beam-size",
        1,
        input="The dog sleeps.\n\nA cat reads.\n",
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n")) == 4  # three lines and the final newline
    refs = trained_run / "data" / "test.de"
    result = invoke("score", "-H", refs, "-r", refs, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["bleu"] == 100.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["translate", "-m", "nowhere", "-i", "in.txt", "-o", "out.txt"], "no such"),
        (["score", "-H", "missing.txt", "-r", "missing.txt"], "missing.txt: no such file"),
        (["train", "missing.yaml"], "missing.yaml: no such config file"),
        (["preprocess", "{config}", "--model.hidden=3"], "unknown config key 'model.hidden'"),
        (["preprocess", "{config}", "stray"], "unexpected argument 'stray'"),
        (["translate", "-m", "x"], "Missing option"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(
    tmp_path, tiny_config_file, args, message, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{config}", str(tiny_config_file)) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plot_attention_draws_a_png(tmp_path, trained_run):
    source = tmp_path / "in.txt"
    source.write_text("The dog sleeps.\n\n", encoding="utf-8")
    aligned = tmp_path / "a.jsonl"
    result = invoke(
        "translate",
        "-m",
        trained_run,
        "-i",
        source,
        "-o",
        tmp_path / "out.txt",
        "--alignments",
        aligned,
    )
    assert result.exit_code == 0, result.output
    png = tmp_path / "a.png"
    assert invoke("plot-attention", aligned, "--line", 1, "-o", png).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = invoke("plot-attention", aligned, "--line", 2, "-o", tmp_path / "b.png")
    assert empty.exit_code == 2 and "empty" in empty.stderr
    missing = invoke("plot-attention", aligned, "--line", 9, "-o", tmp_path / "c.png")
    assert missing.exit_code == 2 and "no line 9" in missing.stderr
