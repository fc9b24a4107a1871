"""Average checkpoints: several checkpoints of one model -> one checkpoint of their mean.

Reads: checkpoint files, or a run folder's kept checkpoints (model/best-<N>, model/last-<N>,
see train_state.py). Writes: one checkpoint file (atomically), never over one of its inputs.
With `best`, the run's K best kept checkpoints by the dev metric recorded in each (the run's
train.metric, from its config.yaml); with `last`, its K latest validated ones. With `choose`,
the candidates (the best checkpoint alone, the averages of the last 2, 3, ... and of the best
2, 3, ... kept checkpoints) are each scored on the dev split as training validated (metric and
score settings of the run), and the best is written: averaging is used only where it helps on
dev, and the test split is never looked at.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from seq2seq.checkpoint import (
    Checkpoint,
    average_checkpoints,
    load_checkpoint,
    read_safetensors,
    save_checkpoint,
)
from seq2seq.config import Config, load_config
from seq2seq.device import resolve_device, resolve_precision
from seq2seq.errors import UserError

from .layout import RunFolder, check_output
from .train_state import METRIC_NAMES, dev_score
from .validation import DevSet


def run_config(folder: RunFolder) -> Config:
    """The config the run last trained with (its config.yaml; defaults for an older run)."""
    return load_config(folder.used_config) if folder.used_config.is_file() else Config()


def kept_score(path: Path, metric: str) -> float:
    """The dev score (higher is better) a kept checkpoint was saved with; -inf without one."""
    info = json.loads(read_safetensors(path)[1].get("info", "{}"))
    return dev_score(info, metric) if f"dev_{metric}" in info else float("-inf")


def by_score(paths: list[Path], run: RunFolder) -> list[Path]:
    metric = run_config(run).train.metric
    return sorted(paths, key=lambda p: -kept_score(p, metric))


def choose(run: Path, kind: str, count: int) -> list[Path]:
    """The `count` best (by the run's dev metric) or latest checkpoints a run kept."""
    if not run.is_dir():
        raise UserError(f"{run}: --best K or --last K takes one run folder")
    kept = RunFolder(run).kept_checkpoints(kind)
    if count < 1 or len(kept) < count:
        raise UserError(
            f"{run}: {len(kept)} kept '{kind}' checkpoints, asked for {count}; raise "
            f"train.keep_{kind} when training"
        )
    return kept[-count:] if kind == "last" else by_score(kept, RunFolder(run))[:count]


def candidates(run: Path) -> dict[str, list[Path]]:
    """What `choose_on_dev` compares: the best checkpoint; the last and best 2, 3, ... averaged."""
    folder = RunFolder(run)
    if not folder.best.is_file():
        raise UserError(f"{run}: no model/best.safetensors; train the run first")
    found = {"best checkpoint": [folder.best]}
    latest = folder.kept_checkpoints("last")
    ranked = by_score(folder.kept_checkpoints("best"), folder)
    found.update({f"last {k}": latest[-k:] for k in range(2, len(latest) + 1)})
    found.update({f"best {k}": ranked[:k] for k in range(2, len(ranked) + 1)})
    unique: dict[frozenset, tuple[str, list[Path]]] = {}  # the first name of each set
    for name, paths in found.items():
        unique.setdefault(frozenset(p.name for p in paths), (name, paths))
    return dict(unique.values())


def choose_on_dev(run: Path, log: Callable[[str], None]) -> tuple[list[Path], Checkpoint]:
    """The candidate with the best dev score (greedy, like validation), and its checkpoint."""
    folder = RunFolder(run)
    config = run_config(folder)
    manifest, device = folder.read_manifest(), resolve_device(config.train.device)
    metric, name_of = config.train.metric, METRIC_NAMES[config.train.metric]
    best: tuple[float, list[Path], Checkpoint] | None = None
    for name, paths in candidates(run).items():
        checkpoint = average_checkpoints(paths) if len(paths) > 1 else load_checkpoint(paths[0])
        model = checkpoint.model.to(device)
        dev = DevSet(folder, manifest, model.vocab, checkpoint.tgt_tokenizer, config.score)
        parameters = sum(p.numel() for p in model.parameters())
        precision, _ = resolve_precision(config.train.precision, device, parameters)
        search = dataclasses.replace(checkpoint.search, beam_size=1, n_best=1)
        value = dev_score(dev.evaluate(model, search, device, precision), metric)
        log(f"average: {name} ({len(paths)} checkpoints): dev {name_of} {abs(value):.2f}")
        if best is None or value > best[0]:
            best = (value, paths, checkpoint)
    log(f"average: chose {len(best[1])} checkpoint(s), dev {name_of} {abs(best[0]):.2f}")
    return best[1], best[2]


def average(
    checkpoints: list[Path],
    output: Path,
    best: int | None = None,
    last: int | None = None,
    log: Callable[[str], None] = print,
    choose_by_dev: bool = False,
) -> list[Path]:
    """Write the mean of the checkpoints (or of a run's best or last K, or what scores best
    on dev) to `output`; returns the checkpoints averaged."""
    picks = (best is not None) + (last is not None) + choose_by_dev
    if picks and (len(checkpoints) != 1 or picks > 1):
        raise UserError("--best K, --last K or --choose takes exactly one run folder (one of them)")
    if choose_by_dev:
        paths = [p for paths in candidates(checkpoints[0]).values() for p in paths]
    elif picks:
        kind, count = ("best", best) if best is not None else ("last", last)
        paths = choose(checkpoints[0], kind, count)
    else:
        paths = list(checkpoints)
    check_output(output, reads=paths)
    if choose_by_dev:
        paths, mean = choose_on_dev(checkpoints[0], log)
    else:
        mean = average_checkpoints(paths)
    tokenizers = (mean.src_tokenizer, mean.tgt_tokenizer)
    save_checkpoint(output, mean.model, *tokenizers, mean.search, mean.info, mean.shortlist)
    log(f"average: {len(paths)} checkpoints -> {output}")
    return paths
