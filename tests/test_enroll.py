"""Enrollment quality gate and incremental updates (package-shipped portraits: any fresh machine)."""

from __future__ import annotations

import shutil

from PIL import Image

from conftest import LFW
from optout_guard.config import load_settings
from optout_guard.enroll import enroll_folder
from optout_guard.index import FaceIndex
from optout_guard.models import embedding_fingerprint


def two_face_photo(samples, path):
    canvas = Image.new("RGB", (1000, 600), (200, 200, 200))
    canvas.paste(Image.open(samples["grace_hopper"]).convert("RGB").resize((300, 352)), (50, 100))
    canvas.paste(Image.open(samples["astronaut"]).convert("RGB").crop((100, 0, 400, 300)), (600, 150))
    canvas.save(path, quality=90)


TWO_ALIKE = ("2 faces found and none is clearly the portrait (centred, and larger than the others); a reference photo "
             "must show the student")


def test_quality_gate_rejects_no_face_and_two_faces(tmp_path, samples, face_models):
    root = tmp_path / "enrollments"
    (root / "s-good").mkdir(parents=True)
    (root / "s-bad").mkdir()
    shutil.copy(samples["grace_hopper"], root / "s-good" / "2025.jpg")
    two_face_photo(samples, root / "s-good" / "with-friend.jpg")
    shutil.copy(samples["coffee"], root / "s-bad" / "coffee.png")
    two_face_photo(samples, root / "s-bad" / "group.jpg")
    (root / "bad id!").mkdir()
    settings = load_settings(tmp_path, environ={})
    index = FaceIndex(embedding_fingerprint())

    report = enroll_folder(root, index, settings, face_models)

    assert report.added == [("s-good", str(root / "s-good" / "2025.jpg"))]
    reasons = {(sid, p.split("/")[-1]): why for sid, p, why in report.rejected}
    assert reasons == {
        ("s-good", "with-friend.jpg"): TWO_ALIKE,
        ("s-bad", "coffee.png"): "no face found",
        ("s-bad", "group.jpg"): TWO_ALIKE,
    }
    assert report.not_protected == ["s-bad"] and index.not_protected() == ["s-bad"]
    assert report.skipped_folders and "bad id!" in report.skipped_folders[0][0]
    assert len(index) == 1


def test_small_reference_face_is_rejected(tmp_path, samples, face_models):
    root = tmp_path / "enrollments"
    (root / "s1").mkdir(parents=True)
    Image.open(samples["grace_hopper"]).convert("RGB").resize((120, 141)).save(root / "s1" / "thumb.jpg")
    index = FaceIndex(embedding_fingerprint())
    report = enroll_folder(root, index, load_settings(tmp_path, environ={}), face_models)
    assert len(report.rejected) == 1 and report.rejected[0][2].startswith("face too small for a reference")
    assert report.not_protected == ["s1"]


def test_rerun_embeds_only_what_changed(tmp_path, samples, face_models):
    root = tmp_path / "enrollments"
    (root / "s1").mkdir(parents=True)
    (root / "s2").mkdir()
    shutil.copy(samples["grace_hopper"], root / "s1" / "a.jpg")
    shutil.copy(samples["astronaut"], root / "s2" / "a.png")
    settings = load_settings(tmp_path, environ={})
    index = FaceIndex(embedding_fingerprint())
    first = enroll_folder(root, index, settings, face_models)
    assert len(first.added) == 2
    index.save(settings.index_file)

    index = FaceIndex.load(settings.index_file, embedding_fingerprint())
    second = enroll_folder(root, index, settings, face_models)
    assert (second.added, second.unchanged, second.removed) == ([], 2, [])

    # A new photo is embedded; a deleted one's template goes; a changed one is re-embedded.
    Image.open(samples["grace_hopper"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "s1" / "b.jpg")
    (root / "s2" / "a.png").unlink()
    third = enroll_folder(root, index, settings, face_models)
    assert third.added == [("s1", str(root / "s1" / "b.jpg"))]
    assert third.removed == [("s2", str(root / "s2" / "a.png"))]
    assert third.not_protected == ["s2"]
    assert sorted(t.student_id for t in index.templates) == ["s1", "s1"]


def test_a_portrait_with_a_smaller_face_behind_is_used_and_said(tmp_path, data_dir):
    """Issue 28: a picture-day photo with a second, smaller face in the background left the student
    NOT PROTECTED. The centred portrait face is used when every other face is under 0.8 of its width
    (scripts/measure_portrait_faces.py); two faces alike in size are still refused."""
    from PIL import Image

    from optout_guard.config import Settings
    from optout_guard.enroll import reference_embedding
    from optout_guard.face_models import get_face_models

    colin = Image.open(LFW / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB")
    behind = Image.open(LFW / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("RGB").crop((50, 40, 200, 210))
    portrait = Image.new("RGB", (600, 600), (120, 120, 130))
    portrait.paste(colin.resize((380, 380)), (110, 110))  # the portrait, centred
    portrait.paste(behind.resize((150, 170)), (0, 0))  # a smaller face in a corner (~0.6 of the portrait's)
    path = tmp_path / "picture-day.jpg"
    portrait.save(path, quality=92)
    notes: list[str] = []
    vector = reference_embedding(path, Settings(), get_face_models(), notes)
    assert not isinstance(vector, str), vector
    assert notes and "centred portrait face was used" in notes[0]
    twins = Image.new("RGB", (500, 250), (120, 120, 130))
    twins.paste(colin.resize((250, 250)), (0, 0))
    twins.paste(Image.open(LFW / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("RGB"), (250, 0))
    twins.save(tmp_path / "two.jpg", quality=92)
    refused = reference_embedding(tmp_path / "two.jpg", Settings(), get_face_models())
    assert isinstance(refused, str) and "none is clearly the portrait" in refused
