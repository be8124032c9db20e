"""A clip's logic on fake models (issue 29): joined segments, several video streams, the blurred
copy and its read-back — the same code paths as tests/test_clip_fail_closed.py, with "faces" that
are markers painted into the frames (tests/fakes.py), so no detector runs. The real-model goldens
(a student's second in a 20 s clip, a moving student's copy, a 1080p copy) stay there."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import Appearance, make_clip, make_streams, make_swaying_clip
from fakes import gallery, marker, marker_models, unit
from optout_guard.config import load_settings
from optout_guard.media.clip import probe
from optout_guard.pipeline import Guard, NoDecisions, Redaction
from optout_guard.types import Decision, Verdict

RNG = np.random.default_rng(25)
ANNA, STRANGER = unit(RNG, 2)  # marker 0 is Anna (opted out), marker 1 somebody not enrolled


@pytest.fixture
def world(tmp_path):
    settings = load_settings(tmp_path / "ws", environ={})
    detector, _encoder, bundle = marker_models({0: ANNA, 1: STRANGER})
    guard = Guard(settings, index=gallery({"anna": ANNA}), settler=NoDecisions(), face_models=bundle)
    anna, stranger = marker(tmp_path / "m" / "anna.png", 0), marker(tmp_path / "m" / "stranger.png", 1)
    return guard, detector, anna, stranger


def test_the_markers_are_seen_blocked_and_blurred_away(world, tmp_path):
    """The fakes themselves: a marker is a face, Anna's blocks, the stranger's is clear, and in the
    blurred copy Anna's marker is gone and the stranger's is still there."""
    guard, detector, anna, stranger = world
    clip = make_clip(tmp_path / "c.mp4", [Appearance(anna, 0.5, 2.5, x=0.1, width=120),
                                          Appearance(stranger, 0.2, 3.0, x=0.6, width=120)],
                     seconds=3, size=(640, 360), audio=False, fps=15)  # fmt: skip
    result = guard.check(clip, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert sorted(m.decision.value for m in result.faces) == ["block", "clear"]
    assert detector.calls > 0 and result.redacted_path
    again = guard.check(result.redacted_path)
    assert again.verdict is Verdict.ALLOW and [m.decision for m in again.faces] == [Decision.CLEAR]


def test_joined_transport_stream_parts_are_both_checked(world, tmp_path):
    """`cat a.ts b.ts`: the second part's time stamps restart at 0. Every frame of it is looked at,
    the clip is as long as it plays (8 s), the student is placed at 0:05, and the copy of the
    joined clip plays 8 s with her blurred."""
    guard, _detector, anna, stranger = world
    first = make_clip(tmp_path / "a.ts", [Appearance(stranger, 0.5, 3.5, x=0.5, width=120)], seconds=4,
                      size=(640, 360), container="mpegts", fps=15)  # fmt: skip
    second = make_clip(tmp_path / "b.ts", [Appearance(anna, 1.0, 3.0, x=0.3, width=120)], seconds=4,
                       size=(640, 360), container="mpegts", fps=15)  # fmt: skip
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    result = guard.check(joined, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert result.clip is not None and result.clip.duration == pytest.approx(8.0, abs=0.3)
    assert result.clip.checked_seconds > 7.0
    anna_track = [t for t, m in zip(result.clip.tracks, result.faces, strict=True) if m.decision is Decision.BLOCK]
    assert anna_track and 4.9 <= anna_track[0].first <= 5.5
    assert result.redacted_path and probe(result.redacted_path).duration == pytest.approx(8.0, abs=0.3)
    assert "anna" not in guard.check(result.redacted_path).blocked_students


def test_every_video_stream_is_checked(world, tmp_path):
    """A background stream #1 and the student in stream #2 (the one players show): block, the
    reason names the stream, and the copy is of the stream players show, with her blurred."""
    guard, _detector, anna, stranger = world
    clip = make_streams(
        tmp_path / "two.mkv",
        [([Appearance(stranger, 0.5, 3.5, x=0.5, width=120)], False), ([Appearance(anna, 0.5, 3.5, x=0.3, width=120)], True)],
        seconds=4,
    )
    result = guard.check(clip, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert any("anna" in r and "video stream 2 of 2" in r for r in result.reasons), result.reasons
    assert result.redacted_path and probe(result.redacted_path).video_streams == 1
    assert "anna" not in guard.check(result.redacted_path).blocked_students


def test_the_blurred_copy_hides_a_moving_student_in_every_frame(world, tmp_path):
    """Issue 25, item 6: boxes known only at the samples let a swaying student show between them.
    The copy is blurred from the faces of every frame and read back at the full frame rate: checked
    again at 15 frames a second it blocks nobody, and no frame of it shows her marker; the stranger
    standing still is left as he is."""
    from fakes import _markers
    from optout_guard.media.clip import sample_frames

    guard, _detector, anna, stranger = world
    clip = make_swaying_clip(tmp_path / "sway.mp4", anna, stranger, seconds=4.0)
    result = guard.check(clip, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.redacted_path, result.reasons
    (guard.settings.workspace / "config.toml").write_text("clip_frames_per_second = 15\n")
    every_frame = Guard(load_settings(guard.settings.workspace, environ={}), index=guard.index, settler=NoDecisions(),
                        face_models=guard.face_models).check(result.redacted_path)  # fmt: skip
    assert "anna" not in every_frame.blocked_students and every_frame.clip.frames_examined >= 55
    assert [m.decision for m in every_frame.faces] == [Decision.CLEAR]  # the stranger, unblurred
    shown = [sorted(n for n, _ in _markers(frame.pixels)) for frame in sample_frames(result.redacted_path, 0, 640, 60.0)]
    assert len(shown) == 120 and all(numbers == [1] for numbers in shown), shown  # every frame: the stranger only


@pytest.mark.parametrize("fault", ["the blur missed a face", "the copy cannot be read back"])
def test_a_copy_that_still_shows_a_face_is_not_kept(world, tmp_path, monkeypatch, fault):
    """The read-back is what decides: a copy whose blur missed a face (here the blur is switched
    off), or one that cannot be read back to the end, is deleted and said."""
    from optout_guard import annotate
    from optout_guard.errors import ClipUnreadable
    from optout_guard.media import clip as clip_module

    guard, _detector, anna, _stranger = world
    clip = make_clip(tmp_path / "c.mp4", [Appearance(anna, 0.5, 2.5, x=0.3, width=120)], seconds=3, size=(640, 360), fps=15)
    if fault == "the blur missed a face":
        monkeypatch.setattr(annotate, "blur_regions", lambda pixels, boxes: pixels)
        said = "no blurred copy: a face that is not clearly fine could still be seen"
    else:
        real = clip_module.frames_where

        def cut_short(path, wanted, max_side, until):
            for n, frame in enumerate(real(path, wanted, max_side, until)):
                if n == 5:
                    raise ClipUnreadable("the clip cannot be decoded after 0:01 (Invalid data)")
                yield frame

        monkeypatch.setattr(clip_module, "frames_where", cut_short)
        said = "a copy could not be written (ClipUnreadable"
    result = guard.check(clip, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.redacted_path is None
    assert any(said in r for r in result.reasons), result.reasons
    assert not list((tmp_path / "post").glob("*.mp4"))


def test_the_blurred_copy_of_a_clip_whose_first_packet_is_audio(world, tmp_path):
    """Audio that starts before the picture (the first packet is audio): the copy is written."""
    import av

    guard, _detector, anna, _stranger = world
    path = tmp_path / "audio_first.mp4"
    face = np.asarray(Image.open(anna).convert("RGB").resize((170, 170)))
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=15)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        tone = out.add_stream("aac", rate=44100)
        tone.layout = "mono"
        for start in range(0, 44100 * 4, 1024):  # 4 s of sound first, from 0 s
            t = (np.arange(start, start + 1024) / 44100.0).astype(np.float32)
            af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t))[None, :].astype(np.float32), format="fltp",
                                            layout="mono")  # fmt: skip
            af.sample_rate, af.pts = 44100, start
            for packet in tone.encode(af):
                out.mux(packet)
        for n in range(45):  # the picture from 1 s to 4 s
            frame = np.full((360, 640, 3), 90, np.uint8)
            frame[60:230, 200:370] = face
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = n + 15, Fraction(1, 15)
            for packet in video.encode(vf):
                out.mux(packet)
        for stream in (video, tone):
            for packet in stream.encode():
                out.mux(packet)
    result = guard.check(path, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK, result.reasons
    assert result.redacted_path and Path(result.redacted_path).is_file(), result.reasons
    assert "anna" not in guard.check(result.redacted_path).blocked_students


def test_only_the_first_minutes_of_a_long_clip_are_checked(world, tmp_path):
    """Over ``max_clip_seconds`` the rest is not looked at, and the clip is review, never allow."""
    guard, _detector, _anna, stranger = world
    clip = make_clip(tmp_path / "long.mp4", [Appearance(stranger, 0, 30, x=0.4, width=120)], seconds=30, size=(640, 360),
                     audio=False, fps=15)  # fmt: skip
    (tmp_path / "ws").mkdir(exist_ok=True)
    (tmp_path / "ws" / "config.toml").write_text("max_clip_seconds = 10\n")
    limited = Guard(load_settings(tmp_path / "ws", environ={}), index=gallery({"anna": ANNA}), settler=NoDecisions(),
                    face_models=guard.face_models)  # fmt: skip
    result = limited.check(clip)
    assert result.verdict is Verdict.REVIEW and any("only the first" in r for r in result.reasons), result.reasons
    assert result.clip is not None and result.clip.checked_seconds <= 10.5


# ---- the blurred copy, the check folder and the audit, on markers (moved from tests/test_video.py) ----
def _assembly(tmp_path: Path, anna: Path, stranger: Path) -> Path:
    """8 s with sound: the stranger on screen 1-7 s, Anna for one second, 4-5 s, walking."""
    (tmp_path / "clips").mkdir(exist_ok=True)
    return make_clip(tmp_path / "clips" / "assembly.mp4", [Appearance(anna, 4.0, 5.0, x=0.2, x_end=0.32, width=120),
                                                           Appearance(stranger, 1.0, 7.0, x=0.6, x_end=0.55, width=120)],
                     seconds=8, size=(640, 360), fps=15)  # fmt: skip


def test_the_blurred_copy_hides_the_student_keeps_audio_and_length(world, tmp_path):
    guard, _detector, anna, stranger = world
    clip = _assembly(tmp_path, anna, stranger)
    result = guard.check(clip, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.redacted_path
    copy = Path(result.redacted_path)
    info = probe(copy)
    assert info.has_audio and info.duration == pytest.approx(probe(clip).duration, abs=0.15)
    again = guard.check(copy)
    assert again.verdict is Verdict.ALLOW and "anna" not in again.blocked_students
    assert [m.decision for m in again.faces] == [Decision.CLEAR]  # the stranger is still there
    assert copy.stat().st_mode & 0o777 == 0o600


def test_the_check_folder_and_the_audit_take_clips(world, tmp_path):
    import shutil

    from optout_guard.audit import library_rows, report_thumbnail, run_audit
    from optout_guard.watch import CheckFolder

    guard, _detector, anna, stranger = world
    clip = _assembly(tmp_path, anna, stranger)
    folder = tmp_path / "Photo check"
    folder.mkdir()
    shutil.copy(clip, folder / "game.mp4")
    CheckFolder(folder, guard, settle=0, redact=True).run_once()
    filed = folder / "blocked" / "game.mp4"
    assert filed.is_file() and (folder / "blocked" / "game.mp4.marked.jpg").is_file()
    assert (folder / "blocked" / "game.mp4.postable.mp4").is_file()
    note = (folder / "blocked" / "game.mp4.txt").read_text()
    assert "anna" in note and "0:04" in note
    assert "Do not post this clip" in note and "this photo" not in note  # a clip is called a clip
    assert not (folder / "NOT CHECKED.txt").exists()

    library = tmp_path / "library"
    (library / "2026").mkdir(parents=True)
    shutil.copy(clip, library / "2026" / "assembly.mp4")
    shutil.copy(stranger, library / "2026" / "portrait.png")
    settings = guard.settings
    summary = run_audit(library, settings, guard=guard)
    assert summary.clips == 1 and summary.checked == 2
    clips = library_rows(settings, library, ("block", "review", "allow"), kind="clip")
    assert [(Path(c["path"]).name, c["verdict"]) for c in clips] == [("assembly.mp4", "block")]
    decoded = guard.face_models.detector.calls
    assert run_audit(library, settings, guard=guard).unchanged == 2
    assert guard.face_models.detector.calls == decoded  # incremental: unchanged clips are not looked at again
    assert report_thumbnail(settings)(clips[0], tmp_path / "thumb.jpg")  # the report shows its contact sheet
    assert (tmp_path / "thumb.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_after_a_list_change_the_audit_re_decides_a_clip_from_its_stored_tracks(world, tmp_path):
    """The audit keeps a clip's geometry (each track's best sightings: time, box, landmarks — no
    embedding); when the opt-out list changes, only those frames are decoded again."""
    import json
    import sqlite3

    from optout_guard.audit import run_audit, state_path
    from optout_guard.stored_faces import decode
    from optout_guard.video import recheck_clip

    guard, _detector, anna, stranger = world
    library = tmp_path / "library"
    library.mkdir()
    _assembly(library.parent, anna, stranger).rename(library / "assembly.mp4")
    assert run_audit(library, guard.settings, guard=guard).checked == 1
    # The stranger (on screen 1-7 s) opts out too.
    after = Guard(guard.settings, index=gallery({"anna": ANNA, "sam": STRANGER}), settler=NoDecisions(),
                  face_models=guard.face_models)  # fmt: skip
    summary = run_audit(library, guard.settings, guard=after)
    assert summary.rechecked == 1 and summary.checked == 0
    db = sqlite3.connect(state_path(guard.settings, library))
    verdict, reasons, faces = db.execute("SELECT verdict, reasons, faces FROM files").fetchone()
    db.close()
    full = after.check(library / "assembly.mp4")
    assert set(full.blocked_students) == {"anna", "sam"}, full.reasons
    assert verdict == "block", reasons
    assert all(s in reasons for s in ("anna", "sam"))
    stored = json.loads(faces)
    assert all("embedding" not in json.dumps(f) for f in stored) and all(f["track"]["best"] is not None for f in stored)
    again = recheck_clip(after, library / "assembly.mp4", decode(stored))
    assert set(again.blocked_students) == {"anna", "sam"}
    assert again.clip.frames_examined <= 3 * len(stored) < full.clip.frames_examined  # a few frames, not the clip


# ---- looking at what changed (issue 25's speed) -------------------------------------------------


def _yuv(rgb: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")


def test_the_change_map_sees_a_face_come_into_view_and_not_encoding_noise(tmp_path):
    from optout_guard.media.clip import ChangeMap, Scaler

    rng = np.random.default_rng(3)
    still = np.repeat(np.linspace(40, 200, 640, dtype=np.uint8)[None, :, None], 360, axis=0).repeat(3, axis=2)
    changes, scaler = ChangeMap(), Scaler()
    changes.update(_yuv(still), 0, 1280, scaler)
    assert changes.changed().all()  # never looked at: everything is to be looked at
    changes.looked(changes.changed(), 0.0)
    noisy = np.clip(still.astype(np.int16) + rng.integers(-6, 7, still.shape), 0, 255).astype(np.uint8)
    changes.update(_yuv(noisy), 0, 1280, scaler)
    assert not changes.changed().any()  # grain, not a change
    face = noisy.copy()
    face[100:160, 300:350] = np.asarray(Image.open(marker(tmp_path / "m.png", 0)).convert("RGB").resize((50, 60)))
    changes.update(_yuv(face), 0, 1280, scaler)
    rows, cols = np.nonzero(changes.changed())
    cw, ch = changes.cell
    assert rows.size and rows.min() * ch >= 90 and (rows.max() + 1) * ch <= 170
    assert cols.min() * cw >= 290 and (cols.max() + 1) * cw <= 360
    changes.looked(changes.changed(), 0.1)
    assert not changes.changed().any()
    # A clip stored on its side: the grid is of the upright picture.
    turned = ChangeMap()
    turned.update(_yuv(np.ascontiguousarray(np.rot90(face, -1))), 90, 1280, scaler)
    assert turned.now is not None and turned.now.shape == changes.now.shape


def test_a_still_scene_is_looked_at_in_parts_and_nobody_is_lost(world, tmp_path):
    """On a still picture only what changed and where faces are is looked at: most samples look at
    parts. Anna, on screen 0.2 s between two samples where nothing moved before, is found; the
    stranger, standing still the whole clip, stays one track to its end (so the copy blurs him)."""
    guard, detector, anna, stranger = world
    clip = make_clip(tmp_path / "still.mp4", [Appearance(stranger, 0.0, 6.0, x=0.6, width=100),
                                              Appearance(anna, 3.05, 3.25, x=0.1, width=100)],
                     seconds=6, size=(1280, 720), audio=False, fps=30)  # fmt: skip
    result = guard.check(clip)
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert detector.part_looks > 2 * detector.calls > 0, (detector.part_looks, detector.calls)
    assert result.clip is not None
    held = [t for t, m in zip(result.clip.tracks, result.faces, strict=True) if m.decision is Decision.CLEAR]
    assert len(held) == 1 and held[0].first < 0.1 and held[0].last > 5.8


def _handheld(path: Path, face: np.ndarray, turn: float = 0.0) -> Path:
    """A 4 s 640×360 clip of a grey scene filmed hand-held (it shifts by up to ~15 px a frame, and
    with ``turn`` also turns by up to that many degrees), with ``face`` in the scene 2.0–2.5 s."""
    import av
    import cv2

    rng = np.random.default_rng(7)
    grey = rng.integers(60, 160, (42, 72), dtype=np.uint8)  # a grey scene (the markers are coloured)
    scenery = np.repeat(np.asarray(Image.fromarray(grey).resize((720, 420), Image.BILINEAR))[:, :, None], 3, axis=2)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        for n in range(120):
            scene = scenery.copy()
            if 60 <= n < 75:
                scene[120:220, 320:400] = face  # someone in the scene
            if turn:
                spin = cv2.getRotationMatrix2D((360.0, 210.0), turn * np.sin(n / 3), 1.0)
                scene = cv2.warpAffine(scene, spin, (720, 420), borderMode=cv2.BORDER_REFLECT)
            dx, dy = int(20 + 15 * np.sin(n / 4)), int(20 + 12 * np.cos(n / 5))  # the camera shakes
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[dy : dy + 360, dx : dx + 640]), format="rgb24")
            vf.pts, vf.time_base = n, Fraction(1, 30)
            for packet in video.encode(vf):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path


def test_a_shaking_camera_is_followed_and_a_turning_one_looked_at_whole(world, tmp_path):
    """A hand-held camera moves the whole picture every frame. A shaking one is followed: samples
    look at what is new in the scene, in parts, and a student who passes by is found and blocked;
    the blurred copy (which does not follow) hides her in every frame. A camera that also turns is
    not followed (only shifts are): every sample is a whole look, and she is blocked as well."""
    guard, detector, anna, _stranger = world
    face = np.asarray(Image.open(anna).convert("RGB").resize((80, 100)))
    shaking = _handheld(tmp_path / "shaking.mp4", face)
    result = guard.check(shaking)
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert result.clip is not None and detector.part_looks > 2 * detector.calls, (detector.part_looks, detector.calls)
    followed = detector.part_looks
    result = guard.check(shaking, redact=Redaction(tmp_path / "post"))
    assert result.redacted_path, result.reasons  # written, and read back at every frame: no face left
    every_frame = Guard(load_settings(guard.settings.workspace, environ={}), index=guard.index, settler=NoDecisions(),
                        face_models=guard.face_models).check(result.redacted_path)  # fmt: skip
    assert every_frame.verdict is Verdict.ALLOW and not every_frame.faces, every_frame.reasons

    detector.calls = detector.part_looks = 0
    result = guard.check(_handheld(tmp_path / "turning.mp4", face, turn=1.5))
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert result.clip is not None and detector.calls >= result.clip.frames_examined - 1  # every sample whole
    assert detector.part_looks <= followed / 5, (detector.part_looks, followed)


def test_the_copy_s_search_finds_a_face_where_the_camera_moved_it(world):
    """The blurred copy keeps a face's box where nothing changed, so its change maps must not follow
    the camera: a face that moved with a shaking scene is looked for again, and found where it is."""
    from optout_guard.video import _Looks, _Redaction

    guard, _detector, anna, _stranger = world
    rng = np.random.default_rng(9)
    grey = np.asarray(Image.fromarray(rng.integers(60, 160, (40, 70), dtype=np.uint8)).resize((700, 400), Image.BILINEAR))
    scene = np.repeat(grey[:, :, None], 3, axis=2).copy()
    scene[120:220, 320:400] = np.asarray(Image.open(anna).convert("RGB").resize((80, 100)))
    redaction, looks = _Redaction([], [], 0, guard), _Looks()
    first = redaction._faces(np.ascontiguousarray(scene[20:380, 20:660]), looks, 0.0, 1.0)
    assert len(first) == 1 and abs(first[0].x - 300) <= 3, first
    moved = redaction._faces(np.ascontiguousarray(scene[32:392, 8:648]), looks, 0.1, 1.0)  # 12 px right, 12 up
    assert len(moved) == 1 and abs(moved[0].x - 312) <= 3 and abs(moved[0].y - 88) <= 3, moved


def test_the_change_map_follows_a_shifting_camera_and_still_sees_what_is_new():
    """The scene shifted by a few pixels is no change when followed (and nearly all change when
    not); what comes into view at the edge has never been looked at; a face that appears in the
    shifted scene changes its blocks; a long pan moves the canvas and keeps it so."""
    import cv2

    from optout_guard.media.clip import ChangeMap, Scaler

    rng = np.random.default_rng(5)
    coarse = rng.integers(30, 220, (60, 100), dtype=np.uint8)
    scenery = np.repeat(cv2.resize(coarse, (2400, 1440), interpolation=cv2.INTER_CUBIC)[:, :, None], 3, axis=2)

    def view(x: int, y: int) -> np.ndarray:
        return np.ascontiguousarray(scenery[y : y + 360, x : x + 640])

    followed, still, scaler = ChangeMap(follow=True), ChangeMap(), Scaler()
    for changes in (followed, still):
        changes.update(_yuv(view(100, 100)), 0, 1280, scaler)
        changes.looked(np.ones_like(changes.changed()), 0.0)
        changes.update(_yuv(view(107, 95)), 0, 1280, scaler)  # the camera moved 7 px right, 5 up
    assert still.changed().mean() > 0.5  # not followed: a change all over
    moved = followed.changed()
    assert followed.shifts == 1 and moved.mean() < 0.08, moved.mean()
    rows, cols = np.nonzero(moved)
    assert ((rows == 0) | (cols >= moved.shape[1] - 2)).all()  # only the strips that came into view
    assert np.isinf(followed.seen[rows, cols]).all()  # never looked at
    followed.looked(moved, 0.1)

    face = view(110, 93)
    face[150:230, 300:360] = np.asarray(Image.fromarray(np.full((80, 60, 3), (230, 40, 40), np.uint8)))
    followed.update(_yuv(face), 0, 1280, scaler)
    rows, cols = np.nonzero(followed.changed())
    cw, ch = followed.cell
    inner = (rows > 0) & (cols < moved.shape[1] - 2) & (rows < moved.shape[0] - 1)
    assert inner.sum() >= 50 and rows[inner].min() * ch >= 140 and (rows[inner].max() + 1) * ch <= 240
    assert cols[inner].min() * cw >= 290 and (cols[inner].max() + 1) * cw <= 370

    pan = ChangeMap(follow=True)
    for n in range(40):  # 30 px a step to the right: far past the canvas's margin
        pan.update(_yuv(view(100 + 30 * n, 300)), 0, 1280, scaler)
        changed = pan.changed()
        if n:
            assert pan.shifts == n and changed[:, : -5].mean() < 0.02, (n, changed[:, :-5].mean())
            assert changed[:, -3:].all()  # the strip that came into view
        pan.looked(changed, n / 10)
    assert pan.canvas is not None and 0 <= pan.origin[0] <= pan.canvas.shape[1] - 320


def test_a_face_the_change_map_cannot_see_is_still_looked_for_every_few_seconds(world, tmp_path, monkeypatch):
    """The change map's threshold is a bet (a face coming into view in a dark hall changes little):
    a sample looks at the whole frame at least every WHOLE_EVERY seconds whatever changed. With a
    change map blind to everything, Anna (on screen from 1 s) is still found, at the next whole look;
    as nothing changed where she is, she is taken to be there since that place was last looked at
    (0:00), so the blurred copy hides her from the start, not only from 5 s."""
    import optout_guard.video as video
    from optout_guard.media.clip import ChangeMap

    guard, detector, anna, stranger = world
    monkeypatch.setattr(video, "ChangeMap", lambda **kw: ChangeMap(levels=1000.0, least=1000.0, **kw))
    clip = make_clip(tmp_path / "faint.mp4", [Appearance(stranger, 0.0, 8.0, x=0.6, width=100),
                                              Appearance(anna, 1.0, 8.0, x=0.1, width=100)],
                     seconds=8, size=(1280, 720), audio=False, fps=15)  # fmt: skip
    result = guard.check(clip, redact=Redaction(tmp_path / "post"))
    assert result.verdict is Verdict.BLOCK and result.blocked_students == ("anna",), result.reasons
    assert result.clip is not None and result.redacted_path
    found = [t for t, m in zip(result.clip.tracks, result.faces, strict=True) if m.decision is Decision.BLOCK]
    assert found[0].first == 0.0 and video.WHOLE_EVERY - 0.1 <= found[0].best[0][0] <= video.WHOLE_EVERY + 0.5, found[0]
    monkeypatch.undo()
    detector.calls = 0
    again = guard.check(result.redacted_path, redact=None)
    assert again.verdict is Verdict.ALLOW and len(again.faces) == 1, again.reasons  # the stranger; Anna never


def test_the_copy_encoder_thread_says_its_error_and_is_always_joined():
    """The blurred copy is encoded and written in a thread of its own: an error there (a full disk)
    reaches the caller, who is never left waiting on a full queue; an error of the caller stops the
    thread without flushing; either way the thread has ended when the copy's writing returns."""
    import av

    from optout_guard.media.clip import _Muxer

    class Out:
        def __init__(self, fail_at: int) -> None:
            self.written, self.fail_at = 0, fail_at

        def mux(self, packet) -> None:
            if self.written == self.fail_at:
                raise OSError(28, "No space left on device")
            self.written += 1

    class Encoder:
        def __init__(self) -> None:
            self.flushed = False

        def encode(self, frame=None):
            if frame is None:
                self.flushed = True
                return ["last"]
            return ["packet"]

    frame = av.VideoFrame(16, 16, "yuv420p")
    muxer = _Muxer(Out(fail_at=3), Encoder())
    with pytest.raises(OSError, match="No space left"):
        with muxer:
            for _ in range(100):  # far more than the queue holds
                muxer.put(frame)
    assert not muxer.thread.is_alive()

    out, encoder = Out(fail_at=10_000), Encoder()
    muxer = _Muxer(out, encoder)
    with pytest.raises(RuntimeError, match="caller"):
        with muxer:
            muxer.put(frame)
            raise RuntimeError("the caller failed")
    assert not muxer.thread.is_alive() and not encoder.flushed

    out, encoder = Out(fail_at=10_000), Encoder()
    with _Muxer(out, encoder) as muxer:
        for _ in range(20):
            muxer.put(frame)
    assert not muxer.thread.is_alive() and encoder.flushed and out.written == 21


def test_a_blurred_frame_is_blurred_in_the_copy_s_own_format_as_in_rgb():
    """A frame to blur stays 4:2:0 (each plane blurred, the colour planes with the boxes halved):
    the picture is the one the RGB route gives (blur in RGB, then converted for the encoder), the
    face's place is a smooth mosaic, the rest is untouched, and the decoded frame is not written to
    (the decoder may still predict from it)."""
    import av

    from optout_guard import annotate
    from optout_guard.media.clip import _blurred_planes
    from optout_guard.types import Box

    rng = np.random.default_rng(7)
    rgb = np.zeros((360, 640, 3), np.uint8)
    rgb[:] = np.linspace(30, 220, 640, dtype=np.uint8)[None, :, None]
    rgb[100:240, 300:420] = rng.integers(0, 256, (140, 120, 3), np.uint8)  # a busy "face"
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    before = frame.to_ndarray().copy()
    box = Box(310.0, 120.0, 100.0, 100.0)

    planes = _blurred_planes(frame, [box], annotate.blur_regions)
    assert planes.format.name == "yuv420p" and (planes.width, planes.height) == (640, 360)
    assert np.array_equal(frame.to_ndarray(), before)  # the decoded frame as it was
    ours = planes.to_ndarray(format="rgb24").astype(int)
    via_rgb = av.VideoFrame.from_ndarray(annotate.blur_regions(frame.to_ndarray(format="rgb24"), [box]), format="rgb24")
    theirs = via_rgb.reformat(format="yuv420p").to_ndarray(format="rgb24").astype(int)
    assert np.abs(ours - theirs).mean() < 2.0 and np.percentile(np.abs(ours - theirs), 99) <= 12
    source = frame.to_ndarray(format="rgb24").astype(int)
    face = (slice(130, 210), slice(320, 400))
    assert ours[face].std() < source[face].std() / 4  # the noise is gone
    assert np.array_equal(ours[:, :200], source[:, :200])  # far from the box nothing changed
