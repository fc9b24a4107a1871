"""Batch translation at scale: time and peak memory for 1k, 10k and 100k lines.

Translates Multi30k test_2016_flickr German (1,000 lines) repeated to each size with
`nmt translate` in its own process under /usr/bin/time, and prints sentences/s, target
tokens/s and peak resident memory, with how time and memory grow from the smallest size.
Time should grow linearly and peak memory stay flat (the input is streamed in chunks).

    python benchmarks/translate_scale.py --model runs/vs_joeynmt/ours
    python benchmarks/translate_scale.py --model RUN --sizes 1000 10000 --device cuda \\
        --batch-size 64 --precision bf16
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import run_timed  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder or checkpoint (German in)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--work", type=Path, default=Path("runs") / "translate_scale")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    lines = gzip.decompress(SOURCE.read_bytes()).decode().splitlines()
    rows = []
    for size in args.sizes:
        source = args.work / f"in-{size}.de"
        if not source.is_file():
            repeated = (lines * (size // len(lines) + 1))[:size]
            source.write_text("\n".join(repeated) + "\n", encoding="utf-8")
        output = args.work / f"out-{size}.en"
        batching = (
            ["--max-tokens", str(args.max_tokens)]
            if args.max_tokens
            else ["--batch-size", str(args.batch_size)]
        )
        timed = run_timed(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "translate",
                "-m",
                args.model,
                "-i",
                str(source),
                "-o",
                str(output),
                "--beam-size",
                str(args.beam_size),
                *batching,
                "--device",
                args.device,
                "--precision",
                args.precision,
            ]
        )
        wall, rss = timed["wall"], timed["rss_mib"]
        speed = re.search(
            r"in ([\d.]+)s \(([\d.]+) sentences/s, (\d+) target tokens/s\)", timed["stdout"]
        )
        rows.append((size, float(speed[1]), float(speed[2]), int(speed[3]), wall, rss))
        print(
            f"{size:,} lines: {float(speed[1]):.1f} s, {float(speed[2]):.1f} sentences/s, "
            f"peak RSS {rss:,.0f} MiB",
            file=sys.stderr,
        )
    base_time, base_rss = rows[0][1] / rows[0][0], rows[0][5]
    print(f"\nbeam {args.beam_size}, {' '.join(batching)}, {args.device}, {args.precision}:\n")
    print(
        "| lines | translation time | sentences/s | target tokens/s | process wall | "
        "peak RSS | time per line vs 1st | peak RSS vs 1st |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, seconds, sents, tokens, wall, rss in rows:
        print(
            f"| {size:,} | {seconds:.1f} s | {sents:.1f} | {tokens:,} | {wall:.1f} s | "
            f"{rss:,.0f} MiB | {seconds / size / base_time:.2f}x | {rss / base_rss:.2f}x |"
        )


if __name__ == "__main__":
    main()
