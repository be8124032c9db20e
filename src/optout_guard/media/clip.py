"""Video clips: recognise them by content, read them frame by frame, write a blurred copy.

PyAV (FFmpeg's libraries inside the wheel) decodes every container and codec a phone or a camera
writes (MP4/MOV/M4V/3GP with H.264 or HEVC, WebM/MKV with VP8/VP9/AV1, AVI), reads the rotation a
phone records in the display matrix, and writes H.264 while copying the audio packets unchanged.
A clip is never decoded whole into memory: frames stream through, only the sampled ones are kept
as small RGB arrays for as long as the caller needs them.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from optout_guard.errors import ClipUnreadable

# Container signatures. MP4-family files carry "ftyp" at byte 4 and a brand; HEIC/AVIF photos do too
# (their brands are image brands), so the brand decides.
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"jpeg"}
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska / WebM
CLIP_EXTENSIONS = {
    ".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".webm", ".mkv", ".avi", ".mts", ".m2ts", ".ts", ".m2t", ".mpg", ".mpeg",
    ".wmv", ".flv", ".f4v", ".ogv", ".vob", ".mxf", ".dv", ".asf",
}  # fmt: skip
# Formats whose files can be joined end to end (`cat a.ts b.ts`, camcorder .MTS parts, HLS segments)
# and still play: their time stamps may restart part-way, so nothing may seek in them by time.
_JOINABLE = {"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "m4v", "dv"}
SEGMENT_JUMP = 5.0  # seconds: a time stamp that jumps back, or forward by more, starts a new segment


def looks_like_clip(head: bytes, suffix: str = "") -> bool:
    """A video container, from the first bytes of the file (the name only breaks a tie)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12] not in _IMAGE_BRANDS
    if head.startswith(_EBML):
        return True
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return True
    if head.startswith(b"\x00\x00\x01\xba") or (head[:1] == b"\x47" and suffix.lower() in {".ts", ".mts", ".m2ts", ".m2t"}):
        return True  # MPEG program / transport stream
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return True  # a transport stream under any name: a sync byte every 188 bytes
    if head.startswith(b"FLV\x01"):
        return True
    return head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")  # ASF / WMV


def has_video(path: Path | str) -> bool:
    """Whether FFmpeg opens the file and finds a video stream in it (cover art counts: it is a
    picture). For files no signature above knows (Ogg/Theora, and whatever else plays)."""
    try:
        with _open(path) as container:
            return bool(container.streams.video)
    except ClipUnreadable:
        return False


@dataclass(frozen=True)
class ClipInfo:
    duration: float  # seconds (from the container; 0.0 when it does not say)
    fps: float
    width: int  # of the upright picture (rotation applied)
    height: int
    rotation: int  # degrees the stored picture is turned for display (0, 90, 180, 270)
    has_audio: bool
    codec: str
    video_streams: int = 1  # every one is checked; these figures are the shown stream's
    shown_stream: int = 0  # the one players show (default disposition), as a position among the video streams


@dataclass(frozen=True, eq=False)
class Frame:
    """One sampled frame: upright RGB at working size, ``scale`` original pixels per working pixel."""

    index: int  # decoded frame number
    time: float  # seconds from the start, as a player counts them (across joined segments)
    pixels: np.ndarray
    scale: float
    cut: bool = False  # sampled because the picture changed abruptly (a scene cut)


@dataclass
class Decoded:
    """What decoding a clip's stream found, filled in as :func:`sample_frames` goes."""

    seconds: float = 0.0  # how long the stream plays, as far as it was decoded (last frame + one frame)
    frames: int = 0
    segments: int = 1  # parts joined end to end (time stamps restarting)
    stopped_at_limit: bool = False  # frames were left after ``max_seconds``


# Between the fixed samples, every SCOUT_EVERY-th frame is looked at for a face no sample saw: a
# child running through the picture, a pan across a team.
SCOUT_EVERY = 3
SCOUT_SIDE = 480


class Look:
    """A frame between samples, shown to the scout: its time, and the frame upright, made only if
    asked for, small (SCOUT_SIDE) or at working size (kept: sampled, the frame is not made twice)."""

    def __init__(self, frame, t: float, rotation: int, max_side: int, scalers: tuple[Scaler, Scaler]) -> None:  # noqa: ANN001
        self.time = t
        self._frame, self._rotation, self._max_side, self._scalers = frame, rotation, max_side, scalers
        self.made: tuple[np.ndarray, float] | None = None
        w, h = _working_size(frame, max_side)
        self.scale = frame.width / w  # original px per working px
        self.size = (h, w) if (rotation // 90) % 2 else (w, h)  # working size, upright

    def small(self) -> tuple[np.ndarray, float]:
        """The frame at most SCOUT_SIDE px on its long side, and original px per its px."""
        return _working(self._frame, SCOUT_SIDE, self._rotation, self._scalers[0])

    def whole(self) -> tuple[np.ndarray, float]:
        """The frame at working size (as a sample is), and original px per its px."""
        if self.made is None:
            self.made = _working(self._frame, self._max_side, self._rotation, self._scalers[1])
        return self.made


Scout = Callable[[Look], bool]  # a frame between samples -> sample it?

# A change of more than CHANGE_LEVELS grey levels in the mean of an 8×8 block of working pixels is
# a change where the picture around it has contrast (its blocks span CHANGE_CONTRAST levels or
# more): far above what encoding leaves on a still picture, far below what a face coming into view
# makes. Where the picture is flat or dark the limit falls with its contrast, to CHANGE_MIN_LEVELS:
# a face coming into view in a dark hall changes its place by only a few levels (measured: clips
# darkened to 7% were missed with a flat 8-level limit and held for review by whole looks).
CHANGE_LEVELS = 8.0
CHANGE_MIN_LEVELS = 2.0
CHANGE_CONTRAST = 64.0
CHANGE_CELL = 8  # working pixels per side of a block
# The picture is kept at CHANGE_FINE pixels per block side (2 working px each) to follow a camera
# that moves: hand-held, the whole scene shifts a few pixels a frame, which would change every
# block. When changes are all over the picture (in over FOLLOW_SHARE of its 8×8 regions; people
# moving change a few), the shift of the whole picture since the camera was last placed is measured
# (:func:`_shift`) and the picture as last looked at is compared where the scene now is. A shift is
# believed only when the phase correlation's peak stands out (FOLLOW_PEAK), a finer measure agrees
# and it is under FOLLOW_MOST of the picture; else the camera is taken as where it was, and a moving
# picture changes everywhere: looked at whole, as before. Only shifts are followed: a turning or
# zooming camera changes much, and is looked at whole.
CHANGE_FINE = 4
FOLLOW_SHARE = 0.3
FOLLOW_PEAK = 0.3
FOLLOW_MOST = 0.1


class ChangeMap:
    """Where the picture has changed since a look that could find any face there last covered it.

    A grey grid of the frame (one value per CHANGE_CELL² working pixels, averaged from the decoded
    luma), compared with the grid as it was when each block was last looked at. A block that has
    not changed cannot hold a face the last look did not find, so only changed blocks (and where
    faces already are) need looking at again. A block never looked at counts as changed.

    The picture as looked at is kept where the scene is (``canvas``, CHANGE_FINE px per block
    side). With ``follow``, a camera that shifts (hand-held) is followed: the same scene a few
    pixels over is not a change, and a place that comes into view has never been looked at. Then
    "unchanged" means "what a look saw, perhaps elsewhere in the frame": the clip's check asks only
    what is new (faces already found are looked at where they were anyway); the blurred copy, which
    keeps a face's box where nothing changed, does not follow."""

    def __init__(self, levels: float = CHANGE_LEVELS, least: float = CHANGE_MIN_LEVELS, follow: bool = False) -> None:
        self.levels, self.least, self.follow = levels, least, follow
        self.now: np.ndarray | None = None  # each block's grey now
        self.seen: np.ndarray | None = None  # each block's grey as last looked at, where it is now (inf: never)
        self._seen_at: np.ndarray | None = None  # and when (seconds; -inf: never); None: to be read off the canvas
        self.cell = (float(CHANGE_CELL), float(CHANGE_CELL))  # working px per grid step (x, y)
        self.whole_at = -math.inf  # when (seconds) a look last covered the whole picture
        self.fine: np.ndarray | None = None  # the picture now, CHANGE_FINE px per block side
        self.canvas: np.ndarray | None = None  # the picture as last looked at, where the scene is
        self.looked_on: np.ndarray | None = None  # canvas pixels looked at (1) or not (0)
        self.looked_at: np.ndarray | None = None  # when (seconds; -inf: never)
        self.origin = np.zeros(2)  # where (x, y) on the canvas the picture's top left is
        self.anchor: tuple[np.ndarray, np.ndarray] | None = None  # the picture shifts are measured from, and its origin
        self.shifts = 0  # frames in which a shift of the camera was followed

    def update(self, frame, rotation: int, max_side: int, scaler: Scaler) -> None:  # noqa: ANN001 - av.VideoFrame
        """Take ``frame`` as the picture now."""
        import cv2

        out_w, out_h = _working_size(frame, max_side)  # stored orientation
        grid_w, grid_h = max(1, math.ceil(out_w / CHANGE_CELL)), max(1, math.ceil(out_h / CHANGE_CELL))
        size = (grid_w * CHANGE_FINE, grid_h * CHANGE_FINE)
        luma = _luma(frame)
        if luma is None:
            fine = scaler.scale(frame, size[0], size[1], "gray")
        else:
            fine = cv2.resize(luma, size, interpolation=cv2.INTER_AREA)
        if (rotation // 90) % 2:
            out_w, out_h = out_h, out_w
        self._take(_upright(fine, rotation).astype(np.float32), out_w, out_h)

    def update_picture(self, pixels: np.ndarray) -> None:
        """Take an upright RGB picture (the frame as it is looked at) as the picture now."""
        import cv2

        height, width = pixels.shape[:2]
        grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
        size = (max(1, math.ceil(width / CHANGE_CELL)) * CHANGE_FINE, max(1, math.ceil(height / CHANGE_CELL)) * CHANGE_FINE)
        self._take(cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32), width, height)

    def _take(self, fine: np.ndarray, width: int, height: int) -> None:
        import cv2

        rows, cols = fine.shape[0] // CHANGE_FINE, fine.shape[1] // CHANGE_FINE
        self.now = cv2.resize(fine, (cols, rows), interpolation=cv2.INTER_AREA)
        self.cell = (width / cols, height / rows)
        first = self.fine is None or self.fine.shape != fine.shape
        self.fine = fine
        if first:
            self.seen = np.full((rows, cols), np.inf, np.float32)
            self._seen_at = np.full((rows, cols), -np.inf)
            self.anchor = None
            if self.follow:  # (a map that does not follow needs no canvas)
                margin = max(fine.shape) // 4  # room for the camera to wander before the canvas is moved
                shape = (fine.shape[0] + 2 * margin, fine.shape[1] + 2 * margin)
                self.canvas, self.looked_on = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
                self.looked_at = np.full(shape, -np.inf, np.float32)
                self.origin = np.array([float(margin), float(margin)])
        if not self.follow:
            return
        if self.anchor is None or self.anchor[0].shape != fine.shape:
            self.anchor = (fine, self.origin.copy())
            return
        if not _spread(self.changed()):
            return  # the picture is where it was (what changed is in a few places: people moving)
        picture, origin = self.anchor
        shift = _shift(picture, fine)
        if shift is None or abs(shift[0]) > FOLLOW_MOST * fine.shape[1] or abs(shift[1]) > FOLLOW_MOST * fine.shape[0]:
            # No clear shift of the whole picture (a scene cut, a turn): a change, looked at as one;
            # shifts are measured from this picture on.
            self.anchor = (fine, self.origin.copy())
            return
        self.origin = origin - shift  # the scene's point at p in the anchor's picture is at p + shift now
        self.anchor = (fine, self.origin.copy())
        self.shifts += 1
        self._keep_on_canvas()
        self._seen()

    def _keep_on_canvas(self) -> None:
        """Move the canvas by whole pixels when the picture would leave it (a pan): what falls off
        is out of view, and counts as never looked at if it comes back."""
        assert self.canvas is not None and self.looked_on is not None and self.looked_at is not None and self.fine is not None
        (height, width), (rows, cols) = self.fine.shape, self.canvas.shape
        x, y = self.origin
        if 0 <= x and x + width + 1 <= cols and 0 <= y and y + height + 1 <= rows:
            return
        kx, ky = round((cols - width) / 2 - x), round((rows - height) / 2 - y)
        self.canvas = _moved(self.canvas, kx, ky, 0.0)
        self.looked_on = _moved(self.looked_on, kx, ky, 0.0)
        self.looked_at = _moved(self.looked_at, kx, ky, -np.inf)
        self.origin += (kx, ky)
        if self.anchor is not None:
            self.anchor = (self.anchor[0], self.anchor[1] + (kx, ky))

    def _seen(self) -> None:
        """The canvas where the picture now is, block by block (after the camera moved)."""
        import cv2

        assert self.fine is not None and self.canvas is not None and self.looked_on is not None
        height, width = self.fine.shape
        grid = (width // CHANGE_FINE, height // CHANGE_FINE)
        x, y = self.origin  # picture (u, v) is canvas (u + x, v + y)
        grey = cv2.resize(_read(self.canvas, x, y, (width, height)), grid, interpolation=cv2.INTER_AREA)
        known = cv2.resize(_read(self.looked_on, x, y, (width, height)), grid, interpolation=cv2.INTER_AREA)
        # A block counts as looked at only if all it is compared with was (and is on the canvas).
        self.seen = np.where(known >= 0.999, grey, np.inf).astype(np.float32)
        self._seen_at = None  # read off the canvas when asked (a new face, rarely)

    @property
    def seen_at(self) -> np.ndarray:
        """When each block of the picture now was last looked at (seconds; -inf: never)."""
        if self._seen_at is None:
            assert self.fine is not None and self.looked_at is not None and self.seen is not None
            height, width = self.fine.shape
            x, y = self.origin
            when = _read(self.looked_at, x, y, (width, height), fill=-np.inf, nearest=True)
            earliest = when.reshape(height // CHANGE_FINE, CHANGE_FINE, width // CHANGE_FINE, CHANGE_FINE).min(axis=(1, 3))
            self._seen_at = np.where(np.isfinite(self.seen), earliest, -np.inf).astype(np.float64)
        return self._seen_at

    def changed(self) -> np.ndarray:
        """Blocks (grid rows × columns, bool) changed since they were last looked at, each by the
        limit its neighbourhood's contrast (the span of the 5×5 blocks around it) sets."""
        import cv2

        assert self.now is not None and self.seen is not None
        around = np.ones((5, 5), np.uint8)
        span = cv2.dilate(self.now, around) - cv2.erode(self.now, around)
        limit = np.clip(self.levels * span / CHANGE_CONTRAST, self.least, self.levels)
        return ~(np.abs(self.now - self.seen) <= limit)  # (never looked at: inf, a change)

    def looked(self, blocks: np.ndarray, t: float) -> None:
        """A look that finds every face has covered these blocks of the picture now (``t`` s)."""
        import cv2

        assert self.now is not None and self.seen is not None and self.fine is not None
        self.seen[blocks] = self.now[blocks]
        if self._seen_at is not None:  # (else read off the canvas when asked, this look included)
            self._seen_at[blocks] = t
        if not blocks.any() or not self.follow:
            return  # (a map that does not follow has no canvas)
        assert self.canvas is not None and self.looked_on is not None and self.looked_at is not None
        height, width = self.fine.shape
        x, y = self.origin
        left, top = math.floor(x), math.floor(y)
        mask = cv2.resize(blocks.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        if left == x and top == y:  # on the canvas's own pixels (a camera never moved)
            picture, inside = self.fine, mask.astype(bool)
        else:
            # Canvas pixel (left + q, top + r) is the picture's (q - fx, r - fy): the picture is
            # laid between its pixels; only canvas pixels made wholly of looked-at blocks are kept.
            # At the picture's edge its edge pixels count for the canvas pixel it partly covers
            # (else a follow's hundredths of a pixel would leave a border never looked at).
            width, height = width + 1, height + 1
            picture = _read(self.fine, left - x, top - y, (width, height), fill=None)
            inside = _read(mask.astype(np.float32), left - x, top - y, (width, height), fill=None) >= 0.999
            if top == y:
                inside[-1, :] = False  # a whole pixel past the picture
            if left == x:
                inside[:, -1] = False
        region = (slice(top, top + height), slice(left, left + width))
        np.copyto(self.canvas[region], picture, where=inside)
        np.copyto(self.looked_on[region], np.float32(1.0), where=inside)
        np.copyto(self.looked_at[region], np.float32(t), where=inside)

    def unchanged_since(self, blocks: tuple[slice, slice], changed: np.ndarray) -> float | None:
        """When these blocks were last looked at, if none of them has ``changed`` since: a face
        found there now was there then (and that look missed it); None if one changed."""
        if changed[blocks].any() or not changed[blocks].size:
            return None
        return float(self.seen_at[blocks].min())


def _spread(changed: np.ndarray) -> bool:
    """Whether changes are all over the picture (over FOLLOW_SHARE of its 8×8 regions have one), as
    when the camera moves; people moving change a few places."""
    import cv2

    rows, cols = changed.shape
    if changed.sum() <= FOLLOW_SHARE * 64:
        return False  # (too few changed blocks to be in that many regions)
    regions = cv2.resize(changed.astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA) if rows >= 8 and cols >= 8 else changed
    return bool((regions > 0).mean() > FOLLOW_SHARE)


def _shift(before: np.ndarray, now: np.ndarray) -> np.ndarray | None:
    """How far (x, y px) the whole picture moved from ``before`` to ``now``, or None when it did not
    move as a whole (the phase correlation's peak does not stand out, or the picture is too flat to
    tell). Phase correlation finds it to about a pixel, two Gauss-Newton steps then to a few
    hundredths (both at half size; measured on a shaken clip: errors of 1.1-1.7 px, then under
    0.03; ~2 ms a measure for a 1080p clip, profiled)."""
    import cv2

    height, width = now.shape[0] // 2, now.shape[1] // 2
    first, second = (cv2.resize(p, (width, height), interpolation=cv2.INTER_AREA) for p in (before, now))
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    (dx, dy), peak = cv2.phaseCorrelate(first.copy(), second.copy(), window)  # (it windows its inputs in place)
    if peak < FOLLOW_PEAK:
        return None
    guess = np.array([dx, dy])
    shift = guess.copy()
    for _ in range(2):  # second(p) = first(p - shift): solve for a correction, linearised
        moved = _read(first, -shift[0], -shift[1], (width, height))
        edge = math.ceil(float(np.abs(shift).max())) + 2
        if 2 * edge >= min(width, height):
            return None
        inner = (slice(edge, height - edge), slice(edge, width - edge))
        gx = cv2.Sobel(moved, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)[inner]
        gy = cv2.Sobel(moved, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)[inner]
        error = (second - moved)[inner]
        normal = np.array([[np.vdot(gx, gx), np.vdot(gx, gy)], [np.vdot(gx, gy), np.vdot(gy, gy)]], np.float64)
        if np.linalg.det(normal) <= 1e-6 * max(1.0, float(np.trace(normal))) ** 2:
            return None  # too flat (or one-directional) to tell a shift
        shift -= np.linalg.solve(normal, np.array([np.vdot(gx, error), np.vdot(gy, error)], np.float64))
    if np.abs(shift - guess).max() > 1.0:
        return None  # the two measures disagree: not one shift of the whole picture
    return 2.0 * shift


def _read(
    array: np.ndarray, x: float, y: float, size: tuple[int, int], fill: float | None = 0.0, nearest: bool = False
) -> np.ndarray:
    """``array`` read at (u + x, v + y) for every (u, v) of ``size`` (w, h): bilinear between its
    pixels (``nearest``: the nearest); outside it ``fill``, or (None) its edge pixels'."""
    import cv2

    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    where = np.array([[1.0, 0.0, x], [0.0, 1.0, y]])
    if fill is None:
        return cv2.warpAffine(array, where, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(array, where, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def _moved(array: np.ndarray, kx: int, ky: int, fill: float) -> np.ndarray:
    """``array`` moved by whole pixels (right ``kx``, down ``ky``), ``fill`` where nothing was."""
    out = np.full_like(array, fill)
    rows, cols = array.shape
    to = (slice(max(0, ky), rows + min(0, ky)), slice(max(0, kx), cols + min(0, kx)))
    out[to] = array[max(0, -ky) : rows - max(0, ky), max(0, -kx) : cols - max(0, kx)]
    return out


class Clock:
    """Seconds from the start of a stream as a player counts them. Time stamps of joined segments
    restart (or jump): each backwards step, or forward jump of more than SEGMENT_JUMP, starts a new
    segment that continues where the last one ended, so no frame is ever "already seen"."""

    def __init__(self, stream) -> None:  # noqa: ANN001 - av.VideoStream / AudioStream
        self.base = float(stream.time_base) if stream.time_base else 1 / 30
        rate = getattr(stream, "average_rate", None) or getattr(stream, "guessed_rate", None)
        self.step = 1.0 / float(rate) if rate else 1 / 30
        self.origin: float | None = float(stream.start_time * self.base) if stream.start_time is not None else None
        self.offset = 0.0
        self.last: float | None = None
        self.segments = 1

    def __call__(self, pts: int | None) -> float:
        if pts is None:
            t = (self.last + self.step) if self.last is not None else 0.0
        else:
            raw = float(pts * self.base)
            if self.origin is None:
                self.origin = raw
            t = raw - self.origin + self.offset
            if self.last is not None and (t < self.last - 1e-6 or t > self.last + SEGMENT_JUMP):
                self.offset += self.last + self.step - t
                t = self.last + self.step
                self.segments += 1
        self.last = max(t, 0.0)
        return self.last


def _open(path: Path | str):  # noqa: ANN202 - av.container.InputContainer
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ClipUnreadable(f"the clip cannot be opened ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split(": '")[0][:160]


def _rotation(stream, first_frame=None) -> int:  # noqa: ANN001
    """Degrees the picture must be turned (counter-clockwise) to display upright."""
    angle = 0.0
    if first_frame is not None:
        with contextlib.suppress(Exception):
            angle = float(first_frame.rotation or 0)
    if not angle:
        with contextlib.suppress(Exception):
            angle = float(stream.metadata.get("rotate", 0))
    return round(angle / 90.0) * 90 % 360


def _video_stream(container, number: int):  # noqa: ANN001, ANN202
    """The ``number``-th video stream (0 = the first), or ClipUnreadable."""
    streams = container.streams.video
    if not streams:
        raise ClipUnreadable("the file has no video stream")
    if number >= len(streams):
        raise ClipUnreadable(f"the file has no video stream #{number + 1}")
    return streams[number]


def _shown(container) -> int:  # noqa: ANN001
    """Which video stream players show: the first with the *default* disposition, else the first."""
    import av

    flags = av.stream.Disposition
    for n, stream in enumerate(container.streams.video):
        with contextlib.suppress(Exception):
            if stream.disposition & flags.default and not stream.disposition & flags.attached_pic:
                return n
    return 0


def probe(path: Path | str, number: int | None = None) -> ClipInfo:
    """What the clip is, without decoding it (except one frame, for the rotation): the figures of
    video stream ``number`` (default: the one players show)."""
    with _open(path) as container:
        _video_stream(container, 0)
        shown = _shown(container)
        stream = _video_stream(container, shown if number is None else number)
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        if not duration and container.duration:
            duration = container.duration / 1_000_000
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        first = None
        with contextlib.suppress(Exception):
            first = next(container.decode(stream))
        rotation = _rotation(stream, first)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        return ClipInfo(
            duration, fps, width, height, rotation, bool(container.streams.audio), stream.codec_context.name,
            len(container.streams.video), shown,
        )  # fmt: skip


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture the way a player shows it (the display matrix's angle, counter-clockwise)."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def _working_size(frame, max_side: int) -> tuple[int, int]:  # noqa: ANN001 - av.VideoFrame
    """Width and height (stored orientation) of the frame at most ``max_side`` on the long side."""
    w, h = frame.width, frame.height
    scale = max(1.0, max(w, h) / max_side)
    return int(round(w / scale / 2) * 2), int(round(h / scale / 2) * 2)


def _working(frame, max_side: int, rotation: int, scaler: Scaler | None = None) -> tuple[np.ndarray, float]:  # noqa: ANN001 - av.VideoFrame
    """The frame upright at most ``max_side`` on the long side, and original pixels per working pixel."""
    out_w, out_h = _working_size(frame, max_side)
    scaled = (scaler or Scaler()).scale(frame, out_w, out_h, "rgb24")
    return _upright(scaled, rotation), frame.width / out_w


# 8-bit formats whose first plane is the picture's luma, as decoders of phone and camera video output.
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG: luma uses 0-255 (else 16-235, "TV range")


def thumbnail(frame, scaler: Scaler) -> np.ndarray:  # noqa: ANN001 - av.VideoFrame
    """A 64×36 grey thumbnail (0-255) of the frame, for finding scene cuts: averaged from the luma
    plane as it is decoded (~0.4 ms for a 1080p frame; FFmpeg's scaler ~0.8-1.4 ms), other formats
    through the scaler. Both give what ``reformat(format="gray")`` gives within ~1 grey level."""
    luma = _luma(frame)
    if luma is None:
        return scaler.scale(frame, 64, 36, "gray").astype(np.float32)
    import cv2

    small = cv2.resize(luma, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
    if frame.format.name.startswith("yuvj") or frame.color_range == _FULL_RANGE:
        return small
    return np.clip((small - 16.0) * (255.0 / 219.0), 0.0, 255.0)


def _luma(frame) -> np.ndarray | None:  # noqa: ANN001 - av.VideoFrame
    """The decoded luma plane (stored orientation, no copy), or None for formats without one first."""
    if frame.format.name not in _LUMA_FIRST:
        return None
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]


class Scaler:
    """Scales and converts a stream's frames, keeping FFmpeg's scaler between frames: the same pixels
    as ``frame.reformat``, which builds a new scaler for every call (a 1080p frame's 64-px grey
    thumbnail: ~1.4 ms with a new scaler, ~0.8 ms with a kept one; measured on 1,800 frames)."""

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    def scale(self, frame, width: int, height: int, pixel_format: str) -> np.ndarray:  # noqa: ANN001 - av.VideoFrame
        return self._reformatter.reformat(frame, width=width, height=height, format=pixel_format).to_ndarray()


def sample_frames(
    path: Path | str,
    every: float,
    max_side: int,
    max_seconds: float,
    cut_threshold: float = 40.0,
    on_error: Callable[[str, float], None] | None = None,
    stream_number: int = 0,
    decoded: Decoded | None = None,
    scout: Scout | None = None,
    changes: ChangeMap | None = None,
) -> Iterator[Frame]:
    """Frames of video stream ``stream_number`` at a fixed rate (one per ``every`` seconds; 0: all), the
    first frame after each scene cut, and the last frame; upright, at most ``max_side`` pixels on the
    long side. Time is counted as a player counts it (:class:`Clock`: joined segments follow each
    other). Decoding stops at ``max_seconds`` (``decoded.stopped_at_limit`` says whether frames were
    left). ``scout``: between samples, every SCOUT_EVERY-th frame is shown to it small (SCOUT_SIDE
    px); a frame it asks for (a face no sample saw) is sampled too. ``changes``: brought up to date
    with every frame sampled or scouted, before it is yielded or shown. A decoding error ends the
    stream: ``on_error(reason, seconds_decoded)`` is told (fail closed: the caller turns it into
    *review*)."""
    import av

    decoded = decoded if decoded is not None else Decoded()
    with _open(path) as container:
        stream = _video_stream(container, stream_number)
        stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of the cost of a clip
        clock = Clock(stream)
        rotation = None
        next_time = 0.0
        previous: np.ndarray | None = None  # the last frame's thumbnail
        index = -1
        last_time = 0.0
        pending = None  # the last frame decoded, when it was not sampled: sampled at the end
        thumbs, scouted, working, grids = Scaler(), Scaler(), Scaler(), Scaler()  # one per output size (each keeps its own)
        try:
            for frame in container.decode(stream):
                t = clock(frame.pts)
                if t > max_seconds:
                    decoded.stopped_at_limit = True
                    break
                index += 1
                last_time = t
                decoded.frames, decoded.seconds, decoded.segments = index + 1, t + clock.step, clock.segments
                if rotation is None:
                    rotation = _rotation(stream, frame)
                # A 64-px grey thumbnail of every frame finds scene cuts cheaply.
                thumb = thumbnail(frame, thumbs)
                cut = previous is not None and float(np.mean(np.abs(thumb - previous))) > cut_threshold
                previous = thumb
                between = t + 1e-6 < next_time and not cut
                scouting = between and scout is not None and index % SCOUT_EVERY == 0
                if changes is not None and (scouting or not between):
                    changes.update(frame, rotation, max_side, grids)
                look = Look(frame, t, rotation, max_side, (scouted, working)) if scouting else None
                if between and not (look is not None and scout is not None and scout(look)):
                    pending = (index, t, frame)
                    continue
                pending = None
                pixels, scale = look.whole() if look is not None else _working(frame, max_side, rotation, working)
                yield Frame(index, t, pixels, scale, cut and t + 1e-6 < next_time)
                if t + 1e-6 >= next_time and every > 0:  # every = 0: every frame
                    next_time = (math.floor(t / every) + 1) * every
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            if on_error is not None:
                on_error(f"the clip is damaged or cut off after {format_time(last_time)} ({_why(exc)})", last_time)
            return
        if pending is not None and rotation is not None:  # a face only in the last moment is looked at too
            n, t, frame = pending
            if changes is not None:
                changes.update(frame, rotation, max_side, grids)
            pixels, scale = _working(frame, max_side, rotation, working)
            yield Frame(n, t, pixels, scale)


def frames_where(path: Path | str, wanted: Callable[[float], bool], max_side: int, until: float) -> Iterator[Frame]:
    """Every frame of the first video stream shown at a time ``wanted`` says yes to, up to ``until``
    seconds, upright at most ``max_side`` px: the read-back of a copy (only those frames are scaled
    and converted). A frame that cannot be decoded is ClipUnreadable, never the end of the check."""
    import av

    with _open(path) as container:
        stream = _video_stream(container, 0)
        stream.thread_type = "AUTO"
        clock, scaler, rotation = Clock(stream), Scaler(), None
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = clock(frame.pts)
                if t > until:
                    return
                if wanted(t):
                    rotation = _rotation(stream, frame) if rotation is None else rotation
                    pixels, scale = _working(frame, max_side, rotation, scaler)
                    yield Frame(index, t, pixels, scale)
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            raise ClipUnreadable(f"the clip cannot be decoded after {format_time(clock.last or 0.0)} ({_why(exc)})") from None


def frame_at(path: Path | str, seconds: float, max_side: int | None = None, stream_number: int = 0) -> np.ndarray:
    """The upright RGB frame of video stream ``stream_number`` shown at ``seconds`` (a player's
    time, as :func:`sample_frames` counts it) — full size, or at most ``max_side`` on the long side
    scaled exactly as :func:`sample_frames` scales it (the same pixels a check saw)."""
    import av

    with _open(path) as container:
        stream = _video_stream(container, stream_number)
        clock = Clock(stream)
        # A joined file's time stamps restart part-way: seeking by time could land in the wrong part,
        # so such a file is decoded from the start, counting time as sample_frames does.
        seek = seconds > 1.0 and not set(container.format.name.split(",")) & _JOINABLE
        if seek:
            with contextlib.suppress(av.error.FFmpegError):
                origin = clock.origin or 0.0
                container.seek(int((origin + seconds - 1.0) / clock.base), stream=stream, backward=True)
        last = None
        try:
            for frame in container.decode(stream):
                if seek:  # the stream's own clock: seconds after its first time stamp
                    t = float(frame.pts * clock.base) - (clock.origin or 0.0) if frame.pts is not None else seconds
                else:
                    t = clock(frame.pts)
                last = frame
                if t >= seconds - 1e-3:
                    break
        except av.error.FFmpegError as exc:
            if last is None:
                raise ClipUnreadable(f"the clip cannot be decoded ({_why(exc)})") from None
        if last is None:
            raise ClipUnreadable("no frame at that time")
        rotation = _rotation(stream, last)
        if max_side is None:
            return _upright(last.to_ndarray(format="rgb24"), rotation)
        return _working(last, max_side, rotation)[0]


def format_time(seconds: float) -> str:
    """0:07, 1:02:03."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ---- the blurred copy ------------------------------------------------------------------------------
# (seconds, the upright frame when asked for) -> the boxes (types.Box, in its pixels) to blur
BoxesAt = Callable[[float, "Picture"], list]
# x264's fastest preset: a 1080p frame in ~5 ms instead of veryfast's ~12 (the copy is about twice
# as large as veryfast's at the same quality setting; platforms re-encode what is uploaded anyway).
COPY_PRESET = "ultrafast"


def write_blurred_copy(
    source: Path | str,
    target: Path | str,
    boxes_at: BoxesAt,
    blur: Callable[[np.ndarray, list], np.ndarray],
    stream_number: int = 0,
) -> None:
    """Re-encode video stream ``stream_number`` of ``source`` to ``target`` (MP4, H.264) with
    ``blur(pixels, boxes_at(t, picture))`` applied to every upright frame (``t`` counted as
    :func:`sample_frames` counts it; ``picture`` (:class:`Picture`) gives the frame's upright RGB
    pixels, whole or small, made only when asked for); a frame with nothing to blur goes to the encoder as it was decoded. Audio
    packets copied unchanged; no metadata (GPS lives in MOV/MP4 atoms). Written to a temp name and
    renamed: a half-written copy is never left under the real name."""
    import av
    from av.video.frame import PictureType

    target = Path(target)
    tmp = target.with_name(f".tmp-{target.name}")
    info = probe(source, stream_number)  # the upright size, known before any packet is written
    try:
        with _open(source) as src, av.open(str(tmp), "w", format="mp4") as out:
            video = _video_stream(src, stream_number)
            video.thread_type = "AUTO"
            rate = video.average_rate or video.guessed_rate or 30
            audio = src.streams.audio[0] if src.streams.audio else None
            # Every output stream exists before the first packet is written (a clip whose first
            # packet is audio could not be copied: "Cannot rebase to zero time").
            encoder = out.add_stream("libx264", rate=rate)
            encoder.width, encoder.height = info.width // 2 * 2, info.height // 2 * 2
            encoder.pix_fmt = "yuv420p"
            encoder.options = {"crf": "20", "preset": COPY_PRESET}
            audio_out = out.add_stream_from_template(audio) if audio is not None else None
            clock = Clock(video)
            audio_clock = _PacketClock()
            rotation = None
            written = -1
            streams = [video] + ([audio] if audio is not None else [])
            muxer = _Muxer(out, encoder)
            searched = Scaler()  # the frames the caller looks at, small
            with muxer:
                for packet in src.demux(*streams):
                    if packet.stream is audio:
                        if packet.dts is None or audio_out is None:
                            continue
                        audio_clock.fix(packet)  # joined segments: audio time stamps restart too
                        packet.stream = audio_out
                        muxer.put(packet)
                        continue
                    for frame in packet.decode():
                        if rotation is None:
                            rotation = _rotation(video, frame)
                        t = clock(frame.pts)
                        picture = Picture(frame, rotation, searched)
                        boxes = boxes_at(t, picture)
                        # TV-range 4:2:0 of the copy's size, upright: the copy's own format (its RGB frames
                        # are converted to that).
                        shape = (frame.format.name, frame.width, frame.height, frame.color_range == _FULL_RANGE)
                        as_is = not rotation and shape == (encoder.pix_fmt, encoder.width, encoder.height, False)
                        if as_is and not boxes:
                            new = frame  # nothing to blur: no trip through RGB (~5 ms of a 1080p frame)
                            new.pict_type = PictureType.NONE  # the encoder chooses (a decoder's B would be forced)
                        elif as_is:
                            new = _blurred_planes(frame, boxes, blur)
                        else:
                            pixels = blur(picture(), boxes)[: encoder.height, : encoder.width]
                            if pixels.shape[:2] != (encoder.height, encoder.width):  # a part of another size
                                pixels = np.asarray(Image.fromarray(pixels).resize((encoder.width, encoder.height)))
                            new = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                        new.pts = max(written + 1, round(t / clock.base))
                        written = new.pts
                        new.time_base = video.time_base
                        muxer.put(new)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _blurred_planes(frame, boxes: list, blur: Callable[[np.ndarray, list], np.ndarray]):  # noqa: ANN001, ANN202 - av.VideoFrame
    """A new 4:2:0 frame: ``frame``'s planes with ``blur`` applied to each (luma with ``boxes``,
    each half-size colour plane with them halved): the copy's own format, so the frame skips the
    trip to RGB and back (1080p, measured: ~4.5 ms less in the loop and ~2.7 ms less in the
    encoder's thread per blurred frame). The decoded frame is copied first, never written to: the
    decoder may still predict later frames from it."""
    import av

    planes = frame.to_ndarray()  # (h * 3/2, w): Y, then U and V of (h/2, w/2) each, one copy
    height, width = frame.height, frame.width
    quarter = (height // 2) * (width // 2)
    halved = [b.scaled(0.5) for b in boxes]
    blur(planes[:height], boxes)
    for start in (height * width, height * width + quarter):
        blur(planes.reshape(-1)[start : start + quarter].reshape(height // 2, width // 2), halved)
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


class _Muxer:
    """Encodes the copy's frames and writes its packets (audio as it comes) in a thread of its own,
    in the order they are put: x264 runs while the next frames are decoded and searched (PyAV
    lets go of the GIL while it encodes). On leaving, the encoder is flushed and the thread
    joined; an error of the thread is raised there (an error of the caller's wins)."""

    def __init__(self, out, encoder) -> None:  # noqa: ANN001 - av.OutputContainer, av.VideoStream
        self.out, self.encoder = out, encoder
        self.items: queue.Queue = queue.Queue(maxsize=8)  # a few 1080p frames at most in flight
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="clip-copy-encoder", daemon=True)

    def __enter__(self) -> _Muxer:
        self.thread.start()
        return self

    def put(self, item) -> None:  # noqa: ANN001 - av.VideoFrame or av.Packet
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def _run(self) -> None:
        import av

        flush = False
        while True:
            item = self.items.get()
            if item is None or isinstance(item, bool):
                flush = bool(item)
                break
            if self.error is not None:
                continue  # failed: drain what is put, so the caller never waits on a full queue
            try:
                if isinstance(item, av.VideoFrame):
                    for packet in self.encoder.encode(item):
                        self.out.mux(packet)
                else:
                    self.out.mux(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                self.error = exc
        if flush and self.error is None:
            try:
                for packet in self.encoder.encode():
                    self.out.mux(packet)
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

    def __exit__(self, kind, value, traceback) -> None:  # noqa: ANN001
        self.items.put(kind is None)  # True: the end, flush; False: the caller failed, just stop
        self.thread.join()
        if kind is None and self.error is not None:
            raise self.error


class Picture:
    """A decoded frame's upright RGB pixels, made on the first call (a frame nobody looks at and
    nothing is blurred in never leaves the decoder's own format); ``small(side)``: the frame at most
    ``side`` px and original px per its px, scaled by FFmpeg from the decoded frame (not from RGB)."""

    def __init__(self, frame, rotation: int, scaler: Scaler | None = None) -> None:  # noqa: ANN001 - av.VideoFrame
        self.frame, self.rotation, self.scaler = frame, rotation, scaler
        self.pixels: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self.pixels is None:
            self.pixels = _upright(self.frame.to_ndarray(format="rgb24"), self.rotation)
        return self.pixels

    def small(self, side: int) -> tuple[np.ndarray, float]:
        return _working(self.frame, side, self.rotation, self.scaler)


class _PacketClock:
    """Audio packets of joined segments: time stamps that step back are moved on, so the copy's
    audio plays straight through (an MP4 muxer refuses time going backwards)."""

    def __init__(self) -> None:
        self.offset = 0
        self.last = None

    def fix(self, packet) -> None:  # noqa: ANN001 - av.Packet
        dts = packet.dts + self.offset
        if self.last is not None and dts <= self.last:
            shift = self.last + (packet.duration or 1) - dts
            self.offset += shift
            dts += shift
        packet.dts = dts
        if packet.pts is not None:
            packet.pts = packet.pts + self.offset
        self.last = dts
