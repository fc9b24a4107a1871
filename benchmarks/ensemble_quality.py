"""What an ensemble buys, chosen on dev: BLEU of each model, then of the best 2, 3, ..., N.

Each model (a checkpoint, or a run folder for its best checkpoint) translates the dev split
alone with `nmt translate`; the models are ranked by that dev BLEU, and the ensembles of the
best 2, 3, ..., N are scored on dev too. The ensemble with the highest dev BLEU is chosen
(the smaller one on a tie), and only then is the test split translated: once with the best
single model and once with the chosen ensemble. The models must share their SentencePiece
models (trained on one preprocessed run folder, or on identical data and settings).

    python benchmarks/ensemble_quality.py --data runs/seed1/data \\
        -m runs/seed1/model/averaged.safetensors -m runs/seed2 -m runs/seed3
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ensemble_cost import decode  # noqa: E402
from pipelines.score import score_files  # noqa: E402


def bleu(models: list[str], split: str, args) -> tuple[float, float, float]:
    """(BLEU, chrF, seconds) of the ensemble of `models` on `split` of the data folder."""
    name = hashlib.sha1("\n".join(models).encode()).hexdigest()[:10]
    out = args.work / f"{split}.{len(models)}models.{name}.hyp"
    seconds = decode(models, args.data / f"{split}.{args.src}", out, args)
    scores = score_files(out, args.data / f"{split}.{args.tgt}")
    return scores["bleu"], scores["chrf"], seconds


def choose(dev: dict[int, float]) -> int:
    """The ensemble size with the highest dev BLEU; the smaller one on a tie."""
    return max(sorted(dev), key=lambda n: (dev[n], -n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", action="append", required=True, dest="models")
    parser.add_argument("--data", type=Path, required=True, help="a run folder's data/")
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ensemble_quality")
    args = parser.parse_args()
    if len(args.models) < 2:
        sys.exit("give at least two models (-m A -m B ...)")
    args.work.mkdir(parents=True, exist_ok=True)

    single = {}
    for model in args.models:
        single[model] = bleu([model], "dev", args)
        print(f"dev, {model}: BLEU {single[model][0]:.2f}", flush=True)
    ranked = sorted(args.models, key=lambda model: -single[model][0])
    dev = {1: single[ranked[0]]}
    for n in range(2, len(ranked) + 1):
        dev[n] = bleu(ranked[:n], "dev", args)
        print(f"dev, best {n}: BLEU {dev[n][0]:.2f}", flush=True)
    chosen = choose({n: scores[0] for n, scores in dev.items()})
    test = {1: bleu(ranked[:1], "test", args)}
    if chosen > 1:
        test[chosen] = bleu(ranked[:chosen], "test", args)

    print(
        f"\n{args.src}->{args.tgt}, beam {args.beam_size}, batches of {args.batch_size}, "
        f"{args.device}, {args.precision}; models ranked by dev BLEU:"
    )
    for rank, model in enumerate(ranked, 1):
        print(f"  {rank}. {model}")
    print("\n| models | dev BLEU | dev chrF | dev decoding | test BLEU | test chrF |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, (dev_bleu, dev_chrf, seconds) in dev.items():
        mark = " (chosen)" if n == chosen else ""
        test_bleu, test_chrf = ("--", "--")
        if n in test:
            test_bleu, test_chrf = f"{test[n][0]:.2f}", f"{test[n][1]:.2f}"
        print(
            f"| best {n}{mark} | {dev_bleu:.2f} | {dev_chrf:.2f} | {seconds:.1f} s | "
            f"{test_bleu} | {test_chrf} |"
        )


if __name__ == "__main__":
    main()
