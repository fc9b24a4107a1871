"""README.md and docs/ hold the truth: the config reference, the commands, the examples."""

from __future__ import annotations

import re
import shlex

import typer

from cli import app
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


# --- the commands and links the pages show --------------------------------------------------

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_lines(text: str) -> list[str]:
    """The lines of a page's code blocks (indented or fenced), continuation lines joined."""
    lines, fenced, joined = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        joined += line.strip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        lines.append(joined)
        joined = ""
    return lines


def shown_commands(text: str) -> list[tuple[str, list[str]]]:
    """Each `nmt ...` (or `cli.py ...`) command in a page's code blocks: (name, arguments)."""
    commands = []
    for line in code_lines(text):
        for part in re.split(r"\s(?:\||;|&&)\s", line.split(" # ")[0]):
            match = re.match(r"(?:do\s+)?(?:nmt|.*\scli\.py)\s+(.*)", part.strip())
            if match:
                words = shlex.split(match.group(1), comments=True)
                commands.append((words[0], words[1:]))
    return commands


def test_every_command_shown_names_real_options_and_keys():
    """A renamed option or key fails here, not in a reader's terminal."""
    group = typer.main.get_command(app)
    config_keys = {key for key, *_ in keys(Config)}
    checked = 0
    for page in PAGES:
        for name, words in shown_commands(page.read_text(encoding="utf-8")):
            where = f"{page.relative_to(ROOT)}: nmt {name} {' '.join(words)}"
            if name.startswith("-"):
                words, command = [name, *words], group
            else:
                assert name in group.commands, f"{where}: no command {name}"
                command = group.commands[name]
            options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
            for word in words:
                option = word.split("=", 1)[0]
                if not option.startswith("-") or option in ("-", "--help", "-h"):
                    continue
                if option.startswith("--") and "." in option:
                    assert "=" in word, f"{where}: write {option}=VALUE"
                    assert option[2:] in config_keys, f"{where}: no config key {option[2:]}"
                else:
                    assert option in options, f"{where}: nmt {name} has no option {option}"
            checked += 1
    assert checked > 40


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    anchors, fenced = set(), False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_relative_link_reaches_a_file_and_heading():
    """Pages move; a link to a file or heading that moved away fails here."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
            if anchor:
                found = heading_anchors(linked.read_text(encoding="utf-8"))
                assert anchor in found, f"{page.relative_to(ROOT)}: no heading #{anchor}"


def test_readme_is_a_front_door():
    """README stays short: what it is, the commands, headline results, links."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150, "README is the front door; details go to docs/"
    assert readme.count("```python") == 1, "the Python API example is README's one python block"
