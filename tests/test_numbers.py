"""Numbers and YAML as people write them: exponents, non-finite values, integers the code
cannot hold and negative numbers, for every numeric config key; YAML 1.1's retyped spellings
(`no`, `on`, `010`) for every string, integer and boolean key; short quotes of huge values;
aliases that copy out without bound; every range shown with all its bounds.

Shared workspace: the `world` fixture in conftest.py; helpers in workspace.py.

Each refusal must be one line on stderr, exit code 2, no traceback, and leave every file of
the workspace as it was."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing

import pytest

from seq2seq.config import Config, from_dict, load_config, to_dict
from seq2seq.errors import UserError
from seq2seq.typed import keys as config_rows

from .conftest import ROOT
from .workspace import refused_and_untouched

# --- numbers as people write them, and non-finite -------------------------------------------


def numeric_keys(cls=Config, prefix="") -> list[tuple[str, type, object]]:
    """Every int and float key of the config tree: (dotted key, type, default)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        tp, default = hints[field.name], getattr(cls(), field.name)
        if dataclasses.is_dataclass(tp):
            keys += numeric_keys(tp, key + ".")
        elif tp in (int, float):
            keys.append((key, tp, default))
    return keys


def exponent_spellings(value: float) -> list[str]:
    """The same number as people write it with exponents: 1e-3, 1E-3, 1.0e-3, +1e-3."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    exponent = int(exponent)
    return [f"{mantissa}e{exponent}", f"{mantissa}E{exponent}", f"{float(mantissa)}e{exponent}",
            f"+{mantissa}e{exponent}"]  # fmt: skip


FLOAT_KEYS = [(k, d) for k, tp, d in numeric_keys() if tp is float]
NUMERIC_KEYS = [k for k, _, _ in numeric_keys()]
NON_FINITE = ["nan", ".nan", "NaN", "inf", ".inf", "-.inf", "Infinity", "-inf"]


def test_every_float_key_is_found():
    assert {"train.lr", "train.min_lr", "search.length_penalty"} <= {k for k, _ in FLOAT_KEYS}


@pytest.mark.parametrize("key, default", FLOAT_KEYS, ids=[k for k, _ in FLOAT_KEYS])
def test_every_float_key_takes_exponent_spellings_in_yaml_and_overrides(tmp_path, key, default):
    value = default if default else 0.5
    if key.endswith("max_ratio") or key.endswith("max_len_a"):
        value = max(value, 1.5)
    section, *rest = key.split(".")
    for spelled in exponent_spellings(value):
        nested = spelled
        for part in reversed(rest):
            nested = {part: nested}
        path = tmp_path / "c.yaml"
        path.write_text(json.dumps({section: nested}) if rest else f"{key}: {spelled}\n")
        # JSON is YAML: the value is a string, as PyYAML reads 1e-3 from a file
        from_yaml = load_config(path)
        empty = tmp_path / "empty.yaml"
        empty.write_text("")
        from_override = load_config(empty, [f"--{key}={spelled}"])
        for config in (from_yaml, from_override):
            got = to_dict(config)
            for part in key.split("."):
                got = got[part]
            assert math.isclose(got, value), (spelled, got)


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_numeric_key_refuses_non_finite_values(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    for spelled in NON_FINITE:
        with pytest.raises(UserError, match=rf"'{re.escape(key)}': expected a finite number"):
            load_config(path, [f"--{key}={spelled}"])
    section, *rest = key.split(".")
    raw: dict = {}
    node = raw
    for part in [section, *rest[:-1]]:
        node = node.setdefault(part, {})
    node[(rest or [section])[-1]] = float("inf")
    with pytest.raises(UserError, match="expected a finite number"):
        from_dict(Config, raw)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "tiny.yaml", "--run-dir", "run", "--max-time", "inf"],
        ["train", "tiny.yaml", "--run-dir", "run", "--train.lr=.nan"],
        ["preprocess", "tiny.yaml", "--run-dir", "fresh", "--data.cleaning.max_ratio=.inf"],
        ["pipeline", "tiny.yaml", "--run-dir", "fresh", "--search.length_penalty=nan"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--length-penalty", "nan"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--search.max_len_a=inf"],
        ["translate", "-m", "run", "-i", "in.en", "-o", "x.de", "--search.max_len_b=1e400"],
    ],
    ids=lambda a: a[0] + " " + " ".join(a[-2:]),
)
def test_non_finite_options_are_one_line_on_every_command(world, args, monkeypatch):
    monkeypatch.chdir(world)
    refused_and_untouched(world, args, "finite number")


def test_documented_defaults_work_as_overrides(world, monkeypatch):
    """docs/config.md's own spellings of numbers, given back on the command line, are
    accepted."""
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| `((?:data|model|train|search)\.[a-z_.]+)` \| `([-+0-9.e]+)` \|", page, re.M
    )
    overrides = [f"--{key}={value}" for key, value in rows]
    assert len(rows) > 20 and "--train.min_lr=1e-06" in overrides
    config = load_config(world / "tiny.yaml", overrides)
    assert config.train.min_lr == 1e-6


# --- integers no tensor holds, and negative numbers -----------------------------------------

INT_KEYS = [k for k, tp, _ in numeric_keys() if tp is int]


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_integer_key_refuses_numbers_the_code_below_cannot_hold(tmp_path, key):
    """Seeds numpy takes, vocabularies SentencePiece takes, sizes a tensor holds: the
    message names the key and its range."""
    path = tmp_path / "c.yaml"
    path.write_text("")
    for spelled in ("1e100", "99999999999999999999999", "-1e30", "1e18", "4e18", str(2**32)):
        with pytest.raises(
            UserError, match=rf"'{re.escape(key)}': expected an integer (below|from)"
        ):
            load_config(path, [f"--{key}={spelled}"])


@pytest.mark.parametrize("key", [k for k in NUMERIC_KEYS if k != "data.subwords.nbest_size"])
def test_no_numeric_key_but_nbest_size_takes_a_negative_number(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(UserError, match=re.escape(key)):
        load_config(path, [f"--{key}=-1"])


# --- YAML as people write it ----------------------------------------------------------------


def typed_keys(kind, cls=Config, prefix="") -> list[str]:
    """Every key of the config tree whose type is `kind`, or `kind | None`."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            keys += typed_keys(kind, tp, f"{prefix}{field.name}.")
        elif tp in (kind, kind | None):
            keys.append(prefix + field.name)
    return keys


def from_yaml_and_override(tmp_path, key: str, spelled: str) -> list:
    """The value `key` takes from `key: <spelled>` in a config file, and from
    --key=<spelled> (a UserError's message where it is refused)."""
    parts = key.split(".")
    lines = [f"{'  ' * i}{part}:" for i, part in enumerate(parts)]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + f" {spelled}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    got = []
    for load in (lambda: load_config(path), lambda: load_config(empty, [f"--{key}={spelled}"])):
        try:
            value = to_dict(load())
            for part in key.split("."):
                value = value[part]
            got.append(value)
        except UserError as e:
            got.append(str(e))
    return got


YAML_11 = [
    "no",
    "yes",
    "on",
    "off",
    "NO",
    "y",
    "010",
    "0x1F",
    "1e3",
    "1_000",
    "2016-01-01",
    "12:30",
]


@pytest.mark.parametrize("key", typed_keys(str))
def test_every_string_key_takes_what_yaml_1_1_would_retype_as_the_text_typed(tmp_path, key):
    """`--data.tgt_lang=no` is Norwegian, not false; `010` is not 8."""
    for spelled in YAML_11:
        for got in from_yaml_and_override(tmp_path, key, spelled):
            if got != spelled and not got.endswith(f"/{spelled}"):  # a path is resolved
                # refused by the key's own rule, quoting what was typed
                assert f"'{spelled}'" in got and "expected a string" not in got, got


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_integer_key_reads_a_leading_zero_as_decimal(tmp_path, key):
    for got in from_yaml_and_override(tmp_path, key, "010"):
        assert got == 10 or re.search(r"got (.010.|10)$|\(10\)", got), got  # not 8


@pytest.mark.parametrize("key", typed_keys(bool))
def test_every_boolean_key_takes_yaml_1_1_spellings(tmp_path, key):
    for spelled, value in [("yes", True), ("No", False), ("on", True), ("OFF", False),
                           ("true", True), ("False", False)]:  # fmt: skip
        assert from_yaml_and_override(tmp_path, key, spelled) == [value, value]
    assert all("true or false" in got for got in from_yaml_and_override(tmp_path, key, "2"))


@pytest.mark.parametrize("key", [k for k, _, _ in numeric_keys()] + typed_keys(str))
def test_an_error_quotes_a_short_excerpt_of_a_huge_value(key):
    section, *rest = key.split(".")
    raw: dict = {}
    node = raw
    for part in [section, *rest[:-1]]:
        node = node.setdefault(part, {})
    node[(rest or [section])[-1]] = list(range(200_000))
    with pytest.raises(UserError) as refused:
        from_dict(Config, raw)
    assert len(str(refused.value)) < 200 and "..." in str(refused.value)


def test_an_override_is_quoted_short_too(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    with pytest.raises(UserError, match=r"^override '--train\.lr\.x=\[0, 1, .{0,60}\.\.\.") as e:
        load_config(tmp_path / "c.yaml", ["--train.lr=1", f"--train.lr.x={list(range(10**4))}"])
    assert len(str(e.value)) < 200


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
        )
        + "data: {src_lang: *i}\n",
        "a: &a [1, *a]\n",  # an alias inside itself
    ],
    ids=["billion laughs", "a loop"],
)
def test_aliases_that_copy_out_without_bound_are_refused_at_once(tmp_path, text):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:1: aliases copy out more"):
        load_config(path)


def test_aliases_and_merge_keys_within_the_bound_are_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoder: &size {hidden_size: 8}\n"
                    "  decoder: {<<: *size, num_layers: 2}\n")  # fmt: skip
    config = load_config(path)
    assert config.model.encoder.hidden_size == config.model.decoder.hidden_size == 8


def test_a_config_named_with_spaces_and_letters_beyond_ascii_names_its_run(tmp_path, world):
    folder = tmp_path / "my configs é"
    folder.mkdir()
    text = (world / "tiny.yaml").read_text(encoding="utf-8").replace("name: tiny\n", "")
    (folder / "tiny ü.yaml").write_text(text, encoding="utf-8")
    assert load_config(folder / "tiny ü.yaml").name == "tiny ü"


@pytest.mark.parametrize("key", [k for k, _, _ in numeric_keys()])
def test_every_range_shown_names_every_bound(key):
    section = key.rsplit(".", 1)[0] if "." in key else ""
    cls = Config
    for part in filter(None, section.split(".")):
        cls = typing.get_type_hints(cls)[part]
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == key.rsplit(".", 1)[-1])
    shown = next(kind for name, kind, _, _ in config_rows(Config) if name == key)
    for bound in ("low", "high", "above", "below"):
        if meta.get(bound) is not None:
            assert str(meta[bound]) in shown, (key, shown)
