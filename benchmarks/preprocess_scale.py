"""Preprocessing at scale: wall time and peak memory for Multi30k and a 1M-pair corpus.

The large corpus is Multi30k's German-English training set repeated with light, seeded
perturbation (a word dropped, two neighbours swapped, a number appended) until it holds the
requested number of pairs, so that de-duplication keeps nearly all of it. Each size runs
`nmt preprocess` in its own process under /usr/bin/time, and the script prints wall time,
peak resident memory and pairs kept.

    python benchmarks/preprocess_scale.py                       # 29k, 250k and 1M pairs
    python benchmarks/preprocess_scale.py --sizes 29000 250000 1000000 2000000
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import run_timed  # noqa: E402

MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"

CONFIG = """\
name: scale
data:
  path: {corpus}
  train: train
  dev: val
  test: test_2016_flickr
  src_lang: de
  tgt_lang: en
  subwords: {{vocab_size: 8000}}
"""


def perturb(line: str, rng: random.Random, copy: int) -> str:
    words = line.split()
    if len(words) > 3 and rng.random() < 0.5:
        del words[rng.randrange(len(words))]
    if len(words) > 2 and rng.random() < 0.5:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words) + f" {copy}"


def make_corpus(folder: Path, pairs: int) -> None:
    """Multi30k's splits, with the training split grown to `pairs` pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test_2016_flickr"):
        for lang in ("de", "en"):
            (folder / f"{split}.{lang}.gz").write_bytes(
                (MULTI30K / f"{split}.{lang}.gz").read_bytes()
            )
    de = gzip.decompress((MULTI30K / "train.de.gz").read_bytes()).decode().splitlines()
    en = gzip.decompress((MULTI30K / "train.en.gz").read_bytes()).decode().splitlines()
    rng = random.Random(pairs)
    with (
        gzip.open(folder / "train.de.gz", "wt", encoding="utf-8") as out_de,
        gzip.open(folder / "train.en.gz", "wt", encoding="utf-8") as out_en,
    ):
        for i in range(pairs):
            copy, j = divmod(i, len(de))
            if copy == 0:
                out_de.write(de[j] + "\n")
                out_en.write(en[j] + "\n")
            else:
                state = rng.random()
                out_de.write(perturb(de[j], random.Random(state), copy) + "\n")
                out_en.write(perturb(en[j], random.Random(state), copy) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[29_000, 250_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("runs") / "preprocess_scale")
    args = parser.parse_args()
    rows = []
    for pairs in args.sizes:
        corpus = (args.work / f"corpus-{pairs}").resolve()
        if not (corpus / "train.de.gz").is_file():
            make_corpus(corpus, pairs)
        config = args.work / f"scale-{pairs}.yaml"
        config.write_text(CONFIG.format(corpus=corpus), encoding="utf-8")
        run = args.work / f"run-{pairs}"
        timed = run_timed(
            [sys.executable, str(ROOT / "cli.py"), "preprocess", str(config), "--run-dir", str(run)]
        )
        wall, rss = timed["wall"], timed["rss_mib"]
        kept = re.search(r"train: (\d+) pairs in, (\d+) kept", timed["stdout"])
        rows.append((pairs, int(kept[2]), wall, rss))
        print(f"{pairs:,} pairs: {wall:.1f} s, peak RSS {rss:,.0f} MiB", file=sys.stderr)
    print("\n| training pairs | kept | wall | pairs/s | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for pairs, kept, wall, rss in rows:
        print(f"| {pairs:,} | {kept:,} | {wall:.1f} s | {pairs / wall:,.0f} | {rss:,.0f} MiB |")


if __name__ == "__main__":
    main()
