"""Domain adaptation measured: a trained demo model fine-tuned on a shifted corpus.

The shifted corpus is the demo language with other words for a few nouns (the new domain's
terms: "Hund" -> "Köter", "Mann" -> "Herr", ...), generated with another seed. Prints test
BLEU on the shifted test split of the model as it is, then after fine-tuning it for
`--steps` steps with `train.init_from` (preprocessed with its SentencePiece model), and the
original test BLEU of both (what the adaptation costs on the old domain).

    python benchmarks/finetune_shift.py --model runs/demo --steps 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data" / "demo"))

from generate import generate  # noqa: E402

from pipelines.layout import RunFolder  # noqa: E402
from pipelines.preprocess import preprocess  # noqa: E402
from pipelines.score import score_files  # noqa: E402
from pipelines.train import train  # noqa: E402
from pipelines.translate import translate_file  # noqa: E402
from seq2seq.config import TranslateConfig, load_config  # noqa: E402

SHIFT = {"Hund": "Köter", "Hunde": "Köter", "Mann": "Herr", "Männer": "Herren", "Buch": "Band"}


def write_shifted(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in generate(7, {"test": 1000, "dev": 500, "train": 5000}).items():
        de = [" ".join(SHIFT.get(w, w) for w in d.split(" ")) for _, d in pairs]
        (folder / f"{split}.en").write_text("".join(e + "\n" for e, _ in pairs), encoding="utf-8")
        (folder / f"{split}.de").write_text("".join(d + "\n" for d in de), encoding="utf-8")


def bleu(model: Path, folder: Path, out: Path) -> float:
    config = TranslateConfig(device="cpu", precision="fp32")
    translate_file(model, str(folder / "test.en"), str(out), config, None, lambda _: None)
    return score_files(out, folder / "test.de")["bleu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("runs/finetune_shift"))
    args = parser.parse_args()
    corpus = args.work / "corpus"
    write_shifted(corpus)
    original = ROOT / "data" / "demo"
    work = args.work / "original"
    work.mkdir(parents=True, exist_ok=True)
    for split in ("test",):  # the original test split as plain text
        import gzip

        for lang in ("en", "de"):
            text = gzip.decompress((original / f"{split}.{lang}.gz").read_bytes())
            (work / f"{split}.{lang}").write_bytes(text)
    base = args.model
    before = (bleu(base, corpus, args.work / "before.de"), bleu(base, work, args.work / "o1.de"))
    overrides = [
        f"--data.path={corpus}", f"--data.subwords.model={base}", f"--train.init_from={base}",
        f"--train.max_steps={args.steps}", "--train.validate_every=100", "--name=shifted",
    ]  # fmt: skip
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    run = RunFolder(args.work / "run")
    preprocess(config, run, print)
    train(config, run, print, fresh=True)
    after = (
        bleu(run.best, corpus, args.work / "after.de"),
        bleu(run.best, work, args.work / "o2.de"),
    )
    print(f"shifted test BLEU: {before[0]:.2f} before, {after[0]:.2f} after {args.steps} steps")
    print(f"original test BLEU: {before[1]:.2f} before, {after[1]:.2f} after")


if __name__ == "__main__":
    main()
