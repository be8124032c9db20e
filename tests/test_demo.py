"""The built-in demo and the marked-up copies, on package-shipped portraits (any fresh machine)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from optout_guard.cli import app
from optout_guard.demo import run_demo
from optout_guard.pipeline import Guard
from optout_guard.types import Verdict


@pytest.mark.models  # real models, on made-up or package-shipped photos
def test_demo_gives_the_expected_verdicts(tmp_path):
    run = run_demo(tmp_path / "demo")
    assert run.unexpected() == []
    assert {Path(r.path).name: r.verdict for r in run.results} == {
        "assembly.jpg": Verdict.BLOCK,
        "visitor.jpg": Verdict.ALLOW,
        "coffee.jpg": Verdict.ALLOW,
    }
    assert all(Path(r.annotated_path).is_file() for r in run.results)


@pytest.mark.models  # real models, on made-up or package-shipped photos
def test_demo_command_exit_code_and_output(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "d")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Demo OK" in result.stdout and "BLOCK" in result.stdout
    # Issue 28: each marked-up copy is named once, and the command to try is one that can be typed.
    copies = [w for w in result.stdout.split() if w.endswith(".jpg") and "checked" in w]
    assert copies and len(copies) == len(set(copies)), copies
    tried = next(line for line in result.stdout.splitlines() if line.startswith("Try it yourself: "))
    program = tried.split()[3]
    assert program == "optout-guard" or Path(program).is_file(), tried


def test_marked_copy_is_a_clean_jpeg_and_original_untouched(demo_ws, tmp_path, samples):
    # A photo carrying EXIF (orientation + GPS-like tags) must not leak any of it into the copy.
    src = tmp_path / "with_exif.jpg"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = 1
    Image.open(samples["grace_hopper"]).save(src, exif=exif.tobytes(), quality=92)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    result = Guard(demo_ws).check(src, annotate_dir=tmp_path / "marked")
    assert result.verdict is Verdict.BLOCK
    copy = Image.open(result.annotated_path)
    assert copy.format == "JPEG" and len(copy.getexif()) == 0 and "exif" not in copy.info
    assert Path(result.annotated_path).name == f"with_exif.{digest[:8]}.jpg"
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
