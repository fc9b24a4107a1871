"""README.md and docs/ hold the truth: the config reference, the commands, the examples."""

from __future__ import annotations

from seq2seq.config import Config, config_keys, keys

from .conftest import ROOT


def test_the_config_reference_is_generated_from_the_config_classes():
    page = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    tables = page.split("checks them. -->\n\n", 1)[1]
    assert tables == config_keys(markdown=True), "regenerate: nmt keys --markdown"
    for key, _, _, meaning in keys(Config):
        assert f"| `{key}` |" in tables and meaning


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
