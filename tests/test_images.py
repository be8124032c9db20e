"""The safe loader: every mode, orientation and hostile input, on images the tests make."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from optout_guard.config import Settings
from optout_guard.errors import ImageRejected
from optout_guard.media.photos import load_image, looks_like_image

S = Settings()


def gradient(w: int = 120, h: int = 80) -> np.ndarray:
    """An asymmetric RGB test card: orientation and colour mistakes show up in the numbers."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 60)], axis=2).astype(np.uint8)


def save(tmp_path, name: str, image: Image.Image, **kw) -> str:
    path = tmp_path / name
    image.save(path, **kw)
    return str(path)


def test_rgb_png_round_trip_and_hash(tmp_path):
    arr = gradient()
    loaded = load_image(save(tmp_path, "a.png", Image.fromarray(arr)), S)
    assert loaded.format == "PNG" and loaded.size == (120, 80) and loaded.scale == 1.0
    np.testing.assert_array_equal(loaded.pages[0], arr)
    import hashlib

    assert loaded.sha256 == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    arr = gradient()
    upright = Image.fromarray(arr)
    # Store the pixels as a camera would (rotated), with the tag that says how to undo it.
    stored = {3: upright.rotate(180), 6: upright.rotate(90, expand=True), 8: upright.rotate(-90, expand=True)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load_image(save(tmp_path, "r.png", stored, exif=exif.tobytes()), S)
    assert loaded.size == (120, 80)
    np.testing.assert_array_equal(loaded.pages[0], arr)


def test_sixteen_bit_grey_keeps_its_tones(tmp_path):
    grey16 = (np.linspace(0, 65535, 100 * 50).reshape(50, 100)).astype(np.uint16)
    loaded = load_image(save(tmp_path, "g.png", Image.fromarray(grey16)), S)
    pix = loaded.pages[0]
    assert pix.dtype == np.uint8 and pix.shape == (50, 100, 3)
    assert pix.min() == 0 and pix.max() == 255 and 120 < pix.mean() < 135  # not clipped to white


def test_alpha_and_palette_and_cmyk(tmp_path):
    rgba = Image.fromarray(gradient()).convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> white
    assert load_image(save(tmp_path, "t.png", rgba), S).pages[0].min() == 255
    pal = Image.fromarray(gradient()).convert("P")
    assert load_image(save(tmp_path, "p.png", pal), S).pages[0].shape == (80, 120, 3)
    cmyk = Image.fromarray(gradient()).convert("CMYK")
    out = load_image(save(tmp_path, "c.jpg", cmyk, quality=95), S).pages[0]
    assert np.abs(out.astype(int) - gradient().astype(int)).mean() < 12


def test_every_frame_of_an_animation_is_loaded(tmp_path):
    frames = [Image.new("RGB", (40, 40), (255, 255, 255)), Image.fromarray(gradient(40, 40))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    loaded = load_image(path, S)
    assert len(loaded.pages) == 2 and loaded.pages[0].min() == 255 and loaded.pages[1].std() > 20


def test_frames_beyond_the_limit_are_noted(tmp_path):
    frames = [Image.new("RGB", (20, 20), (i * 20, 0, 0)) for i in range(5)]
    path = tmp_path / "many.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    loaded = load_image(path, Settings(max_pages=3))
    assert len(loaded.pages) == 3 and loaded.notes == ("only the first 3 of 5 frames/pages were checked",)


def test_format_comes_from_content_not_name(tmp_path):
    path = save(tmp_path, "really_webp.jpg", Image.fromarray(gradient()), format="WEBP", lossless=True)
    loaded = load_image(path, S)
    assert loaded.format == "WEBP"


def test_heic_is_read(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = save(tmp_path, "phone.heic", Image.fromarray(gradient()), quality=95)
    loaded = load_image(path, S)
    assert loaded.format == "HEIF" and loaded.size == (120, 80)


def test_heif_support_is_loaded_only_for_heif_files(tmp_path):
    """Issue 30: pillow_heif (~0.015 s of a one-photo check) is imported only for a HEIF file; in a
    fresh process, where nothing registered it before, a JPEG leaves it unloaded and a HEIC, named
    .jpg as a phone export may be, is still read (and still recognised as a photo)."""
    import subprocess
    import sys

    import pillow_heif

    pillow_heif.register_heif_opener()
    heic = save(tmp_path, "IMG_0001.jpg", Image.fromarray(gradient()), format="HEIF", quality=95)
    jpeg = save(tmp_path, "plain.jpg", Image.fromarray(gradient()), quality=95)
    code = (
        "import sys\n"
        "from optout_guard.config import Settings\n"
        "from optout_guard.media.photos import load_image, looks_like_image\n"
        f"load_image({jpeg!r}, Settings()); print('pillow_heif' in sys.modules)\n"
        f"print(looks_like_image({heic!r}), load_image({heic!r}, Settings()).format, 'pillow_heif' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "HEIF", "True"]


def test_large_jpeg_is_decoded_reduced(tmp_path):
    big = Image.fromarray(np.tile(gradient(), (10, 10, 1)))  # 1200 × 800
    path = save(tmp_path, "big.jpg", big, quality=80)
    loaded = load_image(path, Settings(max_working_pixels=300_000, max_image_pixels=10_000_000))
    h, w = loaded.pages[0].shape[:2]
    assert w * h <= 300_000 and loaded.size == (1200, 800) and loaded.scale == pytest.approx(1200 / w)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming a huge size, and a tiny IDAT: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("noise.jpg", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
        ("note.jpg", b"this is a text file, not a photo\n", "not an image"),
        ("bomb.png", _png_header_only(40_000, 40_000), "too many pixels"),
        ("over_limit.png", _png_header_only(9_000, 9_000), r"too many pixels \(9000×9000 = 81 MP; the limit is 50 MP\)"),
    ],
)
def test_hostile_files_are_rejected_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageRejected, match=reason):
        load_image(path, Settings(max_image_pixels=50_000_000, max_working_pixels=40_000_000))


def test_truncated_jpeg_is_rejected(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.tile(gradient(), (4, 4, 1))).save(buf, format="JPEG", quality=90)
    path = tmp_path / "half.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 5])
    with pytest.raises(ImageRejected, match="truncated"):
        load_image(path, S)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(ImageRejected, match="cannot read the file"):
        load_image(tmp_path / "nope.jpg", S)


def test_looks_like_image_sniffs_content(tmp_path):
    noext = tmp_path / "subject01"
    Image.fromarray(gradient()).save(noext, format="GIF")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert looks_like_image(noext) and not looks_like_image(text)
    assert looks_like_image(tmp_path / "whatever.JPG")  # by extension: load_image decides later


def test_a_file_too_large_to_be_a_photo_is_not_read(tmp_path, monkeypatch):
    import optout_guard.media.photos as images

    path = tmp_path / "movie.jpg"
    path.write_bytes(b"\xff\xd8" + b"\0" * 5000)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 4000)
    with pytest.raises(ImageRejected, match="file too large to be a photo"):
        load_image(path, S)


@pytest.mark.parametrize(
    ("kind", "save_kw", "orientation"),
    [
        ("RGB", {"quality": 90}, 1),
        ("RGB", {"quality": 90, "subsampling": 0}, 1),  # 4:4:4
        ("RGB", {"quality": 75, "progressive": True}, 1),
        ("RGB", {"quality": 90}, 6),  # a phone photo stored on its side
        ("RGB", {"quality": 90}, 3),
        ("L", {"quality": 90}, 1),  # greyscale
        ("CMYK", {"quality": 90}, 1),  # not the fast path: Pillow decodes it
    ],
)
def test_a_jpeg_decoded_once_gives_the_pixels_pillow_gives(tmp_path, samples, kind, save_kw, orientation):
    """Plain JPEGs are decoded by libjpeg-turbo through simplejpeg (strict, in one pass, ~4x faster
    than Pillow); the pixels must be exactly Pillow's, orientation applied the same way."""
    from PIL import ImageOps

    source = Image.open(samples["astronaut"]).convert(kind)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo-{kind}-{orientation}.jpg"
    source.save(path, exif=exif.tobytes(), **save_kw)
    loaded = load_image(path, S).pages[0]
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert loaded.shape == expected.shape
    if kind == "CMYK":  # Pillow's own decode and conversion, as before
        assert np.abs(loaded.astype(int) - expected.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(loaded, expected)


def test_a_plain_jpeg_is_decoded_once_not_twice(tmp_path, samples, monkeypatch):
    from PIL import JpegImagePlugin

    path = tmp_path / "plain.jpg"
    Image.open(samples["astronaut"]).convert("RGB").save(path, quality=90)

    def no_second_decode(self):
        raise AssertionError("Pillow decoded the pixels again")

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", no_second_decode)
    assert load_image(path, S).pages[0].shape == (512, 512, 3)
