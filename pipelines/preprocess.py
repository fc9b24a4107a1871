"""Stage 1, preprocess: parallel corpus -> cleaned text, SentencePiece model(s), subword ids.

Reads the corpus named by the config's `data` section (corpus.py: local text pairs or tables,
a hub dataset or a saved one, and the training splits of data.corpora).
Writes, under the run folder (see layout.py):
    data/<split>.<lang>               cleaned text of train, dev and test
    data/<split>.<lang>.bin / .idx    their subword ids
    spm.model (joint) or spm.<lang>.model
    manifest.json                     files, counts, input hashes, cleaning counts, config
The SentencePiece model is trained on the cleaned training split only. Everything is built in
a staging folder and moved into place when all of it has succeeded, so a failed run leaves
the run folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from hashlib import blake2b
from itertools import chain, islice
from pathlib import Path

import numpy as np

from seq2seq.batching import TokenSequenceWriter
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import Config, DataConfig, to_dict
from seq2seq.errors import UserError
from seq2seq.io import atomic_open, atomic_write_bytes, atomic_write_text, count_lines, writing
from seq2seq.tokenizer import Tokenizer, normalize

from .corpus import load_corpus, local_inputs
from .layout import SPLITS, RunFolder, resolve_checkpoint
from .train_data import proto_sha256

CHUNK = 10_000  # pairs handled at a time: memory stays flat in the corpus size


# --- cleaning -------------------------------------------------------------------------------
@dataclass
class Cleaned:
    """A split after cleaning: its pairs staged as lines, and what encoding needs of them."""

    text: dict[str, Path]  # "src" and "tgt": the staged files, a pair a line
    filtered: bool  # train's filters apply (to dev and test with data.cleaning.filter_dev_test)
    counts: dict  # pairs in, and those each step drops
    keep: np.ndarray | None = None  # the lines de-duplication keeps; None keeps all
    origin: array | None = None  # the corpus of each line (train with data.corpora only)

    def kept(self, lines: Iterable) -> Iterator:
        """`lines`, one item per staged line, without those de-duplication leaves out."""
        return (line for i, line in enumerate(lines) if self.keep is None or self.keep[i])

    def pairs(self) -> Iterator[tuple[str, str]]:
        """The staged pairs, without those de-duplication leaves out."""
        with (
            open(self.text["src"], encoding="utf-8") as src_file,
            open(self.text["tgt"], encoding="utf-8") as tgt_file,
        ):
            for src, tgt in self.kept(zip(src_file, tgt_file)):
                yield src.rstrip("\n"), tgt.rstrip("\n")


def clean_text(split: str, dataset, data: DataConfig, stage: RunFolder, corpus_sizes=None):
    """Normalize every pair of a split, staged as lines; where train's filters apply, drop
    empty and over-long pairs, and when de-duplicating, keep the first of identical pairs.
    With `corpus_sizes` (of the corpora that follow each other in train), the corpus of each
    training line is recorded. Duplicates are found from one 64-bit hash per pair, 8 bytes a
    pair instead of a set of strings, so memory stays small however large the corpus."""
    cleaning = data.cleaning
    text = {side: stage.root / f"{split}.clean.{side}" for side in ("src", "tgt")}
    filtered = split == "train" or cleaning.filter_dev_test
    sizes = corpus_sizes if split == "train" else None
    counts = {"input": 0, "empty": 0, "too_many_chars": 0, "duplicate": 0}
    hashes = array("Q") if filtered and cleaning.dedupe else None
    ends, origin = np.cumsum(sizes or [0]), array("H")
    with atomic_open(text["src"]) as src_out, atomic_open(text["tgt"]) as tgt_out:
        for batch in dataset.iter(batch_size=CHUNK):
            for src, tgt in zip(batch["src"], batch["tgt"]):
                corpus = int(np.searchsorted(ends, counts["input"], side="right"))
                counts["input"] += 1
                src, tgt = normalize(src, cleaning.normalize), normalize(tgt, cleaning.normalize)
                if filtered:
                    if not src or not tgt:
                        counts["empty"] += 1
                        continue
                    if len(src) > cleaning.max_chars or len(tgt) > cleaning.max_chars:
                        counts["too_many_chars"] += 1
                        continue
                if hashes is not None:
                    digest = blake2b(f"{src}\t{tgt}".encode(), digest_size=8).digest()
                    hashes.append(int.from_bytes(digest, "little"))
                src_out.write(src + "\n")
                tgt_out.write(tgt + "\n")
                origin.append(corpus)
    if split == "train" and count_lines(text["src"]) == 0:
        raise UserError(
            f"the training split is empty after cleaning ({counts}); "
            "check data.train and data.cleaning"
        )
    cleaned = Cleaned(text, filtered, counts, origin=origin if sizes else None)
    if hashes:
        values = np.frombuffer(hashes, dtype=np.uint64)
        _, first = np.unique(values, return_index=True)
        cleaned.keep = np.zeros(len(values), dtype=bool)
        cleaned.keep[first] = True
        counts["duplicate"] = len(values) - len(first)
    return cleaned


# --- subwords -------------------------------------------------------------------------------
def tokenizers_for(data: DataConfig, train: Cleaned, log: Callable[[str], None]):
    """The SentencePiece model(s) to use. Reused where data.subwords.model names them: a
    .model file (for both sides), or those of a checkpoint, model folder or run folder.
    Else trained on the cleaned training text: one joint model, or one per language."""
    subwords = data.subwords
    if subwords.model is not None:
        log(f"preprocess: reusing the SentencePiece model(s) of {subwords.model}")
        path = Path(subwords.model)
        if path.is_file() and path.suffix != ".safetensors":
            return (Tokenizer.load(path),) * 2
        checkpoint = load_checkpoint(resolve_checkpoint(path))
        return checkpoint.src_tokenizer, checkpoint.tgt_tokenizer
    log(
        f"preprocess: training SentencePiece ({subwords.model_type}, "
        f"{subwords.vocab_size} pieces, {'joint' if subwords.joint else 'separate'})"
    )
    if subwords.joint:
        joint = Tokenizer.train(chain.from_iterable(train.pairs()), subwords, seed=data.seed)
        return joint, joint
    return (
        Tokenizer.train((src for src, _ in train.pairs()), subwords, seed=data.seed),
        Tokenizer.train((tgt for _, tgt in train.pairs()), subwords, seed=data.seed),
    )


# --- encoding -------------------------------------------------------------------------------
def encode_split(cleaned: Cleaned, out: dict, ids: dict, tokenizers, data: DataConfig) -> dict:
    """Encode a cleaned split into ids; when filtered, drop pairs too long in pieces or with
    a length ratio beyond the limit. Writes final text and ids; returns counts (and how many
    pairs of each corpus are kept, given the cleaning's record of where lines came from)."""
    cleaning = data.cleaning
    counts = {"too_many_pieces": 0, "length_ratio": 0, "kept": 0, "src_tokens": 0, "tgt_tokens": 0}
    origin = cleaned.kept(cleaned.origin or ())  # the corpus of each line reaching this step
    if cleaned.origin is not None:
        counts["corpora"] = [0] * (len(data.corpora) + 1)
    pairs = cleaned.pairs()
    with (
        atomic_open(out["src"]) as src_out,
        atomic_open(out["tgt"]) as tgt_out,
        TokenSequenceWriter(ids["src"]) as src_ids,
        TokenSequenceWriter(ids["tgt"]) as tgt_ids,
    ):
        while chunk := list(islice(pairs, CHUNK)):
            src_chunk, tgt_chunk = [src for src, _ in chunk], [tgt for _, tgt in chunk]
            src_enc, tgt_enc = tokenizers[0].encode(src_chunk), tokenizers[1].encode(tgt_chunk)
            kept = []
            for i, (s, t) in enumerate(zip(src_enc, tgt_enc)):
                if cleaned.filtered:
                    if len(s) > cleaning.max_pieces or len(t) > cleaning.max_pieces:
                        counts["too_many_pieces"] += 1
                        continue
                    if max(len(s), len(t)) > cleaning.max_ratio * max(1, min(len(s), len(t))):
                        counts["length_ratio"] += 1
                        continue
                kept.append(i)
            if cleaned.origin is not None:
                corpora = list(islice(origin, len(chunk)))
                for i in kept:
                    counts["corpora"][corpora[i]] += 1
            src_out.writelines(src_chunk[i] + "\n" for i in kept)
            tgt_out.writelines(tgt_chunk[i] + "\n" for i in kept)
            src_ids.write([src_enc[i] for i in kept])
            tgt_ids.write([tgt_enc[i] for i in kept])
        counts["kept"] = src_ids.count
        counts["src_tokens"], counts["tgt_tokens"] = src_ids.num_tokens, tgt_ids.num_tokens
    return counts


def _encode(split: str, cleaned: Cleaned, tokenizers, data: DataConfig, stage: RunFolder):
    """Encode one cleaned split into its final text and ids; its manifest entry."""
    langs = {"src": data.src_lang, "tgt": data.tgt_lang}
    out = {side: stage.text(split, lang) for side, lang in langs.items()}
    ids = {side: stage.ids(split, lang) for side, lang in langs.items()}
    stats = cleaned.counts
    stats.update(encode_split(cleaned, out, ids, tokenizers, data))
    for path in cleaned.text.values():
        os.remove(path)
    if stats["kept"] == 0:
        raise UserError(f"the {split} split is empty after cleaning ({stats})")
    rel = {side: str(out[side].relative_to(stage.root)) for side in langs}
    entry = {**rel, "src_ids": rel["src"], "tgt_ids": rel["tgt"], "pairs": stats["kept"]}
    entry.update({f"{side}_tokens": stats[f"{side}_tokens"] for side in langs})
    entry.update({f"{side}_bytes": out[side].stat().st_size for side in langs})
    if "corpora" in stats:
        entry["corpora"] = stats["corpora"]  # the pairs of each corpus
    return entry


# --- the stage ------------------------------------------------------------------------------
def _staging_folder(run: RunFolder) -> Path:
    """A fresh folder beside the run folder (the same file system), once those that a killed
    preprocess of this run left are gone (the run's lock says that none is at work)."""
    parent, prefix = run.root.resolve().parent, f".{run.root.name}.preprocess."
    for stale in parent.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _move_into_place(staging: Path, root: Path) -> None:
    """Move every staged file to the same place under `root` (each move is atomic)."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = root / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def _build(config: Config, stage: RunFolder, log: Callable[[str], None]) -> dict:
    """Everything preprocess writes, built in the staging folder; returns the manifest."""
    data = config.data
    langs = {"src": data.src_lang, "tgt": data.tgt_lang}
    stage.data.mkdir(parents=True)
    log(f"preprocess: reading {data.source} corpus {data.path}")
    with writing(stage.root / "cache"):  # datasets' cache: its own errors wrap a full disk
        datasets, origins = load_corpus(data, stage.root / "cache")
    sizes = origins.get("corpus_sizes")
    cleaned = {split: clean_text(split, datasets[split], data, stage, sizes) for split in SPLITS}
    del datasets
    tokenizers = tokenizers_for(data, cleaned["train"], log)
    joint = tokenizers[0].proto == tokenizers[1].proto
    files = {side: stage.tokenizer(None if joint else lang).name for side, lang in langs.items()}
    for side, tokenizer in zip(langs, tokenizers):
        atomic_write_bytes(stage.root / files[side], tokenizer.proto)
    splits = {split: _encode(split, cleaned[split], tokenizers, data, stage) for split in SPLITS}
    stats = {split: cleaned[split].counts for split in SPLITS}
    for split, counts in stats.items():
        log(f"preprocess: {split}: {counts['input']} pairs in, {counts['kept']} kept")
    shutil.rmtree(stage.root / "cache", ignore_errors=True)
    return {
        "format": "seq2seq-run",
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "languages": langs,
        "tokenizer": {
            "joint": joint,
            **files,
            "src_vocab_size": tokenizers[0].vocab_size,
            "tgt_vocab_size": tokenizers[1].vocab_size,
            **{f"{side}_sha256": proto_sha256(t) for side, t in zip(langs, tokenizers)},
        },
        "splits": splits,
        "inputs": origins,
        "cleaning": stats,
        "data": to_dict(config.data),  # what made these files (train's config: config.yaml)
    }


def preprocess(config: Config, run: RunFolder, log: Callable[[str], None] = print) -> dict:
    """Run the stage; returns the manifest it wrote."""
    if not config.data.path:
        raise UserError("config key 'data.path': expected the corpus location, got nothing")
    with run.lock(reads=local_inputs(config.data)):  # refused before reading anything
        for path in local_inputs(config.data):
            if run.preprocess_writes(path):
                raise UserError(
                    f"{path}: the corpus file is where preprocess writes its output in "
                    f"{run.root}; choose another --run-dir"
                )
        staging = _staging_folder(run)
        try:
            manifest = _build(config, RunFolder(staging), log)
            run.manifest.unlink(missing_ok=True)  # a folder moved in part has none
            _move_into_place(staging, run.root)
            atomic_write_text(run.manifest, json.dumps(manifest, indent=2) + "\n")
        except UserError as e:  # named as the user knows it, not the staging folder
            raise UserError(str(e).replace(str(staging), str(run.root))) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
