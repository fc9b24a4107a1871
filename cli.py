"""The command line: one Typer command per stage, plus `pipeline`. Parses, loads the config,
calls a stage; holds no logic of its own.

Config values can be overridden after the config file with dotted keys, for example
`nmt train configs/demo.yaml --train.max_steps=500 --model.decoder.hidden_size=256`.
Problems a user can fix print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from seq2seq.config import Config, load_config, parse_override
from seq2seq.errors import UserError, out_of_memory

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}

# Typer may bring its own copy of click; take click's exception classes from Typer itself.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


# Failures of the file system that the user can fix; anything else is a bug and keeps its
# traceback.
FILE_SYSTEM_ERRORS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENOENT,
    errno.EEXIST,
    errno.ENAMETOOLONG,
}


def one_line(message: str) -> str:
    """Any message, whichever library wrote it, folded onto one line."""
    return " ".join(str(message).split())


def fail(message: str, code: int = 2, where: str = ""):
    typer.echo(f"error{where}: {one_line(message)}", err=True)
    sys.exit(code)


class OneLineErrors(TyperGroup):
    """Turn user errors, usage errors and file-system failures into one line on stderr and
    exit code 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except UserError as e:
            fail(str(e))
        except UsageError as e:
            if not e.format_message().strip():  # a bare `nmt`: the help is the answer
                sys.exit(2)
            where = f" ({e.ctx.command_path})" if e.ctx is not None else ""
            fail(e.format_message(), where=where)
        except ClickException as e:
            fail(e.format_message(), e.exit_code)
        except OSError as e:
            if e.errno not in FILE_SYSTEM_ERRORS:
                raise
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e}")
        except (MemoryError, RuntimeError) as e:
            message = out_of_memory(e)
            if message is None:
                raise
            fail(message)
        except typer.Abort:
            typer.echo("interrupted", err=True)
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Recurrent neural machine translation with attention.",
)


def _config(path: Path, ctx: typer.Context, extra: list[str] = ()) -> Config:
    for arg in ctx.args:
        if not arg.startswith("--") or "=" not in arg or "." not in arg.split("=")[0]:
            raise UsageError(
                f"unexpected argument '{arg}'; config overrides look like --section.key=value", ctx
            )
    return load_config(path, list(ctx.args) + list(extra))


def _run_folder(config: Config, run_dir: Path | None):
    from pipelines.layout import run_folder

    return run_folder(config.name, run_dir)


def _log(message: str) -> None:
    """Stage messages go to stdout; stderr holds progress bars and, on failure, one line."""
    typer.echo(message)


def _log_to_stderr(message: str) -> None:
    """For `translate -o -`, whose stdout is the translation itself."""
    typer.echo(message, err=True)


RUN_DIR = typer.Option(None, "--run-dir", help="Run folder (default: runs/<config name>).")


@app.command(context_settings=OVERRIDES)
def preprocess(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML config."),
    run_dir: Path | None = RUN_DIR,
):
    """Clean the corpus, train SentencePiece on train, encode every split, write manifest.json."""
    from pipelines.preprocess import preprocess as run_preprocess

    cfg = _config(config, ctx)
    run = _run_folder(cfg, run_dir)
    run_preprocess(cfg, run, _log)
    _log(f"preprocess: wrote {run.manifest}")


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML config."),
    run_dir: Path | None = RUN_DIR,
    max_steps: int | None = typer.Option(None, help="Stop after this many steps."),
    max_time: float | None = typer.Option(None, help="Stop after this many seconds."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    fresh: bool = typer.Option(
        False, "--fresh", help="Start over instead of resuming (overwrites checkpoints)."
    ),
):
    """Train (or resume) on the preprocessed run folder; keep the best checkpoint by dev BLEU."""
    from pipelines.train import train as run_train

    extra = [
        f"--train.{k}={v}"
        for k, v in (("max_steps", max_steps), ("max_time", max_time), ("device", device))
        if v is not None
    ]
    cfg = _config(config, ctx, extra)
    run = _run_folder(cfg, run_dir)
    try:
        run_train(cfg, run, _log, fresh=fresh)
    except KeyboardInterrupt as stopped:  # 130 for Ctrl-C, 143 for SIGTERM
        raise typer.Exit(128 + getattr(stopped, "signum", 2)) from None
    _log(f"train: best checkpoint {run.best}")


@app.command(context_settings=OVERRIDES)
def translate(
    ctx: typer.Context,
    model: list[Path] = typer.Option(
        ...,
        "-m",
        "--model",
        help="Run folder, model folder or checkpoint; repeat it to decode with an ensemble.",
    ),
    input: list[str] = typer.Option(
        ...,
        "-i",
        "--input",
        help="Text file to translate ('-': stdin); repeat it, or give a folder, for several.",
    ),
    output: str = typer.Option(
        ..., "-o", "--output", help="Output file ('-': stdout), or a folder for several inputs."
    ),
    # Aliases of --search.<key>=VALUE, which sets any key of the checkpoint's search section.
    beam_size: int | None = typer.Option(None, help="search.beam_size: 1 is greedy."),
    n_best: int | None = typer.Option(None, help="search.n_best: hypotheses with scores."),
    length_penalty: float | None = typer.Option(
        None, help="search.length_penalty: GNMT alpha (0: none)."
    ),
    batch_size: int | None = typer.Option(None, help="search.batch_size: sentences a batch."),
    max_tokens: int | None = typer.Option(
        None, help="search.max_tokens: source tokens a batch (instead of --batch-size)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto", help="auto (bf16 where it is faster here, else fp32), fp32, bf16 or fp16."
    ),
    errors: str = typer.Option("strict", help="Invalid UTF-8 input: strict (an error) or replace."),
    alignments: str | None = typer.Option(
        None, help="Also write each line's attention weights here (JSON lines)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted translation after its last chunk."
    ),
    chunk_lines: int = typer.Option(4000, help="Lines read, sorted and translated together."),
):
    """Translate text files line by line, in input order. Any search setting can be changed
    with --search.KEY=VALUE (see README, search); the checkpoint's are the defaults."""
    from pipelines.translate import TranslateOptions, translate_files

    aliases = {
        "beam_size": beam_size,
        "n_best": n_best,
        "length_penalty": length_penalty,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
    }
    search = {key: value for key, value in aliases.items() if value is not None}
    search.update(_search_overrides(ctx))
    options = TranslateOptions(search, device, precision, errors, chunk_lines)
    log = _log_to_stderr if output == "-" else _log
    result = translate_files(model, input, output, options, log, alignments, resume)
    log(
        f"translate: {result['sentences']} sentences in {result['seconds']:.1f}s "
        f"({result['sentences_per_s']:.1f} sentences/s, {result['tgt_tokens_per_s']:.0f} "
        "target tokens/s)"
    )


@app.command(context_settings=OVERRIDES)
def serve(
    ctx: typer.Context,
    model: list[Path] = typer.Option(
        ..., "-m", "--model", help="Run folder, model folder or checkpoint; repeat it to ensemble."
    ),
    host: str | None = typer.Option(
        None, help="serve.host: default 127.0.0.1 (this machine only)."
    ),
    port: int | None = typer.Option(None, help="serve.port: default 5000; 0 picks a free one."),
    beam_size: int | None = typer.Option(None, help="search.beam_size: requests may change it."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", help="auto, fp32, bf16 or fp16."),
):
    """Translate over HTTP: a JSON API (POST /v1/translate) and LibreTranslate's (POST
    /translate, GET /languages), batching concurrent requests. --serve.KEY=VALUE and
    --search.KEY=VALUE change any setting (see README, serve)."""
    from pipelines.serve import serve as run_serve
    from pipelines.translator import Translator
    from seq2seq.config import ServeConfig, from_dict

    changes = {"host": host, "port": port}
    settings = {key: value for key, value in changes.items() if value is not None}
    search = {} if beam_size is None else {"beam_size": beam_size}
    for key, value in _overrides(ctx, ("search", "serve")):
        (search if key[0] == "search" else settings)[key[1]] = value
    config = from_dict(ServeConfig, settings, "serve")
    run_serve(config, lambda: Translator(model, device, precision, **search), _log)


def _overrides(ctx: typer.Context, sections: tuple[str, ...]) -> list[tuple[list[str], object]]:
    """`--section.key=value` arguments of the sections a command takes."""
    changes = []
    for arg in ctx.args:
        path, value = parse_override(arg)
        if len(path) != 2 or path[0] not in sections:
            allowed = " or ".join(f"--{section}.KEY=VALUE" for section in sections)
            raise UsageError(f"unexpected argument '{arg}'; this command takes {allowed}", ctx)
        changes.append((path, value))
    return changes


def _search_overrides(ctx: typer.Context) -> dict:
    """`--search.key=value` arguments as {key: value}; translate takes no other section."""
    return {path[1]: value for path, value in _overrides(ctx, ("search",))}


@app.command()
def score(
    hyps: Path = typer.Option(..., "-H", "--hyps", help="Hypotheses, one a line ('-': stdin)."),
    refs: Path = typer.Option(..., "-r", "--refs", help="References, one a line ('-': stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """BLEU and chrF (sacreBLEU, cased, detokenized) with their signatures."""
    from pipelines.score import describe, score_files

    result = score_files(hyps, refs)
    typer.echo(json.dumps(result, indent=2) if as_json else describe(result))


@app.command()
def average(
    checkpoints: list[Path] = typer.Argument(
        ..., help="Checkpoint files, or one run folder with --best or --last."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Checkpoint file to write."),
    best: int | None = typer.Option(None, help="Average the run's best K kept checkpoints."),
    last: int | None = typer.Option(None, help="Average the run's latest K kept checkpoints."),
    choose: bool = typer.Option(
        False,
        "--choose",
        help="Score the best checkpoint and averages of the run's last and best K on dev; "
        "write the best.",
    ),
):
    """Average the weights of several checkpoints of one model into one checkpoint."""
    from pipelines.average import average as run_average

    run_average(list(checkpoints), output, best, last, _log, choose_by_dev=choose)


@app.command("plot-attention")
def plot_attention(
    alignments: Path = typer.Argument(..., help="A file written by translate --alignments."),
    line: int = typer.Option(1, help="Which input line to draw (1 is the first)."),
    output: Path = typer.Option(..., "-o", "--output", help="PNG file to write."),
):
    """Draw one sentence's attention weights as a heatmap with the pieces on the axes."""
    from pipelines.plots import plot_attention as run_plot

    run_plot(alignments, line, output)
    _log(f"plot-attention: wrote {output}")


@app.command(context_settings=OVERRIDES)
def pipeline(
    ctx: typer.Context,
    config: Path = typer.Argument(DEMO_CONFIG, help="YAML config (default: the demo)."),
    run_dir: Path | None = RUN_DIR,
    fresh: bool = typer.Option(False, "--fresh", help="Redo every stage from scratch."),
):
    """Preprocess, train, translate the test split and score it, from one config."""
    from pipelines.run import pipeline as run_pipeline

    if str(config).startswith("--"):  # no config given, only overrides: the demo's
        ctx.args.insert(0, str(config))
        config = DEMO_CONFIG
    cfg = _config(config, ctx)
    run_pipeline(cfg, _run_folder(cfg, run_dir), _log, fresh=fresh)


if __name__ == "__main__":
    app()
