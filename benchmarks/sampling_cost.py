"""What subword regularization costs on the host: seconds to sample one epoch's segmentations.

Samples every training pair of a preprocessed run folder once (both sides, in batches of
`--batch` pairs, as training does), with this project's sampler (seq2seq/segmentation.py,
the one training uses: the same samples from the same seed in every process) and with
SentencePiece's own (C++, whose randomness differs between processes), interleaved over
`--repeats` repetitions, and prints the median and range of each. Divide by the seconds an
epoch of training takes to get the share sampling adds when it runs in the training process;
`train.sampling_workers` moves it to other processes.

    python benchmarks/sampling_cost.py --run runs/multi30k_de_en --alpha 0.3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sentencepiece as spm  # noqa: E402

from pipelines.layout import RunFolder  # noqa: E402
from pipelines.sampling import TextLines  # noqa: E402
from pipelines.train import load_tokenizers  # noqa: E402


def epoch(batches, tokenizers, sample, args) -> float:
    start = time.perf_counter()
    for n, lines in enumerate(batches):
        for side, tokenizer in enumerate(tokenizers):
            sample(tokenizer, lines[side], n * 2 + side, args)
    return time.perf_counter() - start


def ours(tokenizer, lines, seed, args):
    return tokenizer.sample(lines, args.alpha, args.nbest_size, seed)


def sentencepiece(tokenizer, lines, seed, args):
    spm.set_random_generator_seed(seed)
    return tokenizer.sp.encode(
        lines, out_type=int, enable_sampling=True, alpha=args.alpha, nbest_size=args.nbest_size,
        num_threads=1,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a preprocessed run folder")
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--nbest-size", type=int, default=-1)
    parser.add_argument("--batch", type=int, default=140, help="pairs per batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = RunFolder(args.run)
    manifest = run.read_manifest()
    split = manifest["splits"]["train"]
    tokenizers = load_tokenizers(run, manifest)
    texts = [TextLines(run.root / split[side]) for side in ("src", "tgt")]
    pairs = len(texts[0])
    batches = [
        ([texts[0][i] for i in range(b, min(b + args.batch, pairs))],
         [texts[1][i] for i in range(b, min(b + args.batch, pairs))])
        for b in range(0, pairs, args.batch)
    ]  # fmt: skip
    samplers = {"this project's": ours, "SentencePiece's": sentencepiece}
    seconds = {name: [] for name in samplers}
    for _ in range(args.repeats):
        for name, sampler in samplers.items():
            seconds[name].append(epoch(batches, tokenizers, sampler, args))
    print(f"{pairs} pairs ({2 * pairs} sentences), alpha {args.alpha}, nbest {args.nbest_size}")
    for name, values in seconds.items():
        print(
            f"{name} sampler: {statistics.median(values):.2f} s an epoch "
            f"({min(values):.2f}-{max(values):.2f}), "
            f"{2 * pairs / statistics.median(values):,.0f} sentences/s"
        )


if __name__ == "__main__":
    main()
