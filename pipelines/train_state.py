"""What training writes besides the log: checkpoints, the ones kept for averaging, and the
training state that makes resuming exact.

    model/last.safetensors          the latest checkpoint
    model/best.safetensors          the best by the dev metric (train.metric)
    model/best-<N>.safetensors      the best `train.keep_best` (when more than 1)
    model/last-<N>.safetensors      the latest `train.keep_last` validated (when more than 1)
    model/train_state.safetensors   weights, optimizer, scaler, schedule, data position, RNG

The kept copies (best-<N>, last-<N>) take at most `train.keep_mib` of disk: fewer are kept
when they would take more, half of the room for each kind.

Checkpoints are written first and the training state last, so a kill in between only
repeats work. Weights that are not all finite are never written under any of these names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from seq2seq.checkpoint import _unique_state, read_safetensors, save_checkpoint, write_safetensors
from seq2seq.config import Config, to_dict
from seq2seq.errors import UserError
from seq2seq.io import atomic_write_text, file_sha256
from seq2seq.tokenizer import Tokenizer
from seq2seq.training import LearningRate, flatten_state, unflatten_state

from .layout import RunFolder


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint so that it can resume exactly."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already used
    elapsed: float = 0.0  # seconds of training, across resumes
    best: list = field(default_factory=list)  # [dev score, step] of the best, best first
    last: list = field(default_factory=list)  # steps of the latest validated checkpoints
    stale: int = 0  # validations since the dev metric last improved
    skipped: int = 0  # steps skipped for a non-finite loss
    validated_step: int = -1  # step of the last validation
    window: list = field(default_factory=list)  # StepFigures' sums since the last log line


@dataclass
class Optimization:
    """What changes along with the weights in training, and must resume with them."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    lr: LearningRate


METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF", "loss": "loss"}


def dev_score(validation: dict, metric: str) -> float:
    """The dev metric as a score that is higher when better (the loss negated)."""
    return -validation["dev_loss"] if metric == "loss" else validation[f"dev_{metric}"]


def all_finite(model: torch.nn.Module) -> bool:
    """True when every weight is a finite number (one wait for the device)."""
    return bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())


class Checkpoints:
    """Writes and reads the checkpoints and the training state of one run folder."""

    def __init__(
        self,
        config: Config,
        run: RunFolder,
        tokenizers: tuple[Tokenizer, Tokenizer],
        manifest: dict,
        shortlist: torch.Tensor | None = None,
    ):
        self.config, self.run, self.manifest = config, run, manifest
        self.tokenizers, self.shortlist = tokenizers, shortlist  # (source, target), its table
        self.ours = False  # whether last.safetensors was written by this run (or resumed one)
        self.made_from = file_sha256(run.manifest)  # what the state says it was trained on

    def last_good(self, state: TrainState) -> str:
        """Where a good checkpoint is, for messages about a run that diverged: the best by
        dev BLEU that this run (or the run it resumed) wrote."""
        if self.ours and state.best and self.run.best.is_file():
            score, step = state.best[0]
            dev = f"dev {METRIC_NAMES[self.config.train.metric]} {abs(score):.2f}"
            return f"the best checkpoint is {self.run.best} ({dev}, step {step})"
        return "this run wrote no checkpoint before"

    def save(self, model, parts: Optimization, state: TrainState, validation: dict | None):
        """Write last (and best and the kept ones, after a validation), then the state."""
        tc, run = self.config.train, self.run
        cleaning = self.config.data.cleaning  # how input is prepared, for translation
        info = {"step": state.step, "epoch": state.epoch, **(validation or {})}
        info.update(normalize=cleaning.normalize, max_pieces=cleaning.max_pieces)
        info.update(languages=self.manifest["languages"], run=self.config.name)

        def save(path: Path) -> None:
            save_checkpoint(path, model, *self.tokenizers, self.config.search, info, self.shortlist)

        save(run.last)
        self.ours = True
        if validation is not None:
            keep_best, keep_last = self.kept_counts()
            score = dev_score(validation, tc.metric)
            best = sorted(state.best + [[score, state.step]], key=lambda item: (-item[0], item[1]))
            if best[0][1] == state.step:
                save(run.best)
            if keep_best > 1 and state.step in [step for _, step in best[:keep_best]]:
                save(run.kept("best", state.step))
            for _, step in best[keep_best:]:
                run.kept("best", step).unlink(missing_ok=True)
            state.best = best[: max(1, keep_best)]
            last = state.last + [state.step]
            if keep_last > 1:
                save(run.kept("last", state.step))
            drop = max(0, len(last) - keep_last)
            for step in last[:drop]:
                run.kept("last", step).unlink(missing_ok=True)
            state.last = last[drop:]
        self.save_state(model, parts, state)

    def kept_counts(self) -> tuple[int, int]:
        """How many best and last copies to keep: as configured, within train.keep_mib."""
        tc = self.config.train
        slots = tc.keep_mib * 2**20 // max(1, self.run.last.stat().st_size)
        best = min(tc.keep_best, (slots + 1) // 2)
        return best, min(tc.keep_last, slots - best)

    def save_state(self, model, parts: Optimization, state: TrainState) -> None:
        tensors: dict[str, torch.Tensor] = {}
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        skeleton = {
            "optimizer": flatten_state(parts.optimizer.state_dict(), tensors, "optimizer"),
            "scaler": flatten_state(parts.scaler.state_dict(), tensors, "scaler"),
            "rng": flatten_state({"cpu": torch.get_rng_state(), "cuda": cuda}, tensors, "rng"),
        }
        # tied weights share storage; safetensors stores each once
        tensors.update({f"model.{name}": t for name, t in _unique_state(model).items()})
        metadata = {
            "format": "seq2seq-train-state",
            "version": "1",
            "state": json.dumps(asdict(state)),
            "lr": json.dumps(parts.lr.state_dict()),
            "skeleton": json.dumps(skeleton),
            "model": json.dumps(to_dict(self.config.model)),
            "manifest": self.made_from,
        }
        write_safetensors(self.run.train_state, tensors, metadata)

    def restore(self, model, parts: Optimization) -> TrainState:
        """Load the training state into the model and `parts`; returns where it stood."""
        path = self.run.train_state
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") != "seq2seq-train-state":
            raise UserError(f"{path}: not a training state file")
        if json.loads(metadata["model"]) != to_dict(self.config.model):
            raise UserError(
                f"{path}: was trained with a different model config; pass --fresh to "
                "start over (overwrites this run's checkpoints) or use another --run-dir"
            )
        if metadata.get("manifest", self.made_from) != self.made_from:  # (older states: none)
            raise UserError(
                f"{path}: trained on other data than {self.run.manifest} describes (preprocessed "
                "again, or copied from another run); pass --fresh to start over"
            )
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(model_state, strict=False)
        skeleton = json.loads(metadata["skeleton"])
        parts.optimizer.load_state_dict(unflatten_state(skeleton["optimizer"], tensors))
        parts.scaler.load_state_dict(unflatten_state(skeleton["scaler"], tensors))
        rng = unflatten_state(skeleton["rng"], tensors)
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        parts.lr.load_state_dict(json.loads(metadata["lr"]))
        return TrainState(**json.loads(metadata["state"]))

    def truncate_log(self, step: int) -> None:
        """Drop log lines written after the state we resume from (they will be redone)."""
        log = self.run.train_log
        if not log.is_file():
            return
        kept = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by a kill
        atomic_write_text(log, "".join(line + "\n" for line in kept))
