"""int8 decoding against fp32 (and bf16) on this CPU: speed and quality of one checkpoint.

Translates the same file with the same search settings in each precision through the Python
API (model loading excluded), repeated and interleaved (fp32, bf16, int8, fp32, ...), and
prints sentences/s (median and range), the speed-up over fp32, sacreBLEU of each against the
references, and how many lines are identical to fp32's.

    python benchmarks/int8.py --model runs/m30k_de_en --src runs/m30k_de_en/data/test.de \
        --ref runs/m30k_de_en/data/test.en --beam-size 5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sacrebleu  # noqa: E402
import torch  # noqa: E402

from pipelines.translator import Translator  # noqa: E402


def cpu_name() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Model name")), "?")  # fmt: skip
    flags = next((line for line in text.splitlines() if line.startswith("Flags")), "")
    found = [f for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_int8") if f" {f}" in flags]
    return f"{model} ({', '.join(found)}; {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lines", type=int, default=0, help="the first N lines only (0: all)")
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    args = parser.parse_args()
    sources = Path(args.src).read_text(encoding="utf-8").splitlines()
    references = Path(args.ref).read_text(encoding="utf-8").splitlines()
    if args.lines:
        sources, references = sources[: args.lines], references[: args.lines]
    precisions = args.precisions.split(",")
    translators = {
        p: Translator(args.model, "cpu", p, beam_size=args.beam_size) for p in precisions
    }
    speeds = {p: [] for p in precisions}
    outputs = {}
    for p in precisions:  # warm-up: first calls pay for allocations and kernel choice
        translators[p].translate(sources[:50])
    for _ in range(args.repeats):
        for p in precisions:
            start = time.perf_counter()
            outputs[p] = translators[p].translate(sources)
            speeds[p].append(len(sources) / (time.perf_counter() - start))
    print(f"{len(sources)} lines, beam {args.beam_size}, {args.repeats} interleaved repeats; "
          f"{cpu_name()}")  # fmt: skip
    base = statistics.median(speeds["fp32"]) if "fp32" in speeds else None
    print("| precision | sentences/s (median, range) | vs fp32 | BLEU | chrF | lines = fp32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in precisions:
        median = statistics.median(speeds[p])
        bleu = sacrebleu.corpus_bleu(outputs[p], [references]).score
        chrf = sacrebleu.corpus_chrf(outputs[p], [references]).score
        same = sum(a == b for a, b in zip(outputs[p], outputs.get("fp32", outputs[p])))
        ratio = f"{median / base:.2f}x" if base else "-"
        print(f"| {p} | {median:.1f} ({min(speeds[p]):.1f}-{max(speeds[p]):.1f}) | {ratio} "
              f"| {bleu:.2f} | {chrf:.2f} | {same}/{len(sources)} |")  # fmt: skip


if __name__ == "__main__":
    main()
