"""int8 decoding: the int8 layers compute what the float layers compute, up to rounding; a
model in int8 translates through every path (n-best, alignments, ensembles, the command
line) without a warning; and int8 is refused where it cannot run, and never chosen by auto."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from pipelines.translator import Translator
from seq2seq.device import resolve_precision
from seq2seq.errors import UserError
from seq2seq.int8 import Int8Linear, Int8RNN, quantize

from .conftest import ROOT


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.detach(), expected.detach()
    return float((got - expected).abs().max() / expected.abs().max())


def test_an_int8_linear_layer_is_the_float_one_up_to_rounding():
    torch.manual_seed(0)
    layer = nn.Linear(48, 24)
    x = torch.randn(3, 5, 48)
    assert relative_error(Int8Linear(layer.weight, layer.bias)(x), layer(x)) < 0.02
    no_bias = nn.Linear(48, 24, bias=False)
    assert relative_error(Int8Linear(no_bias.weight, None)(x), no_bias(x)) < 0.02


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
@pytest.mark.parametrize("layers", [1, 2])
def test_an_int8_rnn_steps_like_torch_s(cell, layers):
    torch.manual_seed(0)
    rnn = cell(16, 32, layers).eval()
    x = torch.randn(4, 3, 16)  # (T, B, F)
    h = torch.randn(layers, 3, 32)
    hidden = (h, torch.randn(layers, 3, 32)) if cell is nn.LSTM else h
    with torch.no_grad():
        expected, expected_final = rnn(x, hidden)
        got, final = Int8RNN(rnn)(x, hidden)
    assert relative_error(got, expected) < 0.03
    finals = zip(final, expected_final) if cell is nn.LSTM else [(final, expected_final)]
    for ours, theirs in finals:
        assert ours.shape == theirs.shape and relative_error(ours, theirs) < 0.03


def test_a_quantized_model_scores_like_the_float_one(trained_run):
    model = Translator(trained_run, "cpu", "fp32").model
    int8 = quantize(model)
    assert any(isinstance(m, Int8RNN) for m in int8.modules())
    assert not any(isinstance(m, Int8RNN) for m in model.modules())  # the original untouched
    src = torch.tensor([[5, 6, 7, 8, model.vocab.eos_id]])
    prev = torch.tensor([[model.vocab.bos_id, 9, 10]])
    with torch.inference_mode():
        expected = model(src, torch.tensor([5]), prev).exp()
        got = int8(src, torch.tensor([5]), prev).exp()
    assert (got - expected).abs().max() < 0.02  # probabilities


def test_int8_translates_through_every_path_without_a_warning(trained_run, tmp_path):
    lines = ["The dog sleeps.", "", "A woman reads a book in the old house."]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translator = Translator(trained_run, "cpu", "int8")
        assert translator.precision == "int8"
        assert len(translator.translate(lines)) == 3
        hyps = translator.generate(lines[:1], n_best=3, beam_size=3, alignments=True)[0]
        assert len(hyps) == 3 and hyps[0].score >= hyps[1].score >= hyps[2].score
        for row in hyps[0].alignment.weights:
            assert sum(row) == pytest.approx(1.0, abs=1e-3)
        ensemble = Translator([trained_run, trained_run], "cpu", "int8")
        assert ensemble.translate(lines) == translator.translate(lines)
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "translate", "-m", str(trained_run), "-i",
         str(source), "-o", "-", "--precision", "int8"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == translator.translate(lines)
    assert "precision int8" in result.stderr and "arning" not in result.stderr


def test_int8_is_refused_where_it_cannot_run_and_never_chosen_by_auto(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(UserError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"), 10**6)
    for size in (10**5, 10**9):
        assert resolve_precision("auto", cpu, size)[0] != "int8"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    with pytest.raises(UserError, match="AVX2 or later"):
        resolve_precision("int8", cpu, 10**6)


def test_training_in_int8_is_a_config_error(tmp_path):
    from seq2seq.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("train: {precision: int8}\n", encoding="utf-8")
    with pytest.raises(UserError, match="train.precision"):
        load_config(config)
