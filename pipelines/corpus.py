"""Reading a parallel corpus: each split as a `datasets.Dataset` of string columns `src` and
`tgt`, with a record of where it came from (paths with hashes, or a dataset id and fingerprint).

Reads, as the config's `data` section names them, through `datasets` (so large corpora are
memory-mapped Arrow tables, not Python lists):
    local text pair   <path>/<split>.<src_lang> and <path>/<split>.<tgt_lang> (.gz read too)
    local table       <path>/<split file> as tsv, csv, json lines or parquet (tsv and csv
                      without a header row when data.columns names the columns in order)
    hub               datasets.load_dataset(<path>, <hub_config>, split=<split>)
    disk              datasets.load_from_disk(<path>)[<split>]
Dev and test are carved out of train where the config names none; the training splits of
data.corpora follow train's own. Writes only caches: of local files in the folder it is
given, of hub datasets where `datasets` keeps them.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import asdict, replace
from itertools import zip_longest
from pathlib import Path

from seq2seq.config import DataConfig
from seq2seq.errors import UserError
from seq2seq.io import count_lines, file_sha256, read_lines, write_error


def _datasets():
    """Import `datasets` quietly: its progress bars would bury ours, and what its own log
    says of a file it cannot read, the error we raise says in one line."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    return datasets


def _first_line(error: Exception) -> str:
    """What a reader's exception says, in one line (errors a user sees are one line)."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def _file_origin(path: Path) -> dict:
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def _describe(origin: dict) -> str:
    """Where a split came from, in a few words, for error messages."""
    if "src" in origin:
        return f"{origin['src']['path']} and {origin['tgt']['path']}"
    return str(origin.get("path") or origin.get("hub") or origin.get("disk"))


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


def _select_columns(dataset, data: DataConfig, where: str):
    """Map any table to columns `src` and `tgt` (flat columns or a nested translation dict)."""
    columns, field = dataset.column_names, data.translation_field
    src_col, tgt_col = data.src_column or data.src_lang, data.tgt_column or data.tgt_lang
    needed = {"data.translation_field": field}
    if field is None:
        needed = {"data.src_column or data.src_lang": src_col}
        needed["data.tgt_column or data.tgt_lang"] = tgt_col
    for key, column in needed.items():
        if column not in columns:
            listed = ", ".join(columns)
            raise UserError(f"{where}: no column '{column}' ({key}); columns are: {listed}")
    if field is not None:
        first = dataset[0][field] if len(dataset) else {}
        for lang in (data.src_lang, data.tgt_lang):
            if not isinstance(first, dict) or lang not in first:
                keys = ", ".join(first) if isinstance(first, dict) else type(first).__name__
                message = f"{where}: column '{field}' has no language '{lang}'; it has: {keys}"
                raise UserError(message)

    def pick(batch):
        if field is None:
            src, tgt = batch[src_col], batch[tgt_col]
        else:
            src = [row[data.src_lang] for row in batch[field]]
            tgt = [row[data.tgt_lang] for row in batch[field]]
        return {"src": [s or "" for s in src], "tgt": [t or "" for t in tgt]}

    return dataset.map(pick, batched=True, remove_columns=columns)


def _load_text_pair(data: DataConfig, name: str, cache_dir: Path):
    """`<path>/<name>.<src_lang>` and `<path>/<name>.<tgt_lang>`, line by line."""
    datasets = _datasets()
    src_path = _existing(Path(data.path) / f"{name}.{data.src_lang}")
    tgt_path = _existing(Path(data.path) / f"{name}.{data.tgt_lang}")
    if src_path.stat().st_size == 0 and tgt_path.stat().st_size == 0:
        raise UserError(
            f"{src_path} and {tgt_path} are empty: the split '{name}' has no "
            "sentence pairs; expected a non-empty split"
        )
    features = datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")})
    try:
        dataset = datasets.Dataset.from_generator(
            _text_pairs, gen_kwargs={"src_path": src_path, "tgt_path": tgt_path},
            features=features, cache_dir=str(cache_dir),
        )  # fmt: skip
    except datasets.exceptions.DatasetGenerationError as e:
        if isinstance(e.__cause__, UserError):  # raised by _text_pairs: the user's to fix
            raise e.__cause__ from None
        raise
    return dataset, {"src": _file_origin(src_path), "tgt": _file_origin(tgt_path)}


def _load_table(data: DataConfig, name: str, cache_dir: Path):
    """`<path>/<name>` as tsv, csv, json lines or parquet, a column per language."""
    datasets = _datasets()
    path = Path(data.path) / name
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    builder = "csv" if data.format == "tsv" else data.format
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
        if write_error(e):  # but a full disk: for the caller to name
            raise
        message = "invalid UTF-8" if isinstance(e.__cause__, UnicodeDecodeError) else _first_line(e)
        raise UserError(f"{path}: cannot read as {data.format} ({message})") from None
    return _select_columns(dataset, data, str(path)), _file_origin(path)


def _load_hub(data: DataConfig, name: str):
    """`datasets.load_dataset(<path>, <hub_config>, split=<name>)`."""
    datasets = _datasets()
    where = f"hub dataset '{data.path}' (config {data.hub_config}, split '{name}')"
    try:
        dataset = datasets.load_dataset(data.path, data.hub_config, split=name)
    except Exception as e:  # network, missing dataset or split: all a user's to fix
        raise UserError(f"{where}: cannot load ({_first_line(e)})") from None
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


def load_split(data: DataConfig, name: str, cache_dir: Path):
    """One split as a `datasets.Dataset` with string columns `src` and `tgt`, and its origin."""
    if data.source == "local" and data.format == "text":
        return _load_text_pair(data, name, cache_dir)
    if data.source == "local":
        return _load_table(data, name, cache_dir)
    return _load_hub(data, name) if data.source == "hub" else _load_disk(data, name)


def load_corpus(data: DataConfig, cache_dir: Path) -> tuple[dict, dict]:
    """The train, dev and test datasets, carving dev/test out of train where not given, and
    their origins; the training pairs of data.corpora follow train's own, in their order."""
    train, train_origin = load_split(data, data.train, cache_dir)
    splits, origins = {}, {"train": train_origin}
    given = {"dev": (data.dev, data.dev_size), "test": (data.test, data.test_size)}
    for split, (name, size) in given.items():
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
    extra, extra_origins = [], []
    for i, corpus in enumerate(data.corpora):  # read as the data section reads its own
        own = {k: v for k, v in asdict(corpus).items() if k != "weight" and v is not None}
        where = replace(data, **own, corpora=())
        dataset, origin = load_split(where, corpus.train, cache_dir / f"corpus{i}")
        if len(dataset) == 0:
            raise UserError(f"{_describe(origin)}: data.corpora[{i}] has no sentence pairs")
        extra.append(dataset)
        extra_origins.append(origin)
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


def local_inputs(data: DataConfig) -> list[Path]:
    """The corpus files a local source reads (those that exist)."""
    if data.source != "local":
        return []
    names = [name for name in (data.train, data.dev, data.test) if name is not None]
    if data.format == "text":
        langs, gzs = (data.src_lang, data.tgt_lang), ("", ".gz")
        names = [f"{name}.{lang}{gz}" for name in names for lang in langs for gz in gzs]
    return [Path(data.path) / name for name in names if (Path(data.path) / name).is_file()]
