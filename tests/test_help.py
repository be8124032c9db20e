"""Every command's --help shows every help string as written (no text eaten as markup, e.g. a
"[default: …]"), and flags read like other well-made command lines (no "<bool>" after a flag)."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from optout_guard.cli import app

runner = CliRunner()


def _commands() -> list[tuple[list[str], click.Command]]:
    root = typer.main.get_command(app)
    found: list[tuple[list[str], click.Command]] = [([], root)]
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.append(([name], command))
        for sub, subcommand in getattr(command, "commands", {}).items():
            found.append(([name, sub], subcommand))
    return found


def _flat(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("path,command", _commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_help_shows_every_help_string_as_written(path, command):
    result = runner.invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    shown = _flat(result.output)
    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text and not getattr(param, "hidden", False):
            assert _flat(help_text) in shown, f"{' '.join(path)} {param.name}: {help_text!r} not shown as written"
    assert "<bool>" not in result.output
    # Conventions of well-made CLIs (issue 18): "PATHS..." and "--annotate PATH", not Typer 0.29's
    # "{PATHS}...", "<list[Path]>" or "<path>".
    usage = result.output.split("\n\n")[0]
    assert "{" not in usage and "<" not in usage, usage
    assert "<list[" not in result.output and "<path>" not in result.output and "<text>" not in result.output


def test_check_usage_reads_like_other_tools():
    result = runner.invoke(app, ["check", "--help"], terminal_width=100)
    assert "Usage: optout-guard check [OPTIONS] PATHS..." in result.output
    assert "--annotate PATH" in result.output and "--workers INT" in result.output


def test_help_says_what_the_options_really_do():
    """Issue 28: `watch --help` said --redact blurs blocked faces; it blurs blocked and review faces,
    as `check --redact` does (tests/test_redact.py checks the behaviour)."""
    for command in (["watch"], ["check"]):
        shown = " ".join(runner.invoke(app, [*command, "--help"], terminal_width=200).output.split())
        assert "faces under review blurred" in shown, command
