"""This toolkit against JoeyNMT 2.3, same data, model size, batch and steps, in one run.

Both train the model of benchmarks/joeynmt_size.yaml (the peer's config_rnn.yaml) on Multi30k
German to English for the same number of steps, then translate test_2016_flickr (1,000
sentences) with beam 5 and greedy, batches of 64 sentences, on the CPU. Prints training
steps/s and target tokens/s, and decoding sentences/s, target tokens/s, peak memory and BLEU
for both. Decoding time excludes model loading for both (JoeyNMT's "Generation took").
Target tokens of both outputs are counted with the same SentencePiece model, end of sentence
included. The peer is set up by ../shared/peers/joeynmt/setup.sh and prepare.sh on first use.

    python benchmarks/vs_joeynmt.py --steps 1000        # about 50 minutes on 2 cores
    python benchmarks/vs_joeynmt.py --steps 1000 --skip-peer   # this toolkit only
    python benchmarks/vs_joeynmt.py --steps 1000 --decode-only # re-time decoding of both

Run it on a quiet machine: any other load distorts both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peers" / "joeynmt"
sys.path.insert(0, str(ROOT))

from benchmarks.timing import run_timed  # noqa: E402
from seq2seq.io import read_lines  # noqa: E402
from seq2seq.tokenizer import Tokenizer  # noqa: E402


def count_tokens(path: Path, tokenizer: Tokenizer) -> int:
    lines = list(read_lines(path))
    return sum(len(ids) + 1 for ids in tokenizer.encode(lines))


def bleu(hypotheses: Path, references: Path) -> float:
    from pipelines.score import score_files

    return score_files(hypotheses, references)["bleu"]


def ours(steps: int, work: Path, precision: str, decode_only: bool) -> dict:
    nmt = [sys.executable, str(ROOT / "cli.py")]
    config = ROOT / "benchmarks" / "joeynmt_size.yaml"
    run = work / f"ours-{precision}"
    if decode_only:
        return {"train": None, **decode_ours(nmt, run, work, precision)}
    subprocess.run(
        [*nmt, "preprocess", str(config), "--run-dir", str(run)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    train = run_timed(
        [
            *nmt,
            "train",
            str(config),
            "--run-dir",
            str(run),
            "--fresh",
            "--max-steps",
            str(steps),
            f"--train.precision={precision}",
        ],
        work / f"ours_{precision}_train.log",
    )
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    speed = [r for r in records if "tgt_tokens_per_s" in r][1:]  # the first includes warm-up
    steps_done = [r["step"] for r in speed]
    elapsed = [r["elapsed"] for r in speed]
    result = {
        "train": {
            **train,
            "tgt_tokens_per_s": sum(r["tgt_tokens_per_s"] for r in speed) / len(speed),
            "steps_per_s": (steps_done[-1] - steps_done[0]) / (elapsed[-1] - elapsed[0]),
        }
    }
    return {**result, **decode_ours(nmt, run, work, precision)}


def decode_ours(nmt: list[str], run: Path, work: Path, precision: str) -> dict:
    result = {}
    tokenizer = Tokenizer((run / "spm.model").read_bytes())
    source = run / "data" / "test.de"
    for beam in (5, 1):
        out = work / f"ours_{precision}.b{beam}.en"
        log = work / f"ours_{precision}_decode_b{beam}.log"
        run_info = run_timed(
            [
                *nmt,
                "translate",
                "-m",
                str(run),
                "-i",
                str(source),
                "-o",
                str(out),
                "--beam-size",
                str(beam),
                "--batch-size",
                "64",
                "--device",
                "cpu",
                "--precision",
                precision,
            ],
            log,
        )
        seconds = float(re.search(r"sentences in ([\d.]+)s", log.read_text()).group(1))
        result[f"beam{beam}"] = {
            **run_info,
            "generation": seconds,
            "tokens": count_tokens(out, tokenizer),
            "bleu": bleu(out, run / "data" / "test.en"),
        }
    result["tokenizer"] = tokenizer
    return result


# The decoding half of the peer's bench.sh, which has no switch to skip its training.
PEER_DECODE = """set -euo pipefail
cd "$1"; L="logs/bench_$2"; MD="models/rnn_bench_$2"; . venv/bin/activate
export PYTHONWARNINGS=ignore
for BEAM in 5 1; do
  python "$3/mkcfg.py" "$L/dec_b$BEAM.yaml" model_dir="$MD" testing.load_model="$MD/$2.ckpt" \
      testing.beam_size=$BEAM testing.batch_size=64 testing.batch_type=sentence
  /usr/bin/time -v -o "$L/dec_b$BEAM.time" python -m joeynmt translate "$L/dec_b$BEAM.yaml" \
      < data/test.de > "$L/test.b$BEAM.en" 2> "$L/dec_b$BEAM.out"
done
"""


def peer(steps: int, work: Path, tokenizer: Tokenizer, decode_only: bool) -> dict:
    """The peer's bench.sh (train, then decode); or, with `decode_only`, its decoding part
    alone, on the model an earlier bench.sh run trained."""
    peer_work = Path(os.environ.get("PEER_WORK", Path.home() / ".cache" / "peer-joeynmt"))
    if not (peer_work / "venv").is_dir():
        subprocess.run(["bash", str(PEER / "setup.sh")], check=True)
    if not (peer_work / "data" / "spm" / "sp8k.model").is_file():
        subprocess.run(["bash", str(PEER / "prepare.sh")], check=True)
    logs = peer_work / "logs" / f"bench_{steps}"
    result: dict = {"train": None}
    if decode_only:
        subprocess.run(
            ["bash", "-c", PEER_DECODE, "decode", str(peer_work), str(steps), str(PEER)],
            check=True,
        )
    else:
        log = work / "peer_bench.log"
        with open(log, "w") as out:
            subprocess.run(
                ["bash", str(PEER / "bench.sh"), str(steps)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        text = log.read_text()
        train = re.search(r"train loop ([\d.]+)s, ([\d.]+) steps/s, peak RSS (\d+) MiB", text)
        tokens = re.search(r"mean excl\. first: (\d+)", text)
        result["train"] = {
            "steps_per_s": float(train.group(2)),
            "rss_mib": float(train.group(3)),
            "tgt_tokens_per_s": float(tokens.group(1)),
        }
    refs = peer_work / "data" / "test.en"
    for beam in (5, 1):  # what each decoding left behind, from bench.sh or PEER_DECODE alike
        report = (logs / f"dec_b{beam}.out").read_text()
        rss = re.search(
            r"Maximum resident set size \(kbytes\): (\d+)",
            (logs / f"dec_b{beam}.time").read_text(),
        )
        out = logs / f"test.b{beam}.en"
        result[f"beam{beam}"] = {
            "generation": float(re.search(r"Generation took ([\d.]+)\[sec\]", report).group(1)),
            "rss_mib": int(rss.group(1)) / 1024,
            "tokens": count_tokens(out, tokenizer),
            "bleu": bleu(out, refs),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("runs") / "vs_joeynmt")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16"],
        help="this toolkit's precision(s), each trained and timed in turn",
    )
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--decode-only",
        action="store_true",
        help="time decoding alone, on the models an earlier run of this script trained",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average before the run: {os.getloadavg()[0]:.2f}", file=sys.stderr)

    results = {}
    for precision in args.precision:
        results[f"this toolkit, {precision}"] = ours(
            args.steps, args.work.resolve(), precision, args.decode_only
        )
    tokenizer = next(iter(results.values()))["tokenizer"]
    if not args.skip_peer:
        results["JoeyNMT 2.3, fp32"] = peer(
            args.steps, args.work.resolve(), tokenizer, args.decode_only
        )

    print(
        f"\nMulti30k de->en, {args.steps} training steps, batch 64 sentences, 2-layer bi-GRU "
        "512 / 2-layer GRU 512, additive attention, input feeding, CPU.\n"
    )
    trained = {name: r["train"] for name, r in results.items() if r["train"]}
    if trained:
        print("| toolkit | train steps/s | train target tok/s | train peak RSS |")
        print("| --- | --- | --- | --- |")
    for name, t in trained.items():
        print(
            f"| {name} | {t['steps_per_s']:.2f} | {t['tgt_tokens_per_s']:,.0f} | "
            f"{t['rss_mib']:,.0f} MiB |"
        )
    print("\n| toolkit | search | sentences/s | target tokens/s | peak RSS | BLEU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        for beam in (5, 1):
            d = r[f"beam{beam}"]
            print(
                f"| {name} | {'beam 5' if beam == 5 else 'greedy'} | "
                f"{1000 / d['generation']:.1f} | {d['tokens'] / d['generation']:,.0f} | "
                f"{d['rss_mib']:,.0f} MiB | {d['bleu']:.2f} |"
            )
    peer_result = results.get("JoeyNMT 2.3, fp32")
    if peer_result is None:
        return
    for name, r in results.items():
        if r is peer_result:
            continue
        print(f"\n{name}:")
        if r["train"] and peer_result["train"]:
            ratio = r["train"]["tgt_tokens_per_s"] / peer_result["train"]["tgt_tokens_per_s"]
            print(f"  training target tokens/s {ratio:.2f}x JoeyNMT")
        for beam in (5, 1):
            x, y = r[f"beam{beam}"], peer_result[f"beam{beam}"]
            print(
                f"  beam {beam}: {y['generation'] / x['generation']:.2f}x the sentences/s, "
                f"{(x['tokens'] / x['generation']) / (y['tokens'] / y['generation']):.2f}x "
                "the target tokens/s of JoeyNMT"
            )


if __name__ == "__main__":
    main()
