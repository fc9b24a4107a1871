"""Host overhead of search: time per decoder step with a model too small to cost anything.

With embeddings, hidden states and a vocabulary of a few dozen, the matrix work of a decoder
step is negligible, so the time a step takes at batch 1,000 is what the host spends around
it: Python, operator dispatch, and waiting on the device. That is what a GPU waits for, so it
is measured here on the CPU, where every change of the search loop shows.

    python benchmarks/host_overhead.py                 # greedy and beam 5, batch 1,000
    python benchmarks/host_overhead.py --batch 64 1000 --repeat 5

Prints milliseconds per decoder step (median of the repetitions, and their range), and
counts that do not depend on the machine's mood: tensor operations per step (each a kernel
launch on a GPU), the same with the decoder step replayed as a CUDA graph (search.cuda_graphs:
the step's own operations become one launch; its input copies stay), and how often a step
makes the host wait for the device (reading a value: `.item()`, `.tolist()`, `bool()`,
`nonzero`, or an operation whose output size depends on the data, which on a GPU each mean
a synchronization).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from seq2seq.batching import pad  # noqa: E402
from seq2seq.config import (  # noqa: E402
    AttentionConfig,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    SearchConfig,
)
from seq2seq.graphs import GraphedModel  # noqa: E402
from seq2seq.model import Seq2Seq  # noqa: E402
from seq2seq.search import search  # noqa: E402
from seq2seq.vocab import Vocab  # noqa: E402

VOCAB = Vocab(src_size=40, tgt_size=40, pad_id=1, unk_id=0, bos_id=2, eos_id=3)


def tiny_model() -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(
        embedding_size=8,
        encoder=EncoderConfig(hidden_size=8),
        attention=AttentionConfig(scoring="scaled_dot"),
        decoder=DecoderConfig(hidden_size=16),
    )
    return Seq2Seq(config, VOCAB).eval()


# Operations whose result size or value the host must read from the device.
WAITS = {"_local_scalar_dense", "nonzero", "repeat_interleave", "masked_select", "unique"}


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations dispatched, and those that make the host wait; while
    `paused`, nothing is counted."""

    def __init__(self):
        super().__init__()
        self.ops = self.waits = 0
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused:
            self.ops += 1
            if func.__name__.split(".")[0] in WAITS:
                self.waits += 1
        return func(*args, **(kwargs or {}))


def count_ops(model, src, src_lengths, config, graphed: bool = False) -> tuple[int, int, int]:
    """Operations, host waits and decoder steps of one search (`.tolist()` reads the data
    without an operation, so it is counted apart). With `graphed`, the search goes through
    the CUDA-graph buffers of seq2seq.graphs and the model's own step counts as the one
    launch that replaying its graph is on a GPU: what is left for the host with graphs."""
    steps = [0]
    real_step = model.step

    def counted(*args):
        steps[0] += 1
        if not graphed:
            return real_step(*args)
        counter.ops += 1  # the replay
        counter.paused = True
        try:
            return real_step(*args)
        finally:
            counter.paused = False

    model.step = counted
    real_tolist = torch.Tensor.tolist

    def tolist(tensor):
        counter.waits += 1
        return real_tolist(tensor)

    torch.Tensor.tolist = tolist
    searched = GraphedModel(model, capture=False) if graphed else model
    try:
        with OpCounter() as counter:
            search(searched, src, src_lengths, config)
    finally:
        model.step, torch.Tensor.tolist = real_step, real_tolist
    return counter.ops, counter.waits, steps[0]


def time_search(model, batch: int, beam: int, repeat: int):
    """Seconds per decoder step of each repetition, the steps taken, and operations and host
    waits per step. Sources of 15 to 24
    tokens: a random model runs to its length limit, so sentences finish over 10 steps."""
    generator = torch.Generator().manual_seed(batch)
    lengths = torch.randint(15, 25, (batch,), generator=generator).tolist()
    sentences = [torch.randint(4, 40, (n,), generator=generator).tolist() for n in lengths]
    src, src_lengths = pad(sentences, VOCAB.pad_id, suffix=VOCAB.eos_id)
    config = SearchConfig(beam_size=beam, max_len_a=1.0, max_len_b=5)
    steps = [0]
    real_step = model.step

    def counted(*args):
        steps[0] += 1
        return real_step(*args)

    model.step = counted
    search(model, src, src_lengths, config)  # warm-up
    per_step = []
    for _ in range(repeat):
        steps[0] = 0
        start = time.perf_counter()
        search(model, src, src_lengths, config)
        per_step.append((time.perf_counter() - start) / steps[0])
    model.step = real_step
    ops, waits, _ = count_ops(model, src, src_lengths, config)
    graphed_ops, _, _ = count_ops(model, src, src_lengths, config, graphed=True)
    return per_step, steps[0], ops / steps[0], waits / steps[0], graphed_ops / steps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1000])
    parser.add_argument("--beam", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = tiny_model()
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU")
    print(
        "| search | batch | decoder steps | ms per step (median) | range | operations per step "
        "| with CUDA graphs | host waits per step |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for beam in args.beam:
        for batch in args.batch:
            per_step, steps, ops, waits, graphed = time_search(model, batch, beam, args.repeat)
            ms = [1000 * s for s in per_step]
            name = "greedy" if beam == 1 else f"beam {beam}"
            print(
                f"| {name} | {batch} | {steps} | {statistics.median(ms):.3f} | "
                f"{min(ms):.3f}-{max(ms):.3f} | {ops:.1f} | {graphed:.1f} | {waits:.2f} |"
            )


if __name__ == "__main__":
    main()
