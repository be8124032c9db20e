"""Copies fit to post: blocked faces unrecognisable (even sharpened), metadata gone, others untouched."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image, ImageFilter

from optout_guard.pipeline import Guard, Redaction
from optout_guard.types import Decision, Verdict


def test_redacted_copy_no_longer_matches_and_keeps_other_faces(demo_ws, demo_student, tmp_path):
    guard = Guard(demo_ws)
    src = tmp_path / "assembly_with_gps.jpg"
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825)[2] = (40.0, 26.0, 46.0)  # GPS latitude
    Image.open(demo_ws.workspace / "photos" / "assembly.jpg").save(src, exif=exif.tobytes(), quality=95)

    result = guard.check(src, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.blocked_students == (demo_student,)  # the original stays blocked
    copy_path = result.redacted_path
    copy = Image.open(copy_path)
    assert copy.format == "JPEG" and len(copy.getexif()) == 0
    assert not {"exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "photoshop"} & set(copy.info)

    again = guard.check(copy_path)
    assert again.verdict is Verdict.ALLOW and all(m.decision is not Decision.BLOCK for m in again.faces)

    # Sharpening the blurred face back does not bring the student back.
    sharpened = tmp_path / "sharpened.jpg"
    copy.filter(ImageFilter.UnsharpMask(radius=4, percent=300, threshold=0)).save(sharpened, quality=95)
    sharp = guard.check(sharpened)
    assert sharp.verdict is not Verdict.BLOCK
    near = [m for m in sharp.faces if m.distance is not None and m.distance <= demo_ws.review_distance]
    assert near == []  # not even a resemblance worth a review

    # The other (clear) face is left as it was.
    clear = next(m for m in result.faces if m.decision is Decision.CLEAR).face.box
    x, y, w, h = (int(v) for v in (clear.x, clear.y, clear.w, clear.h))
    before = np.asarray(Image.open(src).convert("RGB"), float)[y : y + h, x : x + w]
    after = np.asarray(copy.convert("RGB"), float)[y : y + h, x : x + w]
    assert np.abs(before - after).mean() < 4  # only JPEG re-encoding noise
    blocked = next(m for m in result.faces if m.decision is Decision.BLOCK).face.box
    x, y, w, h = (int(v) for v in (blocked.x, blocked.y, blocked.w, blocked.h))
    before = np.asarray(Image.open(src).convert("RGB"), float)[y : y + h, x : x + w]
    after = np.asarray(copy.convert("RGB"), float)[y : y + h, x : x + w]
    assert np.abs(before - after).mean() > 20  # the blocked face really changed


def test_review_faces_are_blurred_only_when_asked(demo_ws, tmp_path, samples):
    guard = Guard(demo_ws)
    photo = demo_ws.workspace / "photos" / "visitor.jpg"  # one clear face
    result = guard.check(photo, redact=Redaction(tmp_path / "a"))
    assert result.verdict is Verdict.ALLOW
    same = np.abs(
        np.asarray(Image.open(result.redacted_path), float) - np.asarray(Image.open(photo).convert("RGB"), float)
    ).mean()
    assert same < 3  # nothing to blur: a clear face is never touched


def test_redaction_on_real_photos(lfw_guard, data_dir, tmp_path):
    from conftest import LFW

    photos = [data_dir / "face_recognition_examples" / "examples" / "two_people.jpg"]
    photos += [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in (6, 7, 8)]
    for photo in photos:
        result = lfw_guard.check(photo, redact=Redaction(tmp_path))
        assert result.verdict is Verdict.BLOCK
        again = lfw_guard.check(result.redacted_path)
        assert again.verdict is not Verdict.BLOCK, (photo, again.reasons)
        assert not [m for m in again.faces if m.candidates and m.distance <= lfw_guard.settings.review_distance]


def test_detection_only_mode_uses_no_templates_and_blurs_every_face(tmp_path, samples):
    from typer.testing import CliRunner

    from optout_guard.cli import app
    from optout_guard.config import load_settings

    photos = tmp_path / "photos"
    photos.mkdir()
    canvas = Image.new("RGB", (1000, 500), (200, 200, 200))
    canvas.paste(Image.open(samples["grace_hopper"]).convert("RGB").resize((300, 352)), (50, 70))
    canvas.paste(Image.open(samples["astronaut"]).convert("RGB").crop((100, 0, 400, 300)), (600, 100))
    canvas.save(photos / "two.jpg", quality=92)
    shutil.copy(samples["coffee"], photos / "coffee.png")
    runner = CliRunner()
    base = ["--workspace", str(tmp_path), "check", "--no-recognition", "--json"]
    result = runner.invoke(app, [*base, "--redact", str(tmp_path / "post"), str(photos)])
    assert result.exit_code == 3, result.output  # faces found: a person decides
    doc = json.loads(result.stdout)
    by_name = {p["path"].split("/")[-1]: p for p in doc["photos"]}
    assert by_name["two.jpg"]["reasons"] == ["2 faces found (detection-only mode: no recognition)"]
    assert by_name["coffee.png"]["verdict"] == "allow"
    assert not load_settings(tmp_path, environ={}).index_file.exists()  # no templates anywhere
    again = runner.invoke(app, [*base, by_name["two.jpg"]["redacted"]])
    assert json.loads(again.stdout)["photos"][0]["faces"] == []  # both faces blurred beyond detection
