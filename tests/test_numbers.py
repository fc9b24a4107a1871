"""Numbers as people write them: exponents, non-finite values, integers no tensor holds
and negative numbers, for every numeric config key, in YAML and on the command line.

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
def test_every_integer_key_refuses_numbers_no_tensor_holds(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    for spelled in ("1e100", "99999999999999999999999", "-1e30"):
        with pytest.raises(UserError, match=rf"'{re.escape(key)}': expected an integer below"):
            load_config(path, [f"--{key}={spelled}"])


@pytest.mark.parametrize("key", [k for k in NUMERIC_KEYS if k != "data.subwords.nbest_size"])
def test_no_numeric_key_but_nbest_size_takes_a_negative_number(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(UserError, match=re.escape(key)):
        load_config(path, [f"--{key}=-1"])
