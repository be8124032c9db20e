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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optout_guard.errors import ClipUnreadable

# Container signatures. MP4-family files carry "ftyp" at byte 4 and a brand; HEIC/AVIF photos do too
# (their brands are image brands), so the brand decides.
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"jpeg"}
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska / WebM
CLIP_EXTENSIONS = {
    ".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".webm", ".mkv", ".avi", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".wmv",
}  # fmt: skip


def looks_like_clip(head: bytes, suffix: str = "") -> bool:
    """A video container, from the first bytes of the file (the name only breaks a tie)."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12] not in _IMAGE_BRANDS
    if head.startswith(_EBML):
        return True
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return True
    if head.startswith(b"\x00\x00\x01\xba") or (head[:1] == b"\x47" and suffix.lower() in {".ts", ".mts", ".m2ts"}):
        return True  # MPEG program / transport stream
    return head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11")  # ASF / WMV


@dataclass(frozen=True)
class ClipInfo:
    duration: float  # seconds (from the container; 0.0 when it does not say)
    fps: float
    width: int  # of the upright picture (rotation applied)
    height: int
    rotation: int  # degrees the stored picture is turned for display (0, 90, 180, 270)
    has_audio: bool
    codec: str


@dataclass(frozen=True, eq=False)
class Frame:
    """One sampled frame: upright RGB at working size, ``scale`` original pixels per working pixel."""

    index: int  # decoded frame number
    time: float  # seconds from the start
    pixels: np.ndarray
    scale: float
    cut: bool = False  # sampled because the picture changed abruptly (a scene cut)


def _open(path: Path | str):  # noqa: ANN202 - av.container.InputContainer
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
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


def probe(path: Path | str) -> ClipInfo:
    """What the clip is, without decoding it (except one frame, for the rotation)."""
    with _open(path) as container:
        if not container.streams.video:
            raise ClipUnreadable("the file has no video stream")
        stream = container.streams.video[0]
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
        return ClipInfo(duration, fps, width, height, rotation, bool(container.streams.audio), stream.codec_context.name)


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture the way a player shows it (the display matrix's angle, counter-clockwise)."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def sample_frames(
    path: Path | str,
    every: float,
    max_side: int,
    max_seconds: float,
    cut_threshold: float = 40.0,
    on_error: Callable[[str, float], None] | None = None,
) -> Iterator[Frame]:
    """Frames at a fixed rate (one per ``every`` seconds) plus the first frame after each scene cut,
    upright, at most ``max_side`` pixels on the long side. Decoding stops at ``max_seconds``. A
    decoding error ends the stream: ``on_error(reason, seconds_decoded)`` is told (fail closed: the
    caller turns it into *review*)."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise ClipUnreadable("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of the cost of a clip
        base = float(stream.time_base) if stream.time_base else 1 / 30
        start = float(stream.start_time * base) if stream.start_time is not None else 0.0
        rotation = None
        next_time = 0.0
        previous: np.ndarray | None = None
        index = -1
        last_time = 0.0
        try:
            for frame in container.decode(stream):
                index += 1
                t = (float(frame.pts * base) - start) if frame.pts is not None else index / 30.0
                last_time = t
                if t > max_seconds:
                    break
                if rotation is None:
                    rotation = _rotation(stream, frame)
                # A 64-px grey thumbnail of every frame finds scene cuts cheaply.
                thumb = frame.reformat(width=64, height=36, format="gray").to_ndarray().astype(np.int16)
                cut = previous is not None and float(np.mean(np.abs(thumb - previous))) > cut_threshold
                previous = thumb
                if t + 1e-6 < next_time and not cut:
                    continue
                w, h = frame.width, frame.height
                scale = max(1.0, max(w, h) / max_side)
                out_w, out_h = int(round(w / scale / 2) * 2), int(round(h / scale / 2) * 2)
                pixels = frame.reformat(width=out_w, height=out_h, format="rgb24").to_ndarray()
                yield Frame(index, max(0.0, t), _upright(pixels, rotation), w / out_w, cut and t + 1e-6 < next_time)
                if t + 1e-6 >= next_time:
                    next_time = (math.floor(t / every) + 1) * every
        except (av.error.FFmpegError, ValueError, MemoryError) as exc:
            if on_error is not None:
                on_error(f"the clip is damaged or cut off after {format_time(last_time)} ({_why(exc)})", last_time)
            return


def frame_at(path: Path | str, seconds: float, max_side: int | None = None) -> np.ndarray:
    """The upright RGB frame shown at ``seconds`` — full size, or at most ``max_side`` on the long
    side scaled exactly as :func:`sample_frames` scales it (the same pixels a check saw)."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise ClipUnreadable("the file has no video stream")
        stream = container.streams.video[0]
        base = float(stream.time_base) if stream.time_base else 1 / 30
        start = float(stream.start_time * base) if stream.start_time is not None else 0.0
        with contextlib.suppress(av.error.FFmpegError):
            container.seek(int((start + max(0.0, seconds - 1.0)) / base), stream=stream, backward=True)
        last = None
        try:
            for frame in container.decode(stream):
                last = frame
                if frame.pts is not None and float(frame.pts * base) - start >= seconds - 1e-3:
                    break
        except av.error.FFmpegError as exc:
            if last is None:
                raise ClipUnreadable(f"the clip cannot be decoded ({_why(exc)})") from None
        if last is None:
            raise ClipUnreadable("no frame at that time")
        if max_side is None:
            return _upright(last.to_ndarray(format="rgb24"), _rotation(stream, last))
        w, h = last.width, last.height
        scale = max(1.0, max(w, h) / max_side)
        out_w, out_h = int(round(w / scale / 2) * 2), int(round(h / scale / 2) * 2)
        return _upright(last.reformat(width=out_w, height=out_h, format="rgb24").to_ndarray(), _rotation(stream, last))


def format_time(seconds: float) -> str:
    """0:07, 1:02:03."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ---- the blurred copy ------------------------------------------------------------------------------
BoxesAt = Callable[[float], list]  # seconds -> the boxes (types.Box, upright original pixels) to blur


def write_blurred_copy(
    source: Path | str, target: Path | str, boxes_at: BoxesAt, blur: Callable[[np.ndarray, list], np.ndarray]
) -> None:
    """Re-encode ``source`` to ``target`` (MP4, H.264) with ``blur(pixels, boxes_at(t))`` applied to
    every upright frame; audio packets copied unchanged; no metadata (GPS lives in MOV/MP4 atoms).
    Written to a temp name and renamed: a half-written copy is never left under the real name."""
    import av

    target = Path(target)
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        with _open(source) as src, av.open(str(tmp), "w", format="mp4") as out:
            video = src.streams.video[0]
            video.thread_type = "AUTO"
            rate = video.average_rate or video.guessed_rate or 30
            audio = src.streams.audio[0] if src.streams.audio else None
            base = float(video.time_base) if video.time_base else 1 / 30
            start = float(video.start_time * base) if video.start_time is not None else 0.0
            encoder = None
            audio_out = out.add_stream_from_template(audio) if audio is not None else None
            rotation = None
            streams = [video] + ([audio] if audio is not None else [])
            for packet in src.demux(*streams):
                if packet.stream is audio:
                    if packet.dts is None or audio_out is None:
                        continue
                    packet.stream = audio_out
                    out.mux(packet)
                    continue
                for frame in packet.decode():
                    if rotation is None:
                        rotation = _rotation(video, frame)
                    pixels = _upright(frame.to_ndarray(format="rgb24"), rotation)
                    if encoder is None:
                        encoder = out.add_stream("libx264", rate=rate)
                        encoder.width, encoder.height = pixels.shape[1] // 2 * 2, pixels.shape[0] // 2 * 2
                        encoder.pix_fmt = "yuv420p"
                        encoder.options = {"crf": "20", "preset": "veryfast"}
                    t = (float(frame.pts * base) - start) if frame.pts is not None else 0.0
                    pixels = blur(pixels, boxes_at(t))[: encoder.height, : encoder.width]
                    new = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                    new.pts = frame.pts
                    new.time_base = video.time_base
                    for out_packet in encoder.encode(new):
                        out.mux(out_packet)
            if encoder is not None:
                for out_packet in encoder.encode():
                    out.mux(out_packet)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
