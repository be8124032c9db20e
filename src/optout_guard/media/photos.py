"""The only place untrusted bytes are decoded.

Every photo goes through :func:`load_image`: format from content (not the extension), EXIF
orientation applied, any colour mode to 8-bit RGB, every frame of animated/multi-page files, a
pixel limit checked *before* decoding, and anything truncated or corrupt rejected with a reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from optout_guard.config import Settings
from optout_guard.errors import ImageRejected
from optout_guard.fsutil import FileChangedError, read_with_identity
from optout_guard.types import LoadedImage, MediaKind, ReasonCode

# EXIF orientation tag value -> the transposes that undo it (what ImageOps.exif_transpose does, but
# applied to every frame of a multi-frame file, not only the first).
_ORIENTATION = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
_EXIF_ORIENTATION_TAG = 0x0112
# The largest file read as a photo (a 108 MP JPEG is ~30 MB; uncompressed TIFFs can be a few 100 MB).
MAX_FILE_BYTES = 1_000_000_000
_heif_registered = False


def _is_heif(head: bytes) -> bool:
    """Possibly HEIC/HEIF: an ISO media file, whose first box is ``ftyp`` (MP4 and MOV are too; for
    them it costs only the import). Only then is pillow_heif imported (~0.015 s of a one-photo
    check otherwise, issue 30)."""
    return head[4:8] == b"ftyp"


def _register_heif() -> None:
    global _heif_registered
    if not _heif_registered:
        import pillow_heif

        pillow_heif.register_heif_opener()
        _heif_registered = True


# JPEGs saved below this quality (libjpeg's scale) leave faces too blocky to clear. Measured on 80
# LFW people enrolled from 2 photos, a third photo re-saved at each quality: the enrolled person is
# cleared 6/80 times at quality 95, 7 at 15, 12 at 8, 45 at 4. No JPEG in ../shared/data (12,432)
# is below quality 50, so the rule costs no review there.
MIN_JPEG_QUALITY = 10
# libjpeg's standard luminance table's smallest entry; the table is scaled by 5000/q (q < 50).
_STD_LUMA_MIN = 10.0


def jpeg_quality(im: Image.Image) -> float | None:
    """The libjpeg quality a JPEG was saved at, estimated from its smallest luminance quantiser
    (None for other formats). Precise where it matters: at low qualities."""
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables:
        return None
    smallest = float(min(tables[0]))
    scale = 100.0 * smallest / _STD_LUMA_MIN
    return 100.0 if scale <= 0 else ((200.0 - scale) / 2 if scale <= 100 else 5000.0 / scale)


EMPTY = "empty file (0 bytes); if it is still being copied, check it again later"
TRUNCATED = "truncated or corrupt image data (a half-copied file?); copy it again completely and re-check"
# Pages of one multi-page file are decoded one at a time, until this many times max_working_pixels
# are held; the rest are not checked and the photo is review (a 5-page TIFF of 36 MP pages took 1 GB).
MAX_PAGES_BUDGET = 2
# Words of libjpeg's warnings that mean the compressed data is damaged (the picture below the damage
# is grey or garbage): such a file is never judged as if it were whole.
_DAMAGED = ("corrupt", "premature end", "extraneous bytes", "huffman", "invalid", "bogus", "unknown marker")


def _strict_jpeg(name: str, data: bytes, max_pixels: int) -> np.ndarray | None:
    """Pillow decodes a JPEG with damaged data silently. libjpeg-turbo's warnings, through simplejpeg
    in strict mode, say when that happened: such a file is *damaged*, never judged as if whole.

    A plain JPEG (YCbCr or grey) within ``max_pixels`` is decoded here in full, once: the same
    pixels as Pillow's (same library and methods; a test compares them) in a quarter of the time
    (24 ms instead of 87 ms at 12 MP). Anything else is only checked, at 1/8 scale, and returns None:
    Pillow decodes it (CMYK, arithmetic coding, very large photos decoded at reduced scale)."""
    import simplejpeg

    try:
        height, width, colourspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        height = width = 0
        colourspace = ""
    try:
        if colourspace in ("YCbCr", "Gray") and 0 < height * width <= max_pixels:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        # The smallest DCT scale: every entropy-coded byte is still decoded (that is where the damage is).
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, strict=True)
    except ValueError as exc:
        text = str(exc)
        if "premature end of jpeg file" in text.lower():  # the end is missing: a half-copied file
            raise ImageRejected(name, TRUNCATED, code=ReasonCode.TRUNCATED) from None
        if any(word in text.lower() for word in _DAMAGED):
            raise ImageRejected(
                name, f"damaged image data ({text}); parts of the picture may be missing. Get an undamaged copy and re-check"
            ) from None
        # Anything else (a JPEG flavour this decoder does not take, e.g. CMYK or arithmetic coding) is
        # left to Pillow, which still refuses truncated and unreadable files.
    return None


def _embedded_previews(im: Image.Image, data: bytes, orientation: int) -> list[Image.Image]:
    """The small previews a file carries besides its picture: the EXIF thumbnail (IFD1, a JPEG inside
    the EXIF block) and HEIF thumbnail items. Unreadable previews are skipped (nothing to show)."""
    previews: list[Image.Image] = []
    try:
        ifd1 = im.getexif().get_ifd(ExifTags.IFD.IFD1)
        offset, length, raw = ifd1.get(0x0201), ifd1.get(0x0202), im.info.get("exif")
        if offset and length and raw:
            start = 6 if raw[:6] == b"Exif\x00\x00" else 0
            with Image.open(io.BytesIO(raw[start + offset : start + offset + length])) as thumb_file:
                thumb = thumb_file.convert("RGB")
            for transpose in _ORIENTATION.get(orientation, ()):
                thumb = thumb.transpose(transpose)
            previews.append(thumb)
    except Exception:  # noqa: BLE001 - no readable EXIF thumbnail
        pass
    if (im.format or "") in ("HEIF", "AVIF"):
        previews.extend(_heif_thumbnails(data))
    return previews


def _heif_thumbnails(data: bytes) -> list[Image.Image]:
    import pillow_heif

    found: list[Image.Image] = []
    try:
        primary = pillow_heif.open_heif(io.BytesIO(data))[0]
        listed = primary.info.get("thumbnails")
        for i in range(len(listed) if isinstance(listed, list) else 0):
            t = primary.get_thumbnail(i)
            found.append(Image.frombytes(t.mode, t.size, t.data, "raw", t.mode, t.stride).convert("RGB"))
    except Exception:  # noqa: BLE001 - no readable HEIF thumbnail
        pass
    return found


def _differing_thumbnail(im: Image.Image, data: bytes, first_page: np.ndarray, orientation: int) -> np.ndarray | None:
    """An embedded preview that shows a different picture from the photo, as an RGB array; None
    when there is none or every preview matches (the normal case)."""
    main = np.asarray(Image.fromarray(first_page).convert("L").resize((32, 32), Image.Resampling.BOX), np.float32)
    for thumb in _embedded_previews(im, data, orientation):
        if min(thumb.size) < 8:
            continue
        small = np.asarray(thumb.convert("L").resize((32, 32), Image.Resampling.BOX), np.float32)
        # Cameras letterbox a 16:9 photo's 4:3 preview: compare the picture area only.
        rows = np.where(small.mean(axis=1) > 12)[0]
        if 0 < len(rows) < 32:
            box = (0, int(rows[0] * thumb.size[1] / 32), thumb.size[0], int((rows[-1] + 1) * thumb.size[1] / 32))
            small = np.asarray(thumb.convert("L").crop(box).resize((32, 32), Image.Resampling.BOX), np.float32)
        if float(np.abs(small - small.mean() - (main - main.mean())).mean()) > THUMBNAIL_DIFFERENCE:
            return np.ascontiguousarray(np.asarray(thumb.convert("RGB")))
    return None


# Mean absolute difference (grey levels, 32×32, brightness-aligned) above which an EXIF thumbnail is
# "a different picture". Measured on the 23 photos with EXIF thumbnails in ../shared/data: 21 match
# their photo at 1.4–13.3; two were cropped after the preview was made and their previews show the
# uncropped scene, with people cut from the photo (carell.jpg 62.7, deepface img1.jpg 80.5).
THUMBNAIL_DIFFERENCE = 20.0


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """An RGB array turned as its EXIF orientation says (the same transposes as a Pillow frame's)."""
    if orientation not in _ORIENTATION:
        return pixels
    frame = Image.fromarray(pixels)
    for transpose in _ORIENTATION[orientation]:
        frame = frame.transpose(transpose)
    return np.asarray(frame)


def _to_rgb(frame: Image.Image) -> np.ndarray:
    """Any Pillow mode to an RGB uint8 array, keeping the full tonal range of 16-bit images."""
    mode = frame.mode
    if mode.startswith("I") or mode == "F":
        # 16/32-bit greyscale: a plain convert("RGB") clips everything above 255 to white.
        arr = np.asarray(frame, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255.0:
            arr = arr / (257.0 if top <= 65535.0 else top / 255.0)
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = "A" in mode or "a" in mode or (mode in ("P", "L", "RGB") and "transparency" in frame.info)
    if has_alpha:
        # Transparent areas become white, not black, so dark hair against transparency stays visible.
        rgba = frame.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(frame.convert("RGB"))


def load_image(path: Path | str, settings: Settings) -> LoadedImage:
    """Decode one untrusted file. Raises :class:`ImageRejected` with a reason a person can act on."""
    name = str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageRejected(name, "not a regular file (a folder, device or pipe)")
        if info.st_size == 0:
            raise ImageRejected(name, EMPTY, code=ReasonCode.EMPTY_FILE)
        if info.st_size > MAX_FILE_BYTES:  # a video or disk image named like a photo: never read whole
            raise ImageRejected(name, f"file too large to be a photo ({info.st_size / 1e6:.0f} MB); check it by hand")
        # The identity (size, mtime) of exactly the bytes read: whoever stores a verdict stores that,
        # not a stat taken later, when the file may already hold other bytes.
        data, identity = read_with_identity(path, MAX_FILE_BYTES)
    except ImageRejected:
        raise
    except FileChangedError:
        why = "the file kept changing while it was read (still being copied?); check it again later"
        raise ImageRejected(name, why, transient=True) from None
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        why = f"cannot read the file ({detail}); check that it exists and is readable"
        raise ImageRejected(name, why, transient=True) from None
    if not data:
        raise ImageRejected(name, EMPTY, code=ReasonCode.EMPTY_FILE)
    sha256 = hashlib.sha256(data).hexdigest()
    decoded = _strict_jpeg(name, data, settings.max_working_pixels) if data[:2] == b"\xff\xd8" else None

    if _is_heif(data):
        _register_heif()
    # Our own pixel limit below replaces Pillow's warning; a truncated file must fail, never pad.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Pillow refuses images over twice this with its own bomb error: put that line past ours, so the
    # documented max_image_pixels is the limit that really applies.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow's own bomb check (at twice its MAX_IMAGE_PIXELS) stays on as a second line.
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageRejected(name, "too many pixels (a decompression bomb?), refused before decoding") from None
    except UnidentifiedImageError:
        raise ImageRejected(name, "not an image, or a format optout-guard cannot read") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a rejection
        raise ImageRejected(name, f"unreadable image header ({type(exc).__name__}: {exc})") from None

    with im:
        fmt = im.format or "unknown"
        width, height = im.size
        pixels = width * height
        if pixels <= 0:
            raise ImageRejected(name, f"image has no pixels ({width}×{height})")
        if pixels > settings.max_image_pixels:
            raise ImageRejected(
                name,
                f"too many pixels ({width}×{height} = {pixels / 1e6:.0f} MP; the limit is "
                f"{settings.max_image_pixels / 1e6:.0f} MP), refused before decoding",
            )
        orientation = 1
        try:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, the pixels still count
            orientation = 1

        n_frames = int(getattr(im, "n_frames", 1) or 1)
        notes: list[str] = []
        too_compressed = ""
        quality = jpeg_quality(im)
        if quality is not None and quality < MIN_JPEG_QUALITY:
            too_compressed = (
                f"face in a very strongly compressed JPEG (quality about {quality:.0f}): too little detail left to clear it"
            )
        if n_frames > settings.max_pages:
            notes.append(f"only the first {settings.max_pages} of {n_frames} frames/pages were checked")
        if pixels > settings.max_working_pixels and fmt in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 108 MP photo never exists at full size.
            # draft() only picks a scale whose result is at least the requested size, so request
            # the power-of-two reduction that brings the photo under the limit.
            factor = 2 ** math.ceil(math.log2(math.sqrt(pixels / settings.max_working_pixels)))
            im.draft(im.mode, (math.ceil(width / factor), math.ceil(height / factor)))

        pages: list[np.ndarray] = []
        held = 0  # working pixels held so far: pages are decoded one by one, within one photo's budget
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                for index in range(min(n_frames, settings.max_pages)):
                    if index and held >= settings.max_working_pixels * MAX_PAGES_BUDGET:
                        notes.append(
                            f"only the first {index} of {n_frames} pages were checked (too many pixels in one file); "
                            "split the file and check each page"
                        )
                        break
                    im.seek(index)
                    if index and im.size[0] * im.size[1] > settings.max_image_pixels:
                        notes.append(f"page {index + 1} has too many pixels and was not checked")
                        continue
                    if index == 0 and decoded is not None and fmt == "JPEG" and n_frames == 1:
                        pages.append(np.ascontiguousarray(_upright(decoded, orientation)))  # decoded once, above
                        held += pages[-1].shape[0] * pages[-1].shape[1]
                        continue
                    im.load()
                    frame: Image.Image = im
                    if frame.size[0] * frame.size[1] > settings.max_working_pixels:
                        factor = math.sqrt(frame.size[0] * frame.size[1] / settings.max_working_pixels)
                        target = (max(1, int(frame.size[0] / factor)), max(1, int(frame.size[1] / factor)))
                        frame = frame.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
                    for transpose in _ORIENTATION.get(orientation, ()):
                        frame = frame.transpose(transpose)
                    pages.append(np.ascontiguousarray(_to_rgb(frame)))
                    held += pages[-1].shape[0] * pages[-1].shape[1]
            thumbnail = _differing_thumbnail(im, data, pages[0], orientation)
        except MemoryError:
            raise ImageRejected(name, "not enough memory to decode this image", transient=True) from None
        except OSError as exc:
            text = str(exc)
            if "truncated" in text or "broken data stream" in text or "unrecognized data stream" in text:
                raise ImageRejected(name, TRUNCATED, code=ReasonCode.TRUNCATED) from None
            raise ImageRejected(name, f"cannot decode the image ({text})") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a rejection
            raise ImageRejected(name, f"cannot decode the image ({type(exc).__name__}: {exc})") from None

    if thumbnail is not None:
        # The embedded preview shows another picture than the photo: posting the file publishes it.
        notes.append(
            "the photo's embedded preview (EXIF or HEIF thumbnail) shows a different picture; it was checked as an extra page. "
            "Post a copy without metadata (optout-guard check --redact)"
        )
        pages.append(thumbnail)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    working = pages[0].shape[1]
    scale = width / working if working else 1.0
    return LoadedImage(
        path=name,
        sha256=sha256,
        format=fmt,
        size=(width, height),
        pages=tuple(pages),
        scale=float(scale),
        notes=tuple(notes),
        identity=(identity.size, identity.mtime_ns),
        faces_unjudgeable=too_compressed,
    )


# Extensions that are photos. In a folder walk, other files are checked only if their content is
# an image (so that extension-less or mis-named photos are never skipped).
IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .jpe .jfif .png .webp .gif .tif .tiff .bmp .dib .heic .heif .hif .avif .mpo".split())


def looks_like_image(path: Path | str) -> bool:
    """Cheap test used when walking folders: an image extension, or an image header."""
    return sniff(path) is MediaKind.PHOTO


def sniff(path: Path | str) -> MediaKind:
    """What a file found in a folder is (``MediaKind``): a photo (an image extension or header), a
    clip (a video container, by its header or a video extension), other (a file that was read and is
    neither: left alone), or unreadable (it could not be read, so nobody knows: it must be checked,
    which makes it *review*, whatever its name). Decided here, once; callers hand the kind on."""
    from optout_guard.media.clip import CLIP_EXTENSIONS, has_video, looks_like_clip

    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.PHOTO  # not even opened (a walk of millions of files); a clip named .jpg is review
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return MediaKind.OTHER  # never open a pipe or device just to sniff it
        with open(path, "rb") as fh:
            head = fh.read(400)
    except OSError:
        return MediaKind.UNREADABLE
    if looks_like_clip(head, suffix):
        return MediaKind.CLIP  # whatever its name (or none)
    if not head:
        return MediaKind.OTHER  # an empty file with a non-image name: nothing in it to post
    image = _opens_as_image(path)
    if image is not MediaKind.OTHER:
        return image  # a still photo named .mp4 is checked as the photo it is
    if suffix in CLIP_EXTENSIONS:
        return MediaKind.CLIP  # named as a clip but not recognised: checked as one (a damaged clip is review)
    # Whatever FFmpeg plays with a picture in it is a clip (FLV, Ogg/Theora, a song's cover art…).
    return MediaKind.CLIP if has_video(path) else MediaKind.OTHER


def _opens_as_image(path: Path | str) -> MediaKind:
    """PHOTO when Pillow recognises the file, UNREADABLE when reading it failed, else OTHER."""
    try:
        with open(path, "rb") as fh:
            if _is_heif(fh.read(12)):
                _register_heif()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path):
                return MediaKind.PHOTO
    except Image.DecompressionBombError:
        return MediaKind.PHOTO  # an image, and a hostile one: load_image will refuse it with a reason
    except OSError as exc:
        return MediaKind.OTHER if isinstance(exc, UnidentifiedImageError) else MediaKind.UNREADABLE
    except Exception:  # noqa: BLE001 - anything else unreadable as an image is "not an image" here
        return MediaKind.OTHER


_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 0x9003
_DATE_TIME = 0x0132
_NAME_DATE = re.compile(r"^((?:19|20)\d\d)(?:[-_.]?(\d\d)[-_.]?(\d\d))?(?!\d)")


def photo_date(path: Path | str) -> str:
    """When a reference photo was taken, as ``YYYY-MM-DD``: a date at the start of its file name
    (``2025-09-12_…``, or just the year: ``2025…`` = 1 January), else the camera's EXIF date, else
    the file's modification date. Only the header is read."""
    path = Path(path)
    named = _NAME_DATE.match(path.name)
    if named:
        year, month, day = named.group(1), named.group(2) or "01", named.group(3) or "01"
        try:
            return dt.date(int(year), int(month), int(day)).isoformat()
        except ValueError:
            pass
    try:
        with open(path, "rb") as fh:
            if _is_heif(fh.read(12)):
                _register_heif()
        with Image.open(path) as im:
            exif = im.getexif()
            raw = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
        if isinstance(raw, str) and len(raw) >= 10:
            return dt.date(int(raw[0:4]), int(raw[5:7]), int(raw[8:10])).isoformat()
    except Exception:  # noqa: BLE001 - no readable date in the header: fall back to the file's date
        pass
    try:
        return dt.date.fromtimestamp(path.stat().st_mtime).isoformat()
    except OSError:
        return ""
