"""The run folder: where every stage reads and writes. Only the stages know this layout.

runs/<name>/
    manifest.json                     preprocess: splits, counts, hashes, config
    spm.model | spm.<lang>.model      preprocess: SentencePiece model(s)
    data/<split>.<lang>               preprocess: cleaned text, one sentence a line
    data/<split>.<lang>.bin / .idx    preprocess: subword ids (int32) and offsets (int64)
    model/best.safetensors            train: the best checkpoint by dev BLEU
    model/last.safetensors            train: the latest checkpoint
    model/train_state.safetensors     train: optimizer, schedule, data order, random state
    train_log.jsonl                   train: one JSON object per log line / validation
    learning_curve.png                train: losses, dev scores and learning rate by step
    config.yaml, train_runs.jsonl     train: the config used, and a record of every run
    train.log                         train: what the terminal showed, with times
    translations/test.<lang>          pipeline: translation of the test split
    score.json                        pipeline: BLEU and chrF of that translation
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from seq2seq.errors import UserError
from seq2seq.io import check_destination, check_streams, hold

SPLITS = ("train", "dev", "test")


def _at(*parts: str) -> property:
    """A place in the run folder, as a read-only attribute of `RunFolder`."""
    return property(lambda self: self.root.joinpath(*parts))


@dataclass(frozen=True)
class RunFolder:
    root: Path

    manifest = _at("manifest.json")
    data = _at("data")
    model_dir = _at("model")
    best = _at("model", "best.safetensors")
    last = _at("model", "last.safetensors")
    train_state = _at("model", "train_state.safetensors")
    train_log = _at("train_log.jsonl")
    learning_curve = _at("learning_curve.png")
    used_config = _at("config.yaml")
    train_runs = _at("train_runs.jsonl")
    train_text_log = _at("train.log")
    translations = _at("translations")
    score = _at("score.json")

    def text(self, split: str, lang: str) -> Path:
        return self.data / f"{split}.{lang}"

    ids = text  # the prefix of the .bin and .idx files: data/<split>.<lang>

    def tokenizer(self, lang: str | None) -> Path:
        return self.root / ("spm.model" if lang is None else f"spm.{lang}.model")

    def kept(self, kind: str, step: int) -> Path:
        """model/best-<step> or model/last-<step>: the checkpoints kept for averaging."""
        return self.model_dir / f"{kind}-{step}.safetensors"

    def kept_checkpoints(self, kind: str) -> list[Path]:
        """Kept checkpoints of one kind, oldest step first."""
        paths = self.model_dir.glob(f"{kind}-*.safetensors")
        return sorted(paths, key=lambda p: int(p.stem.split("-")[1]))

    def translation(self, split: str, lang: str) -> Path:
        return self.translations / f"{split}.{lang}"

    def check_writable(self) -> None:
        """Refuse, before any work, a run folder that cannot be written: a file, a place
        under a file, an unwritable folder, a special file system."""
        check_destination(self.root, folder=True, parents=True)
        for sub in (self.data, self.model_dir, self.translations):
            if sub.exists() and not sub.is_dir():
                raise UserError(f"{sub}: exists and is not a folder; the run folder needs it")
        files = (self.manifest, self.train_log, self.learning_curve, self.score)
        for file in (*files, self.used_config, self.train_runs, self.train_text_log):
            if file.exists() and not file.is_file():
                raise UserError(f"{file}: exists and is not a file; the run folder needs it")

    def preprocess_writes(self, path: Path) -> bool:
        """Whether `path` is (or links to) a place preprocess writes: the manifest, a
        SentencePiece model, anything in data/."""
        path, root = Path(path).resolve(), self.root.resolve()
        if self.data.resolve() in path.parents:  # data/ may itself be a link
            return True
        tokenizer = path.name.startswith("spm") and path.suffix == ".model"
        written = path.name == "manifest.json" or tokenizer
        return written and (path.parent == root or (root / path.name).resolve() == path)

    def keeps(self, path: Path) -> bool:
        """Whether this run (one with a manifest) keeps `path` for later stages: what
        preprocess wrote, training's checkpoints and state, its config, logs and records."""
        if not self.manifest.is_file():  # not a run folder
            return False
        path = Path(path).resolve()
        if path.parent == self.model_dir.resolve():
            return re.fullmatch(r"(best|last)(-\d+)?|train_state", path.stem) is not None
        files = (self.train_log, self.learning_curve, self.used_config, self.train_runs)
        kept = [file.resolve() for file in (*files, self.train_text_log)]
        return self.preprocess_writes(path) or path in kept

    @contextlib.contextmanager
    def lock(self, reads: list[Path] = ()) -> Iterator[None]:
        """Keep the run folder to this process (see `hold`), checked writable and not where
        stdout goes (nor the stage's `reads`); one made for it goes again if left empty."""
        self.check_writable()
        made = [path for path in (self.root, *self.root.parents) if not path.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with hold(self.root / ".lock", self.root):
                check_streams([*reads, *(p for p in self.root.rglob("*") if self.keeps(p))])
                yield
        finally:
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()

    def read_manifest(self) -> dict:
        if not self.manifest.is_file():
            raise UserError(f"{self.manifest}: no such file; run `nmt preprocess` first")
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            message = f"{self.manifest}: not valid JSON ({e}); rerun `nmt preprocess`"
            raise UserError(message) from None


def run_folder(name: str, run_dir: str | Path | None) -> RunFolder:
    """runs/<config name> unless a run folder is given."""
    return RunFolder(Path(run_dir) if run_dir is not None else Path("runs") / name)


def check_output(path: str | Path, reads=(), writes=(), folder=False, parents=False) -> None:
    """`check_destination`, and refuse an output that would land on what a run folder (any
    folder above it that holds a manifest) keeps for later stages."""
    check_destination(path, folder, parents, reads, writes)
    for root in {*Path(path).absolute().parents, *Path(path).resolve().parents}:
        if RunFolder(root).keeps(path):
            raise UserError(f"{path}: the run folder {root} keeps this file; write elsewhere")


def resolve_checkpoint(model: str | Path) -> Path:
    """A run folder (its best checkpoint), a model folder, or a checkpoint file."""
    path = Path(model)
    if path.is_file():
        return path
    for candidate in (path / "model" / "best.safetensors", path / "best.safetensors"):
        if candidate.is_file():
            return candidate
    if path.is_dir():
        raise UserError(
            f"{path}: no checkpoint found (looked for model/best.safetensors and best.safetensors)"
        )
    raise UserError(f"{path}: no such model folder or checkpoint file")
