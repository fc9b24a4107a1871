"""Pictures people would rather look at than read: learning curves and attention weights."""

from __future__ import annotations

import io
import json
from pathlib import Path

from seq2seq.errors import UserError
from seq2seq.io import atomic_write_bytes, read_lines

from .layout import check_output


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
    """Four panels by step, from the JSON-lines training log: the label-smoothed training
    loss and the plain dev loss each on its own axis (they are not comparable), dev BLEU and
    chrF, and the learning rate."""
    records = [json.loads(x) for x in log_path.read_text(encoding="utf-8").split("\n") if x.strip()]
    train, dev = [r for r in records if "train_loss" in r], [r for r in records if "dev_loss" in r]
    fig, axes = _pyplot().subplots(2, 2, figsize=(10, 6.5), dpi=100, sharex=True)
    panels = [
        (axes[0][0], train, [("train_loss", "-", "tab:blue")], "train loss (label-smoothed)"),
        (axes[0][1], dev, [("dev_loss", "o-", "tab:orange")], "dev loss (nats per token)"),
        (axes[1][0], dev, [("dev_bleu", "s-", "tab:green"), ("dev_chrf", "^-", "tab:red")],
         "dev BLEU and chrF"),
        (axes[1][1], train, [("lr", "-", "tab:purple")], "learning rate"),
    ]  # fmt: skip
    for axis, rows, series, title in panels:
        for key, style, color in series:
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            axis.plot([p[0] for p in points], [p[1] for p in points], style, color=color,
                      label=key.replace("_", " "), markersize=4)  # fmt: skip
        axis.set_title(title, fontsize=10)
        if len(series) > 1:
            axis.legend(loc="lower right", fontsize=8)
    for axis in axes[1]:
        axis.set_xlabel("step")
    fig.tight_layout()
    _save(fig, png_path)


def draw_attention(record: dict, png_path: Path) -> None:
    """A heatmap of one sentence's attention: target pieces down, source pieces across."""
    source, target, weights = record["source"], record["target"], record["attention"]
    width, height = min(20.0, 2.0 + 0.35 * len(source)), min(20.0, 1.5 + 0.35 * len(target))
    fig, axis = _pyplot().subplots(figsize=(width, height), dpi=100)
    image = axis.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(source)), source, rotation=90)
    axis.set_yticks(range(len(target)), target)
    axis.set(xlabel="source", ylabel="target", title=f"attention, line {record['line']}")
    fig.colorbar(image, ax=axis, fraction=0.04)
    fig.tight_layout()
    _save(fig, png_path)


def plot_attention(alignments: Path, line: int, png_path: Path) -> None:
    """The stage behind `nmt plot-attention`: one line of an alignments file as a PNG."""
    check_output(png_path, reads=[alignments])
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
