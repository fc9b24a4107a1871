"""Kill test: stop `nmt train`, `nmt translate --resume` and `nmt preprocess` at random
moments, run them again, and compare with an uninterrupted run: identical weights, log,
translations and preprocessed files, and nothing left behind.

Each trial starts the real command line on a fresh copy of the same work, stops it at a
moment drawn uniformly from the length of an uninterrupted run (seeded) with a signal drawn
from SIGKILL, SIGINT, SIGTERM and SIGINT twice (`--signals kill` for SIGKILL only), then
runs the same command again until it finishes. A stop can land anywhere: while Python
starts, in a training step (log lines average 4 steps, so most stops fall inside one), in
validation (every 6 steps), in the middle of a checkpoint write, between a chunk's write and
its progress record, while preprocess stages or moves its files.

    python benchmarks/kill_test.py                     # 30 trials of each, about 15 minutes
    python benchmarks/kill_test.py --kills 5 --seed 3
    python benchmarks/kill_test.py --only train --sampling-alpha 0.3

Prints one line per trial and the tally; exits 1 if any trial differs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLI = [sys.executable, str(ROOT / "cli.py")]

CONFIG = """\
name: kill
data:
  path: {corpus}
  subwords: {{vocab_size: 200, sampling_alpha: {alpha}}}
model:
  embedding_size: 32
  encoder: {{hidden_size: 32}}
  decoder: {{hidden_size: 64}}
  attention: {{scoring: general}}
train:
  batch_size: 600
  max_steps: 48
  validate_every: 6
  log_every: 4
  threads: 1
  keep_best: 2
  keep_last: 2
search:
  beam_size: 3
"""


def make_corpus(folder: Path, pairs: int) -> Path:
    """The first lines of the bundled demo corpus, as plain text pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": pairs, "dev": 40, "test": 40}
    for split, size in sizes.items():
        for lang in ("en", "de"):
            with gzip.open(ROOT / "data" / "demo" / f"{split}.{lang}.gz", "rt") as f:
                lines = [next(f) for _ in range(size)]
            (folder / f"{split}.{lang}").write_text("".join(lines), encoding="utf-8")
    return folder


SIGNALS = {
    "SIGKILL": [signal.SIGKILL],
    "SIGINT": [signal.SIGINT],
    "SIGTERM": [signal.SIGTERM],
    "SIGINT twice": [signal.SIGINT, signal.SIGINT],
}


def run_killed(command: list[str], after: float | None, signals=SIGNALS["SIGKILL"]) -> bool:
    """Run `command`; send it `signals` `after` seconds in (None: never). True if it
    finished before."""
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=after)
    except subprocess.TimeoutExpired:
        for signum in signals:
            process.send_signal(signum)
            time.sleep(0.05)
        process.wait()
        return False
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
    return True


def timed(command: list[str]) -> float:
    start = time.monotonic()
    run_killed(command, None)
    return time.monotonic() - start


def kill_at(
    command: list[str], fraction: float, seconds: float, fresh, signals
) -> tuple[float, bool, float]:
    """Start `command` on fresh work (`fresh()`) and send it `signals` at `fraction` of its
    length `seconds`. A run that finishes first shows that the length was timed on a busier
    machine: the length becomes that run's and the trial starts again (3 tries). Returns the
    moment, whether the signals interrupted the run, and the length."""
    for _ in range(3):
        fresh()
        moment, start = fraction * seconds, time.monotonic()
        if not run_killed(command, moment, SIGNALS[signals]):
            return moment, True, seconds
        seconds = min(seconds, time.monotonic() - start)
    return moment, False, seconds


# --- training -------------------------------------------------------------------------------


def training_record(run: Path) -> dict:
    """What must match: every checkpoint's weights and the log without its timings."""
    from seq2seq.checkpoint import load_checkpoint

    weights = {}
    for path in sorted((run / "model").glob("*.safetensors")):
        if path.name != "train_state.safetensors":
            weights[path.name] = load_checkpoint(path).model.state_dict()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    timings = {"elapsed", "tgt_tokens_per_s", "src_tgt_tokens_per_s"}
    return {
        "weights": weights,
        "log": [{k: v for k, v in r.items() if k not in timings} for r in log],
    }


def same_training(a: dict, b: dict) -> bool:
    import torch

    if a["log"] != b["log"] or a["weights"].keys() != b["weights"].keys():
        return False
    return all(
        torch.equal(a["weights"][name][key], b["weights"][name][key])
        for name in a["weights"]
        for key in a["weights"][name]
    )


def train_trials(config: Path, preprocessed: Path, work: Path, trials: list, say) -> int:
    """Stop training at each (moment, signals) of `trials`, resume, compare; returns the
    trials that matched the uninterrupted run."""
    straight = work / "train-straight"
    shutil.copytree(preprocessed, straight)
    seconds = timed([*CLI, "train", str(config), "--run-dir", str(straight)])
    expected = training_record(straight)
    matched = 0
    for i, (fraction, signals) in enumerate(trials):
        run = work / f"train-{i}"
        command = [*CLI, "train", str(config), "--run-dir", str(run)]

        def fresh(run=run) -> None:
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(preprocessed, run)

        moment, interrupted, seconds = kill_at(command, fraction, seconds, fresh, signals)
        if interrupted:
            run_killed(command, None)
        same = same_training(training_record(run), expected)
        leftovers = list(run.glob("**/.*.tmp*"))
        ok = same and not leftovers
        matched += ok
        say(
            f"train trial {i + 1}: {signals} at {moment:.2f} s of {seconds:.1f} s"
            + ("" if interrupted else " (had finished)")
            + f": {'identical' if same else 'DIFFERENT'}"
            + (f", {len(leftovers)} temporary files left" if leftovers else "")
        )
        shutil.rmtree(run)
    return matched


# --- preprocessing --------------------------------------------------------------------------


def preprocessed_files(run: Path) -> dict:
    """Every file preprocess wrote, by name; the manifest without its time of creation."""
    files = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    manifest = json.loads(files.pop(Path("manifest.json")))
    files.pop(Path(".lock"), None)
    return {**files, "manifest": {k: v for k, v in manifest.items() if k != "created"}}


def preprocess_trials(config: Path, work: Path, trials: list, say) -> int:
    """Stop preprocess at each (moment, signals), run it again, compare the run folder with
    an uninterrupted one's; nothing (a staging folder) may be left beside it."""
    straight = work / "preprocess-straight" / "run"
    seconds = timed([*CLI, "preprocess", str(config), "--run-dir", str(straight)])
    expected = preprocessed_files(straight)
    matched = 0
    for i, (fraction, signals) in enumerate(trials):
        run = work / f"preprocess-{i}" / "run"
        command = [*CLI, "preprocess", str(config), "--run-dir", str(run)]

        def fresh(run=run) -> None:
            shutil.rmtree(run.parent, ignore_errors=True)
            run.parent.mkdir()

        moment, interrupted, seconds = kill_at(command, fraction, seconds, fresh, signals)
        if interrupted:
            run_killed(command, None)
        same = preprocessed_files(run) == expected
        leftovers = [p.name for p in run.parent.iterdir() if p != run]
        matched += same and not leftovers
        say(
            f"preprocess trial {i + 1}: {signals} at {moment:.2f} s of {seconds:.1f} s"
            + ("" if interrupted else " (had finished)")
            + f": {'identical' if same else 'DIFFERENT'}"
            + (f", left {leftovers}" if leftovers else "")
        )
        shutil.rmtree(run.parent)
    return matched


# --- translation ----------------------------------------------------------------------------


def translate_trials(model: Path, source: Path, work: Path, trials: list, say) -> int:
    """Stop `translate --resume` at each (moment, signals), run it again, compare the output
    bytes."""
    common = ["-m", str(model), "-i", str(source), "--chunk-lines", "16", "--device", "cpu"]
    straight = work / "straight.de"
    seconds = timed([*CLI, "translate", *common, "-o", str(straight)])
    expected = straight.read_bytes()
    matched = 0
    for i, (fraction, signals) in enumerate(trials):
        out = work / f"trial-{i}.de"
        command = [*CLI, "translate", *common, "-o", str(out), "--resume"]

        def fresh(i=i) -> None:
            for path in work.glob(f"trial-{i}.de*"):
                path.unlink()

        moment, interrupted, seconds = kill_at(command, fraction, seconds, fresh, signals)
        # the final name comes last: if it is there, the work must be complete
        early = interrupted and out.exists() and out.read_bytes() != expected
        if interrupted:
            run_killed(command, None)
        same = out.read_bytes() == expected
        leftovers = [p.name for p in work.glob(f"trial-{i}.de*") if p != out]
        ok = same and not early and not leftovers
        matched += ok
        say(
            f"translate trial {i + 1}: {signals} at {moment:.2f} s of {seconds:.1f} s"
            + ("" if interrupted else " (had finished)")
            + f": {'identical' if same else 'DIFFERENT'}"
            + (", a final name on unfinished work" if early else "")
            + (f", left {leftovers}" if leftovers else "")
        )
        out.unlink()
    return matched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="trials of each command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "kill_test")
    parser.add_argument("--lines", type=int, default=1500, help="lines translated per trial")
    parser.add_argument("--only", choices=["train", "translate", "preprocess"])
    parser.add_argument("--signals", choices=["all", "kill"], default="all")
    parser.add_argument(
        "--sampling-alpha", type=float, default=0.0, help="train with subword sampling"
    )
    args = parser.parse_args()
    args.work = args.work.resolve()  # the config names the corpus inside it
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rng = random.Random(args.seed)
    kinds = list(SIGNALS) if args.signals == "all" else ["SIGKILL"]
    trials = {
        name: [(rng.random(), rng.choice(kinds)) for _ in range(args.kills)]
        for name in ("train", "translate", "preprocess")
    }

    def say(line: str) -> None:
        print(line, flush=True)

    corpus = make_corpus(args.work / "corpus", 1500)
    config = args.work / "kill.yaml"
    text = CONFIG.format(corpus=corpus, alpha=args.sampling_alpha)
    config.write_text(text, encoding="utf-8")
    preprocessed = args.work / "preprocessed"
    run_killed([*CLI, "preprocess", str(config), "--run-dir", str(preprocessed)], None)
    tally = {}
    if args.only in (None, "train"):
        tally["train"] = train_trials(config, preprocessed, args.work, trials["train"], say)
    if args.only in (None, "translate"):
        model = args.work / "train-straight"
        if not model.exists():
            shutil.copytree(preprocessed, model)
            run_killed([*CLI, "train", str(config), "--run-dir", str(model)], None)
        lines = (preprocessed / "data" / "test.en").read_text(encoding="utf-8").splitlines()
        source = args.work / "source.en"
        text = "\n".join((lines * (args.lines // len(lines) + 1))[: args.lines]) + "\n"
        source.write_text(text)
        tally["translate"] = translate_trials(model, source, args.work, trials["translate"], say)
    if args.only in (None, "preprocess"):
        tally["preprocess"] = preprocess_trials(config, args.work, trials["preprocess"], say)
    results = ", ".join(f"{name} {ok}/{args.kills} identical" for name, ok in tally.items())
    say(f"\nkill test (seed {args.seed}, sampling alpha {args.sampling_alpha}): {results}")
    sys.exit(0 if all(ok == args.kills for ok in tally.values()) else 1)


if __name__ == "__main__":
    main()
