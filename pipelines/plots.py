"""Pictures people would rather look at than read: learning curves and attention weights."""

from __future__ import annotations

import io
import json
from pathlib import Path

from seq2seq.errors import UserError
from seq2seq.io import atomic_write_bytes, check_destination, read_lines, same_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def draw_learning_curve(log_path: Path, png_path: Path) -> None:
    """Train loss, dev loss and dev BLEU by step, from the JSON-lines training log."""
    plt = _pyplot()
    lines = log_path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    train = [r for r in records if "train_loss" in r]
    dev = [r for r in records if "dev_loss" in r]
    fig, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    loss_axis.plot(
        [r["step"] for r in train],
        [r["train_loss"] for r in train],
        label="train loss (label-smoothed)",
        color="tab:blue",
    )
    loss_axis.plot(
        [r["step"] for r in dev],
        [r["dev_loss"] for r in dev],
        "o-",
        label="dev loss",
        color="tab:orange",
    )
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss (nats per token)")
    bleu_axis = loss_axis.twinx()
    bleu_axis.plot(
        [r["step"] for r in dev],
        [r["dev_bleu"] for r in dev],
        "s-",
        label="dev BLEU",
        color="tab:green",
    )
    bleu_axis.set_ylabel("dev BLEU")
    handles, labels = loss_axis.get_legend_handles_labels()
    more_handles, more_labels = bleu_axis.get_legend_handles_labels()
    loss_axis.legend(handles + more_handles, labels + more_labels, loc="center right")
    loss_axis.set_title("learning curve")
    fig.tight_layout()
    _save(fig, png_path)


def draw_attention(record: dict, png_path: Path) -> None:
    """A heatmap of one sentence's attention: target pieces down, source pieces across."""
    plt = _pyplot()
    source, target, weights = record["source"], record["target"], record["attention"]
    width = min(20.0, 2.0 + 0.35 * len(source))
    height = min(20.0, 1.5 + 0.35 * len(target))
    fig, axis = plt.subplots(figsize=(width, height), dpi=100)
    image = axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(source)), source, rotation=90)
    axis.set_yticks(range(len(target)), target)
    axis.set_xlabel("source")
    axis.set_ylabel("target")
    axis.set_title(f"attention, line {record['line']}")
    fig.colorbar(image, ax=axis, fraction=0.04)
    fig.tight_layout()
    _save(fig, png_path)


def plot_attention(alignments: Path, line: int, png_path: Path) -> None:
    """The stage behind `nmt plot-attention`: one line of an alignments file as a PNG."""
    check_destination(png_path)
    if same_file(png_path, alignments):
        raise UserError(f"{png_path}: is the input {alignments}; choose another output")
    draw_attention(read_alignment(alignments, line), png_path)


def _check_weights(record: dict, where: str) -> None:
    """A row of finite weights in [0, 1] for each target piece, one for each source piece."""
    rows, source, target = record["attention"], record["source"], record["target"]
    shape = f"{len(target)} rows of {len(source)} weights (target x source pieces)"
    if not isinstance(rows, list) or len(rows) != len(target):
        raise UserError(f"{where}: attention is not {shape}")
    for row in rows:
        if not isinstance(row, list) or len(row) != len(source):
            raise UserError(f"{where}: attention is not {shape}")
        for weight in row:
            ok = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not ok or not 0 <= weight <= 1:  # NaN fails the comparison too
                raise UserError(f"{where}: attention weight {weight!r} is not a number in [0, 1]")


def read_alignment(path: Path, line: int) -> dict:
    """The record of input line `line` (1-based) in an alignments file."""
    for number, text in enumerate(read_lines(path), start=1):
        if number == line:
            try:
                record = json.loads(text)
                if not {"source", "target", "attention"} <= record.keys():
                    raise ValueError("missing keys")
            except (ValueError, AttributeError) as e:
                raise UserError(f"{path}:{number}: not an alignment record ({e})") from None
            if not record["target"]:
                raise UserError(f"{path}:{number}: line {line} was empty; nothing to draw")
            _check_weights(record, f"{path}:{number}")
            return record
    raise UserError(f"{path}: has no line {line}")
