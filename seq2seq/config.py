"""One typed config tree: frozen dataclasses, loaded from YAML and validated on load.

    Config
    ├── data: DataConfig        corpus source, cleaning, subwords
    ├── model: ModelConfig      encoder, attention, decoder
    ├── train: TrainConfig      batches, optimizer, schedule, validation, budgets
    └── search: SearchConfig    beam search and translation batches

Each component owns its defaults here. A YAML file sets any subset of keys; command-line
overrides use dotted keys (`--model.encoder.hidden_size=512`). Unknown keys, wrong types and
out-of-range values are a UserError that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError

Cell = Literal["rnn", "gru", "lstm"]


def _check(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise UserError(f"config key '{key}': expected {expected}, got {value!r}")


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleaningConfig:
    """Filters for the training pairs (dev and test are only normalized, unless asked)."""

    normalize: Literal["nfc", "nfkc", "none"] = "nfc"  # Unicode normalization form
    max_chars: int = 1000  # drop pairs with a side longer than this many characters
    max_pieces: int = 250  # drop pairs with a side longer than this many subword pieces
    max_ratio: float = 3.0  # drop pairs whose piece counts differ by more than this factor
    dedupe: bool = True  # drop exact duplicate pairs
    filter_dev_test: bool = False  # also filter dev and test (never done by default)

    def __post_init__(self):
        _check(self.max_chars > 0, "data.cleaning.max_chars", "a positive integer", self.max_chars)
        _check(
            self.max_pieces > 0, "data.cleaning.max_pieces", "a positive integer", self.max_pieces
        )
        _check(self.max_ratio >= 1, "data.cleaning.max_ratio", "a number >= 1", self.max_ratio)


@dataclass(frozen=True)
class SubwordConfig:
    """SentencePiece training options (trained on the training split only)."""

    model_type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    joint: bool = True  # one model for both languages (needed to tie source/target embeddings)
    character_coverage: float = 1.0
    byte_fallback: bool = False  # spell unknown characters as bytes instead of <unk>
    user_symbols: tuple[str, ...] = ()  # pieces kept whole, such as tags
    input_sentence_size: int = 300_000  # sampled sentences SentencePiece trains on (bounds memory)
    # Subword regularization: 0 trains on the best segmentation; > 0 samples one afresh each
    # time a training pair is batched. Unigram (Kudo, 2018): from all segmentations
    # (nbest_size -1) or the n best, smaller alpha giving more varied samples; bpe: alpha is
    # the BPE-dropout probability (Provilkov et al., 2020), nbest_size unused. Drawn by
    # segmentation.py: the same samples from the same seed in every process.
    sampling_alpha: float = 0.0
    nbest_size: int = -1

    def __post_init__(self):
        _check(self.vocab_size >= 8, "data.subwords.vocab_size", "an integer >= 8", self.vocab_size)
        _check(
            0 < self.character_coverage <= 1,
            "data.subwords.character_coverage",
            "a number in (0, 1]",
            self.character_coverage,
        )
        _check(
            self.input_sentence_size > 0,
            "data.subwords.input_sentence_size",
            "a positive integer",
            self.input_sentence_size,
        )
        _check(
            self.sampling_alpha >= 0,
            "data.subwords.sampling_alpha",
            "a number >= 0 (0: no sampling)",
            self.sampling_alpha,
        )
        _check(
            self.sampling_alpha < 1 or self.model_type == "unigram",
            "data.subwords.sampling_alpha",
            "a dropout probability below 1 for a bpe model",
            self.sampling_alpha,
        )
        _check(
            self.nbest_size == -1 or 1 < self.nbest_size <= 512,
            "data.subwords.nbest_size",
            "-1 (all segmentations) or an integer from 2 to 512 (SentencePiece's n best)",
            self.nbest_size,
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the parallel corpus comes from and how it is prepared.

    source "local": `path` is a folder; each split names a file in it. For format "text" a
    split `train` means the pair `train.<src_lang>` and `train.<tgt_lang>` (".gz" optional);
    for tsv/csv/json/parquet it is one file with a column per language.
    source "hub": `path` is a Hugging Face dataset id, `hub_config` its config name, and each
    split names a dataset split. source "disk": `path` is a folder written by `save_to_disk`.
    Relative paths are resolved against the folder of the config file.
    """

    source: Literal["local", "hub", "disk"] = "local"
    path: str = ""
    format: Literal["text", "tsv", "csv", "json", "parquet"] = "text"
    hub_config: str | None = None
    train: str = "train"
    dev: str | None = "dev"  # None: carve dev_size pairs out of train (seeded)
    test: str | None = "test"  # None: carve test_size pairs out of train (seeded)
    dev_size: int = 1000
    test_size: int = 1000
    src_lang: str = "en"
    tgt_lang: str = "de"
    src_column: str | None = None  # column names when they are not the language codes
    tgt_column: str | None = None
    translation_field: str | None = None  # nested dict column, e.g. "translation" (wmt16)
    max_pairs: int | None = None  # sample at most this many training pairs (seeded)
    seed: int = 1
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    subwords: SubwordConfig = field(default_factory=SubwordConfig)

    def __post_init__(self):
        _check(self.seed >= 0, "data.seed", "an integer >= 0", self.seed)
        _check(
            self.src_lang != self.tgt_lang or self.src_column != self.tgt_column,
            "data.tgt_lang",
            "a language different from data.src_lang",
            self.tgt_lang,
        )
        _check(
            self.max_pairs is None or self.max_pairs > 0,
            "data.max_pairs",
            "a positive integer or null",
            self.max_pairs,
        )
        _check(self.dev_size > 0, "data.dev_size", "a positive integer", self.dev_size)
        _check(self.test_size > 0, "data.test_size", "a positive integer", self.test_size)


# --- model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderConfig:
    cell: Cell = "gru"  # rnn: h_t = tanh(W [h_{t-1}; x_t] + b)
    hidden_size: int = 256  # per direction; the encoder states are twice this when bidirectional
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2  # between layers

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)


@dataclass(frozen=True)
class AttentionConfig:
    # dot and scaled_dot need decoder.hidden_size == encoder output size; general is
    # Luong's bilinear q W k; additive is Bahdanau's v . tanh(W q + U k); multihead runs
    # `heads` scaled-dot heads over projections of size hidden_size; none ablates attention.
    scoring: Literal["none", "dot", "general", "additive", "scaled_dot", "multihead"] = "additive"
    hidden_size: int = 256  # additive MLP size, multihead projection size
    heads: int = 4  # multihead only


@dataclass(frozen=True)
class DecoderConfig:
    cell: Cell = "gru"
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.2  # between layers
    input_feeding: bool = False  # feed the previous attentional vector to the RNN (Luong)
    # initial state: a learned projection of the final encoder states, zeros, or the final
    # encoder states themselves (an LSTM decoder's cell then starts at zero)
    init: Literal["bridge", "zero", "last"] = "bridge"
    combine: Literal["concat", "add"] = "concat"  # tanh(W [h; c]) or h + W c


@dataclass(frozen=True)
class ModelConfig:
    embedding_size: int = 256
    embedding_dropout: float = 0.2
    output_dropout: float = 0.2  # on the attentional vector, before the output layer
    tie_embeddings: bool = False  # share source and target embeddings (joint vocabulary)
    tie_output: bool = False  # share the output layer with the target embeddings
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def __post_init__(self):
        enc, dec, att = self.encoder, self.decoder, self.attention
        for key, value in [
            ("embedding_size", self.embedding_size),
            ("encoder.hidden_size", enc.hidden_size),
            ("encoder.num_layers", enc.num_layers),
            ("decoder.hidden_size", dec.hidden_size),
            ("decoder.num_layers", dec.num_layers),
            ("attention.hidden_size", att.hidden_size),
            ("attention.heads", att.heads),
        ]:
            _check(value > 0, f"model.{key}", "a positive integer", value)
        for key, value in [
            ("embedding_dropout", self.embedding_dropout),
            ("output_dropout", self.output_dropout),
            ("encoder.dropout", enc.dropout),
            ("decoder.dropout", dec.dropout),
        ]:
            _check(0 <= value < 1, f"model.{key}", "a number in [0, 1)", value)
        if att.scoring in ("dot", "scaled_dot"):
            _check(
                dec.hidden_size == enc.output_size,
                "model.decoder.hidden_size",
                f"the encoder output size {enc.output_size} for {att.scoring} attention "
                "(or use general, additive or multihead scoring)",
                dec.hidden_size,
            )
        if att.scoring == "multihead":
            _check(
                att.hidden_size % att.heads == 0,
                "model.attention.hidden_size",
                f"a multiple of attention.heads ({att.heads})",
                att.hidden_size,
            )
        if dec.init == "last":
            _check(
                dec.hidden_size == enc.output_size,
                "model.decoder.hidden_size",
                f"the encoder output size {enc.output_size} for init 'last'",
                dec.hidden_size,
            )
            _check(
                dec.num_layers == enc.num_layers,
                "model.decoder.num_layers",
                f"encoder.num_layers ({enc.num_layers}) for init 'last'",
                dec.num_layers,
            )
        if att.scoring == "none":
            _check(
                not dec.input_feeding,
                "model.decoder.input_feeding",
                "false when attention.scoring is none",
                dec.input_feeding,
            )


# --- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    device: str = "auto"  # auto (cuda when there is one), cpu, cuda, cuda:N
    # auto: bf16 where it is faster (CPUs with native bf16), else fp32 (see device.py);
    # bf16/fp16: autocast; fp16 scales the loss (CUDA only)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int = 0  # CPU threads for torch; 0: one per core
    # Processes sampling segmentations ahead of training (data.subwords.sampling_alpha > 0);
    # null: none on a CPU (they would take its cores), up to 4 beside a GPU.
    sampling_workers: int | None = None
    batch_type: Literal["tokens", "sentences"] = "tokens"
    batch_size: int = 4096  # per batch: padded tokens (max of source and target) or sentences
    accumulate: int = 1  # batches per optimizer step
    bucket: bool = True  # batch pairs of similar length together (less padding); false: random
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: Literal["constant", "inverse_sqrt", "plateau", "cosine"] = "constant"
    warmup_steps: int = 0  # linear warmup from 0 to lr, then the schedule
    min_lr: float = 1e-6  # floor for plateau and cosine
    plateau_factor: float = 0.5  # plateau: multiply lr by this ...
    plateau_patience: int = 3  # ... after this many validations without dev BLEU gain
    clip_grad_norm: float = 1.0  # 0: no clipping
    label_smoothing: float = 0.1
    word_dropout: float = 0.0  # replace this fraction of input words with <unk>
    max_steps: int = 0  # 0: no limit
    max_epochs: int = 0  # 0: no limit
    max_time: float = 0.0  # seconds of training; 0: no limit
    validate_every: int = 1000  # steps
    dev_beam_size: int = 1  # beam size for dev BLEU (1: greedy, the fastest)
    patience: int = 0  # stop after this many validations without dev BLEU gain; 0: never
    keep_best: int = 1  # best checkpoints kept as model/best-<step> (by dev BLEU), if > 1
    keep_last: int = 1  # latest validated checkpoints kept as model/last-<step>, if > 1
    log_every: int = 100  # steps between log lines

    def __post_init__(self):
        for key in (
            "batch_size",
            "accumulate",
            "validate_every",
            "log_every",
            "keep_best",
            "keep_last",
            "dev_beam_size",
        ):
            _check(getattr(self, key) > 0, f"train.{key}", "a positive integer", getattr(self, key))
        for key in ("max_steps", "max_epochs", "warmup_steps", "patience", "threads", "seed"):
            _check(getattr(self, key) >= 0, f"train.{key}", "an integer >= 0", getattr(self, key))
        _check(
            self.sampling_workers is None or self.sampling_workers >= 0,
            "train.sampling_workers",
            "an integer >= 0, or null (chosen by device)",
            self.sampling_workers,
        )
        _check(self.lr > 0, "train.lr", "a positive number", self.lr)
        for key in ("min_lr", "weight_decay"):
            _check(getattr(self, key) >= 0, f"train.{key}", "a number >= 0", getattr(self, key))
        _check(
            self.plateau_patience >= 0,
            "train.plateau_patience",
            "an integer >= 0",
            self.plateau_patience,
        )
        _check(self.max_time >= 0, "train.max_time", "seconds >= 0", self.max_time)
        _check(
            self.clip_grad_norm >= 0, "train.clip_grad_norm", "a number >= 0", self.clip_grad_norm
        )
        _check(
            0 <= self.label_smoothing < 1,
            "train.label_smoothing",
            "a number in [0, 1)",
            self.label_smoothing,
        )
        _check(
            0 <= self.word_dropout < 1,
            "train.word_dropout",
            "a number in [0, 1)",
            self.word_dropout,
        )
        _check(
            all(0 <= b < 1 for b in self.betas), "train.betas", "two numbers in [0, 1)", self.betas
        )
        _check(
            0 < self.plateau_factor < 1,
            "train.plateau_factor",
            "a number in (0, 1)",
            self.plateau_factor,
        )
        _check(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
            "train.device",
            "auto, cpu, cuda or cuda:N",
            self.device,
        )


# --- search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchConfig:
    beam_size: int = 5  # 1: greedy
    length_penalty: float = 1.0  # GNMT alpha: score / ((5 + length) / 6) ** alpha; 0: none
    max_len_a: float = 1.5  # output length limit: a * source length + b tokens
    max_len_b: int = 10
    min_len: int = 1  # tokens before end-of-sentence may be chosen
    n_best: int = 1  # hypotheses returned per sentence
    no_repeat_ngram: int = 0  # block any repeated n-gram of this size; 0: off
    batch_size: int = 64  # sentences per batch
    max_tokens: int = 0  # if > 0, batch by source tokens instead of batch_size
    cuda_graphs: bool = False  # on a GPU, replay the decoder step as CUDA graphs

    def __post_init__(self):
        _check(self.beam_size >= 1, "search.beam_size", "an integer >= 1", self.beam_size)
        _check(
            1 <= self.n_best <= self.beam_size,
            "search.n_best",
            f"an integer from 1 to beam_size ({self.beam_size})",
            self.n_best,
        )
        _check(
            self.length_penalty >= 0, "search.length_penalty", "a number >= 0", self.length_penalty
        )
        for key in ("max_len_a", "max_len_b"):
            _check(getattr(self, key) >= 0, f"search.{key}", "a number >= 0", getattr(self, key))
        _check(
            self.max_len_a > 0 or self.max_len_b > 0,
            "search.max_len_b",
            "a positive limit when max_len_a is 0",
            self.max_len_b,
        )
        _check(self.min_len >= 0, "search.min_len", "an integer >= 0", self.min_len)
        _check(
            self.no_repeat_ngram >= 0,
            "search.no_repeat_ngram",
            "an integer >= 0",
            self.no_repeat_ngram,
        )
        _check(self.batch_size >= 1, "search.batch_size", "an integer >= 1", self.batch_size)
        _check(self.max_tokens >= 0, "search.max_tokens", "an integer >= 0", self.max_tokens)


@dataclass(frozen=True)
class ServeConfig:
    """`nmt serve`: where it listens, how it batches requests, and what it refuses."""

    host: str = "127.0.0.1"  # any other address opens the server to other machines
    port: int = 5000  # LibreTranslate's; 0 picks a free port (printed at start)
    max_wait_ms: float = 5.0  # how long a batch waits for the requests that usually join it
    batch_tokens: int = 4096  # source tokens one batch gathers at most
    max_queue: int = 256  # texts waiting for a batch; a request beyond it gets 503
    max_texts: int = 64  # texts in one request; more get 413
    max_body_bytes: int = 1_048_576  # a request body larger gets 413
    max_beam_size: int = 16  # the widest beam (and most n-best) a request may ask for
    shutdown_seconds: float = 30.0  # after SIGTERM or Ctrl-C, time left to requests in flight

    def __post_init__(self):
        _check(0 <= self.port <= 65535, "serve.port", "a port from 0 to 65535", self.port)
        for key in ("max_wait_ms", "shutdown_seconds"):
            _check(getattr(self, key) >= 0, f"serve.{key}", "a number >= 0", getattr(self, key))
        for key in ("batch_tokens", "max_queue", "max_texts", "max_body_bytes", "max_beam_size"):
            _check(getattr(self, key) >= 1, f"serve.{key}", "an integer >= 1", getattr(self, key))


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str = "run"  # the run folder is runs/<name>; defaults to the config file's name
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self):
        _check(
            re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) is not None,
            "name",
            "letters, digits, '.', '_' or '-'",
            self.name,
        )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            "null" if a is type(None) else _type_name(a) for a in typing.get_args(tp)
        )
    if origin is tuple:
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert lists to tuples, ints to floats."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, {} if value is None else value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(
                f"config key '{key}': {value!r} is not allowed; expected {_type_name(tp)}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _convert(option, value, key)
                except UserError:
                    pass
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(
                f"config key '{key}': expected a list of {len(args)} items, got {value!r}"
            )
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp in (int, float):
        return _number(tp, value, key)
    ok = {bool: isinstance(value, bool), str: isinstance(value, str)}.get(tp)
    if ok is None:
        raise TypeError(f"unsupported config annotation {tp!r} at {key}")
    if not ok:
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


# How people write numbers: 0.001, 1e-3, 1E-3, +2, 1_000. PyYAML reads an exponent without a
# dot ("1e-3") as a string, so strings are parsed here; nan and infinity never make sense.
NUMBER = re.compile(r"[-+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][-+]?\d+)?")
NON_FINITE = re.compile(r"[-+]?\.?(nan|inf|infinity)", re.IGNORECASE)


LARGEST_INT = 2**62


def _number(tp: type, value: Any, key: str) -> int | float:
    """An int or float field's value, from a number or a string spelling one; finite only.
    An int field takes a float spelling of a whole number (1e4)."""
    given = value
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        text = value.strip().replace("_", "")
        value = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    non_finite = isinstance(value, float) and not math.isfinite(value)
    if non_finite or (isinstance(value, str) and NON_FINITE.fullmatch(value.strip())):
        raise UserError(f"config key '{key}': expected a finite number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is float:
        return float(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"config key '{key}': expected an integer, got {given!r}")
        value = int(value)
    if abs(value) >= LARGEST_INT:  # beyond any sensible size; past 2**63 torch overflows
        raise UserError(f"config key '{key}': expected an integer below 2**62, got {given!r}")
    return value


def from_dict(cls: type, raw: Any, prefix: str = ""):
    """Build the dataclass `cls` from a plain mapping, naming any bad key by its dotted path."""
    where = prefix or "the config file"
    if not isinstance(raw, dict):
        raise UserError(f"config key '{where}': expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"unknown config key '{dotted}'; allowed here: {', '.join(names)}")
        kwargs[key] = _convert(hints[key], value, dotted)
    return cls(**kwargs)


def to_dict(config) -> dict:
    """The config as plain JSON/YAML-ready data (tuples become lists)."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`--model.encoder.hidden_size=512` -> (["model", "encoder", "hidden_size"], 512)."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise UserError(f"override '{text}': expected --section.key=value")
    key, value = body.split("=", 1)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise UserError(f"override '{text}': expected --section.key=value")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML would
    keep the last one without a word, and the user would not know which value counts."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # a list or a mapping as a key
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {kind} cannot be a key", key_node.start_mark
                ) from None
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a YAML config file")
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; expected a YAML config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise UserError(f"{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, model, train, search)")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply dotted overrides, validate, and resolve relative data paths:
    against the config file's folder when the file sets data.path, against the current
    folder when the command line does."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), list(overrides))
    raw.setdefault("name", path.stem)
    config = from_dict(Config, raw)
    data = config.data
    typed = any(parse_override(text)[0] == ["data", "path"] for text in overrides)
    if data.source in ("local", "disk") and data.path and not Path(data.path).is_absolute():
        resolved = str(((Path.cwd() if typed else path.parent) / data.path).resolve())
        config = dataclasses.replace(config, data=dataclasses.replace(data, path=resolved))
    return config


def override_search(base: SearchConfig, changes: dict[str, Any]) -> SearchConfig:
    """`base` (a checkpoint's search section) with `changes` by key, checked like the config
    file. A new beam size also caps n_best unless n_best is given; a batch size given
    without max_tokens batches by sentences."""
    changes = dict(changes)
    if "beam_size" in changes and "n_best" not in changes:
        beam = _convert(int, changes["beam_size"], "search.beam_size")
        changes["n_best"] = max(1, min(base.n_best, beam))
    if "batch_size" in changes and "max_tokens" not in changes:
        changes["max_tokens"] = 0
    return from_dict(SearchConfig, {**to_dict(base), **changes}, "search")
