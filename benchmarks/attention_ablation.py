"""Attention ablation on the demo corpus: each scoring function, and none, with one budget.

Preprocesses the demo once, then trains the demo model with each `model.attention.scoring`
for the same number of steps and prints dev BLEU, dev chrF and training speed as a markdown
table. Run on a quiet machine: the speed column is only meaningful without other load.

    python benchmarks/attention_ablation.py                 # 1500 steps each, about 15 minutes
    python benchmarks/attention_ablation.py --steps 300     # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.layout import RunFolder  # noqa: E402
from pipelines.preprocess import preprocess  # noqa: E402
from pipelines.train import train  # noqa: E402
from seq2seq.config import load_config  # noqa: E402

SCORINGS = ["none", "dot", "general", "additive", "scaled_dot", "multihead"]


def quiet(_: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / "ablation")
    parser.add_argument("--scorings", nargs="+", default=SCORINGS)
    args = parser.parse_args()

    base = RunFolder(args.run_dir / "data")
    config = load_config(args.config)
    if not base.manifest.is_file():
        preprocess(config, base, quiet)
    rows = []
    for scoring in args.scorings:
        folder = args.run_dir / scoring
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(base.root, folder)
        run = RunFolder(folder)
        overrides = [
            f"--model.attention.scoring={scoring}",
            f"--train.max_steps={args.steps}",
            f"--train.validate_every={args.steps}",
            "--train.log_every=50",
        ]
        variant = load_config(args.config, overrides)
        start = time.monotonic()
        result = train(variant, run, quiet, fresh=True)
        seconds = time.monotonic() - start
        records = [json.loads(line) for line in run.train_log.read_text().splitlines()]
        speeds = [r["tgt_tokens_per_s"] for r in records if "tgt_tokens_per_s" in r][1:]
        dev = [r for r in records if "dev_bleu" in r][-1]
        from seq2seq.checkpoint import load_checkpoint

        params = sum(p.numel() for p in load_checkpoint(run.last).model.parameters())
        rows.append(
            (scoring, dev["dev_bleu"], dev["dev_chrf"], sum(speeds) / len(speeds), params, seconds)
        )
        print(
            f"{scoring}: dev BLEU {dev['dev_bleu']:.2f} after {result['step']} steps, "
            f"{rows[-1][3]:.0f} target tokens/s",
            file=sys.stderr,
        )

    print(
        f"\nDemo corpus, {args.steps} steps each, batch {config.train.batch_size} tokens, "
        f"{config.train.precision}, greedy dev decoding:\n"
    )
    print("| attention | dev BLEU | dev chrF | train target tokens/s | parameters | wall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for scoring, bleu, chrf, speed, params, seconds in rows:
        print(
            f"| {scoring} | {bleu:.2f} | {chrf:.2f} | {speed:,.0f} | {params / 1e6:.2f}M "
            f"| {seconds:.0f} s |"
        )


if __name__ == "__main__":
    main()
