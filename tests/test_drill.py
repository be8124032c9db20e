"""The fault drills (scripts/drill.py) run as part of the suite: every drill must hold."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "drill.py"


@pytest.mark.models  # real models, on made-up or package-shipped photos
def test_every_fault_drill_holds(tmp_path):
    drill = runpy.run_path(str(SCRIPT), run_name="drill")
    drills = drill["run_drills"](tmp_path)
    assert sum(d.runs for d in drills) >= 15  # each kill point of sync, enroll and remove, and the races
    failed = {d.name: d.failures for d in drills if d.held != d.runs}
    assert not failed, failed
    assert {d.name for d in drills} >= {"sync killed at every rename", "photo replaced while checked (watch, audit)"}
