"""Issue 20: the opt-out list is sacred. Mid-year opt-outs, partial exports, an unmounted library,
a broken install. Each test failed on the code before the fix. Package-shipped portraits only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from optout_guard.audit import run_audit
from optout_guard.cli import app
from optout_guard.config import load_settings
from optout_guard.errors import ModelUnavailable
from optout_guard.index import open_index
from optout_guard.optout_list import load_list

runner = CliRunner()


def run(ws: Path, *args: str):
    return runner.invoke(app, ["--workspace", str(ws), *args])


@pytest.fixture
def district(tmp_path, samples):
    """A workspace synced from an export listing S1 (Grace Hopper's picture-day photo)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    delivery = tmp_path / "picture-day"
    delivery.mkdir()
    shutil.copy(samples["grace_hopper"], delivery / "S1.jpg")
    export = tmp_path / "export.txt"
    export.write_text("S1\n")
    assert run(ws, "sync", str(export), "--format", "ids", "--photos", str(delivery)).exit_code == 0
    return ws, export, delivery


def astronaut_jpg(tmp_path: Path, samples) -> Path:
    photo = tmp_path / "form-photo.jpg"
    Image.open(samples["astronaut"]).convert("RGB").save(photo, quality=92)
    return photo


def test_mid_year_opt_out_then_next_weeks_export(district, tmp_path, samples):
    """The mid-year procedure of docs/sync.md: add a student today, import the list next week."""
    ws, export, _ = district
    photo = astronaut_jpg(tmp_path, samples)
    result = run(ws, "add", "S-NEW-999", str(photo), "--first", "Eileen", "--last", "Collins", "--grade", "5")
    assert result.exit_code == 0, result.output
    assert "protected now" in result.stdout
    people = json.loads(run(ws, "people", "--json").stdout)["students"]
    new = next(s for s in people if s["student_id"] == "S-NEW-999")
    assert new["protected"] and new["protection_from"].startswith("added locally")
    assert run(ws, "check", str(photo)).exit_code == 1  # blocked from today

    # Next week's export does not list the student yet: the local addition is kept.
    assert run(ws, "sync", str(export), "--format", "ids").exit_code == 0
    assert "S-NEW-999" in open_index(load_settings(ws, environ={})).protected_students()
    assert run(ws, "check", str(photo)).exit_code == 1

    # Then the SIS lists them: the export's entry takes over.
    export.write_text("S1\nS-NEW-999\n")
    assert run(ws, "sync", str(export), "--format", "ids").exit_code == 0
    assert load_list(ws).students["S-NEW-999"].source == ""
    people = json.loads(run(ws, "people", "--json").stdout)["students"]
    assert next(s for s in people if s["student_id"] == "S-NEW-999")["protection_from"] == "opt-out list (SIS export)"


def test_a_folder_no_list_covers_is_never_skipped_silently(district, tmp_path, samples):
    ws, _, _ = district
    folder = ws / "enrollments" / "S-NEW-999"
    folder.mkdir()
    shutil.copy(astronaut_jpg(tmp_path, samples), folder / "2026.jpg")
    result = run(ws, "enroll")
    assert result.exit_code == 3
    text = " ".join(result.output.split())  # the terminal wraps long lines
    assert "not on the opt-out list" in text and "optout-guard add S-NEW-999" in text


def test_a_partial_export_removes_nobody_without_confirmation(tmp_path, samples):
    ws = tmp_path / "ws"
    ws.mkdir()
    export = tmp_path / "export.txt"
    ids = [f"S{i:02d}" for i in range(14)]
    export.write_text("\n".join(ids) + "\n")
    delivery = tmp_path / "pd"
    delivery.mkdir()
    shutil.copy(samples["grace_hopper"], delivery / "S00.jpg")
    assert run(ws, "sync", str(export), "--format", "ids", "--photos", str(delivery)).exit_code == 3  # 13 without photos
    hand_placed = ws / "enrollments" / "S00" / "from-the-office.jpg"
    shutil.copy(samples["grace_hopper"], hand_placed)
    assert run(ws, "enroll").exit_code == 3
    before = (ws / "optout-list.json").read_bytes(), (ws / ".optout-guard" / "index.npz").read_bytes()

    export.write_text("S12\nS13\n")  # one grade's export by mistake
    dry = run(ws, "sync", str(export), "--format", "ids", "--dry-run")
    assert dry.stdout.index("removed") < dry.stdout.index("Students added")  # removals lead
    refused = run(ws, "sync", str(export), "--format", "ids")
    assert refused.exit_code == 2 and "--confirm-removals 12" in refused.stderr
    assert ((ws / "optout-list.json").read_bytes(), (ws / ".optout-guard" / "index.npz").read_bytes()) == before
    assert run(ws, "sync", str(export), "--format", "ids", "--confirm-removals", "11").exit_code == 2  # the exact number

    done = run(ws, "sync", str(export), "--format", "ids", "--confirm-removals", "12")
    assert done.exit_code in (0, 3), done.output
    assert hand_placed.exists()  # photos put there by hand are never deleted by a sync
    assert not any(p.name.startswith("20") for p in hand_placed.parent.iterdir())  # the one sync copied is gone
    log = (ws / ".optout-guard" / "activity.jsonl").read_text().splitlines()
    entry = json.loads(log[-1])
    assert entry["action"] == "sync" and len(entry["details"]["students_removed"]) == 12
    assert len(entry["details"]["export_sha256"]) == 64


def test_an_unmounted_library_keeps_its_results(demo_ws, tmp_path, samples):
    library = tmp_path / "share"
    library.mkdir()
    for i in range(12):  # the enrolled portrait itself: one small photo that blocks
        shutil.copy(samples["grace_hopper"], library / f"p{i}.jpg")
    assert run_audit(library, demo_ws, workers=1).totals["block"] == 12
    moved = tmp_path / "elsewhere"
    library.rename(moved)
    library.mkdir()  # the mount point, empty: the share did not mount
    result = run(demo_ws.workspace, "audit", str(library))
    assert result.exit_code == 2 and "looks unmounted" in " ".join(result.output.split())
    shutil.rmtree(library)
    moved.rename(library)
    again = run_audit(library, demo_ws, workers=1)
    assert again.unchanged == 12 and again.totals["block"] == 12  # nothing was forgotten

    for p in list(library.iterdir())[:11]:
        p.unlink()
    assert run(demo_ws.workspace, "audit", str(library)).exit_code == 2
    accepted = run(demo_ws.workspace, "audit", str(library), "--accept-deletions")
    assert accepted.exit_code == 1 and "11 deleted" in accepted.stdout


def test_a_broken_install_is_a_setup_error_not_a_review(demo_ws, tmp_path, monkeypatch):
    import optout_guard.models as models

    real = models.model_path

    def missing(name: str) -> Path:
        if "centerface" in name:
            raise ModelUnavailable(f"model file /nowhere/{name} is missing; re-run the README install command")
        return real(name)

    monkeypatch.setattr(models, "model_path", missing)
    monkeypatch.setattr(models, "get_models", lambda: models.Models({}))  # nothing loaded before
    import optout_guard.pipeline as pipeline

    monkeypatch.setattr(pipeline, "get_models", lambda: models.Models({}))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(demo_ws.workspace / "photos" / "assembly.jpg", inbox / "a.jpg")
    ws = str(demo_ws.workspace)
    for args in (["check", str(inbox / "a.jpg")], ["watch", str(inbox), "--once"], ["audit", str(inbox)]):
        result = runner.invoke(app, ["--workspace", ws, *args])
        assert result.exit_code == 2 and "missing" in " ".join(result.output.split()), (args, result.output)
    assert (inbox / "a.jpg").exists() and not (inbox / "review").exists()  # nothing filed into review/


def test_a_mistyped_path_is_a_usage_error_and_a_missing_index_names_the_workspace(demo_ws, tmp_path):
    result = run(demo_ws.workspace, "check", str(tmp_path / "no-such-photo.jpg"))
    assert result.exit_code == 2 and "no such file or folder" in result.output
    elsewhere = run(tmp_path, "check", str(demo_ws.workspace / "photos" / "coffee.jpg"))
    text = "".join(elsewhere.output.split())
    assert elsewhere.exit_code == 2 and "--workspace" in text and "".join(str(tmp_path).split()) in text


def test_a_face_added_on_the_desk_survives_a_rebuild(tmp_path, data_dir):
    import stat

    from conftest import LFW, make_workspace
    from optout_guard.desk import Desk, DeskOptions

    make_workspace(tmp_path, {"hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)]})
    (tmp_path / "config.toml").write_text("block_distance = 0.35\nreview_distance = 0.65\n")
    ws = load_settings(tmp_path, environ={})
    desk = Desk(ws, DeskOptions(port=0))
    desk.check_upload("x.jpg", (LFW / "Hugo_Chavez" / "Hugo_Chavez_0009.jpg").read_bytes(), "reviewer")
    card = desk.book.queue()[0]
    decision = desk.decide(card.id, "hugo", "reviewer", add_reference=True)
    assert decision["reference_added"]
    saved = [p for p in (tmp_path / "enrollments" / "hugo").iterdir() if "_desk-" in p.name]
    assert len(saved) == 1 and stat.S_IMODE(saved[0].stat().st_mode) == 0o600
    assert len([t for t in open_index(ws).templates if t.student_id == "hugo"]) == 5
    assert run(tmp_path, "enroll").exit_code == 0  # unchanged: nothing added twice
    assert len([t for t in open_index(ws).templates if t.student_id == "hugo"]) == 5
    assert run(tmp_path, "enroll", "--rebuild").exit_code == 0
    assert len([t for t in open_index(ws).templates if t.student_id == "hugo"]) == 5  # was 4: the desk's face was lost
    desk.undo(desk.book.decisions(1)[0]["id"], "reviewer")
    assert not saved[0].exists()


def test_check_folder_results_open_to_whoever_can_open_the_check_folder(demo_ws, tmp_path):
    import os
    import stat

    from optout_guard.pipeline import Guard
    from optout_guard.watch import CheckFolder

    inbox = tmp_path / "Photo check"
    inbox.mkdir()
    os.chmod(inbox, 0o2770)  # a staff group's share
    old = os.umask(0o077)  # a strict service umask
    try:
        CheckFolder(inbox, Guard(demo_ws), settle=0.0, arrival_grace=0.0).run_once()
    finally:
        os.umask(old)
    for name in ("allowed", "blocked", "review"):
        assert stat.S_IMODE((inbox / name).stat().st_mode) & 0o770 == 0o770
    assert stat.S_IMODE((inbox / ".optout-guard-staging").stat().st_mode) == 0o700


def test_what_a_killed_write_left_is_swept_by_the_next_command(tmp_path, samples):
    """Issue 28: a killed add/sync left `enrollments/<id>/.<name>.jpg.XXXX.tmp` (a student's photo)
    and `.optout-list-XXXX.tmp` (names), and a killed desk upload its folder: never removed."""
    import os
    import time

    from typer.testing import CliRunner

    from optout_guard.cli import app

    ws = tmp_path / "ws"
    (ws / "enrollments" / "S1").mkdir(parents=True)
    (ws / "enrollments" / "S1" / "a.jpg").write_bytes(samples["grace_hopper"].read_bytes())
    photo_tmp = ws / "enrollments" / "S1" / ".b.jpg.k2j3h4.tmp"
    photo_tmp.write_bytes(b"half of a child's photo")
    list_tmp = ws / ".optout-list-x9y8.tmp"
    list_tmp.write_text('{"students": [{"student_id": "S1", "first": "Ann"}]}')
    upload = ws / ".optout-guard" / "desk-add-abc123"
    upload.mkdir(parents=True)
    (upload / "photo-1.jpg").write_bytes(b"a child's photo")
    old = time.time() - 7200
    os.utime(upload, (old, old))
    result = CliRunner().invoke(app, ["--workspace", str(ws), "enroll"])
    assert result.exit_code == 0, result.output
    assert not photo_tmp.exists() and not list_tmp.exists() and not upload.exists()
    assert (ws / "enrollments" / "S1" / "a.jpg").is_file()  # the real photo stays


def test_a_damaged_model_found_while_a_photo_is_checked_is_still_a_setup_error(demo_ws, monkeypatch):
    """Issue 30: a one-photo check starts on the photo while the embedder still loads. A model
    file that turns out damaged then is exit 2 all the same — never a printed *review*."""
    import optout_guard.models as models
    import optout_guard.pipeline as pipeline
    import optout_guard.resnet as resnet

    class Damaged:
        def __init__(self, path: Path) -> None:
            raise RuntimeError(f"{path}: unexpected end of file")

    monkeypatch.setattr(resnet, "OnnxResNet", Damaged)
    monkeypatch.setattr(models, "get_models", lambda: models.Models({}))
    monkeypatch.setattr(pipeline, "get_models", lambda: models.Models({}))
    result = runner.invoke(app, ["--workspace", str(demo_ws.workspace), "check", "--json",
                                 str(demo_ws.workspace / "photos" / "assembly.jpg")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "could not be loaded" in " ".join(result.output.split()) and '"verdict"' not in result.output
