"""One decision per child across an event (issue 26, §3): the photos of one check; escalation only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import DATA
from optout_guard.cli import app
from optout_guard.events import LINK, _complete_linkage

FGNET = DATA / "children_dev" / "fgnet" / "images"


def enrolled_children(tmp_path):
    """A workspace with six FG-NET children enrolled, child 10 from the photo at 9 (one reference)."""
    ws = tmp_path / "ws"
    for photo in ("010A09", "002A20", "022A25", "027A22", "052A13", "074A06"):
        (ws / "enrollments" / f"c{photo[:3]}").mkdir(parents=True)
        shutil.copy(FGNET / f"{photo}.JPG", ws / "enrollments" / f"c{photo[:3]}" / f"{photo}.JPG")
    assert CliRunner().invoke(app, ["--workspace", str(ws), "enroll"]).exit_code == 0
    return ws


def test_groups_are_one_face_per_photo_and_every_pair_close():
    rng = np.random.default_rng(0)
    child = rng.normal(size=128)
    child *= 0.6 / np.linalg.norm(child)
    near = [child + rng.normal(scale=0.015, size=128) for _ in range(3)]  # ~0.24 apart: one child
    other = child + rng.normal(scale=0.05, size=128)  # ~0.8 from the others: another child
    members = [(0, 0, near[0]), (1, 0, near[1]), (1, 1, near[2]), (2, 0, other)]
    groups = _complete_linkage(members)
    assert len(groups) == 1 and len(groups[0]) == 2  # photo 1 gives one face, never two; `other` stays out
    assert {p for p, _, _ in groups[0]} == {0, 1}
    for a in groups[0]:
        for b in groups[0]:
            assert np.linalg.norm(a[2] - b[2]) <= LINK


@pytest.mark.data
def field_day(tmp_path: Path) -> Path:
    """One event: FG-NET child 10's two photos at age 7 in one folder."""
    event = tmp_path / "field-day"
    event.mkdir()
    for photo in ("010A07a", "010A07b"):
        shutil.copy(FGNET / f"{photo}.JPG", event / f"{photo}.JPG")
    return event


def test_a_child_held_in_two_photos_of_one_check_is_blocked_once_seen_together(tmp_path, data_dir):
    """FG-NET child 10, enrolled from the photo at 9; two photos at 7 (one event). Each alone is only
    held (0.41 from the reference); checked together their pooled embedding is 0.35 from it: blocked,
    and the reason says why. Checked one at a time nothing changes (no event)."""
    ws = enrolled_children(tmp_path)
    run = CliRunner().invoke
    event = field_day(tmp_path)
    alone = json.loads(run(app, ["--workspace", str(ws), "check", "--json", str(event / "010A07a.JPG")]).stdout)
    assert alone["photos"][0]["verdict"] == "review"
    together = run(app, ["--workspace", str(ws), "check", "--json", str(event)])
    assert together.exit_code == 1, together.output
    doc = json.loads(together.stdout)
    for photo in doc["photos"]:
        face = photo["faces"][0]
        assert photo["verdict"] == "block" and face["student_id"] == "c010" and face["code"] == "event_match"
        assert "together with the same child in 1 other photo of this check" in face["reason"]


@pytest.mark.data
def test_the_audit_decides_once_per_child_across_a_folder_of_one_day(tmp_path, data_dir):
    """The same two photos in one folder of the library (one event): blocked together, as in a check.
    In two folders (two events) each is decided alone: review."""
    import datetime as dt
    import os

    ws = enrolled_children(tmp_path)
    run = CliRunner().invoke
    library = tmp_path / "library"
    (library / "2026-10 field day").mkdir(parents=True)
    (library / "2026-10 concert").mkdir()
    (library / "2026-11 trip").mkdir()
    day = dt.datetime(2026, 10, 14, 10).timestamp()
    for folder, photo in (("2026-10 field day", "010A07a"), ("2026-10 field day", "010A07b"), ("2026-10 concert", "010A07a"),
                          ("2026-11 trip", "010A07b")):  # fmt: skip
        shutil.copy(FGNET / f"{photo}.JPG", library / folder / f"{photo}.JPG")
        os.utime(library / folder / f"{photo}.JPG", (day, day))
    result = run(app, ["--workspace", str(ws), "audit", str(library)])
    assert result.exit_code == 1, result.output
    import sqlite3

    from optout_guard.audit.state import state_path
    from optout_guard.config import load_settings

    db = sqlite3.connect(state_path(load_settings(ws, environ={}), library))
    stored = {os.fsdecode(bytes(p)).split("library/")[1]: (v, json.loads(f)) for p, v, f in
              db.execute("SELECT path, verdict, faces FROM files")}  # fmt: skip
    db.close()
    for name in ("2026-10 field day/010A07a.JPG", "2026-10 field day/010A07b.JPG"):
        verdict, faces = stored[name]
        assert verdict == "block" and faces[0]["code"] == "event_match" and faces[0]["student_id"] == "c010"
        assert "of this folder (same day)" in faces[0]["reason"]
    assert stored["2026-10 concert/010A07a.JPG"][0] == "review" and stored["2026-11 trip/010A07b.JPG"][0] == "review"


@pytest.mark.data
def test_the_marked_copy_of_a_face_blocked_by_its_event_is_drawn_red_not_amber(tmp_path, data_dir):
    """The marked-up copy is written when a photo is checked alone; a face the event then blocks is
    drawn again in the block colour (it said "review" in amber before)."""
    import numpy as np
    from PIL import Image

    from optout_guard.annotate import COLOURS
    from optout_guard.types import Decision

    ws = enrolled_children(tmp_path)
    run = CliRunner().invoke
    event = field_day(tmp_path)

    def share_of(colour: tuple[int, int, int], path: str) -> float:
        pixels = np.asarray(Image.open(path).convert("RGB"), np.int16)
        return float(np.mean(np.all(np.abs(pixels - np.array(colour)) < 30, axis=2)))

    alone = json.loads(run(app, ["--workspace", str(ws), "check", "--json", "--annotate", str(tmp_path / "alone"),
                                 str(event / "010A07a.JPG")]).stdout)["photos"][0]  # fmt: skip
    together = json.loads(run(app, ["--workspace", str(ws), "check", "--json", "--annotate", str(tmp_path / "together"),
                                    str(event)]).stdout)["photos"]  # fmt: skip
    joint = next(p for p in together if p["path"].endswith("010A07a.JPG"))
    assert alone["verdict"] == "review" and joint["verdict"] == "block"
    red, amber = COLOURS[Decision.BLOCK], COLOURS[Decision.REVIEW]
    assert share_of(amber, alone["annotated"]) > 0.001 and share_of(red, alone["annotated"]) < 0.0002
    assert share_of(red, joint["annotated"]) > 0.001 and share_of(amber, joint["annotated"]) < 0.0002


@pytest.mark.data
def test_photos_dropped_together_in_the_check_folder_are_one_event(tmp_path, data_dir):
    """The two photos of FG-NET child 10, dropped together: filed first as review each, then moved
    to blocked/ with a note saying why and a red marked-up copy. One photo dropped alone stays in review/."""
    from optout_guard.config import load_settings
    from optout_guard.pipeline import Guard
    from optout_guard.watch import CheckFolder

    ws = enrolled_children(tmp_path)
    guard = Guard(load_settings(ws, environ={}))
    alone, together = tmp_path / "alone", tmp_path / "together"
    alone.mkdir()
    together.mkdir()
    shutil.copy(FGNET / "010A07a.JPG", alone / "010A07a.JPG")
    for photo in ("010A07a", "010A07b"):
        shutil.copy(FGNET / f"{photo}.JPG", together / f"{photo}.JPG")
    assert CheckFolder(alone, guard, settle=0.1, arrival_grace=0.0).run_once() == 1
    assert (alone / "review" / "010A07a.JPG").is_file()
    assert CheckFolder(together, guard, settle=0.1, arrival_grace=0.0).run_once() == 2
    for photo in ("010A07a", "010A07b"):
        assert (together / "blocked" / f"{photo}.JPG").is_file() and not (together / "review" / f"{photo}.JPG").exists()
        note = (together / "blocked" / f"{photo}.JPG.txt").read_text()
        assert "BLOCK" in note and "together with the same child in 1 other photo of this drop" in note
        assert (together / "blocked" / f"{photo}.JPG.marked.jpg").is_file()
    assert not any((together / "review").iterdir())  # nothing left behind
    staging = together / ".optout-guard-staging"
    assert not [p for p in staging.rglob("*.jpg")]  # no copy left in staging


@pytest.mark.data
def test_a_drop_with_a_photo_blocked_alone_still_moves_the_held_ones(tmp_path, data_dir):
    """A photo that blocks on its own stays in blocked/ (it is not filed again); the held photos of
    the same child in the drop still move there."""
    from optout_guard.config import load_settings
    from optout_guard.pipeline import Guard
    from optout_guard.watch import CheckFolder

    ws = enrolled_children(tmp_path)
    inbox = tmp_path / "drop"
    inbox.mkdir()
    for photo in ("010A09", "010A07a", "010A07b"):  # the reference photo itself blocks alone
        shutil.copy(FGNET / f"{photo}.JPG", inbox / f"{photo}.JPG")
    assert CheckFolder(inbox, Guard(load_settings(ws, environ={})), settle=0.1, arrival_grace=0.0).run_once() == 3
    assert sorted(p.name for p in (inbox / "blocked").glob("*.JPG")) == ["010A07a.JPG", "010A07b.JPG", "010A09.JPG"]
    assert "of this drop" not in (inbox / "blocked" / "010A09.JPG.txt").read_text()
