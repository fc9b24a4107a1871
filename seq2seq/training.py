"""Training pieces that know nothing of files: loss, optimizer, learning-rate schedule,
and turning nested training state into tensors plus JSON (no pickle) and back."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig


def label_smoothed_nll(
    log_probs: Tensor, target: Tensor, pad_id: int, epsilon: float
) -> tuple[Tensor, Tensor]:
    """log_probs (..., V), target (...) -> (smoothed loss, plain NLL), both summed over
    real (non-pad) tokens. The smoothed loss spreads epsilon uniformly over the vocabulary
    (Szegedy et al., 2016): (1 - eps) * nll + eps * mean over V of -log p."""
    vocab = log_probs.size(-1)
    return _SmoothedNLL.apply(log_probs.reshape(-1, vocab), target.reshape(-1), pad_id, epsilon)


class _SmoothedNLL(torch.autograd.Function):
    """`label_smoothed_nll` over (N, V), its gradient written in one pass (autograd's fills
    one (N, V) gradient for the mean, zero-fills one for the picked entries, adds the two)."""

    @staticmethod
    def forward(ctx, log_probs: Tensor, target: Tensor, pad_id: int, epsilon: float):
        pad = (target == pad_id).unsqueeze(-1)  # (N, 1)
        nll = -log_probs.gather(-1, target.unsqueeze(-1)).masked_fill(pad, 0.0)  # (N, 1)
        smooth = -log_probs.mean(dim=-1, keepdim=True).masked_fill(pad, 0.0)  # (N, 1)
        ctx.save_for_backward(target, pad)
        ctx.vocab, ctx.epsilon = log_probs.size(-1), epsilon
        return ((1 - epsilon) * nll + epsilon * smooth).sum(), nll.sum()

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        target, pad = ctx.saved_tensors
        real = (~pad).to(grad_loss.dtype)  # (N, 1)
        eps = ctx.epsilon
        # d/d log p: -eps/V * grad_loss everywhere, and at the target
        # -(1 - eps) * grad_loss - grad_nll more; nothing on padding rows
        grad = (real * (-eps / ctx.vocab * grad_loss)).expand(-1, ctx.vocab).contiguous()
        picked = real * (-(1 - eps) * grad_loss - grad_nll)  # (N, 1)
        return grad.scatter_add_(-1, target.unsqueeze(-1), picked), None, None, None


def word_dropout(
    tokens: Tensor,
    rate: float,
    unk_id: int,
    keep_ids: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace a `rate` fraction of the tokens with <unk>, never the ids in `keep_ids`."""
    if rate <= 0:
        return tokens
    drop = torch.rand(tokens.shape, generator=generator, device=tokens.device) < rate
    for i in keep_ids:
        drop &= tokens != i
    return tokens.masked_fill(drop, unk_id)


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates all parameters in one pass instead of a dozen ops each.
    return cls(
        model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay, fused=True
    )


class LearningRate:
    """Linear warmup, then constant, inverse square root, cosine or plateau decay.

    A pure function of the step and (for plateau) the number of reductions made, so that
    its whole state is two integers."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.reductions = 0  # plateau: times the rate was cut
        self.stale = 0  # plateau: validations since the best dev BLEU

    def __call__(self, step: int) -> float:
        c = self.config
        warmup = max(1, c.warmup_steps)
        if c.warmup_steps and step < c.warmup_steps:
            return c.lr * (step + 1) / warmup
        if c.schedule == "inverse_sqrt":
            return c.lr * math.sqrt(warmup) / math.sqrt(max(step, warmup))
        if c.schedule == "cosine":
            if c.max_steps <= c.warmup_steps:  # no end to decay towards
                return c.lr
            progress = min(1.0, (step - c.warmup_steps) / (c.max_steps - c.warmup_steps))
            return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * progress))
        if c.schedule == "plateau":
            return max(c.min_lr, c.lr * c.plateau_factor**self.reductions)
        return c.lr

    def validated(self, improved: bool) -> None:
        """Plateau: cut the rate after `plateau_patience` validations without improvement."""
        if self.config.schedule != "plateau":
            return
        self.stale = 0 if improved else self.stale + 1
        if self.stale >= self.config.plateau_patience:
            self.reductions += 1
            self.stale = 0

    def state_dict(self) -> dict:
        return {"reductions": self.reductions, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.reductions, self.stale = state["reductions"], state["stale"]


# --- nested state <-> tensors + JSON --------------------------------------------------------


def flatten_state(obj: Any, tensors: dict[str, Tensor], prefix: str = "state") -> Any:
    """Replace every tensor in a nested structure by a reference into `tensors`.

    Dicts become lists of [key, value] pairs so that integer keys (as in optimizer state)
    survive JSON. Returns the JSON-ready skeleton."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj
        return {"tensor": prefix}
    if isinstance(obj, dict):
        return {"dict": [[k, flatten_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"list": items, "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix}")


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    if "tensor" in skeleton:
        return tensors[skeleton["tensor"]]
    if "dict" in skeleton:
        return {k: unflatten_state(v, tensors) for k, v in skeleton["dict"]}
    if "list" in skeleton:
        items = [unflatten_state(v, tensors) for v in skeleton["list"]]
        return tuple(items) if skeleton["tuple"] else items
    return skeleton["value"]
