"""Test clips made from still photos with PyAV: faces that appear, move and leave at known times."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Appearance:
    photo: Path  # a portrait; its middle part is pasted
    start: float  # seconds on screen
    end: float
    width: int = 200  # pasted width (px of the stored frame)
    x: float = 0.3  # left edge, as a share of the frame width, at ``start`` …
    x_end: float | None = None  # … moving linearly to this share at ``end``
    y: float = 0.25
    crop: tuple[int, int, int, int] | None = (40, 30, 210, 230)  # of a 250 px LFW photo; None: the whole photo


def make_clip(
    path: Path,
    appearances: list[Appearance],
    seconds: float,
    size: tuple[int, int] = (1280, 720),
    fps: int = 30,
    audio: bool = True,
    rotation: int = 0,
    codec: str = "libx264",
    container: str = "mp4",
    cuts: tuple[float, ...] = (),
    shake: int = 0,
) -> Path:
    """Write a clip: a grey-blue backdrop with a slow gradient, the given faces pasted while on
    screen, an audio tone. ``rotation``: the stored picture is turned and a display matrix says so
    (as phones record portrait video). ``shake``: filmed hand-held instead — the backdrop is a
    textured scene that moves up to this many px every frame, the people in it with it."""
    import av

    width, height = size
    backdrop = np.zeros((height, width, 3), np.uint8)
    backdrop[:] = np.linspace(60, 140, width, dtype=np.uint8)[None, :, None]
    scenery = None
    if shake:
        rng = np.random.default_rng(len(appearances))
        coarse = rng.integers(40, 200, ((height + 4 * shake) // 24 + 1, (width + 4 * shake) // 24 + 1, 3), dtype=np.uint8)
        scenery = np.asarray(Image.fromarray(coarse).resize((width + 4 * shake, height + 4 * shake), Image.BICUBIC))
    # After each cut, another scene: a differently coloured backdrop.
    scenes = [backdrop]
    for k in range(len(cuts)):
        other = np.zeros_like(backdrop)
        other[:] = (np.array([200, 90, 40]) if k % 2 == 0 else np.array([30, 160, 90]))[None, None, :]
        scenes.append(other)
    pasted = {}
    for a in appearances:
        picture = Image.open(a.photo).convert("RGB")
        pasted[a] = picture.crop(a.crop) if a.crop else picture
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = (height, width) if rotation in (90, 270) else (width, height)
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        if codec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "23"}
        tone = None
        if audio:
            tone = out.add_stream("aac", rate=44100)
            tone.layout = "mono"
        for n in range(int(seconds * fps)):
            t = n / fps
            frame = scenes[sum(1 for c in cuts if t >= c)].copy()
            dx = dy = 2 * shake
            if scenery is not None:  # a hand-held camera: the scene wanders by a few px a frame
                dx = round(2 * shake + shake * (np.sin(n / 3.0) + np.sin(n / 7.3)))
                dy = round(2 * shake + shake * (np.cos(n / 4.1) + np.sin(n / 9.7)))
                frame = scenery[dy : dy + height, dx : dx + width].copy()
            for a in appearances:
                if a.start <= t < a.end:
                    share = (t - a.start) / max(a.end - a.start, 1e-6)
                    x = a.x + ((a.x_end if a.x_end is not None else a.x) - a.x) * share
                    face = pasted[a].resize((a.width, round(a.width * pasted[a].height / pasted[a].width)))
                    x0, y0 = max(0, int(x * width) + 2 * shake - dx), max(0, int(a.y * height) + 2 * shake - dy)  # (in the scene)
                    region = frame[y0 : y0 + face.height, x0 : x0 + face.width]
                    region[:] = np.asarray(face)[: region.shape[0], : region.shape[1]]
            if rotation:
                # Stored turned clockwise; the display matrix turns it back counter-clockwise.
                frame = np.ascontiguousarray(np.rot90(frame, -rotation // 90))
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = n
            vf.time_base = Fraction(1, fps)
            for packet in video.encode(vf):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if tone is not None:
            samples = 1024
            total = int(seconds * 44100)
            for start in range(0, total, samples):
                t = (np.arange(start, start + samples) / 44100.0).astype(np.float32)
                wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
                af = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
                af.sample_rate = 44100
                af.pts = start
                for packet in tone.encode(af):
                    out.mux(packet)
            for packet in tone.encode():
                out.mux(packet)
    return path


def make_streams(path: Path, streams: list[tuple[list[Appearance], bool]], seconds: float, size=(640, 360), fps: int = 15,
                 container: str = "matroska") -> Path:  # fmt: skip
    """A clip with several video streams: ``(appearances, default)`` each, in order (a background
    camera as stream #0 and the one players show as stream #1, say)."""
    import av

    width, height = size
    with av.open(str(path), "w", format=container) as out:
        encoders = []
        for _, default in streams:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height = width, height
            video.pix_fmt = "yuv420p"
            video.options = {"preset": "ultrafast", "crf": "23"}
            video.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)
            encoders.append(video)
        pictures = [{a: Image.open(a.photo).convert("RGB").crop(a.crop) for a in faces} for faces, _ in streams]
        for n in range(int(seconds * fps)):
            t = n / fps
            for video, (faces, _), pasted in zip(encoders, streams, pictures, strict=True):
                frame = np.full((height, width, 3), 90, np.uint8)
                for a in faces:
                    if a.start <= t < a.end:
                        face = pasted[a].resize((a.width, round(a.width * pasted[a].height / pasted[a].width)))
                        x0, y0 = int(a.x * width), int(a.y * height)
                        region = frame[y0 : y0 + face.height, x0 : x0 + face.width]
                        region[:] = np.asarray(face)[: region.shape[0], : region.shape[1]]
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                vf.pts = n
                vf.time_base = Fraction(1, fps)
                for packet in video.encode(vf):
                    out.mux(packet)
        for video in encoders:
            for packet in video.encode():
                out.mux(packet)
    return path


def make_swaying_clip(path: Path, mover: Path, still: Path, seconds: float = 4.0, fps: int = 30,
                      size: tuple[int, int] = (640, 360)) -> Path:  # fmt: skip
    """A face swaying fast across the frame, x = 0.39·w + 0.27·w·sin(2πt / 1.2 s) (faster than issue
    25's case, so that it crosses most of a frame between two samples), and another standing still
    at the right. Faces are ~13% of the frame's width (the middle of a 250 px LFW photo, or a marker)."""
    import av

    width, height = size
    face_w, face_h = round(width * 0.133), round(height * 0.278)

    def cut(photo: Path) -> np.ndarray:
        return np.asarray(Image.open(photo).convert("RGB").crop((40, 30, 210, 230)).resize((face_w, face_h)))

    moving, standing = cut(mover), cut(still)
    top, still_top, still_left = round(height * 0.278), round(height * 0.583), width - face_w - round(width * 0.047)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "20"}
        for n in range(int(seconds * fps)):
            t = n / fps
            frame = np.zeros((height, width, 3), np.uint8)
            frame[:] = np.linspace(60, 140, width, dtype=np.uint8)[None, :, None]
            x = int(width * 0.39 + width * 0.27 * np.sin(2 * np.pi * t / 1.2))
            frame[top : top + face_h, x : x + face_w] = moving
            frame[still_top : still_top + face_h, still_left : still_left + face_w] = standing
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = n, Fraction(1, fps)
            for packet in video.encode(vf):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path
