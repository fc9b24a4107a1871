"""The vocabulary shortlist (`search.shortlist`) against the full vocabulary: sentences/s and
BLEU on a run's test set, same checkpoint and search settings, in fp32 and int8, interleaved.

A checkpoint written before the shortlist existed has no table: then the table is built
from the run's training ids (as training builds it) into a copy of the checkpoint, in a
temporary folder.

    python benchmarks/shortlist.py runs/m30k_de_en --best 0 20 50 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sacrebleu  # noqa: E402

from pipelines.layout import RunFolder  # noqa: E402
from pipelines.translator import Translator  # noqa: E402
from seq2seq.batching import TokenSequences  # noqa: E402
from seq2seq.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from seq2seq.shortlist import build_shortlist  # noqa: E402


def with_table(run: Path, folder: Path) -> Path:
    """The run's best checkpoint, or a copy of it with a shortlist table."""
    path = run / "model" / "best.safetensors"
    checkpoint = load_checkpoint(path)
    if checkpoint.shortlist is not None:
        return path
    runs = RunFolder(run.resolve())
    langs = runs.read_manifest()["languages"]
    src, tgt = (TokenSequences.load(runs.ids("train", langs[side])) for side in ("src", "tgt"))
    c = checkpoint
    table = build_shortlist(src, tgt, c.model.vocab)
    save_checkpoint(
        folder / "best.safetensors",
        c.model,
        c.src_tokenizer,
        c.tgt_tokenizer,
        c.search,
        c.info,
        table,
    )
    return folder / "best.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--best", type=int, nargs="+", default=[0, 20, 50], help="0: full")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    langs = RunFolder(args.run.resolve()).read_manifest()["languages"]
    data = args.run / "data"
    sources = (data / f"test.{langs['src']}").read_text(encoding="utf-8").splitlines()
    references = (data / f"test.{langs['tgt']}").read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as folder:
        model = with_table(args.run, Path(folder))
        for precision in args.precisions.split(","):
            translator = Translator(model, "cpu", precision, beam_size=args.beam_size)
            translator.translate(sources[:50])
            speed = {best: [] for best in args.best}
            outputs = {}
            for _ in range(args.repeats):
                for best in args.best:
                    began = time.perf_counter()
                    outputs[best] = translator.translate(sources, shortlist=best)
                    speed[best].append(len(sources) / (time.perf_counter() - began))
            full = statistics.median(speed[0]) if 0 in speed else None
            print(f"| {precision} | per source piece | sentences/s | vs full | BLEU | = full |")
            print("| --- | --- | --- | --- | --- | --- |")
            for best in args.best:
                s = speed[best]
                bleu = sacrebleu.corpus_bleu(outputs[best], [references]).score
                same = sum(a == b for a, b in zip(outputs[best], outputs.get(0, outputs[best])))
                ratio = f"{statistics.median(s) / full:.2f}x" if full else "-"
                print(
                    f"| {precision} | {best or 'full vocabulary'} | {statistics.median(s):.1f} "
                    f"({min(s):.1f}-{max(s):.1f}) | {ratio} | {bleu:.2f} | {same}/{len(sources)} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
