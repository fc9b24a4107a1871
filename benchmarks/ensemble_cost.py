"""What an ensemble costs: decoding time of the first 1, 2, ..., N of the given models.

Runs `nmt translate -m A [-m B ...]` on one input for each ensemble size, in its own process,
interleaved over `--repeats` repetitions, and prints the median (and range) of the decoding
time that `translate` reports (model loading left out), the ratio to one model, and that
ratio over the number of models: an ensemble of N should cost at most N times one model.
The models must share their SentencePiece models (trained on one preprocessed run folder).

    python benchmarks/ensemble_cost.py -m runs/seed1 -m runs/seed2 -m runs/seed3 \\
        -i runs/seed1/data/test.de
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import run_timed  # noqa: E402

NMT = [sys.executable, str(ROOT / "cli.py")]


def decode(models: list[str], source: Path, out: Path, args) -> float:
    """Seconds of decoding, as `translate` reports them."""
    flags = [arg for model in models for arg in ("-m", model)]
    timed = run_timed(
        [*NMT, "translate", *flags, "-i", str(source), "-o", str(out), "--beam-size",
         str(args.beam_size), "--batch-size", str(args.batch_size), "--device", args.device,
         "--precision", args.precision],
    )  # fmt: skip
    return float(re.search(r"sentences in ([\d.]+)s", timed["stdout"] + timed["stderr"]).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", action="append", required=True, dest="models")
    parser.add_argument("-i", "--input", type=Path, required=True)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ensemble_cost")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = range(1, len(args.models) + 1)
    seconds: dict[int, list[float]] = {n: [] for n in sizes}
    for rep in range(args.repeats):
        for n in sizes:
            out = args.work / f"ensemble{n}.out"
            seconds[n].append(decode(args.models[:n], args.input, out, args))
            print(f"repetition {rep + 1}, {n} model(s): {seconds[n][-1]:.2f} s", flush=True)
    one = statistics.median(seconds[1])
    print(
        f"\n{args.input}, beam {args.beam_size}, batches of {args.batch_size}, {args.device}, "
        f"{args.precision}, median (range) of {args.repeats}\n"
    )
    print("| models | decoding time | vs one model | per model |")
    print("| --- | --- | --- | --- |")
    for n in sizes:
        median = statistics.median(seconds[n])
        span = f"{min(seconds[n]):.2f}-{max(seconds[n]):.2f}"
        print(f"| {n} | {median:.2f} s ({span}) | {median / one:.2f}x | {median / one / n:.2f}x |")


if __name__ == "__main__":
    main()
