"""Average checkpoints: several checkpoints of one model -> one checkpoint of their mean.

Reads: checkpoint files, or a run folder's kept checkpoints (model/best-<N>, model/last-<N>,
see checkpoints.py). Writes: one checkpoint file (atomically), never over one of its inputs.
With `best`, the run's K best kept checkpoints by the dev BLEU recorded in each; with `last`,
its K latest validated ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from seq2seq.checkpoint import average_checkpoints, read_safetensors, save_checkpoint
from seq2seq.errors import UserError
from seq2seq.io import check_destination, same_file

from .layout import RunFolder


def dev_bleu(path: Path) -> float:
    """The dev BLEU a kept checkpoint was saved with (0 when it has none)."""
    info = json.loads(read_safetensors(path)[1].get("info", "{}"))
    return info.get("dev_bleu", 0.0)


def choose(run: Path, kind: str, count: int) -> list[Path]:
    """The `count` best (by dev BLEU) or latest checkpoints a run kept."""
    if not run.is_dir():
        raise UserError(f"{run}: --best K or --last K takes one run folder")
    kept = RunFolder(run).kept_checkpoints(kind)
    if count < 1 or len(kept) < count:
        raise UserError(
            f"{run}: {len(kept)} kept '{kind}' checkpoints, asked for {count}; raise "
            f"train.keep_{kind} when training"
        )
    if kind == "last":
        return kept[-count:]
    return sorted(kept, key=lambda p: -dev_bleu(p))[:count]


def average(
    checkpoints: list[Path],
    output: Path,
    best: int | None = None,
    last: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write the mean of the checkpoints (or of a run's best or last K) to `output`; returns
    the checkpoints averaged."""
    if best is not None or last is not None:
        if len(checkpoints) != 1 or (best is not None) == (last is not None):
            raise UserError("--best K or --last K takes exactly one run folder (and not both)")
        kind, count = ("best", best) if best is not None else ("last", last)
        paths = choose(checkpoints[0], kind, count)
    else:
        paths = list(checkpoints)
    check_destination(output)
    for path in paths:
        if same_file(output, path):
            raise UserError(f"{output}: is the input {path}; choose another output")
    averaged = average_checkpoints(paths)
    save_checkpoint(
        output,
        averaged.model,
        averaged.src_tokenizer,
        averaged.tgt_tokenizer,
        averaged.search,
        averaged.info,
    )
    log(f"average: {len(paths)} checkpoints -> {output}")
    return paths
