"""A handler per kind of media (issue 29): the kind is decided once by ``sniff`` and handed on; the
check folder does not ask again; the audit's re-check of a clip goes to the clip handler, of a photo
to the photo handler; an unreadable file goes to the photo handler and is review. Fake models."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import at_distance, face, fake_models, gallery, photo, unit
from optout_guard import stored_faces
from optout_guard.config import load_settings
from optout_guard.media import handlers, photos
from optout_guard.pipeline import Guard, NoDecisions
from optout_guard.types import Box, Decision, Face, FaceMatch, MediaKind, ReasonCode, ScanResult, Verdict

RNG = np.random.default_rng(29)
ANNA = unit(RNG)[0]


@pytest.fixture
def world(tmp_path):
    settings = load_settings(tmp_path / "ws", environ={})
    detector, encoder, bundle = fake_models()
    guard = Guard(settings, index=gallery({"anna": ANNA}), settler=NoDecisions(), face_models=bundle)
    return settings, guard, detector, encoder


def test_every_kind_has_its_handler_and_the_unknown_fail_closed(tmp_path, world):
    _settings, guard, _detector, _encoder = world
    assert handlers.handler_for(MediaKind.CLIP) is handlers.CLIPS and handlers.handler_for("clip") is handlers.CLIPS
    assert handlers.handler_for("photo") is handlers.PHOTOS
    for kind in (MediaKind.UNREADABLE, MediaKind.OTHER):
        assert isinstance(handlers.handler_for(kind), handlers.PhotoHandler) and handlers.handler_for(kind).kind is kind
    text = tmp_path / "minutes.txt"
    text.write_text("meeting minutes")
    assert photos.sniff(text) is MediaKind.OTHER and not MediaKind.OTHER.checked
    # Named explicitly, a file that is not a photo is review (decoding fails), never allow; and it is
    # not called "a still photo named …" (that is said only of a file sniffed as a photo).
    named = tmp_path / "song.mp4"
    named.write_bytes(b"\x00" * 64)
    result = guard.check(named, kind=MediaKind.UNREADABLE)
    assert result.verdict is Verdict.REVIEW and not any("still photo" in r for r in result.reasons)
    assert set(handlers.OUTPUT_SUFFIXES) == {".marked.jpg", ".postable.jpg", ".postable.mp4"}


def test_a_photo_named_like_a_clip_is_checked_as_a_photo_and_says_so(tmp_path, world):
    _settings, guard, detector, encoder = world
    named = photo(tmp_path / "p.png", (1, 2, 3)).rename(tmp_path / "party.mp4")
    detector.place(named, face(10.0))
    encoder.vectors[10.0] = at_distance(ANNA, 0.2, RNG)
    assert photos.sniff(named) is MediaKind.PHOTO
    result = guard.check(named)
    assert result.verdict is Verdict.BLOCK and result.reasons[0].startswith("this file is a still photo named .mp4")


def test_the_check_folder_sniffs_a_file_once_and_hands_the_kind_on(tmp_path, world, monkeypatch):
    from optout_guard import watch

    _settings, guard, detector, encoder = world
    folder = tmp_path / "check"
    dropped = photo(folder / "game.png", (4, 5, 6))
    detector.place(dropped, face(20.0))
    encoder.vectors[20.0] = at_distance(ANNA, 0.9, RNG)
    sniffed: list[str] = []
    real = photos.sniff

    def counting(path):
        sniffed.append(str(path))
        return real(path)

    monkeypatch.setattr(photos, "sniff", counting)  # what handler_of would call
    monkeypatch.setattr(watch, "sniff", counting)
    monkeypatch.setattr("optout_guard.pipeline.sniff", counting, raising=False)  # where Guard.check used to ask again
    check = watch.CheckFolder(folder, guard, settle=0.0, arrival_grace=0.0)
    check.run_once()
    assert (folder / "allowed" / "game.png").is_file()
    assert len(sniffed) == 1, sniffed


def test_the_audit_recheck_goes_to_the_stored_kinds_handler(tmp_path, world, monkeypatch):
    """A stored clip's re-check decodes only its tracks' frames (the clip handler); a stored photo's
    faces are embedded again without detection (the photo handler)."""
    _settings, guard, _detector, _encoder = world
    calls: list[str] = []
    monkeypatch.setattr(handlers.ClipHandler, "recheck", lambda self, *a, **k: (calls.append("clip"), (None, None))[1])
    monkeypatch.setattr(handlers.PhotoHandler, "recheck", lambda self, *a, **k: (calls.append("photo"), (None, None))[1])
    monkeypatch.setattr("optout_guard.pipeline._scoped", lambda result, scope: result)
    box = Box(10.0, 10.0, 80.0, 80.0)
    plain = FaceMatch(Face(box, 0.9, np.zeros((5, 2), np.float32)), Decision.CLEAR, ())
    photo_faces = stored_faces.decode(stored_faces.encode(ScanResult("a.jpg", Verdict.ALLOW, (), faces=(plain,))))
    assert photo_faces and not stored_faces.is_clip(photo_faces)
    guard.recheck_stored(tmp_path / "a.jpg", photo_faces)
    assert calls == ["photo"]
    track = stored_faces.StoredFace(plain.face, Decision.CLEAR, ReasonCode.CLEAR, "", None, None, True,
                                    track=stored_faces.StoredTrack(0.0, 1.0, 0.5, 3, 3, 0, ()))
    assert stored_faces.is_clip([track])
    guard.recheck_stored(tmp_path / "a.mp4", [track])
    assert calls == ["photo", "clip"]


@pytest.mark.parametrize("pixel_format", ["yuv420p", "yuvj420p", "yuv444p", "nv12", "rgb24", "yuv420p10le"])
def test_a_scene_thumbnail_is_the_grey_picture_whatever_the_pixel_format(pixel_format):
    """Scene cuts are found on 64x36 grey thumbnails: read from the luma plane where the format
    has one (TV range stretched to 0-255, as FFmpeg's grey is), through the scaler otherwise.
    Either way it is what ``reformat(format="gray")`` gives, within a grey level or two."""
    import av

    from optout_guard.media.clip import Scaler, thumbnail

    rng = np.random.default_rng(7)
    picture = np.zeros((360, 640, 3), np.uint8)
    picture[:] = np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None]  # the whole grey range
    picture[100:260, 200:440] = rng.integers(0, 256, (160, 240, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format=pixel_format)
    expected = frame.reformat(width=64, height=36, format="gray").to_ndarray().astype(np.float32)
    got = thumbnail(frame, Scaler())
    assert got.shape == (36, 64) and got.dtype == np.float32
    assert float(np.mean(np.abs(got - expected))) < 2.0
    assert got.min() < 20 and got.max() > 235  # black stays black, white stays white
