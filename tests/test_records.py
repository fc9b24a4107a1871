"""A record of every run: the config used, what changed, a timestamped log, dev examples,
the best checkpoint by a chosen metric, kept checkpoints within a disk budget."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from pipelines.layout import RunFolder
from pipelines.preprocess import preprocess
from pipelines.train import train
from seq2seq.config import load_config

from .conftest import copy_run, write_config

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


@pytest.fixture
def run(tmp_path, trained_run):
    return RunFolder(copy_run(trained_run, tmp_path / "run", untrained=True))


def test_each_train_records_its_config_versions_and_changes(tmp_path, tiny_corpus, run):
    path = write_config(tmp_path, tiny_corpus)
    messages = []
    train(load_config(path, ["--train.max_steps=6"]), run, log=messages.append)
    used = yaml.safe_load(run.used_config.read_text(encoding="utf-8"))
    assert used["train"]["max_steps"] == 6 and used["search"]["beam_size"] == 3
    header = run.used_config.read_text(encoding="utf-8").splitlines()[0]
    assert "torch" in header and "cpu" in header and "fp32" in header
    train(load_config(path, ["--train.max_steps=12", "--train.lr=0.001"]), run,
          log=messages.append)  # fmt: skip
    records = [json.loads(line) for line in run.train_runs.read_text().splitlines()]
    assert [r["from_step"] for r in records] == [0, 6]
    assert records[1]["changed"] == {"train.lr": [0.003, 0.001], "train.max_steps": [6, 12]}
    assert {"version", "torch", "device", "precision", "command", "time"} <= records[1].keys()
    assert any("train.lr changed since the last run: 0.003 -> 0.001" in m for m in messages)
    assert yaml.safe_load(run.used_config.read_text())["train"]["lr"] == 0.001
    # the manifest holds the data section that made the run folder, not a training config
    manifest = json.loads(run.manifest.read_text())
    assert "data" in manifest and "config" not in manifest and "train" not in manifest


def test_the_log_has_times_and_the_log_file_what_the_terminal_showed(tmp_path, tiny_corpus, run):
    shown = []
    train(load_config(write_config(tmp_path, tiny_corpus)), run, log=shown.append)
    assert shown and all(STAMP.match(line) for line in shown)
    kept = run.train_text_log.read_text(encoding="utf-8").splitlines()
    assert all(STAMP.match(line) for line in kept)
    assert [line for line in kept if "train |" not in line] == shown  # and progress lines
    assert any("train |" in line and "steps" in line for line in kept)


def test_validation_logs_a_few_dev_sentences(tmp_path, tiny_corpus, run):
    shown = []
    config = load_config(write_config(tmp_path, tiny_corpus), ["--train.dev_examples=2"])
    train(config, run, log=shown.append)
    sources = (run.root / "data" / "dev.en").read_text(encoding="utf-8").splitlines()
    for kind in ("source", "reference", "hypothesis"):
        lines = [line for line in shown if f" {kind} " in line]
        assert len(lines) == 2 * 2  # two examples at each of the two validations
    assert any(line.endswith(sources[0]) for line in shown if " dev 1 source " in line)


@pytest.mark.parametrize("metric", ["bleu", "chrf", "loss"])
def test_the_best_checkpoint_is_chosen_by_the_metric_asked_for(tmp_path, tiny_corpus, run, metric):
    config = load_config(write_config(tmp_path, tiny_corpus),
                         [f"--train.metric={metric}", "--train.validate_every=3"])  # fmt: skip
    train(config, run, log=lambda _: None)
    dev = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    dev = [r for r in dev if "dev_loss" in r]
    key = {"bleu": "dev_bleu", "chrf": "dev_chrf", "loss": "dev_loss"}[metric]
    pick = min if metric == "loss" else max
    best = pick(dev, key=lambda r: (r[key], -r["step"] if pick is max else r["step"]))
    from seq2seq.checkpoint import load_checkpoint

    assert load_checkpoint(run.best).info["step"] == best["step"]


def test_kept_checkpoints_stay_within_the_disk_budget(tmp_path, tiny_corpus, run):
    config = load_config(write_config(tmp_path, tiny_corpus), ["--train.validate_every=2"])
    train(config, run, log=lambda _: None)  # the defaults keep 5 best and 5 last
    assert len(run.kept_checkpoints("best")) == 5 and len(run.kept_checkpoints("last")) == 5
    config = load_config(write_config(tmp_path, tiny_corpus),
                         ["--train.validate_every=2", "--train.keep_mib=0"])  # fmt: skip
    train(config, run, log=lambda _: None, fresh=True)  # no room: no copies, best and last
    assert run.kept_checkpoints("best") == run.kept_checkpoints("last") == []
    assert run.best.is_file() and run.last.is_file()


def test_the_budget_splits_its_room_between_best_and_last(tmp_path, tiny_corpus, run):
    from pipelines.train_state import Checkpoints

    path = write_config(tmp_path, tiny_corpus)
    run.model_dir.mkdir(exist_ok=True)
    run.last.write_bytes(b"x" * 2**19)  # a checkpoint of half a MiB: two fit in a MiB
    for mib, expected in [(0, (0, 0)), (1, (1, 1)), (2, (2, 2)), (3, (3, 3)), (100, (5, 5))]:
        config = load_config(path, [f"--train.keep_mib={mib}"])
        assert Checkpoints(config, run, (None, None), {}).kept_counts() == expected


def test_learning_curve_draws_each_figure_on_its_own_axis(run, tmp_path, tiny_corpus):
    from pipelines.plots import draw_learning_curve

    train(load_config(write_config(tmp_path, tiny_corpus)), run, log=lambda _: None)
    records = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert all("lr" in r for r in records if "train_loss" in r)
    out = tmp_path / "curve.png"
    draw_learning_curve(run.train_log, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_is_optional(tmp_path, tiny_corpus, run):
    config = load_config(write_config(tmp_path, tiny_corpus), ["--train.tensorboard=true"])
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        from seq2seq.errors import UserError

        with pytest.raises(UserError, match="pip install tensorboard"):
            train(config, run, log=lambda _: None)
        return
    train(config, run, log=lambda _: None)
    assert any((run.root / "tensorboard").iterdir())


def test_preprocess_keeps_only_the_data_section(tmp_path, tiny_corpus):
    config = load_config(write_config(tmp_path, tiny_corpus))
    manifest = preprocess(config, RunFolder(tmp_path / "p"), log=lambda _: None)
    assert manifest["data"]["path"] == str(tiny_corpus) and "config" not in manifest
