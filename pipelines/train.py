"""Stage 2, train: subword ids -> checkpoints, a metrics log and a learning curve.

Reads (from the run folder, see layout.py): manifest.json, the SentencePiece model(s),
data/train.<lang>.bin/.idx, data/dev.<lang>.bin/.idx and data/dev.<tgt_lang> (references).
Writes:
    model/best.safetensors          best checkpoint by dev BLEU (self-contained: see checkpoint.py)
    model/best-<N>.safetensors      the best `train.keep_best` checkpoints (when more than 1)
    model/last-<N>.safetensors      the latest `train.keep_last` checkpoints (when more than 1)
    model/last.safetensors          the latest checkpoint
    model/train_state.safetensors   weights, optimizer, schedule, data position, random state
    train_log.jsonl                 one JSON object per log line and per validation
    learning_curve.png              train loss, dev loss and dev BLEU by step
Training resumes from model/train_state.safetensors when it exists: the data order, the
random state and the optimizer are restored, so resuming gives the model not stopping would.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from seq2seq.batching import TokenSequences, make_batch, training_batches
from seq2seq.checkpoint import read_safetensors, save_checkpoint, write_safetensors
from seq2seq.config import Config, SearchConfig, to_dict
from seq2seq.device import autocast
from seq2seq.errors import UserError
from seq2seq.io import atomic_write_text
from seq2seq.model import Seq2Seq, Vocab
from seq2seq.search import translate_ids
from seq2seq.tokenizer import Tokenizer
from seq2seq.training import (
    LearningRate,
    build_optimizer,
    flatten_state,
    label_smoothed_nll,
    set_learning_rate,
    unflatten_state,
    word_dropout,
)

from .distributed import Ranks
from .layout import RunFolder
from .plots import draw_learning_curve
from .progress import Progress
from .score import corpus_scores

MAX_SKIPPED_IN_A_ROW = 20  # non-finite losses in a row before the run is stopped
STOP_REASONS = ["max_steps", "max_time", "max_epochs", "patience", "interrupted"]


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint so that it can resume exactly."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already used
    elapsed: float = 0.0  # seconds of training, across resumes
    best: list = field(default_factory=list)  # [dev BLEU, step] of the best, best first
    last: list = field(default_factory=list)  # steps of the latest validated checkpoints
    stale: int = 0  # validations since dev BLEU last improved
    skipped: int = 0  # steps skipped for a non-finite loss
    validated_step: int = -1  # step of the last validation


def load_tokenizers(run: RunFolder, manifest: dict) -> tuple[Tokenizer, Tokenizer]:
    files = manifest["tokenizer"]
    src = Tokenizer((run.root / files["src"]).read_bytes())
    tgt = src if files["tgt"] == files["src"] else Tokenizer((run.root / files["tgt"]).read_bytes())
    return src, tgt


def make_vocab(src: Tokenizer, tgt: Tokenizer) -> Vocab:
    if (src.pad_id, src.unk_id, src.bos_id, src.eos_id) != (
        tgt.pad_id,
        tgt.unk_id,
        tgt.bos_id,
        tgt.eos_id,
    ):
        raise UserError("the source and target SentencePiece models use different special ids")
    return Vocab(src.vocab_size, tgt.vocab_size, tgt.pad_id, tgt.unk_id, tgt.bos_id, tgt.eos_id)


@contextlib.contextmanager
def _interrupt_flag():
    """Ctrl-C (SIGINT) sets a flag that the loop reads between steps, so that it stops with
    whole steps only and saves; a second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    flag: list[bool] = []

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(flag)
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """The training loop and what it writes; `run()` does the work."""

    def __init__(
        self,
        config: Config,
        run: RunFolder,
        log: Callable[[str], None] = print,
        fresh: bool = False,
    ):
        self.config, self.folder = config, run
        self.tc = config.train
        self.ranks = Ranks()
        self.log = log if self.ranks.main else (lambda _: None)
        self.manifest = run.read_manifest()
        self.device = self.ranks.device(self.tc.device)
        if self.tc.threads:
            torch.set_num_threads(self.tc.threads)
        torch.manual_seed(self.tc.seed)
        self.src_tokenizer, self.tgt_tokenizer = load_tokenizers(run, self.manifest)
        self.vocab = make_vocab(self.src_tokenizer, self.tgt_tokenizer)
        if config.model.tie_embeddings and not self.manifest["tokenizer"]["joint"]:
            raise UserError("config key 'model.tie_embeddings': needs data.subwords.joint: true")
        splits = self.manifest["splits"]
        self.train_src = TokenSequences.load(run.root / splits["train"]["src_ids"])
        self.train_tgt = TokenSequences.load(run.root / splits["train"]["tgt_ids"])
        dev_src = TokenSequences.load(run.root / splits["dev"]["src_ids"])
        dev_tgt = TokenSequences.load(run.root / splits["dev"]["tgt_ids"])
        self.dev = (dev_src, dev_tgt)
        self.dev_refs = (run.root / splits["dev"]["tgt"]).read_text(encoding="utf-8").splitlines()
        self.model = Seq2Seq(config.model, self.vocab).to(self.device)
        self.ranks.start(self.device)
        self.ddp_model = self.model
        if self.ranks.world > 1:  # gradients are averaged over the ranks in backward
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(self.model, self.tc)
        self.lr = LearningRate(self.tc)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.tc.precision == "fp16")
        self.state = TrainState()
        if run.train_state.is_file() and not fresh:
            self._restore()
        elif self.ranks.main:
            run.model_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run.train_log, "")
        if self.ranks.main:  # temporary files of writes a kill interrupted: never needed
            for stale in [*run.model_dir.glob(".*.tmp*"), *run.root.glob(".*.tmp*")]:
                stale.unlink(missing_ok=True)
        if self.ranks.rank > 0:  # each rank its own dropout and word dropout
            torch.manual_seed(self.tc.seed + 7919 * self.ranks.rank + self.state.step)
        self.ranks.barrier()

    # --- the loop ---------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return training_batches(
            self.train_src.lengths,
            self.train_tgt.lengths,
            self.tc.batch_type,
            self.tc.batch_size,
            seed=self.tc.seed * 1_000_003 + epoch,
        )

    def run(self) -> dict:
        tc, state = self.tc, self.state
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"train: {n_params / 1e6:.2f}M parameters on {self.device}, "
            f"{len(self.train_src)} training pairs; from step {state.step}"
        )
        progress = Progress(
            "train",
            total=tc.max_steps or None,
            unit="steps",
            enabled=self.ranks.main,
            done=state.step,
            deadline=(tc.max_time - state.elapsed) if tc.max_time else None,
        )
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "src_tokens": 0, "start": time.monotonic()}
        started = time.monotonic() - state.elapsed
        stop = self._budget_reached(started)
        with _interrupt_flag() as interrupted:
            while stop is None:
                batches = self.epoch_batches(state.epoch)
                while state.batch < len(batches) and stop is None:
                    group = batches[state.batch : state.batch + tc.accumulate]
                    result = self.train_step(group)
                    state.batch += len(group)
                    state.step += 1
                    state.elapsed = time.monotonic() - started
                    if result is not None:
                        for key in ("loss", "nll", "tokens", "src_tokens"):
                            window[key] += result[key]
                        seconds = time.monotonic() - window["start"]
                        progress.update(
                            1,
                            loss=result["loss"] / max(1, result["tokens"]),
                            lr=self.lr(state.step - 1),
                            **{"tgt tok/s": window["tokens"] / max(seconds, 1e-9)},
                        )
                    if state.step % tc.log_every == 0:
                        self._log_training(window)
                    if state.step % tc.validate_every == 0:
                        stop = self.validate_and_save()
                    stop = stop or self._budget_reached(started)
                    stop = stop or ("interrupted" if interrupted() else None)
                    stop = self._agree(stop)
                if state.batch >= len(batches):
                    state.epoch += 1
                    state.batch = 0
                    if tc.max_epochs and state.epoch >= tc.max_epochs:
                        stop = stop or "max_epochs"
        if stop == "interrupted":
            progress.close()
            if self.ranks.main:
                self.save(validation=None)
            self.log(
                f"train: interrupted at step {state.step}; saved {self.folder.train_state}; "
                "run `nmt train` again to resume"
            )
            raise KeyboardInterrupt
        progress.close()
        if state.validated_step != state.step:
            self.validate_and_save()
        self.log(
            f"train: stopped ({stop}) at step {state.step}, epoch {state.epoch}, after "
            f"{state.elapsed:.0f}s; best dev BLEU "
            f"{state.best[0][0] if state.best else float('nan'):.2f}"
        )
        return {
            "stop": stop,
            "step": state.step,
            "best": state.best,
            "elapsed": state.elapsed,
            "skipped": state.skipped,
        }

    def _budget_reached(self, started: float) -> str | None:
        tc, state = self.tc, self.state
        if tc.max_steps and state.step >= tc.max_steps:
            return "max_steps"
        if tc.max_time and time.monotonic() - started >= tc.max_time:
            return "max_time"
        if tc.patience and state.stale >= tc.patience:
            return "patience"
        return None

    def train_step(self, group: list[list[int]]) -> dict | None:
        """One optimizer step over `accumulate` batches; None when skipped (non-finite loss).

        Each rank takes rows rank::world of every batch. The loss is divided by the target
        tokens of the whole batch (all ranks) and multiplied by the number of ranks, so the
        gradients DDP averages are those of one process training on the whole batch."""
        tc, vocab, ranks = self.tc, self.vocab, self.ranks
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        lengths = self.train_tgt.lengths
        total_tokens = sum(int(lengths[idx].sum()) + len(idx) for idx in group)  # + eos
        loss_sum = nll_sum = src_tokens = 0.0
        keep = (vocab.pad_id, vocab.bos_id, vocab.eos_id)
        for i, idx in enumerate(group):
            rows, weight = idx[ranks.rank :: ranks.world], ranks.world / total_tokens
            if not rows:  # fewer rows than ranks: a zero-weight row keeps the all-reduce in step
                rows, weight = idx[:1], 0.0
            batch = make_batch(self.train_src, self.train_tgt, rows, vocab).to(self.device)
            src = word_dropout(batch.src, tc.word_dropout, vocab.unk_id, keep)
            tgt_in = word_dropout(batch.tgt_in, tc.word_dropout, vocab.unk_id, keep)
            last = i == len(group) - 1
            sync = (
                contextlib.nullcontext() if last or ranks.world == 1 else self.ddp_model.no_sync()
            )
            with sync:
                with autocast(self.device, tc.precision):
                    log_probs = self.ddp_model(src, batch.src_lengths, tgt_in)  # (B, T, V)
                loss, nll = label_smoothed_nll(
                    log_probs, batch.tgt_out, vocab.pad_id, tc.label_smoothing
                )
                self.scaler.scale(loss * weight).backward()
            if weight:
                loss_sum += loss.item()
                nll_sum += nll.item()
                src_tokens += int(batch.src_lengths.sum())
        loss_sum, nll_sum, src_tokens = ranks.sum([loss_sum, nll_sum, src_tokens], self.device)
        if not math.isfinite(loss_sum):
            return self._skip_step()
        self.scaler.unscale_(self.optimizer)
        if tc.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_grad_norm)
        set_learning_rate(self.optimizer, self.lr(self.state.step))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._skipped_in_a_row = 0
        return {"loss": loss_sum, "nll": nll_sum, "tokens": total_tokens, "src_tokens": src_tokens}

    def _agree(self, stop: str | None) -> str | None:
        """Every rank stops together, for the reason rank 0 (or any rank) has."""
        if self.ranks.world == 1:
            return stop
        reasons = [None, *STOP_REASONS]
        return reasons[self.ranks.agree_max(reasons.index(stop), self.device)]

    def _skip_step(self) -> None:
        self.state.skipped += 1
        self._skipped_in_a_row = getattr(self, "_skipped_in_a_row", 0) + 1
        self.optimizer.zero_grad(set_to_none=True)
        if self.tc.precision == "fp16":
            self.scaler.update()  # lower the loss scale and try again
            return None
        if self._skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise UserError(
                f"training diverged: {MAX_SKIPPED_IN_A_ROW} steps in a row had a "
                f"non-finite loss at step {self.state.step}; the last good checkpoint "
                f"is {self.folder.last}; try a lower train.lr"
            )
        return None

    def _log_training(self, window: dict) -> None:
        now = time.monotonic()
        seconds = max(1e-9, now - window["start"])
        tokens = max(1, window["tokens"])
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "lr": self.lr(self.state.step - 1),
            "train_loss": window["loss"] / tokens,
            "train_ppl": math.exp(min(50.0, window["nll"] / tokens)),
            "tgt_tokens_per_s": window["tokens"] / seconds,
            "src_tgt_tokens_per_s": (window["tokens"] + window["src_tokens"]) / seconds,
            "elapsed": round(self.state.elapsed, 1),
        }
        self._append_log(record)
        window.update(loss=0.0, nll=0.0, tokens=0, src_tokens=0, start=now)

    def _append_log(self, record: dict) -> None:
        if not self.ranks.main:
            return
        with open(self.folder.train_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # --- validation and checkpoints ---------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict:
        """Dev loss and perplexity (teacher forcing), and dev BLEU from real decoding."""
        model, vocab = self.model, self.vocab
        model.eval()
        dev_src, dev_tgt = self.dev
        nll_sum, tokens = 0.0, 0
        for start in range(0, len(dev_src), 64):
            idx = list(range(start, min(start + 64, len(dev_src))))
            batch = make_batch(dev_src, dev_tgt, idx, vocab).to(self.device)
            with autocast(self.device, self.tc.precision):
                log_probs = model(batch.src, batch.src_lengths, batch.tgt_in)
            _, nll = label_smoothed_nll(log_probs, batch.tgt_out, vocab.pad_id, 0.0)
            nll_sum += nll.item()
            tokens += batch.num_tgt_tokens
        search = SearchConfig(
            **{**asdict(self.config.search), "beam_size": self.tc.dev_beam_size, "n_best": 1}
        )
        sources = [dev_src[i].tolist() for i in range(len(dev_src))]
        with autocast(self.device, self.tc.precision):
            hypotheses = translate_ids(model, sources, search, self.device)
        texts = self.tgt_tokenizer.decode([h[0].tokens if h else [] for h in hypotheses])
        scores = corpus_scores(texts, self.dev_refs)
        return {
            "dev_loss": nll_sum / tokens,
            "dev_ppl": math.exp(min(50.0, nll_sum / tokens)),
            "dev_bleu": scores["bleu"],
            "dev_chrf": scores["chrf"],
        }

    def validate_and_save(self) -> str | None:
        """Validate, keep the best checkpoints, save the train state; a reason to stop or None.
        Rank 0 does the work; the other ranks learn whether dev BLEU improved."""
        state = self.state
        state.validated_step = state.step
        improved = False
        if self.ranks.main:
            result = self.validate()
            bleu = result["dev_bleu"]
            improved = not state.best or bleu > state.best[0][0]
            self._append_log({"step": state.step, **result, "elapsed": round(state.elapsed, 1)})
            self.log(
                f"train: step {state.step}: dev loss {result['dev_loss']:.3f}, ppl "
                f"{result['dev_ppl']:.2f}, BLEU {bleu:.2f}, chrF {result['dev_chrf']:.2f}"
                + (" (best)" if improved else "")
            )
        improved = bool(self.ranks.agree_max(int(improved), self.device))
        state.stale = 0 if improved else state.stale + 1
        self.lr.validated(improved)
        if self.ranks.main:
            self.save(validation=result)
            self.draw_learning_curve()
        if self.tc.patience and state.stale >= self.tc.patience:
            return "patience"
        return None

    def checkpoint_info(self, validation: dict | None) -> dict:
        return {
            "step": self.state.step,
            "epoch": self.state.epoch,
            **(validation or {}),
            "normalize": self.config.data.cleaning.normalize,
            "max_pieces": self.config.data.cleaning.max_pieces,
            "languages": self.manifest["languages"],
            "run": self.config.name,
        }

    def save(self, validation: dict | None) -> None:
        """Checkpoints first, the train state last: a kill in between only repeats work."""
        state, run = self.state, self.folder
        info = self.checkpoint_info(validation)

        def save(path: Path) -> None:
            save_checkpoint(
                path, self.model, self.src_tokenizer, self.tgt_tokenizer, self.config.search, info
            )

        save(run.last)
        if validation is not None:
            keep_best, keep_last = self.tc.keep_best, self.tc.keep_last
            best = sorted(
                state.best + [[validation["dev_bleu"], state.step]],
                key=lambda item: (-item[0], item[1]),
            )
            if best[0][1] == state.step:
                save(run.best)
            if keep_best > 1 and state.step in [step for _, step in best[:keep_best]]:
                save(run.kept("best", state.step))
            for _, step in best[keep_best:]:
                run.kept("best", step).unlink(missing_ok=True)
            state.best = best[:keep_best]
            last = state.last + [state.step]
            if keep_last > 1:
                save(run.kept("last", state.step))
            for step in last[:-keep_last]:
                run.kept("last", step).unlink(missing_ok=True)
            state.last = last[-keep_last:]
        self._save_train_state()

    def _save_train_state(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = {
            "optimizer": flatten_state(self.optimizer.state_dict(), tensors, "optimizer"),
            "scaler": flatten_state(self.scaler.state_dict(), tensors, "scaler"),
            "rng": flatten_state(
                {
                    "cpu": torch.get_rng_state(),
                    "cuda": (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []),
                },
                tensors,
                "rng",
            ),
        }
        for name, tensor in self.model.state_dict().items():
            tensors[f"model.{name}"] = tensor
        metadata = {
            "format": "seq2seq-train-state",
            "version": "1",
            "state": json.dumps(asdict(self.state)),
            "lr": json.dumps(self.lr.state_dict()),
            "skeleton": json.dumps(skeleton),
            "model": json.dumps(to_dict(self.config.model)),
            "tokenizer": json.dumps(self.manifest["tokenizer"]),
        }
        # Tied weights share storage; safetensors stores each once.
        unique, seen = {}, set()
        for key, tensor in tensors.items():
            if key.startswith("model.") and tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            unique[key] = tensor
        write_safetensors(self.folder.train_state, unique, metadata)

    def _restore(self) -> None:
        path = self.folder.train_state
        tensors, metadata = read_safetensors(path)
        if metadata.get("format") != "seq2seq-train-state":
            raise UserError(f"{path}: not a training state file")
        if json.loads(metadata["model"]) != to_dict(self.config.model):
            raise UserError(
                f"{path}: was trained with a different model config; pass --fresh to "
                "start over (overwrites this run's checkpoints) or use another --run-dir"
            )
        if json.loads(metadata["tokenizer"]) != self.manifest["tokenizer"]:
            raise UserError(f"{path}: the run folder was preprocessed again since; pass --fresh")
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state, strict=False)
        skeleton = json.loads(metadata["skeleton"])
        self.optimizer.load_state_dict(unflatten_state(skeleton["optimizer"], tensors))
        self.scaler.load_state_dict(unflatten_state(skeleton["scaler"], tensors))
        rng = unflatten_state(skeleton["rng"], tensors)
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.lr.load_state_dict(json.loads(metadata["lr"]))
        self.state = TrainState(**json.loads(metadata["state"]))
        if self.ranks.main:
            self._truncate_log(self.state.step)
        self.log(f"train: resuming from {path} at step {self.state.step}")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the state we resume from (they will be redone)."""
        if not self.folder.train_log.is_file():
            return
        kept = []
        for line in self.folder.train_log.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by a kill
        atomic_write_text(self.folder.train_log, "".join(line + "\n" for line in kept))

    def draw_learning_curve(self) -> None:
        draw_learning_curve(self.folder.train_log, self.folder.learning_curve)


def train(
    config: Config, run: RunFolder, log: Callable[[str], None] = print, fresh: bool = False
) -> dict:
    """Run the stage: train (or resume) until a budget or early stopping ends it. Under
    torchrun, every rank runs this; rank 0 alone writes."""
    trainer = Trainer(config, run, log, fresh)
    result = trainer.run()
    trainer.ranks.stop()
    return result
