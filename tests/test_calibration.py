"""optout-guard calibrate on a gallery built from LFW people with 3+ photos each."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from conftest import LFW, make_workspace
from optout_guard.calibration import calibrate
from optout_guard.cli import app
from optout_guard.index import open_index


def test_calibrate_on_a_real_gallery(tmp_path, data_dir):
    people = [p for p in sorted(LFW.iterdir()) if len(list(p.glob("*.jpg"))) >= 3][:20]
    ws = make_workspace(tmp_path / "ws", {p.name: sorted(p.glob("*.jpg"))[:3] for p in people})
    index = open_index(ws)
    result = calibrate(index, ws)
    assert result.multi_photo_students >= 15 and result.probes >= 45
    finite = result.mated[np.isfinite(result.mated)]
    assert np.median(finite) < np.median(result.nonmated)  # same person is closer than anyone else
    fnir, fpir = result.rates(ws.review_distance)
    assert 0 <= fnir <= 1 and 0 <= fpir <= 1
    assert 0.2 < result.suggested["block_distance"] <= result.suggested["review_distance"] < 0.9
    assert any("at least 30 are needed" in w for w in result.warnings)  # 20 students: says so

    before = ws.index_file.read_bytes()
    done = CliRunner().invoke(app, ["--workspace", str(ws.workspace), "calibrate", "--out", str(tmp_path / "cal")])
    assert done.exit_code == 0, done.output
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert doc["probes"] == result.probes and "block_distance" in doc["at_current_thresholds"]
    assert (tmp_path / "cal" / "det.png").stat().st_size > 1000
    assert ws.index_file.read_bytes() == before  # nothing written into the gallery
    assert "embedding" not in json.dumps(doc)
