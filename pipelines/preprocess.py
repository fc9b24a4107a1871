"""Stage 1, preprocess: parallel corpus -> cleaned text, SentencePiece model(s), subword ids.

Reads the corpus named by the config's `data` section, through `datasets` (so large corpora
are memory-mapped Arrow tables, not Python lists):
    local text pair   <path>/<split>.<src_lang> and <path>/<split>.<tgt_lang> (.gz read too)
    local table       <path>/<split file> as tsv, csv, json lines or parquet
    hub               datasets.load_dataset(<path>, <hub_config>, split=<split>)
    disk              datasets.load_from_disk(<path>)[<split>]
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

import csv
import dataclasses
import json
import os
import random
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from hashlib import blake2b
from itertools import zip_longest
from pathlib import Path

import numpy as np

from seq2seq.batching import TokenSequenceWriter
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import Config, DataConfig, to_dict
from seq2seq.errors import UserError
from seq2seq.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    count_lines,
    file_sha256,
    read_lines,
)
from seq2seq.tokenizer import Tokenizer, normalize

from .layout import SPLITS, RunFolder, resolve_checkpoint

CHUNK = 10_000  # pairs handled at a time: memory stays flat in the corpus size


def _datasets():
    """Import `datasets` quietly (its progress bars would bury ours)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


# --- reading the corpus ---------------------------------------------------------------------


def _existing(path: Path) -> Path:
    """`path` or `path.gz`, whichever exists; both is ambiguous."""
    gz = path.with_name(path.name + ".gz")
    if path.is_file() and gz.is_file():
        raise UserError(f"{path}: both it and {gz.name} exist; keep the one to read")
    if path.is_file():
        return path
    if gz.is_file():
        return gz
    raise UserError(f"{path}: no such file (nor {gz.name})")


def _text_pairs(src_path: Path, tgt_path: Path) -> Iterator[dict]:
    for src, tgt in zip_longest(read_lines(src_path), read_lines(tgt_path)):
        if src is None or tgt is None:
            raise UserError(
                f"{src_path} has {count_lines(src_path)} lines but {tgt_path} has "
                f"{count_lines(tgt_path)}; the two sides must have equal line counts"
            )
        yield {"src": src, "tgt": tgt}


def _from_generator(generator: Callable, kwargs: dict, cache_dir: Path):
    datasets = _datasets()
    features = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})
    try:
        return datasets.Dataset.from_generator(
            generator, gen_kwargs=kwargs, features=features, cache_dir=str(cache_dir)
        )
    except datasets.exceptions.DatasetGenerationError as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise


def _select_columns(dataset, data: DataConfig, where: str):
    """Map any table to columns `src` and `tgt` (flat columns or a nested translation dict)."""
    columns = dataset.column_names
    if data.translation_field is not None:
        field = data.translation_field
        if field not in columns:
            raise UserError(
                f"{where}: no column '{field}' (data.translation_field); columns "
                f"are: {', '.join(columns)}"
            )
        first = dataset[0][field] if len(dataset) else {}
        for lang in (data.src_lang, data.tgt_lang):
            if not isinstance(first, dict) or lang not in first:
                keys = ", ".join(first) if isinstance(first, dict) else type(first).__name__
                raise UserError(
                    f"{where}: column '{field}' has no language '{lang}'; it has: {keys}"
                )

        def unnest(batch):
            return {
                "src": [row[data.src_lang] or "" for row in batch[field]],
                "tgt": [row[data.tgt_lang] or "" for row in batch[field]],
            }

        return dataset.map(unnest, batched=True, remove_columns=columns)
    src_col = data.src_column or data.src_lang
    tgt_col = data.tgt_column or data.tgt_lang
    for key, col in (("src", src_col), ("tgt", tgt_col)):
        if col not in columns:
            raise UserError(
                f"{where}: no column '{col}' (data.{key}_column or data.{key}_lang); "
                f"columns are: {', '.join(columns)}"
            )

    def pick(batch):
        return {"src": [s or "" for s in batch[src_col]], "tgt": [t or "" for t in batch[tgt_col]]}

    return dataset.map(pick, batched=True, remove_columns=columns)


def load_split(data: DataConfig, name: str, cache_dir: Path):
    """One split as a `datasets.Dataset` with string columns `src` and `tgt`, and a record of
    where it came from (paths with hashes, or the dataset id and fingerprint)."""
    if data.source == "local" and data.format == "text":
        return _load_text_pair(data, name, cache_dir)
    if data.source == "local":
        return _load_table(data, name, cache_dir)
    if data.source == "hub":
        return _load_hub(data, name)
    return _load_disk(data, name)


def _file_origin(path: Path) -> dict:
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def _load_text_pair(data: DataConfig, name: str, cache_dir: Path):
    """`<path>/<name>.<src_lang>` and `<path>/<name>.<tgt_lang>`, line by line."""
    folder = Path(data.path)
    src_path = _existing(folder / f"{name}.{data.src_lang}")
    tgt_path = _existing(folder / f"{name}.{data.tgt_lang}")
    if src_path.stat().st_size == 0 and tgt_path.stat().st_size == 0:
        raise UserError(
            f"{src_path} and {tgt_path} are empty: the split '{name}' has no "
            "sentence pairs; expected a non-empty split"
        )
    dataset = _from_generator(_text_pairs, {"src_path": src_path, "tgt_path": tgt_path}, cache_dir)
    return dataset, {"src": _file_origin(src_path), "tgt": _file_origin(tgt_path)}


def _load_table(data: DataConfig, name: str, cache_dir: Path):
    """`<path>/<name>` as tsv, csv, json lines or parquet, a column per language."""
    datasets = _datasets()
    path = Path(data.path) / name
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    builder = {"tsv": "csv", "csv": "csv", "json": "json", "parquet": "parquet"}[data.format]
    options = {"sep": "\t", "quoting": csv.QUOTE_NONE} if data.format == "tsv" else {}
    if data.columns is not None:  # no header row: the columns are named in order
        if builder != "csv":
            raise UserError(f"config key 'data.columns': only for tsv and csv, not {data.format}")
        options["column_names"] = list(data.columns)
    if data.format != "parquet":  # a byte-order mark is dropped, as every reader does
        options["encoding"] = "utf-8-sig"
    try:
        dataset = datasets.load_dataset(
            builder, data_files={"split": str(path)}, split="split", cache_dir=str(cache_dir),
            **options,
        )  # fmt: skip
    except Exception as e:  # the readers raise many types; all mean "cannot parse"
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e.__cause__, UnicodeDecodeError):
            message = "invalid UTF-8"
        raise UserError(f"{path}: cannot read as {data.format} ({message})") from None
    return _select_columns(dataset, data, str(path)), _file_origin(path)


def _load_hub(data: DataConfig, name: str):
    """`datasets.load_dataset(<path>, <hub_config>, split=<name>)`."""
    datasets = _datasets()
    where = f"hub dataset '{data.path}' (config {data.hub_config}, split '{name}')"
    try:
        dataset = datasets.load_dataset(data.path, data.hub_config, split=name)
    except Exception as e:  # network, missing dataset or split: all a user's to fix
        raise UserError(f"{where}: cannot load ({str(e).strip().splitlines()[0]})") from None
    origin = {"hub": data.path, "config": data.hub_config, "split": name}
    return _select_columns(dataset, data, where), {**origin, "fingerprint": dataset._fingerprint}


def _load_disk(data: DataConfig, name: str):
    """A split of a dataset written by `save_to_disk`."""
    datasets = _datasets()
    path = Path(data.path)
    if not path.exists():
        raise UserError(f"{path}: no such saved dataset folder")
    try:
        saved = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(saved, datasets.DatasetDict):
        if name not in saved:
            raise UserError(f"{path}: no split '{name}'; splits are: {', '.join(saved)}")
        saved = saved[name]
    elif name != data.train:
        raise UserError(f"{path}: holds one split; set data.{name} to null to carve it from train")
    origin = {"disk": str(path), "split": name, "fingerprint": saved._fingerprint}
    return _select_columns(saved, data, f"{path} split '{name}'"), origin


def extra_corpora(data: DataConfig, cache_dir: Path) -> tuple[list, list[dict]]:
    """The training splits of data.corpora, read as the data section reads its own."""
    datasets, origins = [], []
    for i, corpus in enumerate(data.corpora):
        own = {k: v for k, v in dataclasses.asdict(corpus).items() if v is not None}
        del own["weight"]
        where = dataclasses.replace(data, **own, corpora=())
        dataset, origin = load_split(where, corpus.train, cache_dir / f"corpus{i}")
        if len(dataset) == 0:
            raise UserError(f"{_describe(origin)}: data.corpora[{i}] has no sentence pairs")
        datasets.append(dataset)
        origins.append(origin)
    return datasets, origins


def load_corpus(data: DataConfig, cache_dir: Path) -> tuple[dict, dict]:
    """The train, dev and test datasets, carving dev/test out of train where not given;
    the training pairs of data.corpora follow train's own, in their order."""
    train, train_origin = load_split(data, data.train, cache_dir)
    splits, origins = {}, {"train": train_origin}
    for split, name, size in (
        ("dev", data.dev, data.dev_size),
        ("test", data.test, data.test_size),
    ):
        if name is not None:
            splits[split], origins[split] = load_split(data, name, cache_dir)
            continue
        if len(train) <= size:
            raise UserError(
                f"data.{split} is null, so {size} pairs (data.{split}_size) are carved "
                f"out of train, but train has only {len(train)} pairs"
            )
        parts = train.train_test_split(test_size=size, seed=data.seed, shuffle=True)
        train, splits[split] = parts["train"], parts["test"]
        origins[split] = {"carved_from": "train", "pairs": size, "seed": data.seed}
    if data.max_pairs is not None and len(train) > data.max_pairs:
        keep = sorted(random.Random(data.seed).sample(range(len(train)), data.max_pairs))
        train = train.select(keep)
    extra, extra_origins = extra_corpora(data, cache_dir)
    if extra:
        origins["corpora"] = extra_origins
        origins["corpus_sizes"] = [len(train)] + [len(dataset) for dataset in extra]
        train = _datasets().concatenate_datasets([train, *extra])
    splits["train"] = train
    for split, dataset in splits.items():
        if len(dataset) == 0:
            raise UserError(
                f"{_describe(origins[split])}: the {split} split has no sentence "
                "pairs; expected a non-empty split"
            )
    return splits, origins


def _describe(origin: dict) -> str:
    """Where a split came from, in a few words, for error messages."""
    if "src" in origin:
        return f"{origin['src']['path']} and {origin['tgt']['path']}"
    return str(origin.get("path") or origin.get("hub") or origin.get("disk"))


# --- cleaning -------------------------------------------------------------------------------


def _batches(dataset) -> Iterator[tuple[list[str], list[str]]]:
    for batch in dataset.iter(batch_size=CHUNK):
        yield batch["src"], batch["tgt"]


def clean_text(dataset, data: DataConfig, filtered: bool, src_out, tgt_out, sizes=None):
    """Normalize every pair; when `filtered`, drop empty and over-long pairs. Writes the pairs
    as lines and returns counts for each step, and (when de-duplicating) a mask of the lines
    to keep: the first of each set of identical pairs. With `sizes` (of the corpora that
    follow each other in `dataset`), counts["origin"] holds each written line's corpus.

    Duplicates are found from one 64-bit hash per pair, 8 bytes a pair instead of a set of
    strings, so memory stays small however large the corpus."""
    cleaning = data.cleaning
    counts = {"input": 0, "empty": 0, "too_many_chars": 0, "duplicate": 0}
    hashes = array("Q") if filtered and cleaning.dedupe else None
    ends, origin = np.cumsum(sizes or [0]), array("H")
    for src_batch, tgt_batch in _batches(dataset):
        for src, tgt in zip(src_batch, tgt_batch):
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
    if sizes:
        counts["origin"] = origin
    if not hashes:
        return counts, None
    values = np.frombuffer(hashes, dtype=np.uint64)
    _, first = np.unique(values, return_index=True)
    keep = np.zeros(len(values), dtype=bool)
    keep[first] = True
    counts["duplicate"] = len(values) - len(first)
    return counts, keep


def _pairs(text: dict[str, Path], keep) -> Iterator[tuple[str, str]]:
    """The staged pairs, without the ones `keep` (a mask, or None for all) leaves out."""
    with (
        open(text["src"], encoding="utf-8") as src_file,
        open(text["tgt"], encoding="utf-8") as tgt_file,
    ):
        for i, (src, tgt) in enumerate(zip(src_file, tgt_file)):
            if keep is None or keep[i]:
                yield src.rstrip("\n"), tgt.rstrip("\n")


def _chunks(text: dict[str, Path], keep) -> Iterator[tuple[list[str], list[str]]]:
    src_chunk, tgt_chunk = [], []
    for src, tgt in _pairs(text, keep):
        src_chunk.append(src)
        tgt_chunk.append(tgt)
        if len(src_chunk) == CHUNK:
            yield src_chunk, tgt_chunk
            src_chunk, tgt_chunk = [], []
    if src_chunk:
        yield src_chunk, tgt_chunk


def train_tokenizers(text: dict[str, Path], keep, data: DataConfig) -> tuple[Tokenizer, Tokenizer]:
    """SentencePiece on the cleaned training text: one joint model, or one per language."""
    subwords = data.subwords
    if subwords.joint:

        def both() -> Iterator[str]:
            for src, tgt in _pairs(text, keep):
                yield src
                yield tgt

        joint = Tokenizer.train(both(), subwords, seed=data.seed)
        return joint, joint
    return (
        Tokenizer.train((src for src, _ in _pairs(text, keep)), subwords, seed=data.seed),
        Tokenizer.train((tgt for _, tgt in _pairs(text, keep)), subwords, seed=data.seed),
    )


def reused_tokenizers(name: str) -> tuple[Tokenizer, Tokenizer]:
    """The SentencePiece model(s) to reuse: a .model file (for both sides), or those of a
    checkpoint, model folder or run folder."""
    path = Path(name)
    if path.is_file() and path.suffix != ".safetensors":
        tokenizers = (Tokenizer.load(path),) * 2
    else:
        checkpoint = load_checkpoint(resolve_checkpoint(path))
        tokenizers = (checkpoint.src_tokenizer, checkpoint.tgt_tokenizer)
    for tokenizer in tokenizers:
        if min(tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) < 0:
            raise UserError(
                f"config key 'data.subwords.model': {name} lacks <pad>, <unk>, <s> or </s>; "
                "reuse a model this toolkit trained"
            )
    return tokenizers


def encode_split(
    text: dict[str, Path],
    keep,
    out: dict[str, Path],
    ids: dict[str, Path],
    tokenizers: tuple[Tokenizer, Tokenizer],
    data: DataConfig,
    filtered: bool,
    counts_in: dict | None = None,
) -> dict:
    """Encode a cleaned split into ids; when `filtered`, drop pairs too long in pieces or with
    a length ratio beyond the limit. Writes final text and ids; returns counts (and how many
    pairs of each corpus are kept, given the cleaning's record of where lines came from)."""
    cleaning = data.cleaning
    counts = {"too_many_pieces": 0, "length_ratio": 0, "kept": 0, "src_tokens": 0, "tgt_tokens": 0}
    origin = counts_in.pop("origin", None) if counts_in is not None else None
    if origin is not None:  # the corpus of each line that reaches this step, in order
        origin = iter(o for i, o in enumerate(origin) if keep is None or keep[i])
        counts["corpora"] = [0] * (len(data.corpora) + 1)
    with (
        atomic_open(out["src"]) as src_out,
        atomic_open(out["tgt"]) as tgt_out,
        TokenSequenceWriter(ids["src"]) as src_ids,
        TokenSequenceWriter(ids["tgt"]) as tgt_ids,
    ):
        for src_chunk, tgt_chunk in _chunks(text, keep):
            src_enc, tgt_enc = tokenizers[0].encode(src_chunk), tokenizers[1].encode(tgt_chunk)
            kept = []
            for i, (s, t) in enumerate(zip(src_enc, tgt_enc)):
                if filtered:
                    if len(s) > cleaning.max_pieces or len(t) > cleaning.max_pieces:
                        counts["too_many_pieces"] += 1
                        continue
                    if max(len(s), len(t)) > cleaning.max_ratio * max(1, min(len(s), len(t))):
                        counts["length_ratio"] += 1
                        continue
                kept.append(i)
            if origin is not None:
                corpora = [next(origin) for _ in src_chunk]
                for i in kept:
                    counts["corpora"][corpora[i]] += 1
            src_out.writelines(src_chunk[i] + "\n" for i in kept)
            tgt_out.writelines(tgt_chunk[i] + "\n" for i in kept)
            src_ids.write([src_enc[i] for i in kept])
            tgt_ids.write([tgt_enc[i] for i in kept])
        counts["kept"] = src_ids.count
        counts["src_tokens"], counts["tgt_tokens"] = src_ids.num_tokens, tgt_ids.num_tokens
    return counts


# --- the stage ------------------------------------------------------------------------------


def _staging_folder(run: RunFolder) -> Path:
    """A fresh folder on the same file system as the run folder, outside it."""
    anchor = run.root.resolve()
    while not anchor.exists():
        anchor = anchor.parent
    return Path(tempfile.mkdtemp(prefix=f".{run.root.name}.preprocess.", dir=anchor))


def local_inputs(data: DataConfig) -> list[Path]:
    """The corpus files a local source reads (those that exist)."""
    if data.source != "local":
        return []
    folder = Path(data.path)
    names = [name for name in (data.train, data.dev, data.test) if name is not None]
    if data.format != "text":
        return [folder / name for name in names if (folder / name).is_file()]
    candidates = [
        folder / f"{name}.{lang}{gz}"
        for name in names
        for lang in (data.src_lang, data.tgt_lang)
        for gz in ("", ".gz")
    ]
    return [path for path in candidates if path.is_file()]


def check_destinations(config: Config, run: RunFolder) -> None:
    """Refuse, before reading anything, a run folder that cannot be written or whose outputs
    would land on the corpus itself."""
    run.check_writable()
    for path in local_inputs(config.data):
        if run.preprocess_writes(path):
            raise UserError(
                f"{path}: the corpus file is where preprocess writes its output in {run.root}; "
                "choose another --run-dir"
            )


def preprocess(config: Config, run: RunFolder, log: Callable[[str], None] = print) -> dict:
    """Run the stage; returns the manifest it wrote."""
    data = config.data
    if not data.path:
        raise UserError("config key 'data.path': expected the corpus location, got nothing")
    check_destinations(config, run)
    staging = _staging_folder(run)
    try:
        manifest = _build(config, RunFolder(staging), log)
        _move_into_place(staging, run.root)
        atomic_write_text(run.manifest, json.dumps(manifest, indent=2) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build(config: Config, stage: RunFolder, log: Callable[[str], None]) -> dict:
    """Everything preprocess writes, built in the staging folder; returns the manifest."""
    data = config.data
    langs = {"src": data.src_lang, "tgt": data.tgt_lang}
    stage.data.mkdir(parents=True)
    log(f"preprocess: reading {data.source} corpus {data.path}")
    datasets, origins = load_corpus(data, stage.root / "cache")
    cleaned, keep, stats = _clean_splits(datasets, data, stage, origins.get("corpus_sizes"))
    del datasets
    if data.subwords.model is not None:
        log(f"preprocess: reusing the SentencePiece model(s) of {data.subwords.model}")
        tokenizers = reused_tokenizers(data.subwords.model)
    else:
        log(
            f"preprocess: training SentencePiece ({data.subwords.model_type}, "
            f"{data.subwords.vocab_size} pieces, {'joint' if data.subwords.joint else 'separate'})"
        )
        tokenizers = train_tokenizers(cleaned["train"], keep["train"], data)
    joint = tokenizers[0].proto == tokenizers[1].proto
    if joint:
        tokenizer_files = {"src": "spm.model", "tgt": "spm.model"}
    else:
        tokenizer_files = {side: f"spm.{lang}.model" for side, lang in langs.items()}
    for side, tokenizer in zip(langs, tokenizers):
        atomic_write_bytes(stage.root / tokenizer_files[side], tokenizer.proto)
    splits = {
        split: _encode(split, cleaned[split], keep[split], stats[split], tokenizers, data, stage)
        for split in SPLITS
    }
    for split in SPLITS:
        log(f"preprocess: {split}: {stats[split]['input']} pairs in, {stats[split]['kept']} kept")
    shutil.rmtree(stage.root / "cache", ignore_errors=True)
    return {
        "format": "seq2seq-run",
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "languages": langs,
        "tokenizer": {
            "joint": joint,
            **tokenizer_files,
            "src_vocab_size": tokenizers[0].vocab_size,
            "tgt_vocab_size": tokenizers[1].vocab_size,
        },
        "splits": splits,
        "inputs": origins,
        "cleaning": stats,
        "data": to_dict(config.data),  # what made these files (train's config: config.yaml)
    }


def _clean_splits(datasets: dict, data: DataConfig, stage: RunFolder, sizes_of_corpora=None):
    """Normalize (and for train, filter) every split into staged text files: their paths,
    the masks of lines to keep (de-duplication), and the counts of each split."""
    cleaned, keep, stats = {}, {}, {}
    for split in SPLITS:
        filtered = split == "train" or data.cleaning.filter_dev_test
        cleaned[split] = {side: stage.root / f"{split}.clean.{side}" for side in ("src", "tgt")}
        with (
            atomic_open(cleaned[split]["src"]) as src_out,
            atomic_open(cleaned[split]["tgt"]) as tgt_out,
        ):
            sizes = sizes_of_corpora if split == "train" else None
            stats[split], keep[split] = clean_text(
                datasets[split], data, filtered, src_out, tgt_out, sizes
            )
    if count_lines(cleaned["train"]["src"]) == 0:
        raise UserError(
            f"the training split is empty after cleaning ({stats['train']}); "
            "check data.train and data.cleaning"
        )
    return cleaned, keep, stats


def _encode(split, cleaned, keep, stats, tokenizers, data: DataConfig, stage: RunFolder) -> dict:
    """Encode one cleaned split into its final text and ids; its manifest entry."""
    langs = {"src": data.src_lang, "tgt": data.tgt_lang}
    filtered = split == "train" or data.cleaning.filter_dev_test
    out = {side: stage.text(split, lang) for side, lang in langs.items()}
    ids = {side: stage.ids(split, lang) for side, lang in langs.items()}
    stats.update(encode_split(cleaned, keep, out, ids, tokenizers, data, filtered, stats))
    for side in langs:
        os.remove(cleaned[side])
    if stats["kept"] == 0:
        raise UserError(f"the {split} split is empty after cleaning ({stats})")
    rel = {side: str(out[side].relative_to(stage.root)) for side in langs}
    return {
        **rel,
        "src_ids": rel["src"],
        "tgt_ids": rel["tgt"],
        "pairs": stats["kept"],
        "src_tokens": stats["src_tokens"],
        "tgt_tokens": stats["tgt_tokens"],
        "src_bytes": out["src"].stat().st_size,
        "tgt_bytes": out["tgt"].stat().st_size,
        **({"corpora": stats["corpora"]} if "corpora" in stats else {}),  # pairs of each
    }


def _move_into_place(staging: Path, root: Path) -> None:
    """Move every staged file to the same place under `root` (each move is atomic)."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = root / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
