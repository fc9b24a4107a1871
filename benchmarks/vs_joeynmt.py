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

Models of 200 steps babble, so their decoding compares unequal work. `--train-seconds S`
instead trains each toolkit once at its defaults (this toolkit: length bucketing and
`precision: auto`; JoeyNMT: the peer's long.sh, fp32) for S seconds of wall time, then times
decoding with those two models in `--repeats` interleaved repetitions: this toolkit at its
defaults (sorted chunks, `precision: auto`), in fp32, in int8, and in fp32 with batches in
input order; JoeyNMT as it decodes. Every row gives the test BLEU of what it wrote.

    python benchmarks/vs_joeynmt.py --train-seconds 1800   # ~75 min on 2 cores

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


def train_ours(run: Path, log: Path, *options: str, first: int = 0, last: int = 0) -> dict:
    """Train from scratch with `options`; steps/s and target tokens/s between the log lines
    at steps `first` and `last` (the first and the last one logged when 0)."""
    timed = run_timed(
        [*NMT, "train", str(CONFIG), "--run-dir", str(run), "--fresh",
         f"--train.log_every={LOG_EVERY}", *options],
        log,
    )  # fmt: skip
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    logged = [r for r in records if "tgt_tokens" in r and first <= r["step"]]
    logged = [r for r in logged if not last or r["step"] <= last]
    window = logged[-1]["elapsed"] - logged[0]["elapsed"]
    return {
        "steps": max(r["step"] for r in records),
        "steps_per_s": (logged[-1]["step"] - logged[0]["step"]) / window,
        "tgt_tokens_per_s": sum(r["tgt_tokens"] for r in logged[1:]) / window,
        "rss_mib": timed["rss_mib"],
    }


# how this toolkit decodes in each row: chunks sorted by length (the default) or batches in
# input order as JoeyNMT makes them, and the precision (auto: bf16 where the CPU has it)
WAYS = {
    "sorted": ["--precision", "fp32"],
    "input-order": ["--precision", "fp32", "--chunk-lines", "64"],
    "defaults": [],
    "int8": ["--precision", "int8"],
}


def decode_ours(run: Path, work: Path, beam: int, way: str, tok: Tokenizer) -> dict:
    name = f"ours.b{beam}.{way}"
    out, log = work / f"{name}.en", work / f"{name}.log"
    timed = run_timed(
        [*NMT, "translate", "-m", str(run), "-i", str(run / "data" / "test.de"), "-o",
         str(out), "--beam-size", str(beam), "--batch-size", "64", "--device", "cpu",
         *WAYS[way]],
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


def peer_window(train_log: str, steps: int = 0, warmup: int = 0) -> tuple[float, float, int]:
    """Seconds between JoeyNMT's log lines at `warmup` and `steps` (its first and last when
    0), the target tokens in between (its Tokens per Sec over each interval times the
    interval), and the last step."""
    points = {}
    for line in train_log.splitlines():
        match = re.search(r"Step:\s+(\d+),.*Tokens per Sec:\s+(\d+)", line)
        if match:
            points[int(match.group(1))] = (_timestamp(line), float(match.group(2)))
    logged = sorted(step for step in points if warmup <= step and (not steps or step <= steps))
    tokens = sum(points[b][1] * (points[b][0] - points[a][0]) for a, b in zip(logged, logged[1:]))
    return points[logged[-1]][0] - points[logged[0]][0], tokens, logged[-1]


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
    seconds, tokens, _ = peer_window((logs / "train.out").read_text(), steps, warmup)
    rss = int(re.search(RSS, (logs / "train.time").read_text())[1]) / 1024
    result = {
        "train": {
            "steps_per_s": (steps - warmup) / seconds,
            "tgt_tokens_per_s": tokens / seconds,
            "rss_mib": rss,
        }
    }
    for beam in (5, 1):
        result[f"beam{beam}"] = peer_decoded(logs, f"b{beam}", logs / f"test.b{beam}.en", tok)
    return result


def peer_decoded(logs: Path, name: str, out: Path, tok: Tokenizer) -> dict:
    """What JoeyNMT's translate wrote to `out`, its log `dec_<name>.out` and GNU time's
    report `dec_<name>.time` say: generation seconds (model loading excluded), etc."""
    report = (logs / f"dec_{name}.out").read_text()
    return {
        "seconds": float(re.search(r"Generation took ([\d.]+)\[sec\]", report).group(1)),
        "tokens": count_tokens(out, tok),
        "rss_mib": int(re.search(RSS, (logs / f"dec_{name}.time").read_text())[1]) / 1024,
        "bleu": bleu(out, peer_work() / "data" / "test.en"),
    }


# --- each at its defaults, with models trained for --train-seconds --------------------------


def train_peer_for(seconds: int, work: Path) -> dict:
    """The peer's long.sh: train for `seconds` of wall time (then it decodes once, untimed
    here); rates between its first and last log line."""
    peer = peer_work()
    with open(work / "peer_long.log", "w") as out:
        subprocess.run(
            ["bash", str(PEER / "long.sh"), str(seconds)], stdout=out, stderr=subprocess.STDOUT,
            check=True,
        )  # fmt: skip
    logs = peer / "logs" / f"long_{seconds}"
    window, tokens, _ = peer_window((logs / "train.out").read_text())
    rss = int(re.search(RSS, (logs / "train.time").read_text())[1]) / 1024
    steps = int((peer / "models" / f"rnn_long_{seconds}" / "latest.ckpt").resolve().stem)
    return {"steps": steps, "tgt_tokens_per_s": tokens / window, "rss_mib": rss}


def decode_peer(logs: Path, beam: int, work: Path, tok: Tokenizer) -> dict:
    """JoeyNMT translates test_2016_flickr with the model long.sh trained, as long.sh does."""
    peer = peer_work()
    out, name = work / f"peer.b{beam}.en", f"b{beam}.again"
    with open(peer / "data" / "test.de") as src, open(out, "w") as dst:
        with open(logs / f"dec_{name}.out", "w") as err:
            subprocess.run(
                ["/usr/bin/time", "-v", "-o", str(logs / f"dec_{name}.time"),
                 str(peer / "venv" / "bin" / "python"), "-m", "joeynmt", "translate",
                 str(logs / f"dec_b{beam}.yaml")],
                stdin=src, stdout=dst, stderr=err, cwd=peer, check=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )  # fmt: skip
    return peer_decoded(logs, name, out, tok)


# --- the table ------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 0) -> str:
    """median (min-max)"""
    f = f"{{:,.{digits}f}}"
    return (
        f"{f.format(statistics.median(values))} ({f.format(min(values))}-{f.format(max(values))})"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    """CPU model and cores, torch and its CPU capability, today's date."""
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

    capability = torch.backends.cpu.get_cpu_capability()
    return f"{cpu}, torch {torch.__version__} ({capability}), {datetime.date.today()}"


def report(reps: list[dict], args) -> None:
    print(
        f"\n{machine()}: {args.repeats} interleaved repetitions, steps "
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
    rows = [("this toolkit, sorted by length (default)", lambda r, b: r["bucketed"]["sorted"][b]),
            ("this toolkit, batches in input order", lambda r, b: r["bucketed"]["input-order"][b]),
            ("JoeyNMT 2.3 (input order)", lambda r, b: r["peer"][f"beam{b}"])]  # fmt: skip
    decoding_table(reps, rows)


def decoding_table(reps: list[dict], rows: list[tuple]) -> None:
    """One row per (label, pick) and search; pick(repetition, beam) gives that run; the last
    row is JoeyNMT's."""
    print("\n| decoding | search | sentences/s | target tokens/s | vs JoeyNMT sentences/s "
          "| peak RSS | BLEU |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for beam in (5, 1):
        peer_sps = median([1000 / rows[-1][1](r, beam)["seconds"] for r in reps])
        for label, pick in rows:
            runs = [pick(r, beam) for r in reps]
            sps = [1000 / d["seconds"] for d in runs]
            tps = [d["tokens"] / d["seconds"] for d in runs]
            print(
                f"| {label} | {'beam 5' if beam == 5 else 'greedy'} | {spread(sps, 1)} | "
                f"{spread(tps)} | {median(sps) / peer_sps:.2f}x | "
                f"{median([d['rss_mib'] for d in runs]):,.0f} MiB | "
                f"{median([d['bleu'] for d in runs]):.2f} |"
            )


def report_long(trained: dict, reps: list[dict], args) -> None:
    print(
        f"\n{machine()}: each toolkit trained once for {args.train_seconds} s of wall time at "
        f"its defaults; decoding in {args.repeats} interleaved repetitions; median (range)\n"
    )
    ours, peer = trained["ours"], trained["peer"]
    print(f"| training, {args.train_seconds} s from scratch | steps | target tokens/s | "
          "vs JoeyNMT | peak RSS | test BLEU, beam 5 |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for label, run, key in (
        (f"this toolkit at its defaults (length bucketing, {ours['precision']})", ours, "defaults"),
        ("JoeyNMT 2.3 (fp32)", peer, "peer"),
    ):
        print(
            f"| {label} | {run['steps']:,} | {run['tgt_tokens_per_s']:,.0f} | "
            f"{run['tgt_tokens_per_s'] / peer['tgt_tokens_per_s']:.2f}x | "
            f"{run['rss_mib']:,.0f} MiB | {median([r[key][5]['bleu'] for r in reps]):.2f} |"
        )
    labels = {
        "defaults": f"this toolkit at its defaults (sorted by length, {ours['precision']})",
        "int8": "this toolkit, int8, sorted by length",
        "sorted": "this toolkit, fp32, sorted by length",
        "input-order": "this toolkit, fp32, batches in input order",
        "peer": "JoeyNMT 2.3 (fp32, input order)",
    }
    decoding_table(reps, [(text, lambda r, b, k=key: r[k][b]) for key, text in labels.items()])


def run_long(args) -> None:
    """Train each side for --train-seconds, then time decoding with those models; trained
    models are kept, so that a second run with the same --work decodes again only."""
    run, saved = args.work / "long", args.work / f"trained-{args.train_seconds}.json"
    if not (run / "manifest.json").is_file():
        subprocess.run(
            [*NMT, "preprocess", str(CONFIG), "--run-dir", str(run)], check=True, cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    tok = Tokenizer((run / "spm.model").read_bytes())
    if saved.is_file():
        trained = json.loads(saved.read_text())
    else:
        log = args.work / "train.log"
        trained = {"ours": train_ours(run, log, f"--train.max_time={args.train_seconds}")}
        trained["ours"]["precision"] = re.search(r"precision auto: (\w+)", log.read_text())[1]
        print(f"this toolkit, {args.train_seconds} s: {trained['ours']}", flush=True)
        trained["peer"] = train_peer_for(args.train_seconds, args.work)
        print(f"JoeyNMT, {args.train_seconds} s: {trained['peer']}", flush=True)
        saved.write_text(json.dumps(trained))
    logs = peer_work() / "logs" / f"long_{args.train_seconds}"
    reps = []
    for rep in range(args.repeats):
        result: dict = {
            w: {b: decode_ours(run, args.work, b, w, tok) for b in (5, 1)} for w in WAYS
        }
        result["peer"] = {b: decode_peer(logs, b, args.work, tok) for b in (5, 1)}
        print(f"repetition {rep + 1}: {json.dumps(result)}", flush=True)
        reps.append(result)
        (args.work / "results-long.json").write_text(json.dumps([trained, reps], indent=2))
    report_long(trained, reps, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50, help="steps left out (x 50)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "vs_joeynmt")
    parser.add_argument(
        "--train-seconds",
        type=int,
        default=0,
        help="train each side this long at its defaults, then time decoding",
    )
    args = parser.parse_args()
    if args.train_seconds:
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"load average before the run: {os.getloadavg()[0]:.2f}", flush=True)
        return run_long(args)
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
            options = ("--max-steps", str(args.steps), "--train.precision=fp32",
                       f"--train.bucket={str(key == 'bucketed').lower()}")  # fmt: skip
            train = train_ours(run, log, *options, first=args.warmup, last=args.steps)
            result[key] = {"train": train}
            print(f"repetition {rep + 1}, {key}: {result[key]['train']}", flush=True)
        for order in ("sorted", "input-order"):
            result["bucketed"][order] = {
                beam: decode_ours(runs["bucketed"], args.work, beam, order, tok) for beam in (5, 1)
            }
            print(f"repetition {rep + 1}, decoding {order}: {result['bucketed'][order]}")
        result["peer"] = run_peer(args.steps, args.warmup, args.work, tok)
        print(f"repetition {rep + 1}, JoeyNMT: {result['peer']}", flush=True)
        reps.append(result)
        (args.work / "results.json").write_text(json.dumps(reps, indent=2))
    report(reps, args)


if __name__ == "__main__":
    main()
