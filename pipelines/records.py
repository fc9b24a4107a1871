"""What a run folder keeps about how it was trained, beside the checkpoints and metrics:

config.yaml        the configuration the latest `nmt train` used (overrides applied),
                   under a header saying when, with which versions, device and precision;
                   `nmt train <run>/config.yaml --run-dir <run>` trains with it again
train_runs.jsonl   one record per `nmt train`: when, versions, device, precision, the step
                   it started from, its command line, and each key changed since the last
train.log          what the terminal showed, every line with its time
tensorboard/       the logged figures as TensorBoard scalars (train.tensorboard: true)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import torch
import yaml

import seq2seq
from seq2seq.config import Config, to_dict
from seq2seq.errors import UserError
from seq2seq.io import append_text, atomic_write_text

from .layout import RunFolder


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def flat(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changes(before: dict, after: dict) -> dict[str, list]:
    """The keys whose values differ between two configs: {key: [before, after]}."""
    old, new = flat(before), flat(after)
    return {key: [old.get(key), new.get(key)] for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)}  # fmt: skip


class Record:
    """The record of one `nmt train` invocation on a run folder (rank 0 only writes)."""

    def __init__(self, run: RunFolder, config: Config, log: Callable[[str], None], write: bool):
        self.run, self.config, self.terminal, self.write = run, config, log, write
        self.board = self.writer = None
        self.pending: list[str] | None = []  # lines before begin(): a refused run writes none
        if write and config.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "config key 'train.tensorboard': needs the tensorboard package "
                    "(pip install tensorboard)"
                ) from None
            self.writer = SummaryWriter

    def log(self, message: str) -> None:
        """A line for the terminal and train.log, with its time."""
        line = f"{now()} {message}"
        self.terminal(line)
        self.keep(line)

    def keep(self, line: str) -> None:
        """A line for train.log only (progress lines, which the terminal draws itself)."""
        if self.pending is not None:
            self.pending.append(line)
        elif self.write:
            append_text(self.run.train_text_log, line + "\n")

    def begin(self, device: torch.device, precision: str, step: int) -> None:
        """Write config.yaml and this invocation's record; say what changed since the last."""
        pending, self.pending = self.pending or [], None
        if not self.write:
            return
        for line in pending:
            self.keep(line)
        if self.writer is not None:
            self.board = self.writer(str(self.run.root / "tensorboard"))
        used, previous = to_dict(self.config), self.previous_config()
        changed = changes(previous, used) if previous is not None else {}
        record = {"time": now(), "version": seq2seq.__version__, "torch": torch.__version__}
        record.update(device=str(device), precision=precision, from_step=step, command=sys.argv)
        record.update(changed=changed, config=used)
        for key, (before, after) in changed.items():
            self.log(f"train: {key} changed since the last run: {before!r} -> {after!r}")
        header = (
            f"# The configuration `nmt train` used on {record['time']} (seq2seq-nmt "
            f"{record['version']}, torch {record['torch']}, {device}, {precision}),\n"
            f"# from step {step}; every run's is in train_runs.jsonl.\n"
        )
        body = yaml.safe_dump(used, sort_keys=False, allow_unicode=True)
        atomic_write_text(self.run.used_config, header + body)
        append_text(self.run.train_runs, json.dumps(record, ensure_ascii=False) + "\n")

    def previous_config(self) -> dict | None:
        """The config of the last recorded invocation (None for a run's first)."""
        if not self.run.train_runs.is_file():
            return None
        for line in reversed(self.run.train_runs.read_text(encoding="utf-8").splitlines()):
            try:
                return json.loads(line)["config"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill
        return None

    def figures(self, record: dict) -> None:
        if self.board is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, record["step"])
            self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
