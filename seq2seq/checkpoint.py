"""Checkpoints: one self-contained safetensors file per model.

A checkpoint holds the weights, the SentencePiece model(s) as byte tensors, and in its
metadata the model config, vocabulary and default search settings as JSON. Loading never
runs code (safetensors has no pickle), and a new process rebuilds the model from the file
alone. Files are written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .config import CleaningConfig, ModelConfig, SearchConfig, from_dict, to_dict
from .errors import UserError
from .io import atomic_write_bytes
from .model import Seq2Seq
from .tokenizer import Tokenizer
from .vocab import Vocab

FORMAT = "seq2seq-checkpoint"
VERSION = 1


def write_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write tensors and string metadata atomically; the same contents, the same bytes."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, _in_order(safetensors_bytes(tensors, metadata=metadata)))


def _in_order(blob: bytes) -> bytes:
    """The safetensors file with its JSON header's keys sorted: safetensors writes them in
    the order of a hash map that is seeded anew in every process, so two runs that train
    the same weights would otherwise write files that differ. The data is left as it is."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    ordered = {key: header[key] for key in sorted(header)}
    if "__metadata__" in ordered:
        ordered["__metadata__"] = dict(sorted(ordered["__metadata__"].items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors keeps it
    return b"".join([len(text).to_bytes(8, "little"), text, memoryview(blob)[8 + size :]])


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read all tensors and the metadata; a missing, truncated or foreign file is a UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{path}: is a folder; name checkpoint files, or one run folder with --best K, "
            "--last K or --choose"
        )
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"{path}: not a readable safetensors file ({e}); it may be truncated or corrupted"
        ) from None
    return tensors, metadata


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the second name of a tied (shared) tensor."""
    first = {}  # data pointer -> (name, tensor) of the first name that holds it
    for name, tensor in model.state_dict().items():
        first.setdefault(tensor.data_ptr(), (name, tensor))
    return dict(first.values())


@dataclass
class Checkpoint:
    model: Seq2Seq
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    search: SearchConfig  # the defaults translation uses unless told otherwise
    info: dict  # training step, dev scores, ...
    shortlist: torch.Tensor | None = None  # for search.shortlist; None in older checkpoints


def save_checkpoint(
    path: str | Path,
    model: Seq2Seq,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    search: SearchConfig,
    info: dict,
    shortlist: torch.Tensor | None = None,
) -> None:
    state = _unique_state(model)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:  # a diverged model is never published
        raise UserError(f"{path}: not written, weights are not finite ({', '.join(bad[:3])})")
    tensors = {f"model.{k}": v for k, v in state.items()}
    tensors["tokenizer.src"] = _bytes_tensor(src_tokenizer.proto)
    if tgt_tokenizer.proto != src_tokenizer.proto:
        tensors["tokenizer.tgt"] = _bytes_tensor(tgt_tokenizer.proto)
    if shortlist is not None:
        tensors["shortlist"] = shortlist
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "model": json.dumps(to_dict(model.config)),
        "vocab": json.dumps(asdict(model.vocab)),
        "search": json.dumps(to_dict(search)),
        "info": json.dumps(info),
    }
    write_safetensors(path, tensors, metadata)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model, tokenizers and search defaults from a checkpoint file."""
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not a seq2seq checkpoint (format {metadata.get('format')!r})")
    if metadata.get("version") != str(VERSION):
        raise UserError(
            f"{path}: checkpoint version {metadata.get('version')} is not supported "
            f"by this version of the toolkit (expected {VERSION})"
        )
    try:
        config = from_dict(ModelConfig, json.loads(metadata["model"]), "model")
        vocab = Vocab(**json.loads(metadata["vocab"]))
        search = from_dict(SearchConfig, json.loads(metadata["search"]), "search")
        info = json.loads(metadata["info"])
        cleaning = {key: info[key] for key in ("normalize", "max_pieces") if key in info}
        from_dict(CleaningConfig, cleaning, "info")  # how translation normalizes and cuts
        if not all(isinstance(code, str) for code in info.get("languages", {}).values()):
            raise TypeError("info.languages: expected a language code for src and tgt")
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as e:
        raise UserError(f"{path}: checkpoint metadata is incomplete or invalid ({e})") from None
    if "tokenizer.src" not in tensors:
        raise UserError(f"{path}: checkpoint lacks its SentencePiece model")
    inside = f"{path} (its SentencePiece model)"
    src_tokenizer = Tokenizer(bytes(tensors.pop("tokenizer.src").numpy()), inside)
    tgt = tensors.pop("tokenizer.tgt", None)
    tgt_tokenizer = src_tokenizer if tgt is None else Tokenizer(bytes(tgt.numpy()), inside)
    special = [getattr(tgt_tokenizer, f"{name}_id") for name in ("pad", "unk", "bos", "eos")]
    if vocab != Vocab(src_tokenizer.vocab_size, tgt_tokenizer.vocab_size, *special):
        raise UserError(f"{path}: checkpoint metadata 'vocab' does not match its tokenizer")

    model = Seq2Seq(config, vocab)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    for name, weight in state.items():  # training never writes one; a file from elsewhere may
        if weight.is_floating_point() and not torch.isfinite(weight).all():
            raise UserError(f"{path}: weight '{name}' holds NaN or infinite values")
    missing = sorted(set(_unique_state(model)) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match the model config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match the model config ({e})") from None
    table, rows = tensors.get("shortlist"), vocab.src_size + 1  # for search.shortlist, or None
    if table is not None and not (table.dtype == torch.int32 and table.dim() == 2 and
                                  len(table) == rows and table.numel() and
                                  0 <= table.min() <= table.max() < vocab.tgt_size):  # fmt: skip
        raise UserError(f"{path}: 'shortlist' is not an int32 table ({rows}, K) of target ids")
    return Checkpoint(model.to(device).eval(), src_tokenizer, tgt_tokenizer, search, info, table)


def average_checkpoints(paths: list[str | Path]) -> Checkpoint:
    """The element-wise mean of the weights of checkpoints of one model (same config and
    vocabulary), as a checkpoint that records what it averaged."""
    if not paths:
        raise UserError("no checkpoints to average")
    first = load_checkpoint(paths[0])
    weights = first.model.state_dict()
    total = {k: v.to(torch.float64, copy=True) for k, v in weights.items() if v.is_floating_point()}
    for path in paths[1:]:
        other = load_checkpoint(path)
        first.shortlist = other.shortlist if first.shortlist is None else first.shortlist
        if other.model.config != first.model.config or other.model.vocab != first.model.vocab:
            raise UserError(f"{path}: a different model than {paths[0]}; cannot average them")
        for key, value in other.model.state_dict().items():
            if key in total:
                total[key] += value.double()
    mean = {k: (v / len(paths)).to(weights[k].dtype) for k, v in total.items()}
    first.model.load_state_dict(mean, strict=False)  # integer buffers, if any, are the same in all
    first.info = {**first.info, "averaged": [str(p) for p in paths]}
    return first
