"""Every command's --help shows its source text as written: bracketed examples and flags."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from infercmp.cli import app


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _squeezed(text: str) -> str:
    """Help is wrapped at the terminal width, at spaces or hyphens: compare without either."""
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "infercmp" for p, _ in COMMANDS]
)
def test_help_shows_every_bracketed_example_and_flags_as_flags(path, command):
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "80"}).invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shown = _squeezed(result.output)
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    bracketed = [b for text in texts for b in re.findall(r"\S*\[[^\]]*\]\S*", text)]
    missing = [b for b in bracketed if _squeezed(b) not in shown]
    assert not missing, f"help of {' '.join(path)} lost {missing}:\n{result.output}"
    for param in command.params:
        if getattr(param, "is_flag", False):
            flag = param.opts[0]
            assert re.search(rf"^\s*(-\w, )?{flag}(/\S+)?\s{{2,}}", result.output, re.M), (
                f"{flag} is not shown as a plain flag:\n{result.output}"
            )
    assert "<bool>" not in result.output
    for name, sub in getattr(command, "commands", {}).items():
        summary = " ".join((sub.help or "").split("\n\n")[0].split())
        assert _squeezed(f"{name}{summary}") in shown, f"{name}'s summary is cut:\n{result.output}"


def test_the_engine_example_survives_in_bench_help():
    """The report of issue 14: rich markup printed `options in brackets: 'pytorch'.`"""
    result = CliRunner(env={"NO_COLOR": "1"}).invoke(app, ["bench", "--help"])
    assert _squeezed("options in brackets: 'pytorch[cuda_graph=true]'") in _squeezed(result.output)
    assert re.search(r"^\s+--device-resident\s{2,}Time compute only", result.output, re.M)


# Python annotations where a user expects the name of a value (issue 23, D.26).
PYTHON_TYPES = re.compile(r"<str>|<bool>|<float>|list\[|\[Path\]|\{\w+\}|Path\]")


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "infercmp" for p, _ in COMMANDS]
)
def test_help_names_values_as_typed_not_as_python_types(path, command):
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "80"}).invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    leaked = PYTHON_TYPES.findall(result.output)
    assert not leaked, f"help of {' '.join(path)} shows {leaked}:\n{result.output}"
    # A placeholder a help text uses (`exceeds PCT %`) is the metavar of some option.
    for placeholder in re.findall(r"\bPCT\b", result.output):
        assert re.search(rf"--[\w-]+ {placeholder}\b", result.output), (
            f"{placeholder} is used but not defined:\n{result.output}"
        )


def test_help_shows_arguments_by_name_and_the_commands_agree_on_short_flags():
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "80"})
    # MODEL may be left out with --resume RUN, which reuses the run's stored flags.
    bench = runner.invoke(app, ["bench", "--help"]).output
    assert "Usage: infercmp bench [OPTIONS] [MODEL]\n" in bench
    assert "[OPTIONS] [RUN_DIRS]...\n" in runner.invoke(app, ["report", "--help"]).output
    assert "[OPTIONS] BASE_RUN NEW_RUN\n" in runner.invoke(app, ["compare", "--help"]).output
    assert "-s, --shape" in runner.invoke(app, ["export", "--help"]).output
    top = _squeezed(runner.invoke(app, ["--help"]).output)
    assert _squeezed("PyTorch, ONNX Runtime, OpenVINO and TensorRT") in top
