"""The precision rule: `auto` is bf16 where it is faster (a CPU with native bf16), fp32
elsewhere; an explicit bf16 on a CPU without native bf16 runs, with a warning."""

from __future__ import annotations

import pytest
import torch

from seq2seq.device import resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def has(answer: bool):
    return lambda: answer


BIG, SMALL = 7_000_000, 1_200_000  # parameters: the quality model, the demo model


@pytest.mark.parametrize(
    "asked, device, native, size, expected",
    [
        ("auto", CPU, True, BIG, "bf16"),
        ("auto", CPU, True, SMALL, "fp32"),
        ("auto", CPU, False, BIG, "fp32"),
        ("auto", CUDA, True, BIG, "fp32"),
        ("auto", CUDA, False, SMALL, "fp32"),
        ("fp32", CPU, True, BIG, "fp32"),
        ("bf16", CPU, False, SMALL, "bf16"),
        ("bf16", CPU, True, SMALL, "bf16"),
        ("fp16", CUDA, False, BIG, "fp16"),
    ],
)
def test_the_rule(asked, device, native, size, expected):
    precision, note = resolve_precision(asked, device, size, native_bf16=has(native))
    assert precision == expected
    assert expected in note
    assert ("warning" in note) == (asked == "bf16" and device == CPU and not native)


def test_the_choice_is_printed_when_training_and_translating(tmp_path, trained_run):
    from typer.testing import CliRunner

    from cli import app

    (tmp_path / "in.en").write_text("The dog sleeps.\n")
    args = ["translate", "-m", str(trained_run), "-i", str(tmp_path / "in.en")]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out.de")])
    assert result.exit_code == 0 and "precision auto: fp32" in result.stdout
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out.de"), "--precision", "bf16"])
    assert result.exit_code == 0 and "warning: precision bf16" in result.stdout
