"""The config tree: defaults, validation messages that name the key, overrides."""

from __future__ import annotations

import pytest

from seq2seq.config import Config, ModelConfig, from_dict, load_config, to_dict
from seq2seq.errors import UserError


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_round_trip_through_plain_data():
    config = Config()
    assert from_dict(Config, to_dict(config)) == config


def test_name_defaults_to_the_file_name_and_paths_resolve_against_it(tmp_path):
    config = load_config(write(tmp_path, "data: {path: corpus}\n"))
    assert config.name == "c"
    assert config.data.path == str((tmp_path / "corpus").resolve())


def test_corpora_paths_resolve_like_the_data_path(tmp_path, monkeypatch):
    """Written in the file: against its folder; typed on the command line: against the
    current folder; absolute and hub paths as given."""
    corpora = "[{path: extra}, {path: /abs/x}, {path: org/name, source: hub}]"
    text = f"data: {{path: main, corpora: {corpora}}}\n"
    config_file = write(tmp_path, text)
    config = load_config(config_file)
    assert config.data.path == str((tmp_path / "main").resolve())
    paths = [corpus.path for corpus in config.data.corpora]
    assert paths == [str((tmp_path / "extra").resolve()), "/abs/x", "org/name"]
    monkeypatch.chdir(tmp_path.parent)
    typed = load_config(config_file, ["--data.corpora=[{path: here}]"])
    assert typed.data.corpora[0].path == str((tmp_path.parent / "here").resolve())
    assert typed.data.path == str((tmp_path / "main").resolve())


@pytest.mark.parametrize(
    "text, names",
    [
        ("model: {hiden_size: 3}\n", ["model.hiden_size", "embedding_size"]),
        ("train: {lr: fast}\n", ["train.lr", "a number"]),
        ("train: {max_steps: 1.5}\n", ["train.max_steps", "an integer"]),
        ("model: {encoder: {cell: transformer}}\n", ["model.encoder.cell", "rnn, gru, lstm"]),
        ("search: {beam_size: 0}\n", ["search.beam_size", ">= 1"]),
        ("model: {decoder: {dropout: 1.5}}\n", ["model.decoder.dropout", "[0, 1)"]),
        ("data: {subwords: {joint: maybe}}\n", ["data.subwords.joint", "true or false"]),
        ("data: {subwords: {nbest_size: 513}}\n", ["data.subwords.nbest_size", "2 to 512"]),
        ("data: {subwords: {nbest_size: 1}}\n", ["data.subwords.nbest_size", "2 to 512"]),
        ("train: {keep_mib: -1}\n", ["train.keep_mib", ">= 0"]),
        ("model: [1, 2]\n", ["model", "mapping"]),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, text, names):
    with pytest.raises(UserError) as error:
        load_config(write(tmp_path, text))
    for name in names:
        assert name in str(error.value)


def test_dot_attention_needs_matching_sizes():
    with pytest.raises(UserError, match="model.decoder.hidden_size"):
        from_dict(
            ModelConfig,
            {
                "attention": {"scoring": "dot"},
                "encoder": {"hidden_size": 8},
                "decoder": {"hidden_size": 32},
            },
        )
    from_dict(
        ModelConfig,
        {
            "attention": {"scoring": "dot"},
            "encoder": {"hidden_size": 16},
            "decoder": {"hidden_size": 32},
        },
    )


def test_overrides_use_dotted_keys_and_yaml_values(tmp_path):
    config = load_config(
        write(tmp_path, "train: {lr: 0.1}\n"),
        ["--train.lr=0.5", "--model.encoder.cell=lstm", "--data.dev=null"],
    )
    assert config.train.lr == 0.5
    assert config.model.encoder.cell == "lstm"
    assert config.data.dev is None


def test_unknown_override_is_named(tmp_path):
    with pytest.raises(UserError, match="train.speed"):
        load_config(write(tmp_path, ""), ["--train.speed=3"])


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(UserError, match=r"c\.yaml:\d+: "):
        load_config(write(tmp_path, "train:\n  lr: [1\n"))


@pytest.mark.parametrize("name", ["multi30k_de_en", "multi30k_en_de", "multi30k_de_en_30min"])
def test_the_multi30k_configs_read_the_hub_or_a_local_copy(name, tmp_path, monkeypatch):
    """Shipped configs work for a user who has only the project: the hub by default; a local
    copy of the raw files is a few flags away, its path read from the current folder."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
    data = load_config(path).data
    assert (data.source, data.path, data.dev, data.test) == (
        "hub",
        "bentrevett/multi30k",
        "validation",
        "test",
    )
    monkeypatch.chdir(tmp_path)
    local = ["--data.source=local", "--data.path=copy", "--data.dev=val"]
    data = load_config(path, [*local, "--data.test=test_2016_flickr"]).data
    assert data.path == str(tmp_path / "copy")
