"""The ``optout-guard`` program's first step, kept light (issue 30): a ``check`` starts loading its
models in threads *before* the command line itself — Typer, Rich and every command, ~0.09 s — is
imported, so that import overlaps the loading (a one-photo check as a whole command: median
0.59 -> 0.53 s over 21 alternating runs, docs/accuracy.md)."""

from __future__ import annotations

import sys


def warm_up(args: list[str]) -> bool:
    """Start loading the models a `check` with these arguments needs, in threads, and return at once;
    True for a `check` (it ends without teardown). Only the arguments are read: a model that
    config.toml turns out not to need is loaded for nothing, never used (check asks for the ones it
    needs). The workspace option may come before or after the command."""
    rest = list(args)
    while rest[:1] and rest[0].startswith("-"):  # the program's own options: -w WS, --workspace WS
        rest = rest[2:] if rest[0] in ("-w", "--workspace") else rest[1:]
    if not rest or rest[0] != "check" or "--help" in args:
        return False
    from optout_guard.models import get_models, models_needed

    detector = args[args.index("--detector") + 1] if "--detector" in args[:-1] else "centerface"
    get_models().load_in_background(models_needed(detector, "--no-recognition" not in args))
    return True


def run() -> None:
    """The ``optout-guard`` program (``[project.scripts]``)."""
    checking = warm_up(sys.argv[1:])
    from optout_guard.cli import run as command_line

    command_line(fast_exit=checking)
