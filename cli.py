"""The command line: one Typer command per stage, plus `pipeline`. Parses, loads the config,
calls a stage; holds no logic of its own.

Stage messages go to stdout (stderr for `translate -o -`, whose stdout is the translation);
stderr holds progress bars and, for a problem the user can fix, one line and exit code 2.
"""

from __future__ import annotations

import io
import json
import os
import sys
from errno import EEXIST, EISDIR, ENAMETOOLONG, ENOENT, ENOTDIR
from functools import partial
from pathlib import Path

import typer
from typer.core import TyperGroup

from pipelines.layout import run_folder
from seq2seq import __version__
from seq2seq.config import load_config, parse_override
from seq2seq.errors import UserError, out_of_memory
from seq2seq.io import WRITE_ERRORS, write_error
from seq2seq.typed import short

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
RUN_DIR = typer.Option(None, "--run-dir", help="Run folder (default: runs/<config name>).")
MODELS = typer.Option(
    ..., "-m", "--model", help="Run folder, model folder or checkpoint; repeat it to ensemble."
)
DEVICE = typer.Option(None, help="translate.device: auto, cpu, cuda or cuda:N.")
PRECISION = typer.Option(None, help="translate.precision: auto, fp32, bf16, fp16 or int8.")

# Typer may bring its own copy of click; take click's exception classes from Typer itself.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

# Failures of the file system that the user can fix; any other is a bug and keeps its traceback.
FILE_SYSTEM_ERRORS = WRITE_ERRORS | {ENOTDIR, EISDIR, ENOENT, EEXIST, ENAMETOOLONG}


def _standard_streams() -> None:
    """Hold a closed standard stream (`<&-`, `>&-`, `2>&-`) open on /dev/null, so that no file
    opened later takes its number (stdin, stdout stay None: refused where needed); write UTF-8."""
    while (fd := os.open(os.devnull, os.O_RDWR)) <= 2:
        pass
    os.close(fd)
    sys.stderr = sys.stderr or open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    if isinstance(getattr(sys.stdout, "buffer", None), io.RawIOBase):  # PYTHONUNBUFFERED=1:
        # text over a raw file drops what a write leaves (a size limit); a buffer retries
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(sys.stdout.buffer), line_buffering=True)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8")


def fail(message: str, code: int = 2, where: str = ""):
    """Print a message, whichever library wrote it, folded onto one line; exit with `code`."""
    typer.echo(f"error{where}: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def _refuse_repeated(ctx, command, args: list[str]) -> None:
    """Refuse an option or dotted override given twice in `args`: click would keep the last."""
    options = [p for p in command.params if p.param_type_name == "option" and not p.multiple]
    single = {name: p.name for p in options for name in p.opts + p.secondary_opts}
    seen = set()
    for arg in args:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        dotted = name.startswith("--") and "." in name and "=" in arg
        key = name if dotted else single.get(name)
        if key is not None and key in seen:
            raise UsageError(f"option '{name}' is given twice; it takes one value", ctx)
        seen.add(key)


class OneLineErrors(TyperGroup):
    """Turn user, usage and file-system errors into one line on stderr and exit code 2."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            _refuse_repeated(ctx, command, rest)
        return name, command, rest

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader went away (`| head`): end quietly, as tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the last flush
            return 141  # 128 + SIGPIPE

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        _standard_streams()
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except UserError as e:
            fail(str(e))
        except UsageError as e:
            if not e.format_message().strip():  # a bare `nmt`: the help is the answer
                sys.exit(2)
            fail(e.format_message(), where=f" ({e.ctx.command_path})" if e.ctx is not None else "")
        except ClickException as e:
            fail(e.format_message(), e.exit_code)
        except typer.Abort:
            typer.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # the file system's, however a library wrapped it, or memory's
            found = write_error(e) or e
            if isinstance(found, OSError) and found.errno in FILE_SYSTEM_ERRORS:
                fail(f"{found.filename}: {found.strerror}" if found.filename else found)
            if out_of_memory(e) is None:
                raise  # a bug keeps its traceback
            fail(out_of_memory(e))
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Recurrent neural machine translation with attention. Every setting is a config key "
    "(nmt keys lists them with their defaults), set in the YAML config or as "
    "--section.key=value on any command that uses it.",
)


def _version(asked: bool) -> None:
    if asked:
        typer.echo(f"seq2seq-nmt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
):
    pass


def _run(path: Path, ctx: typer.Context, run_dir: Path | None, extra: list[str] = ()):
    """The config, with the overrides given, and the run folder it names."""
    for arg in ctx.args:
        if not arg.startswith("--") or "=" not in arg or "." not in arg.split("=")[0]:
            raise UsageError(f"unexpected argument {short(arg)}; expected --section.key=value", ctx)
    given = {arg.split("=", 1)[0] for arg in ctx.args}
    for arg in extra:
        if arg.split("=", 1)[0] in given:
            raise UsageError(f"{arg.split('=', 1)[0]} is set twice, by it and by its alias", ctx)
    config = load_config(path, list(ctx.args) + list(extra))
    return config, run_folder(config.name, run_dir)


@app.command(context_settings=OVERRIDES)
def preprocess(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML config."),
    run_dir: Path | None = RUN_DIR,
):
    """Clean the corpus, train SentencePiece on train, encode every split, write manifest.json."""
    from pipelines.preprocess import preprocess as run_preprocess

    cfg, run = _run(config, ctx, run_dir)
    run_preprocess(cfg, run, typer.echo)
    typer.echo(f"preprocess: wrote {run.manifest}")


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML config."),
    run_dir: Path | None = RUN_DIR,
    max_steps: int | None = typer.Option(None, help="Stop after this many steps."),
    max_time: float | None = typer.Option(None, help="Stop after this many seconds."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over, overwriting checkpoints."),
):
    """Train (or resume) on the preprocessed run folder; keep the best checkpoints on dev."""
    from pipelines.train import train as run_train

    aliases = {"max_steps": max_steps, "max_time": max_time, "device": device}
    extra = [f"--train.{k}={v}" for k, v in aliases.items() if v is not None]
    cfg, run = _run(config, ctx, run_dir, extra)
    try:
        run_train(cfg, run, typer.echo, fresh=fresh)
    except KeyboardInterrupt as stopped:  # 130 for Ctrl-C, 143 for SIGTERM
        raise typer.Exit(128 + getattr(stopped, "signum", 2)) from None
    typer.echo(f"train: best checkpoint {run.best}")


@app.command(context_settings=OVERRIDES)
def translate(
    ctx: typer.Context,
    model: list[Path] = MODELS,
    input: list[str] = typer.Option(
        ..., "-i", "--input", help="File to translate ('-': stdin), or a folder; may be repeated."
    ),
    output: str = typer.Option(..., "-o", "--output", help="Output file ('-': stdout) or folder."),
    # Aliases of --search.<key>=VALUE, which sets any key of the checkpoint's search section.
    beam_size: int | None = typer.Option(None, help="search.beam_size: 1 is greedy."),
    n_best: int | None = typer.Option(None, help="search.n_best: hypotheses with scores."),
    length_penalty: float | None = typer.Option(None, help="search.length_penalty: GNMT alpha."),
    batch_size: int | None = typer.Option(None, help="search.batch_size: sentences a batch."),
    max_tokens: int | None = typer.Option(None, help="search.max_tokens: source tokens a batch."),
    device: str | None = DEVICE,  # aliases of --translate.<key>=VALUE
    precision: str | None = PRECISION,
    errors: str | None = typer.Option(None, help="translate.errors: bad UTF-8 strict or replace."),
    chunk_lines: int | None = typer.Option(None, help="translate.chunk_lines: lines per chunk."),
    alignments: str | None = typer.Option(None, help="Also write attention weights here (JSONL)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted translation."),
):
    """Translate text files line by line, in input order.

    --search.KEY=VALUE changes a search setting (the checkpoint's are the defaults),
    --translate.KEY=VALUE the others (nmt keys search, nmt keys translate)."""
    from pipelines.translate import translate_files
    from seq2seq.config import TranslateConfig, from_dict

    search = "beam_size n_best length_penalty batch_size max_tokens"
    changes = _sections(ctx, search=search, translate="device precision errors chunk_lines")
    config = from_dict(TranslateConfig, changes["translate"], "translate")
    if output == "-" and sys.stdout is None:
        raise UserError("-o -: stdout is closed; give -o FILE, or leave stdout open")
    log = partial(typer.echo, err=output == "-")
    done = translate_files(model, input, output, config, changes["search"], log, alignments, resume)
    log(
        "translate: {sentences} sentences in {seconds:.1f}s ({sentences_per_s:.1f} sentences/s, "
        "{tgt_tokens_per_s:.0f} target tokens/s)".format(**done)
    )


@app.command(context_settings=OVERRIDES)
def serve(
    ctx: typer.Context,
    model: list[Path] = MODELS,
    host: str | None = typer.Option(None, help="serve.host: default 127.0.0.1, this machine only."),
    port: int | None = typer.Option(None, help="serve.port: default 5000; 0 picks a free one."),
    beam_size: int | None = typer.Option(None, help="search.beam_size: requests may change it."),
    device: str | None = DEVICE,
    precision: str | None = PRECISION,
):
    """Translate over HTTP, batching concurrent requests (our JSON API and LibreTranslate's).

    POST /v1/translate, POST /translate and GET /languages (LibreTranslate's), GET /health.
    --serve.KEY=VALUE and --search.KEY=VALUE change any setting (nmt keys serve)."""
    from pipelines.serve import serve as run_serve
    from pipelines.translator import Translator
    from seq2seq.config import ServeConfig, TranslateConfig, from_dict

    changes = _sections(ctx, search="beam_size", serve="host port", translate="device precision")
    config = from_dict(ServeConfig, changes["serve"], "serve")
    run, search = from_dict(TranslateConfig, changes["translate"], "translate"), changes["search"]
    run_serve(config, lambda: Translator(model, run.device, run.precision, **search), typer.echo)


def _sections(ctx: typer.Context, **aliases: str) -> dict[str, dict]:
    """The changes a command takes, by section: its aliases that were given (options named
    like the section's keys, listed as "key key ..."), then its `--section.key=value` args."""
    given = {k: v for k, v in ctx.params.items() if v is not None}
    changes = {s: {k: given[k] for k in keys.split() if k in given} for s, keys in aliases.items()}
    for arg in ctx.args:
        path, value = parse_override(arg)
        if len(path) != 2 or path[0] not in changes:
            allowed = " or ".join(f"--{section}.KEY=VALUE" for section in changes)
            raise UsageError(f"unexpected argument {short(arg)}; this command takes {allowed}", ctx)
        if path[1] in changes[path[0]]:
            raise UsageError(f"--{'.'.join(path)} is set twice, by it and by its alias", ctx)
        changes[path[0]][path[1]] = value
    return changes


@app.command(context_settings=OVERRIDES)
def score(
    ctx: typer.Context,
    hyps: list[Path] = typer.Option(
        ..., "-H", "--hyps", help="Hypotheses, one a line ('-': stdin); repeat it with --paired-*."
    ),
    refs: list[Path] = typer.Option(..., "-r", "--refs", help="References, one a line; repeat it."),
    tokenize: str | None = typer.Option(None, help="score.tokenize: 13a, intl, zh, char, ..."),
    lowercase: bool | None = typer.Option(None, "--lowercase", help="score.lowercase."),
    metrics: str | None = typer.Option(None, help="score.metrics: bleu,chrf,ter or a part."),
    paired_bs: bool = typer.Option(False, "--paired-bs", help="Paired bootstrap resampling."),
    paired_ar: bool = typer.Option(False, "--paired-ar", help="Paired approximate randomization."),
    paired_n: int = typer.Option(0, help="Resamples (bs: 1000) or trials (ar: 10000)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """BLEU, chrF and TER (sacreBLEU) with signatures, and paired significance tests.

    With --paired-bs or --paired-ar, each -H system after the first is compared with the
    first (the baseline)."""
    from pipelines.score import describe, paired_test, score_files
    from seq2seq.config import ScoreConfig, from_dict

    changes = _sections(ctx, score="tokenize lowercase metrics")["score"]
    if metrics is not None:  # the alias takes a comma-separated list
        changes["metrics"] = metrics.split(",")
    config = from_dict(ScoreConfig, changes, "score")
    if paired_bs and paired_ar:
        raise UsageError("--paired-bs and --paired-ar: choose one", ctx)
    if paired_bs or paired_ar:
        typer.echo(paired_test(hyps, refs, config, "bs" if paired_bs else "ar", paired_n, as_json))
        return
    if len(hyps) > 1:
        raise UsageError("several -H need --paired-bs or --paired-ar (or one -H at a time)", ctx)
    result = score_files(hyps[0], refs, config)
    typer.echo(json.dumps(result, indent=2) if as_json else describe(result))


@app.command()
def average(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoints, or a run with --best/--last."),
    output: str = typer.Option(..., "-o", "--output", help="Checkpoint file to write."),
    best: int | None = typer.Option(None, help="Average the run's best K kept checkpoints."),
    last: int | None = typer.Option(None, help="Average the run's latest K kept checkpoints."),
    choose: bool = typer.Option(
        False, "--choose", help="Write the best on dev: best checkpoint, last or best K averaged."
    ),
):
    """Average the weights of several checkpoints of one model into one checkpoint."""
    from pipelines.average import average as run_average

    run_average(list(checkpoints), output, best, last, typer.echo, choose_by_dev=choose)


@app.command()
def keys(
    prefix: str = typer.Argument("", help="Only the keys that start with this (e.g. train)."),
    markdown: bool = typer.Option(False, "--markdown", help="As docs/config.md's tables."),
):
    """Every config key with its default, type and meaning: what --section.key=value sets."""
    from seq2seq.config import config_keys

    text = config_keys(prefix, markdown)
    if not text.strip():
        raise UsageError(f"no config key starts with '{prefix}'; try `nmt keys` for all")
    typer.echo(text.rstrip("\n"))


@app.command("plot-attention")
def plot_attention(
    alignments: Path = typer.Argument(..., help="A file written by translate --alignments."),
    line: int = typer.Option(1, help="Which input line to draw (1 is the first)."),
    output: str = typer.Option(..., "-o", "--output", help="PNG file to write."),
):
    """Draw one sentence's attention weights as a heatmap with the pieces on the axes."""
    from pipelines.plots import plot_attention as run_plot

    run_plot(alignments, line, output)
    typer.echo(f"plot-attention: wrote {output}")


@app.command(context_settings=OVERRIDES)
def pipeline(
    ctx: typer.Context,
    config: Path = typer.Argument(DEMO_CONFIG, help="YAML config (default: the demo)."),
    run_dir: Path | None = RUN_DIR,
    fresh: bool = typer.Option(False, "--fresh", help="Redo every stage from scratch."),
):
    """Preprocess, train, translate the test split and score it, from one config."""
    from pipelines.pipeline import pipeline as run_pipeline

    if str(config).startswith("--"):  # no config given, only overrides: the demo's
        ctx.args.insert(0, str(config))
        config = DEMO_CONFIG
    cfg, run = _run(config, ctx, run_dir)
    run_pipeline(cfg, run, typer.echo, fresh=fresh)


if __name__ == "__main__":
    app()
