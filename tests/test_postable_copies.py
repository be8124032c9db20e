"""A copy fit to post, checked again, says what it is (issue 28): the faces optout-guard blurred
in it are its own doing; every other face is judged as in any photo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from clips import Appearance, make_clip
from conftest import LFW, make_workspace
from optout_guard.pipeline import Guard, Redaction
from optout_guard.types import Decision, ReasonCode, Verdict

pytestmark = pytest.mark.data

COLIN = LFW / "Colin_Powell" / "Colin_Powell_0004.jpg"
HUGO = LFW / "Hugo_Chavez" / "Hugo_Chavez_0002.jpg"


def _pair(tmp_path: Path) -> Path:
    """Colin (enrolled) beside Hugo (not, unless a test enrols him later)."""
    canvas = Image.new("RGB", (500, 250), (90, 90, 90))
    canvas.paste(Image.open(COLIN), (0, 0))
    canvas.paste(Image.open(HUGO), (250, 0))
    path = tmp_path / "pair.jpg"
    canvas.save(path, quality=92)
    return path


@pytest.fixture
def colin_ws(tmp_path, data_dir):
    return make_workspace(tmp_path / "ws", {"colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in (1, 2, 3)]})


def test_the_copy_fit_to_post_checks_as_allowed_and_says_why(colin_ws, tmp_path, monkeypatch):
    photo = _pair(tmp_path)
    first = Guard(colin_ws).check(photo, redact=Redaction(tmp_path / "post"))
    assert first.verdict is Verdict.BLOCK and first.redacted_path
    again = Guard(colin_ws).check(first.redacted_path)
    assert again.verdict is Verdict.ALLOW, again.reasons
    assert any(r.startswith("this is the copy fit to post that optout-guard made on") and "pair.jpg" in r for r in again.reasons)
    # A blur that leaves a face to find (a lighter one than the product's) was held "too blurred" on
    # a second check: now the face it blurred itself is its own doing.
    from PIL import ImageFilter

    from optout_guard import annotate

    def light(pixels, boxes):
        for b in boxes:
            x0, y0, x1, y1 = int(b.x), int(b.y), int(b.right), int(b.bottom)
            region = Image.fromarray(pixels[y0:y1, x0:x1]).filter(ImageFilter.GaussianBlur(4))
            pixels[y0:y1, x0:x1] = region
        return pixels

    monkeypatch.setattr(annotate, "blur_regions", light)
    soft = Guard(colin_ws).check(photo, redact=Redaction(tmp_path / "soft"))
    monkeypatch.undo()
    held = Guard(colin_ws).check(soft.redacted_path)
    assert held.verdict is Verdict.ALLOW, held.reasons
    own = [m for m in held.faces if m.code is ReasonCode.OWN_BLUR]
    assert own and "blurred by optout-guard in the copy fit to post made on" in own[0].reason
    # The same pixels saved again are another file: judged like any photo (that blurred face: review).
    resaved = tmp_path / "resaved.jpg"
    Image.open(soft.redacted_path).save(resaved, quality=80)
    assert Guard(colin_ws).check(resaved).verdict is Verdict.REVIEW


def test_a_face_left_in_the_copy_is_judged_with_todays_list(colin_ws, tmp_path):
    """Hugo was fine when the copy was made (not blurred); he opts out later: the copy blocks."""
    photo = _pair(tmp_path)
    copy = Guard(colin_ws).check(photo, redact=Redaction(tmp_path / "post")).redacted_path
    assert copy is not None
    enrolled = make_workspace(tmp_path / "later", {
        "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in (1, 2, 3)],
        "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in (3, 4, 5)],
    })  # fmt: skip
    shutil.copy(colin_ws.state_dir / "postable-copies.jsonl", enrolled.state_dir / "postable-copies.jsonl")
    later = Guard(enrolled).check(copy)
    assert later.verdict is Verdict.BLOCK and later.blocked_students == ("hugo",)


def test_the_blurred_clip_checks_without_holding_its_own_blur(colin_ws, tmp_path):
    clip = make_clip(tmp_path / "c.mp4", [Appearance(COLIN, 0.5, 2.5, x=0.3, width=150),
                                          Appearance(HUGO, 0.2, 3.0, x=0.65, width=150)],
                     seconds=3, size=(480, 270), fps=15, audio=False)  # fmt: skip
    first = Guard(colin_ws).check(clip, redact=Redaction(tmp_path / "post"))
    assert first.verdict is Verdict.BLOCK and first.redacted_path, first.reasons
    again = Guard(colin_ws).check(first.redacted_path)
    assert again.verdict is not Verdict.BLOCK
    assert not [m for m in again.faces if m.decision is Decision.REVIEW and not m.candidates], again.reasons
    assert any(r.startswith("this is the copy fit to post that optout-guard made on") and "c.mp4" in r for r in again.reasons)
