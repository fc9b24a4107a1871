"""This toolkit against JoeyNMT 2.3 on the CPU: same data, model, batch size and steps, the
same timing window, repeated and interleaved.

Both train the model of benchmarks/joeynmt_size.yaml (the peer's config_rnn.yaml: embeddings
256, 2-layer bidirectional GRU encoder of 512, 2-layer GRU decoder of 512, additive attention,
input feeding; 20.9M parameters) on Multi30k German to English, batches of 64 sentences, fp32,
for `--steps` steps, with the peer's own bench.sh. Training speed is taken over the same
window for both: from the log line at step `--warmup` to the one at the last step (JoeyNMT
logs every 50 steps, this toolkit is told to as well), so start-up, data loading and the
first steps are left out of both. Target tokens are pieces plus end of sentence, as both
count them (JoeyNMT's "Tokens per Sec" over each log interval, this toolkit's tgt_tokens).

This toolkit trains twice: with its length bucketing (the default) and with batches made as
JoeyNMT makes them (`--train.bucket=false`: runs of 64 randomly shuffled pairs), so that the
table shows what bucketing buys and what the rest buys. Decoding of test_2016_flickr (1,000
sentences, batches of 64, beam 5 and greedy, model loading excluded for both) is timed with
this toolkit's default (each 4,000-line chunk sorted by length before batching) and with
batches in input order as JoeyNMT makes them (`--chunk-lines 64`).

Each repetition runs every side once, in turn; the table gives the median and the range of
`--repeats` repetitions, and ratios of medians. Everything runs in fp32: JoeyNMT's mixed
precision is for CUDA only, and ratios are only taken between like precisions.

    python benchmarks/vs_joeynmt.py                   # 3 repetitions of 200 steps: ~75 min
    python benchmarks/vs_joeynmt.py --repeats 1 --steps 100 --warmup 50   # a quick look

Run it on a quiet machine: any other load distorts both sides. The peer is set up by
../shared/peers/joeynmt/setup.sh and prepare.sh on first use.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peers" / "joeynmt"
sys.path.insert(0, str(ROOT))

from benchmarks.timing import run_timed  # noqa: E402
from seq2seq.io import read_lines  # noqa: E402
from seq2seq.tokenizer import Tokenizer  # noqa: E402

CONFIG = ROOT / "benchmarks" / "joeynmt_size.yaml"
NMT = [sys.executable, str(ROOT / "cli.py")]
LOG_EVERY = 50  # JoeyNMT's logging_freq in the peer's config
RSS = r"Maximum resident set size \(kbytes\): (\d+)"  # in GNU time's report


def count_tokens(path: Path, tokenizer: Tokenizer) -> int:
    return sum(len(ids) + 1 for ids in tokenizer.encode(list(read_lines(path))))


def bleu(hypotheses: Path, references: Path) -> float:
    from pipelines.score import score_files

    return score_files(hypotheses, references)["bleu"]


# --- this toolkit ---------------------------------------------------------------------------


def train_ours(run: Path, steps: int, warmup: int, bucket: bool, log: Path) -> dict:
    """Train from scratch; steps/s and target tokens/s over (warmup, steps]."""
    timed = run_timed(
        [*NMT, "train", str(CONFIG), "--run-dir", str(run), "--fresh", "--max-steps",
         str(steps), "--train.precision=fp32", f"--train.log_every={LOG_EVERY}",
         f"--train.bucket={str(bucket).lower()}"],
        log,
    )  # fmt: skip
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in records if "tgt_tokens" in r}
    seconds = logged[steps]["elapsed"] - logged[warmup]["elapsed"]
    tokens = sum(r["tgt_tokens"] for step, r in logged.items() if warmup < step <= steps)
    return {
        "steps_per_s": (steps - warmup) / seconds,
        "tgt_tokens_per_s": tokens / seconds,
        "rss_mib": timed["rss_mib"],
    }


def decode_ours(run: Path, work: Path, beam: int, sorted_chunks: bool, tok: Tokenizer) -> dict:
    name = f"ours.b{beam}.{'sorted' if sorted_chunks else 'input-order'}"
    out, log = work / f"{name}.en", work / f"{name}.log"
    chunk = [] if sorted_chunks else ["--chunk-lines", "64"]
    timed = run_timed(
        [*NMT, "translate", "-m", str(run), "-i", str(run / "data" / "test.de"), "-o",
         str(out), "--beam-size", str(beam), "--batch-size", "64", "--device", "cpu",
         "--precision", "fp32", *chunk],
        log,
    )  # fmt: skip
    seconds = float(re.search(r"sentences in ([\d.]+)s", log.read_text()).group(1))
    return {
        "seconds": seconds,
        "tokens": count_tokens(out, tok),
        "rss_mib": timed["rss_mib"],
        "bleu": bleu(out, run / "data" / "test.en"),
    }


# --- JoeyNMT --------------------------------------------------------------------------------


def peer_work() -> Path:
    work = Path(os.environ.get("PEER_WORK", Path.home() / ".cache" / "peer-joeynmt"))
    if not (work / "venv").is_dir():
        subprocess.run(["bash", str(PEER / "setup.sh")], check=True)
    if not (work / "data" / "spm" / "sp8k.model").is_file():
        subprocess.run(["bash", str(PEER / "prepare.sh")], check=True)
    return work


def _timestamp(line: str) -> float:
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def peer_window(train_log: str, steps: int, warmup: int) -> tuple[float, float]:
    """Seconds between JoeyNMT's log lines at `warmup` and `steps`, and the target tokens
    in between (its Tokens per Sec over each interval times the interval)."""
    points = {}
    for line in train_log.splitlines():
        match = re.search(r"Step:\s+(\d+),.*Tokens per Sec:\s+(\d+)", line)
        if match:
            points[int(match.group(1))] = (_timestamp(line), float(match.group(2)))
    seconds = points[steps][0] - points[warmup][0]
    tokens = 0.0
    for step in range(warmup + LOG_EVERY, steps + 1, LOG_EVERY):
        tokens += points[step][1] * (points[step][0] - points[step - LOG_EVERY][0])
    return seconds, tokens


def run_peer(steps: int, warmup: int, work: Path, tok: Tokenizer) -> dict:
    """The peer's bench.sh: train `steps` steps, then decode with beam 5 and greedy."""
    peer = peer_work()
    log = work / "peer_bench.log"
    with open(log, "w") as out:
        subprocess.run(
            ["bash", str(PEER / "bench.sh"), str(steps)], stdout=out, stderr=subprocess.STDOUT,
            check=True,
        )  # fmt: skip
    logs = peer / "logs" / f"bench_{steps}"
    seconds, tokens = peer_window((logs / "train.out").read_text(), steps, warmup)
    rss = re.search(
        r"Maximum resident set size \(kbytes\): (\d+)", (logs / "train.time").read_text()
    )
    result = {
        "train": {
            "steps_per_s": (steps - warmup) / seconds,
            "tgt_tokens_per_s": tokens / seconds,
            "rss_mib": int(rss.group(1)) / 1024,
        }
    }
    for beam in (5, 1):
        report = (logs / f"dec_b{beam}.out").read_text()
        rss = re.search(RSS, (logs / f"dec_b{beam}.time").read_text())
        out = logs / f"test.b{beam}.en"
        result[f"beam{beam}"] = {
            "seconds": float(re.search(r"Generation took ([\d.]+)\[sec\]", report).group(1)),
            "tokens": count_tokens(out, tok),
            "rss_mib": int(rss.group(1)) / 1024,
            "bleu": bleu(out, peer / "data" / "test.en"),
        }
    return result


# --- the table ------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 0) -> str:
    """median (min-max)"""
    f = f"{{:,.{digits}f}}"
    return (
        f"{f.format(statistics.median(values))} ({f.format(min(values))}-{f.format(max(values))})"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(reps: list[dict], args) -> None:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = f"{model}, {os.cpu_count()} cores"
    except (OSError, StopIteration):
        pass
    import torch

    print(
        f"\n{cpu}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{datetime.date.today()}: {args.repeats} interleaved repetitions, steps "
        f"{args.warmup}-{args.steps} timed, fp32; median (range)\n"
    )
    sides = [("this toolkit, length bucketing", "bucketed"),
             ("this toolkit, batches as JoeyNMT makes them", "random"),
             ("JoeyNMT 2.3", "peer")]  # fmt: skip
    peer_tps = median([r["peer"]["train"]["tgt_tokens_per_s"] for r in reps])
    print("| training | steps/s | target tokens/s | vs JoeyNMT | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for label, key in sides:
        train = [r[key]["train"] for r in reps]
        tps = [t["tgt_tokens_per_s"] for t in train]
        print(
            f"| {label} | {spread([t['steps_per_s'] for t in train], 3)} | {spread(tps)} | "
            f"{median(tps) / peer_tps:.2f}x | {median([t['rss_mib'] for t in train]):,.0f} MiB |"
        )
    rows = [("this toolkit, sorted by length (default)", "bucketed", "sorted"),
            ("this toolkit, batches in input order", "bucketed", "input-order"),
            ("JoeyNMT 2.3 (input order)", "peer", None)]  # fmt: skip
    print("\n| decoding | search | sentences/s | target tokens/s | vs JoeyNMT sentences/s "
          "| peak RSS | BLEU |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for beam in (5, 1):
        peer_sps = median([1000 / r["peer"][f"beam{beam}"]["seconds"] for r in reps])
        for label, key, order in rows:
            runs = [r[key][f"beam{beam}"] if order is None else r[key][order][beam] for r in reps]
            sps = [1000 / d["seconds"] for d in runs]
            tps = [d["tokens"] / d["seconds"] for d in runs]
            print(
                f"| {label} | {'beam 5' if beam == 5 else 'greedy'} | {spread(sps, 1)} | "
                f"{spread(tps)} | {median(sps) / peer_sps:.2f}x | "
                f"{median([d['rss_mib'] for d in runs]):,.0f} MiB | "
                f"{median([d['bleu'] for d in runs]):.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50, help="steps left out (x 50)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "vs_joeynmt")
    args = parser.parse_args()
    if args.warmup % LOG_EVERY or args.steps % LOG_EVERY or args.warmup >= args.steps:
        sys.exit(f"--warmup and --steps must be multiples of {LOG_EVERY}, warmup < steps")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average before the run: {os.getloadavg()[0]:.2f}", flush=True)
    runs = {key: args.work / key for key in ("bucketed", "random")}
    subprocess.run(
        [*NMT, "preprocess", str(CONFIG), "--run-dir", str(runs["bucketed"])], check=True,
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    tok = Tokenizer((runs["bucketed"] / "spm.model").read_bytes())
    reps = []
    for rep in range(args.repeats):
        result: dict = {}
        for key, run in runs.items():
            if key == "random":
                subprocess.run(["rm", "-rf", str(run)], check=True)
                subprocess.run(["cp", "-r", str(runs["bucketed"]), str(run)], check=True)
            log = args.work / f"train-{key}-{rep}.log"
            result[key] = {
                "train": train_ours(run, args.steps, args.warmup, key == "bucketed", log)
            }
            print(f"repetition {rep + 1}, {key}: {result[key]['train']}", flush=True)
        for order in ("sorted", "input-order"):
            result["bucketed"][order] = {
                beam: decode_ours(runs["bucketed"], args.work, beam, order == "sorted", tok)
                for beam in (5, 1)
            }
            print(f"repetition {rep + 1}, decoding {order}: {result['bucketed'][order]}")
        result["peer"] = run_peer(args.steps, args.warmup, args.work, tok)
        print(f"repetition {rep + 1}, JoeyNMT: {result['peer']}", flush=True)
        reps.append(result)
        (args.work / "results.json").write_text(json.dumps(reps, indent=2))
    report(reps, args)


if __name__ == "__main__":
    main()
