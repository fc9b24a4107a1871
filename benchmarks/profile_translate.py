"""Where decoding time goes: torch profiler over a few batches of `nmt translate`'s search.

Loads MODEL (a checkpoint, or a run folder for its best checkpoint) as `nmt translate` does,
splits INPUT into batches of `--batch-size` lines in input order (as JoeyNMT makes them;
`--sorted` sorts the whole input by length first, as `translate`'s chunks are), translates
`--warmup` batches, times `--timed` more, profiles `--profile` more, and prints the share of
time in matrix products, in tanh and in everything else, and the costliest operators.
Tokenizing and detokenizing are included, as in `translate`.

    python benchmarks/profile_translate.py runs/vs_joeynmt runs/vs_joeynmt/data/test.de
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.profile_train import tag_attention, time_shares  # noqa: E402
from pipelines.translator import Translator  # noqa: E402
from seq2seq.io import read_lines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("input", type=Path)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sorted", action="store_true")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timed", type=int, default=5)
    parser.add_argument("--profile", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--in-thread",
        action="store_true",
        help="time the batches on a worker thread (as a server's executor would run them)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    search = {"beam_size": args.beam_size, "batch_size": args.batch_size}
    tag_attention()
    translator = Translator(args.model, "cpu", args.precision, **search)
    lines = list(read_lines(args.input))
    if args.sorted:
        lines.sort(key=len)
    size = args.batch_size
    batches = [lines[i : i + size] for i in range(0, len(lines), size)]
    needed = args.warmup + args.timed + args.profile
    if len(batches) < needed:
        sys.exit(f"{args.input}: {len(batches)} batches of {size} lines; {needed} needed")
    for batch in batches[: args.warmup]:
        translator.translate(batch)
    timed = batches[args.warmup : args.warmup + args.timed]

    def run() -> float:
        start = time.perf_counter()
        for batch in timed:
            translator.translate(batch)
        return time.perf_counter() - start

    if args.in_thread:
        with ThreadPoolExecutor(1) as worker:
            seconds = worker.submit(run).result()
    else:
        seconds = run()
    print(
        f"{args.model}, beam {args.beam_size}, {'sorted' if args.sorted else 'input-order'} "
        f"batches of {size}, {args.precision}, {args.threads} threads"
        f"{', on a worker thread' if args.in_thread else ''}: "
        f"{sum(map(len, timed)) / seconds:.1f} sentences/s over {len(timed)} batches"
    )
    from torch.profiler import profile

    with profile() as prof:
        for batch in batches[args.warmup + args.timed : needed]:
            translator.translate(batch)
    events = prof.key_averages()
    print(time_shares(prof))
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
