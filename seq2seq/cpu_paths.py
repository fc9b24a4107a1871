"""The model's CPU speed paths, kept beside `model.py` so that it reads encoder, attention,
decoder, model. Each computes what the plain PyTorch call computes (spans up to rounding);
only the work differs.

- Spans (`longest_first`, `rnn_outputs`): a CPU batch of mixed lengths (such as randomly
  shuffled pairs) would spend much of its time on padding. There the rows are sorted longest
  first and the time axis is cut into a few spans, each run over only the rows still going,
  as packed sequences would do. (PyTorch's CPU backward for packed sequences zero-fills a
  full-size gradient at every time step; a few spans cost a few RNN calls instead.) On a GPU
  the whole padded batch is one cuDNN call, which is faster than splitting it.
- One matrix product (`linear`, `run_rnn`): in bf16 on the CPU, PyTorch may run a 3-d input
  as a batched product against a copy of the weight for every row, costlier than the product.
- Dropout masks from uniform numbers (`Dropout`) where `bernoulli_` draws one at a time.
- An LSTM in fp32 under autocast where oneDNN has no bf16 LSTM (`_run_time_major`).

Shapes as in `model.py`; F is an input feature size.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Spans = list[tuple[int, int]]  # (steps, rows) of each span of the time axis


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as oneDNN sees it.
    Without it, PyTorch emulates bf16 products (80 times slower than fp32 on an AVX2 CPU)
    and oneDNN has no bf16 LSTM at all. NMT_CPU_BF16=0 or 1 answers instead of the probe
    (the tests use it, so that they behave alike on every machine)."""
    forced = os.environ.get("NMT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def keep_freed_memory() -> None:
    """Search makes (rows x vocabulary) tensors of megabytes at every step, which glibc hands
    back to the system when freed: kept, int8 beam 5 runs 17% faster, fp32 5% (AMD EPYC)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None) if os.name == "posix" else None
    if mallopt is not None:  # glibc: M_MMAP_THRESHOLD to its maximum, M_TRIM_THRESHOLD
        mallopt(-3, 32 << 20), mallopt(-1, 2**31 - 1)


@functools.cache
def serial_bernoulli() -> bool:
    """Whether PyTorch draws `bernoulli_` one element at a time here: all but MKL on Intel."""
    cpuinfo = "/proc/cpuinfo"
    text = open(cpuinfo).read() if os.path.exists(cpuinfo) else platform.processor()
    return not (torch.backends.mkl.is_available() and "GenuineIntel" in text)


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU mask keeps an element where a uniform number is at least p."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or not serial_bernoulli():
            return super().forward(x)
        keep = torch.rand(x.shape).ge_(self.p).mul_(1 / (1 - self.p))  # 0 or 1 / (1 - p)
        return x * keep.to(x.dtype)


# --- spans over the rows still going --------------------------------------------------------


def longest_first(encode, src: Tensor, src_lengths: Tensor):
    """`encode(src, src_lengths, spans)` -> (states (B, S, D), finals (L, B, D)). On the CPU,
    where spans pay (see `length_spans`), it runs over the rows sorted longest first with
    their spans, and its results come back in the input order; elsewhere with spans None."""
    spans = None
    if src.device.type == "cpu" and src.size(0) > 1:
        spans = length_spans(src_lengths.tolist())
    if spans is None:
        return encode(src, src_lengths, None)
    order = src_lengths.argsort(descending=True, stable=True)  # (B,)
    states, finals = encode(src.index_select(0, order), src_lengths.index_select(0, order), spans)
    inverse = order.argsort()  # (B,)
    return states.index_select(0, inverse), finals.index_select(1, inverse)


def length_spans(lengths: list[int], most: int = 8) -> Spans | None:
    """How to run an RNN over rows of these lengths without most of the padding: spans of
    the time axis as (steps, rows), the rows being the longest first. At most `most` spans,
    cut where the rows at evenly spaced ranks end; None where the spans would save less
    than a fifth of the padded work (B x S), not worth the extra calls. Every length is at
    least 1 (the end of sentence), and `most` at least 2."""
    ranked = sorted(lengths, reverse=True)
    ends = sorted({ranked[(len(ranked) - 1) * i // (most - 1)] for i in range(most)})
    starts = [0, *ends[:-1]]  # a span's rows: those longer than its start
    spans = [(end - start, sum(n > start for n in ranked)) for start, end in zip(starts, ends)]
    work = sum(steps * rows for steps, rows in spans)
    return spans if work <= 0.8 * len(ranked) * ranked[0] else None


def rnn_outputs(rnn: nn.RNNBase, x: Tensor, spans: Spans | None) -> Tensor:
    """`rnn` over x (B, S, F) -> output (B, S, H): one call over the padded batch without
    spans; with them (rows sorted longest first), one call per span over only its first
    `rows` rows, and zero where a span left a row out (its padding)."""
    if spans is None:
        return run_rnn(rnn, x)[0]
    batch, length = x.shape[:2]
    steps = [steps for steps, _ in spans]
    pieces = x.transpose(0, 1).contiguous().split(steps + [length - sum(steps)])  # (t, B, F)
    outputs, hidden = [], None
    for piece, (_, rows) in zip(pieces, spans):  # columns past the longest row: none run
        if isinstance(hidden, tuple):  # an LSTM's (hidden, cell)
            hidden = tuple(h[:, :rows] for h in hidden)
        elif hidden is not None:
            hidden = hidden[:, :rows]  # (1, rows, H)
        output, hidden = _run_time_major(rnn, piece[:, :rows], hidden)  # (t, rows, H)
        outputs.append(F.pad(output, (0, 0, 0, batch - rows)))  # (t, B, H)
    output = torch.cat(outputs)  # (S', B, H), S' the longest row
    return F.pad(output, (0, 0, 0, 0, 0, length - output.size(0))).transpose(0, 1)  # (B, S, H)


# --- one matrix product, and the fp32 LSTM ---------------------------------------------------


def linear(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer` over the last axis of x (..., F) as one matrix product (2-d input)."""
    return layer(x.reshape(-1, x.size(-1))).view(*x.shape[:-1], -1)


def run_rnn(rnn: nn.RNNBase, x: Tensor, hidden=None):
    """A time-major RNN over batch-major x (B, T, F) -> output (B, T, H), final state.
    The RNN gets a contiguous (T, B, F) input so its input product is one matrix product."""
    output, hidden = _run_time_major(rnn, x.transpose(0, 1).contiguous(), hidden)
    return output.transpose(0, 1), hidden


def _run_time_major(rnn: nn.RNNBase, x: Tensor, hidden):
    """`rnn` over time-major x (T, B, F) -> output (T, B, H), final state."""
    lstm_on_cpu = isinstance(rnn, nn.LSTM) and x.device.type == "cpu"
    if lstm_on_cpu and torch.is_autocast_enabled("cpu") and not cpu_has_native_bf16():
        with torch.autocast("cpu", enabled=False):  # an fp32 LSTM, as autocast would leave it
            if hidden is not None:
                hidden = tuple(h.float() for h in hidden)
            return rnn(x.float(), hidden)
    return rnn(x, hidden)
