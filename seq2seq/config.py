"""One typed config tree: frozen dataclasses, loaded from YAML and validated on load.

    Config
    ├── data: DataConfig            corpus sources, cleaning, subwords
    ├── model: ModelConfig          encoder, attention, decoder
    ├── train: TrainConfig          batches, optimizer, schedule, validation, budgets
    ├── search: SearchConfig        beam search and translation batches
    ├── translate: TranslateConfig  device, precision and input handling of translation
    ├── score: ScoreConfig          what `nmt pipeline` scores the test split with
    └── serve: ServeConfig          the HTTP server

Each key is declared once, here, with its default, meaning and range (see typed.py); `nmt keys`
and docs/config.md list them. A YAML file sets any subset of keys; the command line overrides
dotted keys (`--model.encoder.hidden_size=512`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import typed
from .typed import Section, from_dict, parse_override, section, setting, to_dict

keys, short = typed.keys, typed.short  # for the modules that import them from here
Source = Literal["local", "hub", "disk"]
Format = Literal["text", "tsv", "csv", "json", "parquet"]
Cell = Literal["rnn", "gru", "lstm"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Metric = Literal["bleu", "chrf", "ter"]
Device = "auto (the GPU when there is one), cpu, cuda or cuda:N"
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(section) -> None:
    """The `device` key of train and translate."""
    section.expect(bool(DEVICES.fullmatch(section.device)), "device", "auto, cpu, cuda or cuda:N")


# --- data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CleaningConfig(Section):
    """Filters for the training pairs (dev and test are only normalized, unless asked)."""

    KEY = "data.cleaning"
    normalize: Literal["nfc", "nfkc", "none"] = setting("nfc", "Unicode normalization form")
    max_chars: int = setting(1000, "drop training pairs with a side longer (characters)", low=1)
    max_pieces: int = setting(250, "likewise in pieces; translation cuts input to it", low=1)
    max_ratio: float = setting(3.0, "drop pairs whose piece counts differ more (factor)", low=1)
    dedupe: bool = setting(True, "drop exact duplicate training pairs")
    filter_dev_test: bool = setting(False, "also filter dev and test (else only normalized)")


@dataclass(frozen=True)
class SubwordConfig(Section):
    """SentencePiece, trained on the training split only (or reused: `model`)."""

    KEY = "data.subwords"
    model: str | None = setting(None, "reuse this .model file, or a checkpoint's or run's models")
    model_type: Literal["unigram", "bpe"] = setting("unigram", "SentencePiece's model type")
    vocab_size: int = setting(8000, "pieces per SentencePiece model", low=8, high=1_000_000)
    joint: bool = setting(True, "one model for both languages (model.tie_embeddings needs it)")
    character_coverage: float = setting(1.0, "characters covered", above=0, high=1)
    byte_fallback: bool = setting(False, "spell unknown characters as bytes, not <unk>")
    user_symbols: tuple[str, ...] = setting((), "pieces always kept whole (tags, placeholders)")
    input_sentence_size: int = setting(300_000, "sentences it trains on (a seeded sample)", low=1)
    # Subword regularization: Kudo (2018) for unigram, BPE-dropout (Provilkov et al., 2020).
    sampling_alpha: float = setting(0.0, "> 0: sample segmentations in training", low=0)
    nbest_size: int = setting(-1, "unigram sampling from all (-1) or the n best (2 to 512)")

    def check(self):
        self.expect(self.sampling_alpha < 1 or self.model_type == "unigram", "sampling_alpha",
                    "a dropout probability below 1 for a bpe model")  # fmt: skip
        self.expect(self.nbest_size == -1 or 1 < self.nbest_size <= 512, "nbest_size",
                    "-1 (all segmentations) or an integer from 2 to 512 "
                    "(SentencePiece's n best)")  # fmt: skip


@dataclass(frozen=True)
class CorpusConfig(Section):
    """One more training corpus, mixed in with a weight; a key left null is data's own."""

    KEY = "data.corpora[]"
    path: str = setting("", "its folder, hub dataset id or saved dataset folder")
    source: Source | None = setting(None, "as data.source")
    format: Format | None = setting(None, "as data.format")
    hub_config: str | None = setting(None, "as data.hub_config")
    train: str = setting("train", "its training split, file prefix or file name")
    columns: tuple[str, ...] | None = setting(None, "as data.columns")
    translation_field: str | None = setting(None, "as data.translation_field")
    weight: float = setting(1.0, "times each pair is seen an epoch (as data.weight)", above=0)


@dataclass(frozen=True)
class DataConfig(Section):
    """Where the parallel corpus comes from and how it is prepared.

    Each split names a file in `path` (source "local") or a dataset split (hub, disk). For
    format "text" a split `train` means the pair `train.<src_lang>` and `train.<tgt_lang>`
    (".gz" optional); a table format is one file with a column per language.
    """

    KEY = "data"
    source: Source = setting("local", "local files, hub (a dataset id) or disk (save_to_disk)")
    path: str = setting("", "the folder of local files, the hub dataset id, or the saved folder")
    format: Format = setting("text", "local files: text pairs <split>.<lang>, or one table file")
    hub_config: str | None = setting(None, "hub dataset config name (de-en for wmt16)")
    train: str = setting("train", "training split: file prefix, file name or split name")
    dev: str | None = setting("dev", "dev split likewise; null: dev_size pairs out of train")
    test: str | None = setting("test", "test split likewise; null: test_size pairs out of train")
    dev_size: int = setting(1000, "pairs carved out of train when dev is null", low=1)
    test_size: int = setting(1000, "pairs carved out of train when test is null", low=1)
    src_lang: str = setting("en", "source language code (file suffix or column name)")
    tgt_lang: str = setting("de", "target language code")
    src_column: str | None = setting(None, "source column when it is not the language code")
    tgt_column: str | None = setting(None, "target column likewise")
    columns: tuple[str, ...] | None = setting(None, "tsv/csv without a header: names in order")
    translation_field: str | None = setting(None, "a dict column of both (wmt16: translation)")
    max_pairs: int | None = setting(None, "sample at most this many training pairs", low=1)
    corpora: tuple[CorpusConfig, ...] = setting((), "more training corpora, each with a weight")
    weight: float = setting(1.0, "times each training pair is seen an epoch (0.5: half)", above=0)
    seed: int = setting(1, "seed for carving, sampling and SentencePiece", low=0)
    cleaning: CleaningConfig = section(CleaningConfig, "filters for the training pairs")
    subwords: SubwordConfig = section(SubwordConfig, "SentencePiece")

    def check(self):
        different = self.src_lang != self.tgt_lang or self.src_column != self.tgt_column
        self.expect(different, "tgt_lang", "a language different from data.src_lang")


# --- model ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderConfig(Section):
    KEY = "model.encoder"
    cell: Cell = setting("gru", "rnn (h_t = tanh(W [h_{t-1}; x_t] + b)), gru or lstm")
    hidden_size: int = setting(256, "per direction (the states are twice this both ways)", low=1)
    num_layers: int = setting(1, "stacked layers", low=1, high=100)
    bidirectional: bool = setting(True, "read the source both ways")
    dropout: float = setting(0.2, "between layers", low=0, below=1)

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)


@dataclass(frozen=True)
class AttentionConfig(Section):
    # dot and scaled_dot need decoder.hidden_size == encoder output size; general is
    # Luong's bilinear q W k; additive is Bahdanau's v . tanh(W q + U k); multihead runs
    # `heads` scaled-dot heads over projections of size hidden_size; none ablates attention.
    KEY = "model.attention"
    scoring: Literal["none", "dot", "general", "additive", "scaled_dot", "multihead"] = setting(
        "additive", "how a query scores the source states (none: no attention, an ablation)"
    )
    hidden_size: int = setting(256, "additive MLP size; multihead projection size", low=1)
    heads: int = setting(4, "multihead heads", low=1)


@dataclass(frozen=True)
class DecoderConfig(Section):
    KEY = "model.decoder"
    cell: Cell = setting("gru", "rnn, gru or lstm")
    hidden_size: int = setting(512, "state size (dot, scaled_dot: the encoder's output)", low=1)
    num_layers: int = setting(1, "stacked layers", low=1, high=100)
    dropout: float = setting(0.2, "between layers", low=0, below=1)
    input_feeding: bool = setting(False, "feed the last attentional vector back (Luong)")
    # initial state: a learned projection of the final encoder states, zeros, or the final
    # encoder states themselves (an LSTM decoder's cell then starts at zero)
    init: Literal["bridge", "zero", "last"] = setting("bridge", "the initial state")
    combine: Literal["concat", "add"] = setting("concat", "tanh(W [h; c]) or h + W c")


@dataclass(frozen=True)
class ModelConfig(Section):
    KEY = "model"
    embedding_size: int = setting(256, "source and target embedding size", low=1)
    embedding_dropout: float = setting(0.2, "dropout on embeddings", low=0, below=1)
    output_dropout: float = setting(0.2, "dropout before the output layer", low=0, below=1)
    tie_embeddings: bool = setting(False, "share source and target embeddings (joint vocab)")
    tie_output: bool = setting(False, "share the output layer with the target embeddings")
    encoder: EncoderConfig = section(EncoderConfig, "the bidirectional RNN encoder")
    attention: AttentionConfig = section(AttentionConfig, "how the decoder reads the source")
    decoder: DecoderConfig = section(DecoderConfig, "the RNN decoder")

    def check(self):
        enc, dec, att = self.encoder, self.decoder, self.attention
        if att.scoring in ("dot", "scaled_dot") or dec.init == "last":
            why = f"{att.scoring} attention" if dec.init != "last" else "init 'last'"
            other = "" if dec.init == "last" else " (or use general, additive or multihead scoring)"
            self.expect(dec.hidden_size == enc.output_size, "decoder.hidden_size",
                        f"the encoder output size {enc.output_size} for {why}{other}")  # fmt: skip
        if att.scoring == "multihead":
            self.expect(att.hidden_size % att.heads == 0, "attention.hidden_size",
                        f"a multiple of attention.heads ({att.heads})")  # fmt: skip
        self.expect(dec.init != "last" or dec.num_layers == enc.num_layers, "decoder.num_layers",
                    f"encoder.num_layers ({enc.num_layers}) for init 'last'")  # fmt: skip
        self.expect(not (att.scoring == "none" and dec.input_feeding), "decoder.input_feeding",
                    "false when attention.scoring is none")  # fmt: skip


# --- training -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig(Section):
    KEY = "train"
    seed: int = setting(1, "seed for initialization, dropout and data order", low=0)
    device: str = setting("auto", Device)
    precision: Precision = setting("auto", "auto: bf16 where faster, else fp32; fp16: GPU only")
    threads: int = setting(0, "CPU threads for torch; 0: torch's default", low=0, high=4096)
    init_from: str | None = setting(None, "fine-tune: start from this checkpoint's weights")
    init_optimizer: bool = setting(False, "with init_from a run: also its optimizer and step")
    batch_type: Literal["tokens", "sentences"] = setting("tokens", "what batch_size counts")
    batch_size: int = setting(4096, "padded tokens (rows x longest side) or sentences", low=1)
    accumulate: int = setting(1, "batches per optimizer step", low=1)
    bucket: bool = setting(True, "batch pairs of similar length (false: shuffled pairs)")
    optimizer: Literal["adam", "adamw"] = setting("adam", "adam or adamw")
    lr: float = setting(1e-3, "peak learning rate", above=0)
    betas: tuple[float, float] = setting((0.9, 0.999), "Adam betas", low=0, below=1)
    weight_decay: float = setting(0.0, "weight decay", low=0)
    schedule: Literal["constant", "inverse_sqrt", "plateau", "cosine"] = setting(
        "constant", "after warmup (plateau: on the dev metric; cosine: to max_steps)"
    )
    warmup_steps: int = setting(0, "linear warmup steps", low=0)
    min_lr: float = setting(1e-6, "floor for plateau and cosine", low=0)
    plateau_factor: float = setting(0.5, "plateau: multiply the rate by this ...", above=0, below=1)
    plateau_patience: int = setting(3, "... after this many validations not better", low=0)
    clip_grad_norm: float = setting(1.0, "gradient norm clipping; 0: off", low=0)
    label_smoothing: float = setting(0.1, "label smoothing of the loss", low=0, below=1)
    word_dropout: float = setting(0.0, "input words replaced by <unk> (fraction)", low=0, below=1)
    max_steps: int = setting(0, "stop after this many optimizer steps (0: no limit)", low=0)
    max_epochs: int = setting(0, "stop after this many epochs (0: no limit)", low=0)
    max_time: float = setting(0.0, "stop after this many seconds (0: no limit)", low=0)
    validate_every: int = setting(1000, "steps between validations (and checkpoints)", low=1)
    dev_beam_size: int = setting(1, "beam size for dev BLEU (1: greedy, the fastest)", low=1)
    metric: Literal["bleu", "chrf", "loss"] = setting("bleu", "the dev metric that picks the best")
    patience: int = setting(0, "stop after this many validations not better (0: never)", low=0)
    keep_best: int = setting(5, "best checkpoints kept (model/best-<step>) for averaging", low=1)
    keep_last: int = setting(5, "latest validated checkpoints kept (model/last-<step>)", low=1)
    keep_mib: int = setting(2048, "disk the kept checkpoints may take (MiB)", low=0)
    dev_examples: int = setting(3, "dev sentences logged at each validation", low=0)
    tensorboard: bool = setting(False, "also log to <run>/tensorboard (needs tensorboard)")
    log_every: int = setting(100, "steps between training log lines", low=1)

    def check(self):
        check_device(self)


# --- translation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchConfig(Section):
    KEY = "search"
    beam_size: int = setting(5, "beam width; 1 is greedy search", low=1)
    length_penalty: float = setting(1.0, "GNMT alpha: ((5 + length) / 6) ^ alpha; 0: none", low=0)
    max_len_a: float = setting(1.5, "output limit: a * source length + b tokens", low=0, high=100)
    max_len_b: int = setting(10, "see max_len_a", low=0, high=10_000)
    min_len: int = setting(1, "tokens before end-of-sentence may be chosen", low=0)
    n_best: int = setting(1, "hypotheses kept per sentence", low=1)
    no_repeat_ngram: int = setting(0, "forbid repeating any n-gram of this size (0: off)", low=0)
    batch_size: int = setting(64, "sentences per translation batch", low=1)
    max_tokens: int = setting(0, "if set, batch by this many source tokens instead", low=0)
    cuda_graphs: bool = setting(False, "on a GPU, replay the decoder step as CUDA graphs")
    shortlist: int = setting(0, "decode over the 100 most frequent target pieces and this many "
                             "per source piece (0: all)", low=0, high=100)  # fmt: skip

    def check(self):
        self.expect(self.n_best <= self.beam_size, "n_best",
                    f"an integer from 1 to beam_size ({self.beam_size})")  # fmt: skip
        self.expect(self.max_len_a > 0 or self.max_len_b > 0, "max_len_b",
                    "a positive limit when max_len_a is 0")  # fmt: skip
        self.expect(not (self.shortlist and self.cuda_graphs), "shortlist",
                    "0 with cuda_graphs (a graph decodes over a fixed vocabulary)")  # fmt: skip


@dataclass(frozen=True)
class TranslateConfig(Section):
    KEY = "translate"
    device: str = setting("auto", Device)
    precision: Literal[Precision, "int8"] = setting(
        "auto", "auto: the fastest measured here; fp16: GPU only; int8: CPU only, never auto"
    )
    errors: Literal["strict", "replace"] = setting("strict", "invalid UTF-8 input: error, or �")
    chunk_lines: int = setting(4000, "lines read, sorted by length and translated together", low=1)
    n_best_format: Literal["tab", "moses"] = setting("tab", "n-best lines: tab or moses (|||)")

    def check(self):
        check_device(self)


@dataclass(frozen=True)
class ScoreConfig(Section):
    KEY = "score"
    tokenize: str = setting("13a", "BLEU tokenizer: 13a, intl, zh, ja-mecab, char, flores200...")
    lowercase: bool = setting(False, "score lowercased text")
    metrics: tuple[Metric, ...] = setting(("bleu", "chrf", "ter"), "sacreBLEU's metrics to report")


@dataclass(frozen=True)
class ServeConfig(Section):
    """`nmt serve`: where it listens, how it batches requests, and what it refuses."""

    KEY = "serve"
    host: str = setting("127.0.0.1", "address to listen on (others open it to other machines)")
    port: int = setting(5000, "port (LibreTranslate's); 0 picks a free one", low=0, high=65535)
    max_wait_ms: float = setting(5.0, "how long a batch waits for the requests that join", low=0)
    batch_tokens: int = setting(4096, "source tokens one batch gathers at most", low=1)
    max_queue: int = setting(256, "texts waiting for a batch; beyond it, 503", low=1)
    max_texts: int = setting(64, "texts (LibreTranslate: lines) a request; more: 413", low=1)
    max_body_bytes: int = setting(262_144, "request body size; larger: 413", low=1)
    max_connections: int = setting(1024, "open connections; beyond it uvicorn answers 503", low=1)
    max_beam_size: int = setting(16, "the widest beam (and most n-best) a request may ask", low=1)
    body_seconds: float = setting(
        10.0, "time a client has to send its request body; then 408", above=0
    )
    shutdown_seconds: float = setting(30.0, "after SIGTERM, time left to requests in flight", low=0)

    def check(self):
        self.expect(self.max_texts <= self.max_queue, "max_texts",
                    f"at most serve.max_queue ({self.max_queue}): "
                    "a larger request could never wait")  # fmt: skip


# --- the tree -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config(Section):
    name: str = setting("run", "names the run folder runs/<name>; default: the config file's")
    data: DataConfig = section(DataConfig, "the corpus and how it is prepared")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "training")
    search: SearchConfig = section(SearchConfig, "beam search (stored in each checkpoint)")
    translate: TranslateConfig = section(TranslateConfig, "translating files")
    score: ScoreConfig = section(ScoreConfig, "scoring the test split")
    serve: ServeConfig = section(ServeConfig, "the HTTP server")

    def check(self):
        self.expect(re.fullmatch(r"\w[\w .-]*", self.name) is not None, "name",  # one folder name
                    "letters, digits, spaces, '.', '_' or '-'")  # fmt: skip


def config_keys(prefix: str = "", markdown: bool = False) -> str:
    """Every config key under `prefix`, with its default, type and meaning (nmt keys)."""
    return typed.reference(Config, prefix, markdown)


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply dotted overrides, validate, and resolve relative data paths:
    against the config file's folder when it sets them, the current one when overrides do."""
    path = Path(path)
    raw = typed.apply_overrides(typed.read_yaml(path), list(overrides))
    raw.setdefault("name", path.stem)
    config = from_dict(Config, raw)
    data, given = config.data, {tuple(parse_override(text)[0][:2]) for text in overrides}

    def resolved(source: str | None, where: str, key: str) -> str:
        if source not in ("local", "disk") or not where or Path(where).is_absolute():
            return where
        return str(((Path.cwd() if ("data", key) in given else path.parent) / where).resolve())

    corpora = tuple(
        dataclasses.replace(c, path=resolved(c.source or data.source, c.path, "corpora"))
        for c in data.corpora
    )
    data = dataclasses.replace(data, path=resolved(data.source, data.path, "path"), corpora=corpora)
    return dataclasses.replace(config, data=data)


def override_search(base: SearchConfig, changes: dict[str, Any]) -> SearchConfig:
    """`base` (a checkpoint's search section) with `changes`, checked like the config file: a
    new beam size caps n_best unless it is given; batch_size without max_tokens counts sentences."""
    changes = dict(changes)
    if "beam_size" in changes and "n_best" not in changes:
        beam = typed._convert(int, changes["beam_size"], "search.beam_size")
        changes["n_best"] = max(1, min(base.n_best, beam))
    if "batch_size" in changes and "max_tokens" not in changes:
        changes["max_tokens"] = 0
    return from_dict(SearchConfig, {**to_dict(base), **changes}, "search")
