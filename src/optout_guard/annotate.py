"""Marked-up copies of checked photos. Writes new files only; originals are never touched.

Boxes are coloured by decision (red block, amber review, green clear); blocked faces carry the
student id. Copies are JPEG without any metadata (no EXIF, no GPS), written atomically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from optout_guard.fsutil import atomic_write
from optout_guard.types import Box, Decision, FaceMatch, LoadedImage, ReasonCode

COLOURS = {Decision.BLOCK: (220, 30, 30), Decision.REVIEW: (255, 170, 0), Decision.CLEAR: (40, 180, 60)}
MAX_SIDE = 4000  # marked-up copies of panoramas are shrunk to this long side


_UNJUDGED_LABEL = {
    ReasonCode.DETECTION_ONLY: "FACE",
    ReasonCode.TOO_SMALL: "REVIEW: too small",
    ReasonCode.TOO_BLURRED: "REVIEW: blurred",
    ReasonCode.TURNED: "REVIEW: turned",
    ReasonCode.CUT_BY_EDGE: "REVIEW: cut off",
    ReasonCode.TOO_COMPRESSED: "REVIEW: compressed",
}


def label_for(match: FaceMatch) -> str:
    """The label drawn on a face's box (empty for a clear face)."""
    if match.decision is Decision.BLOCK:
        return f"BLOCK {match.student_id or '(opted-out student)'}"
    if match.decision is Decision.REVIEW:
        if match.candidates:
            return f"REVIEW {match.student_id}?"
        return _UNJUDGED_LABEL.get(match.code, "REVIEW: unclear")
    return ""


def marked_copy_name(image: LoadedImage, page: int, pages_with_faces: int) -> str:
    """``<stem>.<first 8 of sha256>.jpg`` — unique per content, so two photos with the same file
    name in different folders never overwrite each other's copy."""
    stem = Path(image.path).stem or "photo"
    suffix = f".p{page + 1}" if pages_with_faces > 1 or page > 0 else ""
    return f"{stem}.{image.sha256[:8]}{suffix}.jpg"


def render_page(image: LoadedImage, page: int, matches: list[FaceMatch], labels: bool = True) -> Image.Image:
    canvas = Image.fromarray(image.pages[page])
    shrink = min(1.0, MAX_SIDE / max(canvas.size))
    if shrink < 1.0:
        canvas = canvas.resize((round(canvas.width * shrink), round(canvas.height * shrink)), Image.Resampling.LANCZOS)
    factor = shrink / image.scale  # original pixels -> pixels of this canvas
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(max(canvas.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 60)))
    for match in matches:
        if match.face.page != page:
            continue
        box = match.face.box.scaled(factor)
        colour = COLOURS[match.decision]
        draw.rectangle([box.x, box.y, box.right, box.bottom], outline=colour, width=line)
        label = label_for(match) if labels else ""
        if label:
            left, top, right, bottom = draw.textbbox((box.x, box.y), label, font=font)
            y = box.y - (bottom - top) - 2 * line if box.y > (bottom - top) + 2 * line else box.bottom + line
            draw.rectangle([box.x, y, box.x + (right - left) + 2 * line, y + (bottom - top) + 2 * line], fill=colour)
            draw.text((box.x + line, y + line - (top - box.y)), label, fill=(255, 255, 255), font=font)
    return canvas


def write_marked_copy(image: LoadedImage, matches: list[FaceMatch], out_dir: Path) -> Path:
    """Write the marked-up copy (one file per page that has faces; page 1 when none has).
    Returns the path of the first file written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = sorted({m.face.page for m in matches}) or [0]
    written: list[Path] = []
    for page in pages:
        target = out_dir / marked_copy_name(image, page, len(pages))
        written.append(save_jpeg(render_page(image, page, matches), target))
    return written[0]


def save_jpeg(canvas: Image.Image, target: Path, mode: int = 0o644) -> Path:
    """Write atomically as a JPEG with no metadata at all (no exif= argument: nothing of the
    original's EXIF, GPS, XMP or embedded thumbnail); by default readable by staff (0644)."""
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return atomic_write(target, buffer.getvalue(), mode=mode, prefix=".copy-")


def write_thumbnail(image: LoadedImage, matches: list[FaceMatch], path: Path, width: int = 360, labels: bool = False) -> Path:
    """A marked-up JPEG for reports: the first page with faces, boxes drawn, no metadata. Small ones
    carry no labels (on a crowd they would cover the faces); the large copy they link to does."""
    page = min((m.face.page for m in matches), default=0)
    canvas = render_page(image, page, matches, labels=labels)
    canvas.thumbnail((width, width * 2), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_jpeg(canvas, path, mode=0o600)  # report thumbnails show children: private


REDACT_MARGIN = 0.35  # grow each face box by this much on every side: hair, ears and chin go too
REDACT_BLOCKS = 6  # the face becomes a 6×6 mosaic before blurring: nothing left to recognise or sharpen


def redact_page(image: LoadedImage, page: int, matches: list[FaceMatch], decisions: set[Decision]) -> Image.Image:
    """The page with every face whose decision is in ``decisions`` pixelated and blurred."""
    boxes = [m.face.box.scaled(1.0 / image.scale) for m in matches if m.face.page == page and m.decision in decisions]
    return Image.fromarray(blur_regions(np.array(image.pages[page]), boxes))


def blur_regions(pixels: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """``pixels`` (modified in place and returned) with every box, grown by REDACT_MARGIN (more
    above: hair), turned into a blurred mosaic: nothing left to recognise or sharpen."""
    height, width = pixels.shape[:2]
    for box in boxes:
        grow_w, grow_h = box.w * REDACT_MARGIN, box.h * REDACT_MARGIN
        x0, y0 = max(0, int(box.x - grow_w)), max(0, int(box.y - grow_h * 1.3))
        x1, y1 = min(width, int(box.right + grow_w)), min(height, int(box.bottom + grow_h))
        if x1 <= x0 or y1 <= y0:
            continue
        region = Image.fromarray(pixels[y0:y1, x0:x1])
        mosaic = region.resize((REDACT_BLOCKS, REDACT_BLOCKS), Image.Resampling.BOX).resize(region.size, Image.Resampling.NEAREST)
        radius = max(2, (x1 - x0) // REDACT_BLOCKS)
        pixels[y0:y1, x0:x1] = np.asarray(mosaic.filter(ImageFilter.GaussianBlur(radius)))
    return pixels


def write_redacted_copy(image: LoadedImage, matches: list[FaceMatch], out_dir: Path) -> Path:
    """A copy fit to post: blocked faces and faces under review made unrecognisable;
    JPEG with no metadata at all (no EXIF, GPS, XMP or embedded thumbnail). One file per page."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decisions = {Decision.BLOCK, Decision.REVIEW}
    written: list[Path] = []
    for page in range(len(image.pages)):
        stem = Path(marked_copy_name(image, page, len(image.pages))).stem
        written.append(save_jpeg(redact_page(image, page, matches, decisions), out_dir / f"{stem}.redacted.jpg"))
    return written[0]


@dataclass(frozen=True)
class Copies:
    """What :func:`write_copies` wrote (paths as text), and why a requested copy is missing."""

    marked: str | None = None
    postable: str | None = None
    failure: str | None = None


def write_copies(
    image: LoadedImage, matches: list[FaceMatch], marked_dir: Path | None, postable_dir: Path | None
) -> Copies:
    """The copies a check was asked for: marked-up into ``marked_dir``, fit to post into
    ``postable_dir``. A copy that cannot be written (a full disk, no permission) is a ``failure``
    the caller turns into a reason; the check itself stands."""
    marked = postable = None
    try:
        if marked_dir is not None:
            marked = str(write_marked_copy(image, matches, marked_dir))
        if postable_dir is not None:
            postable = str(write_redacted_copy(image, matches, postable_dir))
    except OSError as exc:
        return Copies(marked, postable, f"a copy could not be written ({exc})")
    return Copies(marked, postable)


def face_crop(pixels: np.ndarray, box: Box, scale: float, margin: float) -> Image.Image:
    """The face in ``box`` (original pixels) with ``margin`` × its size around it, from decoded
    ``pixels`` that are ``scale`` times smaller than the original."""
    b = box.scaled(1.0 / scale)
    pad = margin * max(b.w, b.h)
    x0, y0 = max(0, int(b.x - pad)), max(0, int(b.y - pad))
    x1, y1 = min(pixels.shape[1], int(b.right + pad)), min(pixels.shape[0], int(b.bottom + pad))
    return Image.fromarray(pixels[y0:y1, x0:x1])


def jpeg_bytes(picture: Image.Image, quality: int = 88) -> bytes:
    """A picture as JPEG bytes, without any metadata."""
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
