"""Stage 2, train: subword ids -> checkpoints, a metrics log and a learning curve.

Reads (from the run folder, see layout.py): manifest.json, the SentencePiece model(s),
data/train.<lang>.bin/.idx, data/dev.<lang>.bin/.idx and data/dev.<tgt_lang> (references).
Writes:
    model/*.safetensors             checkpoints and the training state (see train_state.py)
    train_log.jsonl                 one JSON object per log line and per validation
    learning_curve.png              train loss, dev loss and dev BLEU by step
Training resumes from model/train_state.safetensors when it exists: the data order, the
random state and the optimizer are restored, so resuming gives the model not stopping would.

A training step never waits for the device: losses are summed there and read when a line
is logged, and a step whose gradients are not finite is skipped by the optimizer itself
(its `found_inf` flag), so nothing is decided on the host. On a GPU the next step's batches
are padded on a background thread, in pinned memory, while the current step runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from seq2seq.config import Config
from seq2seq.device import autocast, resolve_precision
from seq2seq.errors import UserError
from seq2seq.io import append_text, atomic_write_text
from seq2seq.model import Seq2Seq
from seq2seq.search import check_beam_size
from seq2seq.shortlist import build_shortlist
from seq2seq.training import LearningRate, build_optimizer, label_smoothed_nll, word_dropout

from .background import ahead, worth_it
from .distributed import Ranks
from .finetune import fine_tune
from .layout import RunFolder
from .plots import draw_learning_curve
from .progress import Progress
from .records import Record, now
from .train_data import Step, TrainingData
from .train_state import METRIC_NAMES, Checkpoints, Optimization, TrainState, all_finite, dev_score
from .validation import DevSet

MAX_SKIPPED_IN_A_ROW = 20  # non-finite steps in a row before the run is stopped
STOPS = [None, "max_steps", "max_time", "max_epochs", "patience", "interrupted"]  # ranks vote


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal after saving; the exit code is 128 + `signum`."""

    def __init__(self, signum: int):
        super().__init__()
        self.signum = signum


@contextlib.contextmanager
def _interrupt_flag():
    """Ctrl-C (SIGINT), or SIGTERM as schedulers send before they kill, sets a flag that the
    loop reads between steps, so that it stops with whole steps only and saves; a second
    signal stops at once. The flag reads as the signal's number (0 while none came)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    flag: list[int] = []

    def handler(signum, frame):
        if flag:
            raise Stopped(signum)
        flag.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: flag[0] if flag else 0
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


class StepFigures:
    """Loss and token counts of the steps since the last log line (`window`: their sums
    when a resumed run stopped), and the steps skipped, summed on the device so that no step
    waits for them; read in one transfer."""

    WINDOW = ["loss", "nll", "tgt_tokens", "src_tokens"]

    def __init__(self, device: torch.device, window: list[float]):
        sums = [*(window or [0.0] * 4), 0.0, 0.0, 0.0]
        sums = [torch.tensor(x, dtype=torch.float64, device=device) for x in sums]
        self.loss, self.nll, self.tgt_tokens, self.src_tokens = sums[:4]
        self.skipped, self.in_a_row, self.most_in_a_row = sums[4:]
        self.start = time.monotonic()
        self.tokens_seen = 0  # target tokens of every step, skipped or not, for speed

    def add(self, loss, nll, tgt_tokens: int, src_tokens: int, skip) -> None:
        """loss, nll: device sums; skip: device 0/1, whether the optimizer skipped the step."""
        taken = 1 - skip
        self.loss += taken * loss
        self.nll += taken * nll
        self.tgt_tokens += taken * tgt_tokens
        self.src_tokens += taken * src_tokens
        self.skipped += skip
        self.in_a_row = (self.in_a_row + 1) * skip
        self.most_in_a_row = torch.maximum(self.most_in_a_row, self.in_a_row)
        self.tokens_seen += tgt_tokens

    def read(self, window_ends: bool) -> dict:
        """The sums so far (one wait for the device); the skip counts start again, and the
        window too if it ends (with a log line)."""
        names = [*self.WINDOW, "skipped", "most_in_a_row"]
        values = torch.stack([getattr(self, name) for name in names]).tolist()
        for name in names if window_ends else names[4:]:
            getattr(self, name).zero_()
        self.most_in_a_row.copy_(self.in_a_row)
        now = time.monotonic()
        seconds = max(1e-9, now - self.start)
        if window_ends:
            self.start, self.tokens_seen = now, 0
        return {**dict(zip(names, values)), "seconds": seconds}


class Trainer:
    """The training loop; `run()` does the work, `Checkpoints` writes what it keeps."""

    def __init__(
        self,
        config: Config,
        run: RunFolder,
        log: Callable[[str], None] = print,
        fresh: bool = False,
    ):
        self.config, self.folder, self.tc, self.ranks = config, run, config.train, Ranks()
        self.record = Record(run, config, log, self.ranks.main)
        self.log = self.record.log if self.ranks.main else (lambda _: None)
        self.manifest = run.read_manifest()
        self.device = self.ranks.device(self.tc.device)
        if self.tc.threads:
            torch.set_num_threads(self.tc.threads)
        self._load_data()
        self._build_model()
        table = build_shortlist(self.data.src, self.data.tgt, self.vocab)  # for the checkpoints
        self.checkpoints = Checkpoints(config, run, self.data.tokenizers, self.manifest, table)
        self.state = self._resume_or_start(fresh)
        self.record.begin(self.device, self.precision, self.state.step)
        self.figures = StepFigures(self.device, self.state.window if self.ranks.main else [])
        self.ranks.barrier()

    def _load_data(self) -> None:
        """The training pairs and the dev set (whose beam must fit the vocabulary)."""
        self.data = TrainingData(self.folder, self.manifest, self.config, self.ranks, self.device)
        self.vocab = self.data.vocab
        tgt_tokenizer, score = self.data.tokenizers[1], self.config.score
        self.dev_set = DevSet(self.folder, self.manifest, self.vocab, tgt_tokenizer, score)
        check_beam_size(self.tc.dev_beam_size, self.vocab, "train.dev_beam_size")

    def _build_model(self) -> None:
        """The model (seeded), its precision, its DDP wrapper under torchrun, and its optimizer."""
        if self.config.model.tie_embeddings and not self.manifest["tokenizer"]["joint"]:
            raise UserError("config key 'model.tie_embeddings': needs data.subwords.joint: true")
        torch.manual_seed(self.tc.seed)
        self.model = Seq2Seq(self.config.model, self.vocab).to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.precision, note = resolve_precision(self.tc.precision, self.device, self.n_params)
        self.log(f"train: {note}")
        self.ranks.start(self.device)
        self.ddp_model = self.model
        if self.ranks.world > 1:  # gradients are averaged over the ranks in backward
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimization = Optimization(
            build_optimizer(self.model, self.tc),
            torch.amp.GradScaler("cuda", enabled=self.precision == "fp16"),
            LearningRate(self.tc),
        )

    def _resume_or_start(self, fresh: bool) -> TrainState:
        """Where training stands: the saved state of this run, or a start (from a
        checkpoint's weights when fine-tuning); then each rank's own random state."""
        run, state = self.folder, TrainState()
        if run.train_state.is_file() and not fresh:
            state = self.checkpoints.restore(self.model, self.optimization)
            self.checkpoints.ours = True  # last.safetensors belongs to the run we resume
            if self.ranks.main:
                self.checkpoints.truncate_log(state.step)
            self.log(f"train: resuming from {run.train_state} at step {state.step}")
        elif not fresh and (run.last.is_file() or run.best.is_file()):
            raise UserError(
                f"{run.train_state}: missing, but {run.model_dir} holds checkpoints of an "
                "earlier run; pass --fresh to start over (replaces them), or use another --run-dir"
            )
        else:
            if self.ranks.main:
                run.model_dir.mkdir(parents=True, exist_ok=True)
                for kept in [*run.kept_checkpoints("best"), *run.kept_checkpoints("last")]:
                    kept.unlink()  # an earlier run's: averaging must not mix them with ours
                atomic_write_text(run.train_log, "")
            if self.tc.init_from is not None:
                state = fine_tune(self, self.tc.init_from)
        if self.ranks.main:  # temporary files of writes that a kill interrupted
            for stale in [*run.model_dir.glob(".*.tmp*"), *run.root.glob(".*.tmp*")]:
                stale.unlink(missing_ok=True)
        if self.ranks.rank > 0:  # each rank its own dropout and word dropout
            torch.manual_seed(self.tc.seed + 7919 * self.ranks.rank + state.step)
        return state

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        tc, state = self.tc, self.state
        self.log(
            f"train: {self.n_params / 1e6:.2f}M parameters on {self.device}, "
            f"{len(self.data)} training pairs; from step {state.step}"
        )
        self.progress = Progress(
            "train",
            total=tc.max_steps or None,
            unit="steps",
            enabled=self.ranks.main,
            done=state.step,
            deadline=(tc.max_time - state.elapsed) if tc.max_time else None,
            mirror=lambda line: self.record.keep(f"{now()} {line}"),
        )
        self.started = time.monotonic() - state.elapsed
        stop = self._budget_reached()
        with _interrupt_flag() as interrupted:
            while stop is None:
                stop = self._epoch(interrupted)
            signum = interrupted()
        self.progress.close()
        if stop == "interrupted":
            self._settle()
            if self.ranks.main:
                self.checkpoints.save(self.model, self.optimization, state, validation=None)
            self.log(
                f"train: interrupted at step {state.step}; saved {self.folder.train_state}; "
                "run `nmt train` again to resume"
            )
            raise Stopped(signum)
        if state.validated_step != state.step:
            self.validate_and_save()
        best = abs(state.best[0][0]) if state.best else float("nan")
        self.log(
            f"train: stopped ({stop}) at step {state.step}, epoch {state.epoch}, after "
            f"{state.elapsed:.0f}s; best dev {METRIC_NAMES[self.tc.metric]} {best:.2f}"
        )
        result = {"stop": stop, "step": state.step, "best": state.best}
        return {**result, "elapsed": state.elapsed, "skipped": state.skipped}

    def _epoch(self, interrupted: Callable[[], bool]) -> str | None:
        """Train on the rest of the current epoch; a reason to stop, or None at its end."""
        tc, state = self.tc, self.state
        batches = self.data.epoch_batches(state.epoch)
        size = tc.accumulate  # batches per optimizer step
        groups = [batches[i : i + size] for i in range(state.batch, len(batches), size)]
        steps = ahead(self.data.step, groups, enabled=worth_it(self.device))
        for step in steps:
            self.train_step(step)
            state.batch += step.batches
            state.step += 1
            state.elapsed = time.monotonic() - self.started
            speed = self.figures.tokens_seen / max(time.monotonic() - self.figures.start, 1e-9)
            self.progress.update(1, lr=self.optimization.lr(state.step - 1), **{"tgt tok/s": speed})
            if state.step % tc.log_every == 0:
                self._sync_figures(log=True)
            stop = self.validate_and_save() if state.step % tc.validate_every == 0 else None
            stop = stop or self._budget_reached() or ("interrupted" if interrupted() else None)
            # every rank stops together, for the reason rank 0 (or any rank) has
            if (stop := STOPS[self.ranks.agree_max(STOPS.index(stop), self.device)]) is not None:
                steps.close()
                return stop
        state.epoch += 1
        state.batch = 0
        return "max_epochs" if tc.max_epochs and state.epoch >= tc.max_epochs else None

    def _budget_reached(self) -> str | None:
        tc, state = self.tc, self.state
        if tc.max_steps and state.step >= tc.max_steps:
            return "max_steps"
        if tc.max_time and time.monotonic() - self.started >= tc.max_time:
            return "max_time"
        return "patience" if tc.patience and state.stale >= tc.patience else None

    def train_step(self, step: Step) -> None:
        """One optimizer step over the step's batches; nothing in it waits for the device."""
        tc, vocab, ranks = self.tc, self.vocab, self.ranks
        self.model.train()
        optimizer, scaler = self.optimization.optimizer, self.optimization.scaler
        optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = torch.zeros((), device=self.device)
        keep = (vocab.pad_id, vocab.bos_id, vocab.eos_id)
        for i, (cpu_batch, weight) in enumerate(step.parts):
            batch = cpu_batch.to(self.device)
            src = word_dropout(batch.src, tc.word_dropout, vocab.unk_id, keep)
            tgt_in = word_dropout(batch.tgt_in, tc.word_dropout, vocab.unk_id, keep)
            last = i == len(step.parts) - 1  # DDP averages the gradients in the last backward
            with contextlib.nullcontext() if last or ranks.world == 1 else self.ddp_model.no_sync():
                with autocast(self.device, self.precision):
                    # (N, V): the real target positions only
                    log_probs = self.ddp_model(src, batch.src_lengths, tgt_in, batch.positions)
                loss, nll = label_smoothed_nll(
                    log_probs, batch.tgt_real, vocab.pad_id, tc.label_smoothing
                )
                scaler.scale(loss * weight).backward()
            if weight:
                loss_sum, nll_sum = loss_sum + loss.detach(), nll_sum + nll.detach()
        scaler.unscale_(optimizer)
        # The norm is computed even without clipping: a non-finite one skips the step.
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), tc.clip_grad_norm or math.inf
        )
        skip = ranks.any_flag(~(norm.isfinite() & loss_sum.isfinite())).float()
        for group in optimizer.param_groups:
            group["lr"] = self.optimization.lr(self.state.step)
        if self.precision == "fp16":
            scaler.step(optimizer)  # the scaler skips non-finite steps and lowers its scale
        else:
            optimizer.found_inf = skip  # the fused optimizer leaves everything as it was
            optimizer.step()
            del optimizer.found_inf
        scaler.update()
        self.figures.add(loss_sum, nll_sum, step.tgt_tokens, step.src_tokens, skip)

    def _sync_figures(self, log: bool) -> None:
        """Read what the device summed since the last time: log it, count the skipped steps,
        and stop a run whose steps keep failing."""
        figures = self.figures.read(window_ends=log)
        self.state.skipped += int(figures["skipped"])
        # The losses of all ranks; the token counts are the whole step's. Rank 0 restores them.
        loss, nll = self.ranks.sum([figures["loss"], figures["nll"]], self.device)
        self.state.window = [] if log else [loss, nll, figures["tgt_tokens"], figures["src_tokens"]]
        if figures["most_in_a_row"] >= MAX_SKIPPED_IN_A_ROW and self.precision != "fp16":
            raise self._diverged(
                f"{MAX_SKIPPED_IN_A_ROW} steps in a row had a non-finite loss by step "
                f"{self.state.step}"
            )
        if not log:
            return
        tokens, seconds = max(1.0, figures["tgt_tokens"]), figures["seconds"]
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "lr": self.optimization.lr(self.state.step - 1),
            "train_loss": loss / tokens,
            "train_ppl": math.exp(min(50.0, nll / tokens)),
            "tgt_tokens": int(figures["tgt_tokens"]),
            "tgt_tokens_per_s": figures["tgt_tokens"] / seconds,
            "src_tgt_tokens_per_s": (figures["tgt_tokens"] + figures["src_tokens"]) / seconds,
            "elapsed": round(self.state.elapsed, 1),
        }
        self.progress.update(0, loss=record["train_loss"])
        self._append_log(record)

    def _append_log(self, record: dict) -> None:
        if not self.ranks.main:
            return
        self.record.figures(record)
        # non-finite numbers as null, so that the log stays strict JSON
        null = {k: None for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)}
        append_text(self.folder.train_log, json.dumps({**record, **null}, allow_nan=False) + "\n")

    # --- validation and checkpoints ---------------------------------------------------------
    def validate(self) -> dict:
        """Dev loss, perplexity, BLEU and chrF of the model as it is now."""
        search = dataclasses.replace(self.config.search, beam_size=self.tc.dev_beam_size, n_best=1)
        return self.dev_set.evaluate(
            self.model, search, self.device, self.precision, self.tc.dev_examples
        )

    def _diverged(self, what: str) -> UserError:
        """The one-line error that stops a run gone astray, naming a good checkpoint."""
        good = self.checkpoints.last_good(self.state)
        return UserError(f"training diverged: {what}; {good}; try a lower train.lr")

    def _settle(self) -> None:
        """Before anything saves: read the device's sums, and stop if weights are not finite."""
        self._sync_figures(log=False)
        if not all_finite(self.model):
            raise self._diverged(f"the weights are no longer finite at step {self.state.step}")

    def validate_and_save(self) -> str | None:
        """Validate, keep the best checkpoints, save the train state; a reason to stop or None.
        Rank 0 does the work; the other ranks learn whether dev BLEU improved. Weights that
        are no longer finite stop the run, and are never saved."""
        state, tc = self.state, self.tc
        self._settle()
        state.validated_step = state.step
        improved, result = False, None
        if self.ranks.main:
            result = self.validate()
            if not math.isfinite(result["dev_loss"]):  # finite weights, but gone astray
                raise self._diverged(f"the dev loss is {result['dev_loss']} at step {state.step}")
            examples = result.pop("examples")
            improved = not state.best or dev_score(result, tc.metric) > state.best[0][0]
            self._append_log({"step": state.step, **result, "elapsed": round(state.elapsed, 1)})
            best = f" (best {METRIC_NAMES[tc.metric]})" if improved else ""
            self.log(
                f"train: step {state.step}: dev loss {result['dev_loss']:.3f}, ppl "
                f"{result['dev_ppl']:.2f}, BLEU {result['dev_bleu']:.2f}, chrF "
                f"{result['dev_chrf']:.2f}{best}"
            )
            for number, *texts in examples:  # source, reference, hypothesis
                for name, text in zip(("source", "reference", "hypothesis"), texts):
                    self.log(f"  dev {number} {name:<10} {text}")
        improved = bool(self.ranks.agree_max(int(improved), self.device))
        state.stale = 0 if improved else state.stale + 1
        self.optimization.lr.validated(improved)
        if self.ranks.main:
            self.checkpoints.save(self.model, self.optimization, state, validation=result)
            draw_learning_curve(self.folder.train_log, self.folder.learning_curve)
        return "patience" if tc.patience and state.stale >= tc.patience else None


def train(
    config: Config, run: RunFolder, log: Callable[[str], None] = print, fresh: bool = False
) -> dict:
    """Run the stage: train (or resume) until a budget or early stopping ends it. Under
    torchrun, every rank runs this; rank 0 alone writes."""
    with run.lock() if Ranks().main else contextlib.nullcontext():  # rank 0 writes
        trainer = Trainer(config, run, log, fresh)
        try:
            result = trainer.run()
        finally:
            trainer.record.close()
    trainer.ranks.stop()
    return result
