"""Everything about speed on one GPU, in one run that prints one table.

Takes a run folder that `nmt preprocess configs/multi30k_de_en.yaml --data.source=local
--data.path=../shared/data/multi30k --data.dev=val --data.test=test_2016_flickr` made (the
GPU machines have no `datasets`: preprocess on a CPU machine and bring the folder along), then:

1. training speed, fp32 and bf16, of the quality model (configs/multi30k_de_en.yaml), the
   JoeyNMT-size model (benchmarks/joeynmt_size.yaml) and a GNMT-v2-size model
   (benchmarks/gnmt_size.yaml): target tokens/s over steps after a warm-up;
2. the quality config trained for `--train-seconds`, with dev BLEU at each validation;
3. decoding of test_2016_flickr repeated to `--lines` lines with that model: greedy and beam 5,
   fp32 and bf16, at batches of 64, 256 and 1,024 sentences and by a source-token budget:
   sentences/s and target tokens/s, and whether every batching gives the fp32 output of
   batch 64 exactly;
4. where the wall time of one decoding goes: loading, tokenizing, search, detokenizing,
   writing, and the GPU's busy time (torch.profiler) over the search's wall time.

    python benchmarks/gpu.py --run runs/m30k_de_en                  # on a GPU, ~8 minutes
    python benchmarks/gpu.py --run RUN --small --device cpu          # a smoke test anywhere

`--small` shrinks every size so that the whole script runs on a CPU in a minute or two.
Each section prints a summary line as it ends; the table comes last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.layout import RunFolder  # noqa: E402
from pipelines.train import Trainer, train  # noqa: E402
from pipelines.translate import translate_file  # noqa: E402
from seq2seq.config import TranslateConfig, load_config  # noqa: E402

MODELS = {
    "quality": ROOT / "configs" / "multi30k_de_en.yaml",
    "JoeyNMT-size": ROOT / "benchmarks" / "joeynmt_size.yaml",
    "GNMT-v2-size": ROOT / "benchmarks" / "gnmt_size.yaml",
}


def say(message: str) -> None:
    print(message, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_copy(run: Path, dest: Path) -> RunFolder:
    """The preprocessed part of a run folder, without any model."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("model", "train_log.jsonl", "*.png"))
    return RunFolder(dest)


def training_speed(args, name: str, precision: str) -> dict:
    """Target tokens/s over `args.steps` steps after `args.warmup`, timed on the device."""
    overrides = [f"--train.precision={precision}", f"--train.device={args.device}"]
    if args.small:
        overrides += SMALL_MODEL
    config = load_config(MODELS[name], overrides)
    run = fresh_copy(args.run, args.work / f"train-{name}-{precision}")
    trainer = Trainer(config, run, log=lambda _: None, fresh=True)
    batches = trainer.data.epoch_batches(0)
    steps = [trainer.data.step([b]) for b in batches[: args.warmup + args.steps]]
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in steps[: args.warmup]:
        trainer.train_step(step)
    synchronize(device)
    start = time.perf_counter()
    for step in steps[args.warmup :]:
        trainer.train_step(step)
    synchronize(device)
    seconds = time.perf_counter() - start
    tokens = sum(step.tgt_tokens for step in steps[args.warmup :])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    result = {
        "model": name,
        "precision": precision,
        "parameters_m": params,
        "steps_per_s": len(steps[args.warmup :]) / seconds,
        "tgt_tokens_per_s": tokens / seconds,
        "peak_gib": peak,
    }
    say(
        f"train {name} {precision}: {result['tgt_tokens_per_s']:,.0f} tgt tok/s, "
        f"{result['steps_per_s']:.1f} steps/s, {params:.1f}M parameters, peak {peak:.1f} GiB"
    )
    return result


# Small enough for a CPU smoke test: the quality model at a tenth of its width.
SMALL_MODEL = [
    "--model.embedding_size=32",
    "--model.encoder.hidden_size=16",
    "--model.decoder.hidden_size=32",
    "--model.attention.hidden_size=32",
    "--model.encoder.num_layers=1",
    "--model.decoder.num_layers=1",
    "--train.batch_size=64",
    "--train.batch_type=sentences",
]


def train_quality(args) -> tuple[RunFolder, list]:
    """The quality config for `args.train_seconds` of training; its dev BLEU curve."""
    overrides = [
        f"--train.device={args.device}",
        f"--train.max_time={args.train_seconds}",
        f"--train.validate_every={args.validate_every}",
        "--train.patience=0",
        "--train.max_steps=0",
    ]
    if args.small:
        overrides += SMALL_MODEL
    config = load_config(MODELS["quality"], overrides)
    run = fresh_copy(args.run, args.work / "quality")
    train(config, run, log=lambda _: None, fresh=True)
    curve = [
        (r["step"], r["elapsed"], r["dev_bleu"])
        for r in map(json.loads, run.train_log.read_text().splitlines())
        if "dev_bleu" in r
    ]
    for step, elapsed, bleu in curve:
        say(f"quality: step {step}, {elapsed:.0f} s of training: dev BLEU {bleu:.2f}")
    return run, curve


# Precisions decoded, and whether the decoder step is replayed as CUDA graphs (on a GPU).
VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True)]


def graph_notes(message: str) -> None:
    """Of what translate says, only the shapes whose CUDA graphs could not be used."""
    if "cuda graphs" in message:
        say(message)


def decode_options(args, beam: int, precision: str, graphs: bool, batch: int | None):
    """Options for one decoding: `batch` sentences a batch, or None for a token budget."""
    search = {"beam_size": beam, "n_best": 1, "cuda_graphs": graphs}
    if batch is not None:
        search["batch_size"] = batch
    elif args.device == "cpu":
        search["max_tokens"] = 2048  # on a GPU: sized to the card
    return TranslateConfig(device=args.device, precision=precision), search


def decoding(args, run: RunFolder, source: Path) -> list[dict]:
    """Every search x precision x batching over `source`; whether each output is the one
    the first batching gave in that precision (in fp32 it must be, with CUDA graphs or
    without: a sentence's result does not depend on its batch; bf16 rounds differently at
    each batch shape)."""
    rows, reference = [], {}
    tokens_label = "2,048 tokens" if args.device == "cpu" else "tokens, card-sized"
    for beam in (5, 1):
        for precision, graphs in VARIANTS if args.device != "cpu" else VARIANTS[:2]:
            for size in [*args.batches, None]:
                options = decode_options(args, beam, precision, graphs, size)
                name = f"{precision}{'+graphs' if graphs else ''}"
                out = args.work / f"decode-b{beam}-{name}-{size or 'tokens'}.txt"
                result = translate_file(run.root, str(source), str(out), *options, graph_notes)
                text = out.read_text(encoding="utf-8")
                reference.setdefault((beam, precision), text)
                row = {
                    "search": "greedy" if beam == 1 else f"beam {beam}",
                    "precision": name,
                    "batching": tokens_label if size is None else f"{size} sentences",
                    "options": options,
                    "sentences_per_s": result["sentences_per_s"],
                    "tgt_tokens_per_s": result["tgt_tokens_per_s"],
                    "same_as_first": text == reference[(beam, precision)],
                    "result": result,
                }
                rows.append(row)
                say(
                    f"decode {row['search']} {name} {row['batching']}: "
                    f"{row['sentences_per_s']:,.0f} sent/s, {row['tgt_tokens_per_s']:,.0f} "
                    f"tgt tok/s, same output as batch {args.batches[0]}: {row['same_as_first']}"
                )
    return rows


def gpu_busy(args, run: RunFolder, source: Path, best: dict) -> float | None:
    """The GPU's busy time (kernels) over the wall time of one decoding, by torch.profiler."""
    if args.device == "cpu":
        return None
    from torch.profiler import ProfilerActivity, profile

    options = best["options"]
    out = args.work / "profiled.txt"
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        translate_file(run.root, str(source), str(out), *options, lambda _: None)
        wall = time.perf_counter() - start
    busy_us = sum(e.self_device_time_total for e in prof.key_averages())
    return busy_us / 1e6 / wall


def print_table(args, speed: list, curve: list, rows: list, busy: float | None) -> None:
    device = torch.cuda.get_device_name(0) if args.device != "cpu" else "CPU"
    say(
        f"\n## {device}, torch {torch.__version__}, {datetime.date.today()}"
        + (" (--small: smoke-test sizes)" if args.small else "")
    )
    say("\n| training | precision | parameters | target tokens/s | steps/s | peak memory |")
    say("| --- | --- | --- | --- | --- | --- |")
    for r in speed:
        say(
            f"| {r['model']} | {r['precision']} | {r['parameters_m']:.1f}M | "
            f"{r['tgt_tokens_per_s']:,.0f} | {r['steps_per_s']:.1f} | {r['peak_gib']:.1f} GiB |"
        )
    reached = next((e for _, e, bleu in curve if bleu >= 40), None)
    best_bleu = max((bleu for _, _, bleu in curve), default=float("nan"))
    say(
        f"\nquality config: best dev BLEU {best_bleu:.2f} in {args.train_seconds:.0f} s; "
        + (f"dev BLEU 40 at {reached:.0f} s" if reached else "dev BLEU 40 not reached")
    )
    say(
        f"\n| decoding {args.lines:,} lines | precision | batching | sentences/s | target tokens/s "
        "| fp32 output = batch 64 |"
    )
    say("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        same = "-" if r["precision"] == "bf16" else ("yes" if r["same_as_first"] else "no")
        say(
            f"| {r['search']} | {r['precision']} | {r['batching']} | "
            f"{r['sentences_per_s']:,.0f} | {r['tgt_tokens_per_s']:,.0f} | {same} |"
        )
    beam = max((r for r in rows if r["search"] == "beam 5"), key=lambda r: r["tgt_tokens_per_s"])
    res = beam["result"]
    stages = res["stage_seconds"]
    write = max(0.0, res["seconds"] - sum(stages.values()))
    say(
        f"\nwhere the time goes (beam 5, {beam['precision']}, {beam['batching']}): load "
        f"{res['load_seconds']:.2f} s, tokenize {stages['tokenize']:.2f} s, search "
        f"{stages['search']:.2f} s, detokenize {stages['detokenize']:.2f} s, write and the "
        f"rest {write:.2f} s (of {res['seconds']:.2f} s after loading)"
        + (f"; GPU busy {100 * busy:.0f}% of the wall time" if busy is not None else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="preprocessed Multi30k de-en")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", type=Path, default=Path("runs") / "gpu_benchmark")
    parser.add_argument("--small", action="store_true", help="smoke-test sizes (CPU)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    if args.small:
        args.lines, args.batches, args.warmup, args.steps = 60, [8, 32], 2, 4
    args.work.mkdir(parents=True, exist_ok=True)
    say(f"gpu benchmark on {args.device}, torch {torch.__version__}")

    speed = [
        training_speed(args, name, precision) for name in MODELS for precision in ("fp32", "bf16")
    ]
    run, curve = train_quality(args)
    test = run.read_manifest()["splits"]["test"]["src"]
    lines = (run.root / test).read_text(encoding="utf-8").splitlines()
    source = args.work / "source.de"
    source.write_text("\n".join((lines * (args.lines // len(lines) + 1))[: args.lines]) + "\n")
    rows = decoding(args, run, source)
    best = max(rows, key=lambda r: r["tgt_tokens_per_s"])
    busy = gpu_busy(args, run, source, best)
    print_table(args, speed, curve, rows, busy)
    summary = {"training": speed, "curve": curve, "busy": busy}
    summary["decoding"] = [
        {k: v for k, v in r.items() if k not in ("result", "options")}
        | {"seconds": r["result"]["stage_seconds"]}
        for r in rows
    ]
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
