"""One handler per kind of media: what checking, re-checking, picturing and filing a file of that
kind means. ``sniff`` decides the kind once (``MediaKind``); ``Guard``, the audit, the report, the
desk and the check folder then ask :func:`handler_for` instead of asking "clip or photo?" again.
The next kind (animated WebP, PDF newsletters, Live Photos) is one more handler here.

A file that could not be read, or that is neither photo nor clip but was named explicitly, goes to
the photo handler: decoding it fails, and that is a *review* with the reason (fail closed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from optout_guard.types import MediaKind, ScanResult

if TYPE_CHECKING:
    from PIL import Image

    from optout_guard.config import Settings
    from optout_guard.pipeline import FaceVectors, Guard, Redaction
    from optout_guard.scope import Scope
    from optout_guard.stored_faces import StoredFace


class MediaHandler(Protocol):
    kind: MediaKind
    # What a check folder files beside the original: the marked-up copy, the copy fit to post.
    marked_suffix: str
    postable_suffix: str

    def check(
        self, guard: Guard, path: Path | str, annotate_dir: Path | None, redact: Redaction | None, scope: Scope
    ) -> ScanResult:
        """Check the file whole. Never raises for a bad file: the problem is a *review* reason."""
        ...

    def recheck(
        self, guard: Guard, path: Path | str, stored: list[StoredFace], scope: Scope, keep: bool
    ) -> tuple[ScanResult, FaceVectors | None]:
        """Decide again against today's gallery from what the audit stored (no new detection where
        the kind allows it); with ``keep``, each face's embedding for the audit's cache (or None)."""
        ...

    def first_check(self, guard: Guard, path: Path | str, scope: Scope, keep: bool) -> tuple[ScanResult, FaceVectors | None]:
        """The audit's first check of the file, with the embeddings when ``keep`` and the kind has them."""
        ...

    def picture(self, path: Path | str, settings: Settings) -> Image.Image:
        """One picture of the file for a card or a thumbnail (a photo's first page, a clip's first frame)."""
        ...

    def stored_picture(self, path: Path | str, stored: list[StoredFace], settings: Settings) -> Image.Image | None:
        """The file marked up with what the audit stored, for the report (None: draw it from the faces)."""
        ...


class PhotoHandler:
    marked_suffix = ".marked.jpg"
    postable_suffix = ".postable.jpg"

    def __init__(self, kind: MediaKind = MediaKind.PHOTO) -> None:
        self.kind = kind  # UNREADABLE / OTHER: decoding is tried, and failing is review

    def check(
        self, guard: Guard, path: Path | str, annotate_dir: Path | None, redact: Redaction | None, scope: Scope
    ) -> ScanResult:
        from optout_guard.media.clip import CLIP_EXTENSIONS
        from optout_guard.photo import check_photo

        result, _ = check_photo(guard, path, annotate_dir, None, False, redact, scope)
        suffix = Path(path).suffix.lower()
        if self.kind is MediaKind.PHOTO and suffix in CLIP_EXTENSIONS:
            said = f"this file is a still photo named {suffix}; it was checked as a photo"
            result = dataclasses.replace(result, reasons=(said, *result.reasons))
        return result

    def recheck(
        self, guard: Guard, path: Path | str, stored: list[StoredFace], scope: Scope, keep: bool
    ) -> tuple[ScanResult, FaceVectors | None]:
        from optout_guard.photo import check_photo

        return check_photo(guard, path, None, [s.face for s in stored], keep, None, scope)

    def first_check(self, guard: Guard, path: Path | str, scope: Scope, keep: bool) -> tuple[ScanResult, FaceVectors | None]:
        if keep:
            from optout_guard.photo import check_photo

            return check_photo(guard, path, None, None, True, None, scope)
        return self.check(guard, path, None, None, scope), None

    def picture(self, path: Path | str, settings: Settings) -> Image.Image:
        from PIL import Image

        from optout_guard.media.photos import load_image

        return Image.fromarray(load_image(path, settings).pages[0])

    def stored_picture(self, path: Path | str, stored: list[StoredFace], settings: Settings) -> Image.Image | None:
        return None  # the report draws the photo's stored faces on the photo itself


class ClipHandler:
    kind = MediaKind.CLIP
    marked_suffix = ".marked.jpg"  # the contact sheet
    postable_suffix = ".postable.mp4"

    def check(
        self, guard: Guard, path: Path | str, annotate_dir: Path | None, redact: Redaction | None, scope: Scope
    ) -> ScanResult:
        from optout_guard.video import check_clip  # PyAV is loaded only when a clip comes

        return check_clip(guard, path, annotate_dir, redact, scope)

    def recheck(
        self, guard: Guard, path: Path | str, stored: list[StoredFace], scope: Scope, keep: bool
    ) -> tuple[ScanResult, FaceVectors | None]:
        from optout_guard.video import recheck_clip  # its tracks' frames only, not a full decode

        return recheck_clip(guard, path, stored, scope), None

    def first_check(self, guard: Guard, path: Path | str, scope: Scope, keep: bool) -> tuple[ScanResult, FaceVectors | None]:
        return self.check(guard, path, None, None, scope), None  # a clip's tracks are not cached

    def picture(self, path: Path | str, settings: Settings) -> Image.Image:
        from PIL import Image

        from optout_guard.media.clip import frame_at

        return Image.fromarray(frame_at(path, 0.0))

    def stored_picture(self, path: Path | str, stored: list[StoredFace], settings: Settings) -> Image.Image | None:
        from optout_guard.video import stored_contact_sheet

        return stored_contact_sheet(path, [f for f in stored if f.track])  # each track's best frame


PHOTOS = PhotoHandler()
CLIPS = ClipHandler()
_UNKNOWN = {k: PhotoHandler(k) for k in (MediaKind.UNREADABLE, MediaKind.OTHER)}


def handler_for(kind: MediaKind | str) -> MediaHandler:
    """The handler of a kind (``MediaKind``, or a result's or the audit state's ``kind`` text)."""
    kind = MediaKind(kind)
    return CLIPS if kind is MediaKind.CLIP else PHOTOS if kind is MediaKind.PHOTO else _UNKNOWN[kind]


# Every file a check writes beside an original, whatever its kind (a folder walk passes them over).
OUTPUT_SUFFIXES = tuple(dict.fromkeys(s for h in (PHOTOS, CLIPS) for s in (h.marked_suffix, h.postable_suffix)))


def handler_of(path: Path | str) -> MediaHandler:
    """The handler of a file not sniffed yet."""
    from optout_guard.media.photos import sniff

    return handler_for(sniff(path))
