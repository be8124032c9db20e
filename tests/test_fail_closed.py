"""Issue 15: every path an adversarial test found to a wrong *allow*, or to a student quietly
unprotected. Each test here failed on the code before the fix."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import LFW, make_workspace
from optout_guard.activity_log import ActivityLog, log_path, verify
from optout_guard.audit import run_audit, state_path
from optout_guard.cli import app
from optout_guard.config import load_settings
from optout_guard.detection import detect_faces
from optout_guard.errors import ConfigError, IndexUnusable
from optout_guard.index import FaceIndex, edit_index, open_index
from optout_guard.media.photos import load_image, sniff
from optout_guard.models import embedding_fingerprint, get_models
from optout_guard.pipeline import Guard, Redaction
from optout_guard.types import Decision, ReasonCode, ScanResult, Verdict
from optout_guard.watch import NOTE_FILE, CheckFolder

runner = CliRunner()
CLI = str(Path(sys.executable).with_name("optout-guard"))


def demo_photo(ws, name: str) -> Path:
    return ws.workspace / "photos" / name


def cli(ws, *args: str):
    return runner.invoke(app, ["--workspace", str(ws.workspace), *args])


def copy_workspace(ws, tmp_path: Path):
    """A private copy of a session workspace (tests that change the index must not share it)."""
    root = tmp_path / "ws"
    shutil.copytree(ws.workspace, root)
    return load_settings(root, environ={})


# ---- 1. check folder: a file replaced while it is checked -----------------------------------------
class SwapDuringCheck(Guard):
    """Checks the photo, then (once) changes what is on disk, as a copy tool or a person would."""

    def __init__(self, settings, change) -> None:
        super().__init__(settings)
        self.change = change

    def check(self, path, *args, **kwargs) -> ScanResult:
        result = super().check(path, *args, **kwargs)
        if self.change is not None:
            change, self.change = self.change, None
            change(Path(path))
        return result


def filed(folder: Path) -> dict[str, list[bytes]]:
    out = {}
    for verdict in ("allowed", "blocked", "review"):
        files = [p for p in (folder / verdict).rglob("*") if p.is_file() and not p.name.endswith((".txt", ".jpg.jpg"))]
        out[verdict] = sorted(p.read_bytes() for p in files if not p.name.endswith((".marked.jpg", ".postable.jpg")))
    return out


def test_watch_photo_replaced_at_its_name_during_the_check_is_checked_itself(demo_ws, tmp_path):
    inbox = tmp_path / "Check folder"
    inbox.mkdir()
    coffee, grace = demo_photo(demo_ws, "coffee.jpg").read_bytes(), demo_photo(demo_ws, "assembly.jpg").read_bytes()
    (inbox / "post.jpg").write_bytes(coffee)
    # While coffee.jpg is being checked, the student's photo is renamed over the same name.
    replacement = tmp_path / "student.jpg"
    replacement.write_bytes(grace)
    guard = SwapDuringCheck(demo_ws, lambda _checked: os.replace(replacement, inbox / "post.jpg"))
    folder = CheckFolder(inbox, guard, settle=0.0, arrival_grace=0.0)
    folder.run_once()
    folder.run_once()  # the file that arrived at the name during the check
    result = filed(inbox)
    assert result["allowed"] == [coffee]  # exactly the bytes that were checked
    assert result["blocked"] == [grace]  # the student's photo was checked on its own, and blocked
    notes = sorted(p.read_text() for p in (inbox / "blocked").glob("*.txt"))
    assert len(notes) == 1 and "BLOCK" in notes[0]


def test_watch_photo_written_into_while_checked_is_checked_again(demo_ws, tmp_path):
    inbox = tmp_path / "Check folder"
    inbox.mkdir()
    grace = demo_photo(demo_ws, "assembly.jpg").read_bytes()
    (inbox / "post.jpg").write_bytes(demo_photo(demo_ws, "coffee.jpg").read_bytes())

    def write_into(checked: Path) -> None:  # a writer that still had the file open
        with open(checked, "r+b") as fh:
            fh.truncate(0)
            fh.write(grace)

    folder = CheckFolder(inbox, SwapDuringCheck(demo_ws, write_into), settle=0.0, arrival_grace=0.0)
    folder.run_once()
    result = filed(inbox)
    assert result == {"allowed": [], "blocked": [grace], "review": []}


def test_watch_puts_a_claimed_photo_back_after_a_crash(demo_ws, tmp_path):
    inbox = tmp_path / "Check folder"
    folder = CheckFolder(inbox, Guard(demo_ws), settle=0.0, arrival_grace=0.0)
    folder.claimed.mkdir(parents=True)
    (folder.claimed / "left.jpg").write_bytes(demo_photo(demo_ws, "assembly.jpg").read_bytes())
    folder.run_once()
    assert [p.name for p in (inbox / "blocked").iterdir() if p.suffix == ".jpg" and ".marked" not in p.name] == ["left.jpg"]
    assert not any(folder.claimed.rglob("*.jpg"))


def test_watch_says_what_it_passes_over_and_files_non_utf8_names(demo_ws, tmp_path):
    inbox = tmp_path / "Check folder"
    (inbox / "Trip photos").mkdir(parents=True)
    (inbox / ".hidden.jpg").write_bytes(demo_photo(demo_ws, "assembly.jpg").read_bytes())
    odd = os.fsdecode(b"caf\xe9.jpg")
    (inbox / odd).write_bytes(demo_photo(demo_ws, "assembly.jpg").read_bytes())
    CheckFolder(inbox, Guard(demo_ws), settle=0.0, arrival_grace=0.0).run_once()
    note = (inbox / NOTE_FILE).read_text()
    assert "Trip photos: a folder" in note and ".hidden.jpg: a hidden file" in note
    assert (inbox / "blocked" / odd).exists()
    assert "caf\\xe9.jpg" in (inbox / "blocked" / f"{odd}.txt").read_text()


def test_watch_redact_blurs_faces_under_review_too(demo_ws, tmp_path):
    # A review band so wide that the astronaut is "review" against Grace Hopper.
    ws = copy_workspace(demo_ws, tmp_path)
    (ws.workspace / "config.toml").write_text("block_distance = 0.05\nreview_distance = 1.2\n")
    ws = load_settings(ws.workspace, environ={})
    inbox = tmp_path / "Check folder"
    inbox.mkdir()
    shutil.copy(demo_photo(demo_ws, "visitor.jpg"), inbox / "visitor.jpg")
    CheckFolder(inbox, Guard(ws), settle=0.0, arrival_grace=0.0, redact=True).run_once()
    postable = inbox / "review" / "visitor.jpg.postable.jpg"
    assert postable.exists()
    note = (inbox / "review" / "visitor.jpg.txt").read_text()
    assert "Copy you may post instead" in note and "1 face blurred (1 resembling a student)" in note
    again = Guard(ws).check(postable)
    assert not any(m.candidates for m in again.faces)  # no face left that resembles anybody


# ---- 2. audit: a file changed while it was checked --------------------------------------------------
def test_audit_stores_the_stat_of_the_bytes_it_checked(demo_ws, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    photo = library / "a.jpg"
    photo.write_bytes(demo_photo(demo_ws, "coffee.jpg").read_bytes())
    grace = demo_photo(demo_ws, "assembly.jpg").read_bytes()
    guard = SwapDuringCheck(demo_ws, lambda p: p.write_bytes(grace))  # changed right after its check
    summary = run_audit(library, demo_ws, workers=1, guard=guard)
    assert summary.totals["block"] == 1 and summary.totals["allow"] == 0
    import sqlite3

    db = sqlite3.connect(state_path(demo_ws, library))
    size, mtime = db.execute("SELECT size, mtime_ns FROM files").fetchone()
    assert (size, mtime) == (photo.stat().st_size, photo.stat().st_mtime_ns)


class CrashOnce(Guard):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.crashes = 1

    def check(self, path, *args, **kwargs) -> ScanResult:
        if self.crashes:
            self.crashes -= 1
            return ScanResult(str(path), Verdict.REVIEW, ("could not be checked (the checking process stopped)",), retry=True)
        return super().check(path, *args, **kwargs)


def test_audit_checks_again_a_photo_whose_check_crashed(demo_ws, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(demo_photo(demo_ws, "assembly.jpg"), library / "a.jpg")
    guard = CrashOnce(demo_ws)
    assert run_audit(library, demo_ws, workers=1, guard=guard).totals["review"] == 1
    second = run_audit(library, demo_ws, workers=1, guard=guard)
    assert second.checked == 1 and second.totals["block"] == 1


def test_links_are_reported_not_skipped_silently(demo_ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(demo_photo(demo_ws, "assembly.jpg"), outside / "student.jpg")
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(demo_photo(demo_ws, "coffee.jpg"), library / "coffee.jpg")
    (library / "linked").symlink_to(outside, target_is_directory=True)
    (library / "linked.jpg").symlink_to(outside / "student.jpg")
    summary = run_audit(library, demo_ws, workers=1)
    assert sorted(Path(p).name for p in summary.links_not_followed) == ["linked", "linked.jpg"]

    result = cli(demo_ws, "check", "--json", str(library))
    assert result.exit_code == 1  # the linked photo named explicitly inside the folder is read: block
    doc = json.loads(result.stdout)
    linked = [p for p in doc["photos"] if p["path"].endswith("linked")]
    assert linked and linked[0]["verdict"] == "review" and "not followed" in linked[0]["reasons"][0]


# ---- 4. desk: an answer that is not a candidate changes nothing -------------------------------------
def test_desk_refuses_a_non_candidate_before_changing_anything(tmp_path, data_dir):
    from optout_guard.desk import Desk, DeskOptions

    students = {
        "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)],
        "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)],
    }
    make_workspace(tmp_path, students)
    (tmp_path / "config.toml").write_text("block_distance = 0.35\nreview_distance = 0.65\n")
    ws = load_settings(tmp_path, environ={})
    desk = Desk(ws, DeskOptions(port=0))
    desk.check_upload("Emma_at_the_recital.jpg", (LFW / "Hugo_Chavez" / "Hugo_Chavez_0009.jpg").read_bytes(), "t")
    card = desk.book.queue()[0]
    before = ws.index_file.read_bytes()
    for bogus in ("colin-not-a-candidate", "<b>x</b>", "../../etc", "S999"):
        if bogus in {c.student_id for c in card.candidates}:
            continue
        with pytest.raises(ValueError):
            desk.decide(card.id, bogus, "t", add_reference=True)
    assert ws.index_file.read_bytes() == before
    assert desk.book.card(card.id).candidates == card.candidates
    text = log_path(ws).read_text()
    assert "Emma" not in text and "recital" not in text  # uploads are logged by hash only
    assert verify(ws).problem is None


# ---- 3. sync / enroll / remove: the index and the list ----------------------------------------------
def test_two_enrolls_at_once_lose_no_student(tmp_path, samples):
    for student, photo in (("S1", "grace_hopper"), ("S2", "astronaut")):
        (tmp_path / f"in-{student}" / student).mkdir(parents=True)
        shutil.copy(samples[photo], tmp_path / f"in-{student}" / student / "ref.jpg")
    env = {**os.environ, "OPTOUT_GUARD_WORKSPACE": str(tmp_path)}
    procs = [subprocess.Popen([CLI, "enroll", str(tmp_path / f"in-{s}")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for s in ("S1", "S2")]  # fmt: skip
    for p in procs:
        assert p.wait(180) == 0, p.stderr.read()
    assert open_index(load_settings(tmp_path, environ={})).protected_students() == ["S1", "S2"]


def test_a_failed_index_save_leaves_no_temp_and_an_older_copy_is_refused(tmp_path, samples, monkeypatch):
    settings = load_settings(tmp_path, environ={})
    index = FaceIndex(embedding_fingerprint())
    index.save(settings.index_file)
    old = settings.index_file.read_bytes()
    (settings.index_file.parent / ".index-left-by-a-kill.tmp").write_bytes(b"a removed student's templates")
    with edit_index(settings) as index:
        index.add_student("S1")
    assert not list(settings.index_file.parent.glob(".index-*"))
    settings.index_file.write_bytes(old)  # a backup of the previous generation put back
    with pytest.raises(IndexUnusable, match="older copy"):
        open_index(settings)


def test_remove_deletes_photos_before_the_index_so_enroll_cannot_bring_them_back(tmp_path, samples, monkeypatch):
    ws = make_workspace(tmp_path, {"S1": [samples["grace_hopper"]]})
    student = "S1"
    import optout_guard.index as index_module

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # the process dies while saving the index

    monkeypatch.setattr(index_module, "save_index", killed)
    result = cli(ws, "remove", student, "--delete-photos")
    assert result.exit_code != 0
    monkeypatch.undo()
    assert not (ws.enrollments / student).exists()
    assert cli(ws, "enroll").exit_code in (0, 3)
    assert student not in open_index(ws).protected_students()


def test_a_killed_enroll_is_reported_by_check_and_people(demo_ws, tmp_path):
    ws = copy_workspace(demo_ws, tmp_path)
    (ws.index_file.parent / "enrollment-in-progress").write_text("2026-11-29T01:00:00+00:00\n")
    for args in (("people",), ("check", str(demo_photo(ws, "coffee.jpg")))):
        result = cli(ws, *args)
        assert "did not finish" in result.stderr and "optout-guard enroll" in result.stderr
    assert cli(ws, "enroll").exit_code == 0
    assert "did not finish" not in cli(ws, "people").stderr


# ---- 7. shapes and files that used to get through -------------------------------------------------
def test_a_very_tall_screenshot_is_tiled_on_both_axes(samples):
    face = Image.open(samples["grace_hopper"]).convert("RGB")
    # 30,000 px tall: the tiles' overlap a shrunk whole-photo pass would need is more than half a
    # tile, so the levels of tiles are used (from ~21,000 px at the default smallest face).
    canvas = Image.new("RGB", (800, 30_000), (235, 235, 235))
    canvas.paste(face.resize((300, 350)), (250, 15_000))
    canvas.paste(face.resize((120, 140)), (600, 28_000))
    image = load_image(_png(canvas), load_settings(".", environ={}))
    faces = detect_faces(image, load_settings(".", environ={}), get_models())
    assert len(faces) == 2
    for f in faces:
        assert 0 <= f.box.x and f.box.right <= 800  # no stretched tile: boxes inside the picture
    assert sorted(round(f.box.y, -3) for f in faces) == [15_000, 28_000]


def _png(picture: Image.Image) -> str:
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".png")
    with os.fdopen(fd, "wb") as fh:
        picture.save(fh, format="PNG")
    return name


def test_an_unreadable_file_is_review_whatever_its_name(demo_ws, tmp_path, monkeypatch):
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "notes").symlink_to(tmp_path / "gone")  # cannot be read (a broken link, a share that dropped)
    result = cli(demo_ws, "check", "--json", str(folder))
    assert result.exit_code == 3
    assert json.loads(result.stdout)["photos"][0]["verdict"] == "review"

    (folder / "readme").write_text("just text")
    assert sniff(folder / "readme") == "other"
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith("readme"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    assert sniff(folder / "readme") == "unreadable"


@pytest.mark.parametrize("setting", ["detection_threshold = 4", "detection_threshold = 0.95", "min_sharpness = -1",
                                     "max_pages = 0", "review_distance = 9"])  # fmt: skip
def test_settings_out_of_range_are_refused(tmp_path, setting):
    (tmp_path / "config.toml").write_text(setting + "\n")
    with pytest.raises(ConfigError, match=r"between|must be"):
        load_settings(tmp_path, environ={})
    result = runner.invoke(app, ["--workspace", str(tmp_path), "check", str(tmp_path)])
    assert result.exit_code == 2


def _with_exif_thumbnail(main: Image.Image, thumbnail: Image.Image) -> bytes:
    """A JPEG whose EXIF block carries ``thumbnail`` (IFD1, as cameras write it)."""
    thumb = io.BytesIO()
    thumbnail.save(thumb, format="JPEG", quality=85)
    blob = thumb.getvalue()
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 0x0112, 3, 1, 1 << 16)  # orientation 1
    ifd1_at = 8 + len(ifd0) + 4
    ifd1 = struct.pack(">H", 2)
    data_at = ifd1_at + len(ifd1) + 2 * 12 + 4
    ifd1 += struct.pack(">HHII", 0x0201, 4, 1, data_at) + struct.pack(">HHII", 0x0202, 4, 1, len(blob)) + struct.pack(">I", 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + struct.pack(">I", ifd1_at) + ifd1 + blob
    out = io.BytesIO()
    main.save(out, format="JPEG", quality=90, exif=b"Exif\x00\x00" + tiff)
    return out.getvalue()


def test_an_exif_thumbnail_showing_a_student_is_checked(demo_ws, tmp_path, samples):
    coffee = Image.open(samples["coffee"]).convert("RGB")
    grace = Image.open(samples["grace_hopper"]).convert("RGB").resize((160, 200))
    photo = tmp_path / "coffee.jpg"
    photo.write_bytes(_with_exif_thumbnail(coffee, grace))
    result = Guard(demo_ws).check(photo)
    assert result.verdict is not Verdict.ALLOW
    assert any("embedded preview" in r for r in result.reasons)
    same = tmp_path / "same.jpg"
    same.write_bytes(_with_exif_thumbnail(coffee, coffee.resize((160, 107))))
    assert Guard(demo_ws).check(same).verdict is Verdict.ALLOW  # a preview of the photo itself: nothing extra


def test_a_jpeg_with_damaged_data_is_review(demo_ws, tmp_path):
    data = bytearray(demo_photo(demo_ws, "coffee.jpg").read_bytes())
    rng = np.random.default_rng(1)
    middle = len(data) // 2
    data[middle : middle + 64] = rng.integers(0, 255, 64, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(bytes(data))
    Image.open(damaged).load()  # Pillow decodes it without a word
    result = Guard(demo_ws).check(damaged)
    assert result.verdict is Verdict.REVIEW and "damaged" in result.reasons[0]


def test_multi_page_files_are_decoded_within_a_pixel_budget(tmp_path):
    settings = load_settings(tmp_path, {"max_working_pixels": 2_000_000, "max_image_pixels": 50_000_000}, environ={})
    pages = [Image.new("RGB", (3000, 3000), (i * 40, 90, 90)) for i in range(5)]
    path = tmp_path / "scan.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_deflate")
    image = load_image(path, settings)
    assert len(image.pages) < 5 and any(f"only the first {len(image.pages)} of 5 pages" in n for n in image.notes)
    # Held at once: at most the budget (2 × max_working_pixels) plus the page that crossed it.
    assert sum(p.shape[0] * p.shape[1] for p in image.pages) <= 3 * settings.max_working_pixels


def test_the_documented_pixel_limit_is_the_real_one(tmp_path):
    big = tmp_path / "big.png"
    Image.new("1", (15_000, 13_000)).save(big)  # 195 MP: over Pillow's own bomb line (179 MP), under ours
    settings = load_settings(tmp_path, environ={})
    assert settings.max_image_pixels == 250_000_000
    assert load_image(big, settings).scale > 1.0  # decoded at a reduced scale, not refused
    strict = load_settings(tmp_path, {"max_image_pixels": 150_000_000, "max_working_pixels": 40_000_000}, environ={})
    with pytest.raises(Exception, match="the limit is 150 MP"):
        load_image(big, strict)


# ---- the activity log ---------------------------------------------------------------------------------
def test_the_log_detects_forgery_truncation_and_deletion(tmp_path):
    settings = load_settings(tmp_path, environ={})
    log = ActivityLog(settings)
    for i in range(4):
        log.record("check", photos=[{"sha256": f"{i:064x}", "verdict": "block", "students": ["S1"]}])
    path = log_path(settings)
    original = path.read_text()
    lines = original.splitlines()

    import hashlib

    forged = json.loads(lines[-1])
    forged.update(seq=5, prev=forged["hash"], details={"photos": []})
    body = {k: v for k, v in forged.items() if k != "hash"}
    forged["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path.write_text(original + json.dumps(forged) + "\n")  # hashes recomputed without the key
    assert "changed" in verify(settings).problem

    path.write_text("\n".join(lines[:2]) + "\n")  # the tail dropped
    assert "recorded" in verify(settings).problem
    path.write_text("")  # emptied
    assert verify(settings).problem
    path.unlink()  # deleted
    assert "missing" in verify(settings).problem

    dup = lines[0][:-1] + ', "action": "allow"}'  # a duplicate key that a lenient reader would take
    path.write_text(dup + "\n" + "\n".join(lines[1:]) + "\n")
    assert verify(settings).problem.startswith("line 1")
    path.write_text(original)
    assert verify(settings).problem is None


def test_a_torn_last_line_is_set_aside_and_the_log_goes_on(demo_ws, tmp_path):
    ws = copy_workspace(demo_ws, tmp_path)
    log = ActivityLog(ws)
    log.record("check", photos=[])
    with open(log_path(ws), "a") as fh:
        fh.write('{"v": 2, "seq": 99, "acti')  # the disk filled up mid-line
    for args in (("check", str(demo_photo(ws, "coffee.jpg"))), ("log", "show")):
        assert cli(ws, *args).exit_code == 0
    assert verify(ws).problem is None
    entries = [json.loads(line) for line in log_path(ws).read_text().splitlines()]
    assert [e["action"] for e in entries][-2:] == ["log-repaired", "check"]
    assert list(log_path(ws).parent.glob("activity.torn-*"))


# ---- small but real ---------------------------------------------------------------------------------
def test_markup_in_user_text_is_shown_as_it_is_and_never_exits_1(demo_ws, tmp_path):
    (tmp_path / "[").mkdir()
    for name in ("[red]x.jpg", "[/y].jpg"):  # the second is the file "y].jpg" in a folder named "["
        photo = tmp_path / name
        shutil.copy(demo_photo(demo_ws, "coffee.jpg"), photo)
        result = cli(demo_ws, "check", str(photo))
        assert result.exit_code == 0, result.output
        assert name in result.stdout.replace("\n", "")


def test_report_and_references_are_private(demo_ws, tmp_path):
    from optout_guard.audit import changes_since_last_audit, library_rows, report_thumbnail
    from optout_guard.report import write_audit_report

    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(demo_photo(demo_ws, "assembly.jpg"), library / "a.jpg")
    summary = run_audit(library, demo_ws, workers=1)
    out = tmp_path / "report"
    page = write_audit_report(out, str(library), summary.__dict__, library_rows(demo_ws, library),
                              changes_since_last_audit(demo_ws, library), report_thumbnail(demo_ws))  # fmt: skip
    for p in [out, out / "thumbs", page, *out.rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) in (0o600, 0o700), p
    assert not list(out.glob("*.tmp"))


def test_detection_only_redaction_still_blurs_every_face(demo_ws, tmp_path):
    settings = load_settings(demo_ws.workspace, {"recognition": False}, environ={})
    result = Guard(settings).check(demo_photo(demo_ws, "assembly.jpg"), redact=Redaction(tmp_path))
    assert result.redacted_path and all(m.decision is Decision.REVIEW for m in result.faces)


def test_desk_uploads_have_a_budget_and_a_relative_workspace_is_served(demo_ws, tmp_path, monkeypatch):
    from optout_guard.desk import Desk, DeskOptions

    ws = copy_workspace(demo_ws, tmp_path)
    monkeypatch.chdir(tmp_path)
    relative = load_settings("ws", environ={})
    assert relative.workspace.is_absolute() and relative.index_file.is_absolute()
    desk = Desk(relative, DeskOptions(port=0, upload_budget_bytes=400_000, upload_days=30))
    photos = [demo_photo(ws, n).read_bytes() for n in ("assembly.jpg", "coffee.jpg", "visitor.jpg")]
    for i, data in enumerate(photos * 2):
        desk.check_upload(f"p{i}.jpg", data + bytes([i]), "t")  # six different files
        kept = sum(p.stat().st_size for p in (*desk.uploads.iterdir(), *desk.marked.iterdir()))
        assert kept <= 400_000
    newest = max(desk.uploads.iterdir(), key=lambda p: p.stat().st_mtime)
    assert desk.allowed(newest) == newest  # served (a relative workspace used to answer 404)
    with pytest.raises(Exception, match="larger than the desk keeps"):
        desk.check_upload("huge.jpg", b"\xff\xd8" + bytes(500_000), "t")


def test_a_face_cut_by_the_edge_is_never_cleared(lfw_guard, tmp_path):
    photo = LFW / "Hugo_Chavez" / "Hugo_Chavez_0006.jpg"
    whole = lfw_guard.check(photo)
    face = max(whole.faces, key=lambda m: m.face.box.w).face
    cut = tmp_path / "cut.jpg"
    Image.open(photo).crop((int(face.box.x + 0.45 * face.box.w), 0, 250, 250)).save(cut)
    result = lfw_guard.check(cut)
    assert result.verdict is not Verdict.ALLOW
    assert any(m.decision is not Decision.CLEAR for m in result.faces)


def test_a_heif_thumbnail_showing_someone_else_is_checked(demo_ws, monkeypatch, samples, data_dir):
    import optout_guard.media.photos as images

    heic = data_dir / "odd_inputs" / "face.heic"
    grace = Image.open(samples["grace_hopper"]).convert("RGB").resize((160, 200))
    # pillow-heif cannot write thumbnail items: stand in for the file's own preview reader.
    monkeypatch.setattr(images, "_heif_thumbnails", lambda data: [grace])
    result = Guard(demo_ws).check(heic)
    assert any("embedded preview" in r for r in result.reasons) and result.verdict is not Verdict.ALLOW


def test_faces_in_an_extremely_compressed_jpeg_are_not_cleared(demo_ws, tmp_path):
    grace = Image.open(demo_photo(demo_ws, "assembly.jpg")).convert("RGB")
    for quality, expected in ((4, Verdict.REVIEW), (30, Verdict.BLOCK)):
        photo = tmp_path / f"q{quality}.jpg"
        grace.save(photo, quality=quality)
        result = Guard(demo_ws).check(photo)
        assert result.verdict is expected, (quality, result.reasons)
    assert any("strongly compressed" in m.reason for m in Guard(demo_ws).check(tmp_path / "q4.jpg").faces)


def test_a_face_lying_on_its_side_among_upright_ones_is_judged(demo_ws, tmp_path, samples):
    """Issue 16, part 1: a turned face is turned upright on its own and judged; with the setting off
    it is review, as before."""
    grace = Image.open(samples["grace_hopper"]).convert("RGB")
    astronaut = Image.open(samples["astronaut"]).convert("RGB").resize((400, 400))
    canvas = Image.new("RGB", (1000, 520), (210, 210, 210))
    canvas.paste(astronaut, (20, 60))
    canvas.paste(grace.resize((360, 480)).rotate(90, expand=True), (480, 80))
    photo = tmp_path / "lying.jpg"
    canvas.save(photo, quality=92)
    judged = Guard(demo_ws).check(photo)
    assert judged.verdict is Verdict.BLOCK, judged.reasons
    off = load_settings(demo_ws.workspace, {"judge_turned_faces": False}, environ={})
    flagged = Guard(off).check(photo)
    assert flagged.verdict is Verdict.REVIEW and any(m.code is ReasonCode.TURNED for m in flagged.faces)


def test_holding_faces_cut_by_the_edge_is_a_setting(lfw_guard, tmp_path):
    photo = LFW / "Hugo_Chavez" / "Hugo_Chavez_0006.jpg"
    face = max(lfw_guard.check(photo).faces, key=lambda m: m.face.box.w).face
    cut = tmp_path / "cut.jpg"
    Image.open(photo).crop((int(face.box.x + 0.45 * face.box.w), 0, 250, 250)).save(cut)
    held = lfw_guard.check(cut)
    assert any(m.code is ReasonCode.CUT_BY_EDGE for m in held.faces)
    off = Guard(load_settings(lfw_guard.settings.workspace, {"hold_faces_cut_by_edge": False}, environ={}))
    assert not any(m.code is ReasonCode.CUT_BY_EDGE for m in off.check(cut).faces)


def test_unidentifiable_below_px_is_a_policy_that_is_off_by_default_and_says_so(demo_ws, samples, tmp_path):
    """Issue 16: tiny faces are review by default; a district may declare them unidentifiable
    (clear), and the verdict then says how many faces that policy cleared."""
    from PIL import Image

    canvas = Image.new("RGB", (900, 600), (190, 200, 210))
    hopper = Image.open(samples["grace_hopper"]).convert("RGB")
    canvas.paste(hopper.resize((64, 75)), (400, 250))  # her face is ~30 px wide here
    photo = tmp_path / "bleachers.jpg"
    canvas.save(photo, quality=95)
    default = Guard(demo_ws).check(photo)
    assert default.verdict is Verdict.REVIEW and any("too small to check" in r for r in default.reasons)
    ws = copy_workspace(demo_ws, tmp_path)
    (ws.workspace / "config.toml").write_text("unidentifiable_below_px = 36\n")
    policy = Guard(load_settings(ws.workspace, environ={})).check(photo)
    assert policy.verdict is Verdict.ALLOW
    assert any("too small to identify anyone (district policy)" in r for r in policy.reasons)
    (ws.workspace / "config.toml").write_text("unidentifiable_below_px = 48\n")  # above min_face_px: refused
    assert cli(ws, "check", str(photo)).exit_code == 2
