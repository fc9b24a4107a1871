"""Where a training step's time goes: torch profiler over a few steps of a config's model.

Builds the model of CONFIG (fresh weights), takes batches from the preprocessed RUN folder
(as the trainer makes them: length-bucketed, or with `--no-bucket` runs of shuffled pairs
as JoeyNMT makes them), times `--steps` steps after `--warmup`, then profiles `--profile`
more and prints the share of time in matrix products and the costliest operators. The step
is the trainer's loss, clipping and optimizer in fp32, without its logging and checks.

    python benchmarks/profile_train.py benchmarks/joeynmt_size.yaml runs/vs_joeynmt --no-bucket
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.layout import RunFolder  # noqa: E402
from pipelines.train_data import load_tokenizers, make_vocab  # noqa: E402
from seq2seq.batching import TokenSequences, make_batch, training_batches  # noqa: E402
from seq2seq.config import load_config  # noqa: E402
from seq2seq.model import Seq2Seq  # noqa: E402
from seq2seq.training import build_optimizer, label_smoothed_nll  # noqa: E402

MATRIX_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::_int_mm"}
ATTENTION = "attention"  # the profiler range around the attention's methods


def tag_attention() -> None:
    """Runs `Decoder.attend` (the attention and the combination of its context with the RNN
    output) and the attention modules' `prepare` (the keys, made once per batch) inside a
    profiler range, so that `time_shares` can tell their work apart."""
    from torch import nn
    from torch.profiler import record_function

    import seq2seq.model

    def tagged(method):
        def run(*args, **kwargs):
            with record_function(ATTENTION):
                return method(*args, **kwargs)

        return run

    seq2seq.model.Decoder.attend = tagged(seq2seq.model.Decoder.attend)
    for cls in list(vars(seq2seq.model).values()):
        if isinstance(cls, type) and issubclass(cls, nn.Module) and "prepare" in vars(cls):
            cls.prepare = tagged(vars(cls)["prepare"])


def time_shares(prof) -> str:
    """Where the CPU time of the profiled operators went: matrix products (their whole time,
    the bias an addmm copies in included), the attention's own math (what runs inside the
    ranges of `tag_attention` but dropout, and its backward, found through the autograd
    sequence numbers), and everything else: the work outside matrix products that issue 30
    asks to cut. Until 2026-12-07 only aten::tanh (additive attention's and the
    combination's, but also an LSTM's and int8's cells) counted as the attention's; that
    older figure is given too. Needs `tag_attention()` before the model ran."""
    events = [e for e in prof.events() if e.name != ATTENTION]

    def chain(event):
        while event is not None:
            yield event
            event = event.cpu_parent

    def in_attention(ancestors) -> bool:
        names = [a.name for a in ancestors]
        return ATTENTION in names and not any("dropout" in n or "Backward" in n for n in names)

    forward = {e.sequence_nr for e in events if e.sequence_nr >= 0 and in_attention(chain(e))}
    total = matrix = attention = tanh = 0.0
    for e in events:
        total += e.self_cpu_time_total
        ancestors = list(chain(e))
        if any(a.name in MATRIX_OPS for a in ancestors):
            matrix += e.self_cpu_time_total
            continue
        if e.name == "aten::tanh" and not any("Backward" in a.name for a in ancestors):
            tanh += e.self_cpu_time_total
        if in_attention(ancestors) or any(
            "Backward" in a.name and a.sequence_nr in forward for a in ancestors
        ):
            attention += e.self_cpu_time_total
    old_rest = total - matrix - tanh
    rest = total - matrix - attention
    return (
        f"matrix products (mm, addmm, bmm, _int_mm): {100 * matrix / total:.0f}%; "
        f"the attention's own math: {100 * attention / total:.1f}%; "
        f"everything else: {100 * rest / total:.1f}% of CPU time "
        f"({100 * old_rest / total:.1f}% outside matrix products and tanh, as reported before)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("run", type=Path, help="a preprocessed run folder")
    parser.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--profile", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    run = RunFolder(args.run.resolve())
    manifest = run.read_manifest()
    vocab = make_vocab(*load_tokenizers(run, manifest))
    langs = manifest["languages"]
    src, tgt = (TokenSequences.load(run.ids("train", langs[side])) for side in ("src", "tgt"))
    tc = config.train
    torch.manual_seed(tc.seed)
    tag_attention()
    model = Seq2Seq(config.model, vocab).train()
    optimizer = build_optimizer(model, tc)
    order = training_batches(
        src.lengths, tgt.lengths, tc.batch_type, tc.batch_size, tc.seed, args.bucket
    )
    needed = args.warmup + args.steps + args.profile
    batches = [make_batch(src, tgt, idx, vocab) for idx in order[:needed]]

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        log_probs = model(batch.src, batch.src_lengths, batch.tgt_in, batch.positions)
        loss, _ = label_smoothed_nll(log_probs, batch.tgt_real, vocab.pad_id, tc.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad_norm or float("inf"))
        optimizer.step()

    for batch in batches[: args.warmup]:
        step(batch)
    timed = batches[args.warmup : args.warmup + args.steps]
    start = time.perf_counter()
    for batch in timed:
        step(batch)
    seconds = time.perf_counter() - start
    tokens = sum(b.num_tgt_tokens for b in timed)
    print(
        f"{args.config.name}, {'bucketed' if args.bucket else 'shuffled'} batches, "
        f"{args.threads} threads: {len(timed) / seconds:.3f} steps/s, "
        f"{tokens / seconds:,.0f} target tokens/s over {len(timed)} steps"
    )
    from torch.profiler import profile

    with profile() as prof:
        for batch in batches[args.warmup + args.steps :]:
            step(batch)
    events = prof.key_averages()
    print(time_shares(prof))
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
