"""The README and docs/ stay true: every link is followed, every ``optout-guard`` command shown is
parsed by the real command line (a renamed or removed option fails here), and the commands a
newcomer runs first are run for real."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

# Typer 0.29 ships its own copy of Click: its parser raises these (--help raises typer.Exit).
from typer._click.exceptions import MissingParameter, UsageError
from typer.main import get_command

from optout_guard.cli import app, hoist_workspace

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI = str(Path(sys.executable).with_name("optout-guard"))
_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`(optout-guard [^`]+)`")
_LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
# Shell syntax after which the rest of the line is not optout-guard's arguments.
_SHELL_END = {">", ">>", "|", "2>&1", "&&", ";", "<"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for every optout-guard command in a code block or inline code."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in _FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("optout-guard "):
                    found.append((page.name, line))
        for inline in _INLINE.findall(_FENCE.sub("", text)):
            found.append((page.name, re.sub(r"\[(-[^\]]+)\]", r"\1", inline)))  # "[--out DIR]": an optional part
    return found


def _parse(line: str) -> None:
    """Parse a command line as the real CLI would, without running it."""
    words = shlex.split(line, comments=True)[1:]
    cut = next((i for i, w in enumerate(words) if w in _SHELL_END), len(words))
    words = [w for w in words[:cut] if w not in ("…", "...")]
    ctx = get_command(app).make_context("optout-guard", hoist_workspace(words))
    while hasattr(ctx.command, "resolve_command"):  # a group: descend into the command named
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            break
        name, sub, args = ctx.command.resolve_command(ctx, rest)
        assert sub is not None, name
        ctx = sub.make_context(name, args, parent=ctx)


def test_docs_show_optout_guard_commands():
    commands = documented_commands()
    assert len(commands) > 60  # the pages show the commands they talk about (guards the extraction itself)
    assert {page for page, _ in commands} >= {"README.md", "command-line.md", "audit.md", "sync.md", "review-desk.md"}


@pytest.mark.parametrize(("page", "line"), documented_commands())
def test_every_documented_command_parses(page, line):
    try:
        _parse(line)
    except typer.Exit:
        pass  # --help and --version stop parsing on purpose
    except MissingParameter:
        words = shlex.split(line)
        if len(words) > 3 or any(w.startswith("-") for w in words):  # "`optout-guard sync`" in a sentence names it
            pytest.fail(f"{page}: `{line}` lacks a required argument")
    except UsageError as exc:
        pytest.fail(f"{page}: `{line}` does not parse: {exc.format_message()}")


def test_a_wrong_option_would_be_caught():
    with pytest.raises(UsageError, match="No such option"):
        _parse("optout-guard check --no-such-flag photos/")
    with pytest.raises(UsageError, match="No such option"):
        _parse("optout-guard -w ws audit /srv/lib --cluster local:2 --no-such-flag")
    with pytest.raises(UsageError, match="No such command"):
        _parse("optout-guard no-such-command")


def test_every_link_in_the_docs_leads_somewhere():
    broken = []
    for page in PAGES:
        for m in _LINK.finditer(page.read_text(encoding="utf-8")):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z]+:", target):
                continue  # https://… : not followed (no network in tests)
            file_part, _, anchor = target.partition("#")
            path = (page.parent / file_part).resolve() if file_part else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_page_is_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"docs/{page.name} is not linked from the README"


@pytest.mark.models  # the demo's real check, in a subprocess
def test_the_install_page_check_runs(tmp_path):
    """docs/install.md's "Check that it works" command, exactly as written but for the folder."""
    text = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    line = next(c for p, c in documented_commands() if p == "install.md" and c.startswith("optout-guard demo"))
    words = shlex.split(line, comments=True)
    words[words.index("--dir") + 1] = str(tmp_path / "demo")
    assert "It exits 0 when every verdict is the expected one" in text
    done = subprocess.run([CLI, *words[1:]], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_figure_tables_match_the_benchmark_outputs_they_come_from():
    """docs' figure tables are rendered from docs/figures/*.json (copies of the benchmarks' output
    files) by scripts/doc_figures.py: a figure typed by hand, or a stale table, fails here."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import doc_figures
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert len(doc_figures.FIGURES) >= 3
    for name, (_source, page, _render) in doc_figures.FIGURES.items():
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert doc_figures.rendered(name, text) == text, f"docs/{page}: the {name} table differs from docs/figures/{name}.json"
        # Not vacuous: a figure edited by hand inside the block is put back by the rendering.
        start = text.index(f"<!-- figures:{name} ")
        last_row = text[start : text.index(f"<!-- /figures:{name} -->")].rstrip().splitlines()[-1]
        edited = text.replace(last_row, last_row.replace(" |", " 9 |", 1), 1)
        assert edited != text and doc_figures.rendered(name, edited) == text


def test_the_readmes_headline_figures_are_the_benchmarks():
    """The README's first table of figures (thresholds and what they cost) says what the accuracy
    benchmark's output says, not what someone remembered."""
    import json

    rule = json.loads((ROOT / "docs" / "figures" / "accuracy-by-gallery.json").read_text())["rule"]
    at_1000 = next(g for g in rule["by_gallery_size"] if g["enrolled"] == 1000)
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    row = next(line for line in readme if line.startswith("| thresholds block"))
    expected = [
        f"block {rule['block']:.2f} / review {rule['review']:.2f}",
        f"{100 * at_1000['enrolled_missed']:.1f}% of photos of enrolled students missed",
        f"{100 * at_1000['enrolled_blocked']:.1f}% blocked outright",
        f"{100 * at_1000['never_enrolled_blocked']:.2f}% of other faces blocked",
        f"{100 * at_1000['never_enrolled_held_for_review']:.1f}% held",
    ]
    assert all(text in row for text in expected), (row, expected)


@pytest.mark.models  # the demo's real check, in a subprocess
def test_the_json_example_is_what_check_json_prints(tmp_path):
    """docs/command-line.md shows a `check --json` document of the demo's assembly photo: every
    key it shows exists in the real document, with the same values (distances to 0.002)."""
    import json

    text = (ROOT / "docs" / "command-line.md").read_text(encoding="utf-8")
    shown = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    ws = tmp_path / "demo"
    subprocess.run([CLI, "demo", "--dir", str(ws)], capture_output=True, check=True, timeout=600)
    done = subprocess.run([CLI, "-w", str(ws), "check", "--json", "--annotate", "checked", "photos/assembly.jpg"],
                          capture_output=True, text=True, cwd=ws, timeout=600)  # fmt: skip
    real = json.loads(done.stdout)

    def same(doc, actual, where="$"):
        if isinstance(doc, dict):
            assert isinstance(actual, dict), where
            for key, value in doc.items():
                assert key in actual, f"{where}.{key} is documented but not printed"
                same(value, actual[key], f"{where}.{key}")
        elif isinstance(doc, list):
            assert isinstance(actual, list) and len(actual) >= len(doc), where
            for i, (d, a) in enumerate(zip(doc, actual, strict=False)):
                same(d, a, f"{where}[{i}]")
        elif isinstance(doc, float) and where.endswith(("distance", "seconds", "detection_score")):
            assert abs(doc - actual) <= (1.0 if where.endswith("seconds") else 0.002), where
        elif isinstance(doc, str) and where.endswith(("reasons[0]", "reason")):  # the sentence, not its number
            assert isinstance(actual, str) and doc.split("(")[0] == actual.split("(")[0], where
        elif re.search(r"box\[\d\]$", where):
            assert abs(doc - actual) <= 2, where
        else:
            assert doc == actual, f"{where}: documented {doc!r}, printed {actual!r}"

    same(shown, real)
