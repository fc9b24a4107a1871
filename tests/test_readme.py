"""README.md holds the truth: its config reference names every key, with its default."""

from __future__ import annotations

import dataclasses
import re

from seq2seq.config import Config, to_dict

from .conftest import ROOT


def flatten(prefix: str, value) -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else k, v))
        return out
    return {prefix: value}


def test_config_reference_lists_every_key_and_its_default():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    reference = readme.split("## Config reference")[1].split("\n## ")[0]
    defaults = to_dict(Config())
    for section in ("data", "model", "train", "search"):
        table = reference.split(f"### {section}\n")[1].split("###")[0]
        rows = dict(re.findall(r"^\| `([a-z_.]+)` \|\s*([^|]*?)\s*\|", table, flags=re.M))
        for key, default in flatten("", defaults[section]).items():
            assert key in rows, f"README config reference lacks {section}.{key}"
            shown = rows[key].strip().strip("`")
            if default in (None, "") or key == "path":
                continue
            expected = default
            if isinstance(default, bool):
                expected = "true" if default else "false"
            elif isinstance(default, list):
                expected = "[" + ", ".join(str(d) for d in default) + "]"
            assert shown == str(expected), f"{section}.{key}: README says {shown}, code {expected}"
    assert dataclasses.fields(Config)[0].name == "name"


def test_readme_commands_name_the_real_cli():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "nmt pipeline" in readme and ".ci/run" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(line for line in readme.splitlines() if "pytest" in line and "pip" in line)
    assert test_command.strip().replace(" -q", "") in ci.replace(" -q", "")


def test_the_python_example_runs(trained_run, capsys):
    """README's Python API example, run as written against a trained run folder."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = readme.split("```python\n")[1].split("```")[0]
    assert '"runs/demo"' in example
    exec(example.replace('"runs/demo"', repr(str(trained_run))), {})
    assert capsys.readouterr().out.count("\n") == 4  # the list, then three hypotheses


def test_serve_settings_are_all_in_the_readme():
    from seq2seq.config import ServeConfig

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("Any `--serve.KEY=VALUE`")[1].split("\n\n")[1]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| `([^`]*)` \|", table, flags=re.M))
    assert rows == {k: str(v) for k, v in dataclasses.asdict(ServeConfig()).items()}
