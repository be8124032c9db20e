"""Light modules stay light: the opt-out list, the index, matching, the review book, the activity
log, the report and file safety load without OpenCV, dlib, SciPy or Flask (a desk page, `people`,
`log verify` and the unit tests of pure rules start in a fraction of a second)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = ["types", "errors", "config", "fsutil", "optout_list", "matching", "index", "review", "activity_log", "report",
         "calibration", "picture_day", "users", "desk", "cohort", "scope", "folders", "pool", "models",
         "audit.listing", "audit.plan", "audit.state"]  # fmt: skip
HEAVY = ("cv2", "dlib", "scipy", "flask", "onnxruntime", "onnx", "av", "distributed")


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_no_heavy_library(module):
    code = (
        f"import sys, optout_guard.{module}; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"optout_guard.{module} imports {loaded}"
