"""Stand-ins for the models behind ``types.FaceModels`` (detector, aligner, encoder): the pipeline's
logic — the quality gate, search, decisions, verdicts, fail-closed handling, settlers, scopes —
tested in milliseconds, on photos the test makes, with faces and embeddings the test chooses. The
quality gate and the mirror average are the product's own code (``embedding``), not faked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from optout_guard.config import Settings
from optout_guard.fsutil import sha256_file
from optout_guard.index import FaceIndex, Template
from optout_guard.types import Box, Face, FaceModels, LoadedImage

DIM = 128


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def at_distance(vector: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    """A vector exactly ``distance`` away from ``vector`` (a random direction)."""
    direction = rng.normal(size=DIM)
    direction -= direction @ vector / (vector @ vector) * vector  # orthogonal to it
    direction /= np.linalg.norm(direction)
    return (vector + distance * direction).astype(np.float32)


def face(x: float, width: float = 120.0) -> Face:
    return Face(Box(x, 40.0, width, width), 0.99, np.zeros((5, 2), np.float32))


def photo(path: Path, colour: tuple[int, int, int]) -> Path:
    """A made-up photo: its content (so its sha256) is unique to ``colour``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (800, 400), colour).save(path)
    return path


@dataclass
class FakeDetector:
    """Finds the faces the test assigned to a photo (by its sha256); ``fail`` raises instead."""

    faces: dict[str, list[Face]] = field(default_factory=dict)
    fail: Exception | None = None
    calls: int = 0

    def place(self, path: Path, *found: Face) -> None:
        self.faces[sha256_file(path)] = list(found)

    def detect(self, image: LoadedImage, settings: Settings) -> list[Face]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return list(self.faces.get(image.sha256 or "", []))

    def quick_boxes(self, pixels: np.ndarray, threshold: float) -> np.ndarray:
        return np.zeros((0, 4), np.float32)

    def detect_in(self, image: LoadedImage, regions: list[Box], settings: Settings, landmarks: bool = True) -> list[Face] | None:
        return None  # a whole look (the faces are the photo's, not places in it)


CHIP = 150
_KEY_COLUMNS = (0, 1, CHIP - 2, CHIP - 1)  # where a chip carries its face's key (read the same mirrored)


class FakeAligner:
    """A face's chip: sharp noise (the real gate measures it) that carries the face's box's left edge
    in its first row, where a mirrored chip carries it too; its second row says if it was mirrored."""

    def chips(self, pixels: np.ndarray, faces: list[Face], scale: float) -> list[np.ndarray]:
        return [keyed_chip(f.box.x) for f in faces]


def keyed_chip(key: float) -> np.ndarray:
    """A sharp chip that carries ``key`` (what :class:`FakeEncoder` looks its vector up by)."""
    chip = np.random.default_rng(int(key * 1000)).integers(0, 256, (CHIP, CHIP, 3), dtype=np.uint8)
    code = np.frombuffer(np.float32(key).tobytes(), np.uint8)
    chip[0, 0, :], chip[0, 1, 0] = code[:3], code[3]
    chip[0, CHIP - 1, :], chip[0, CHIP - 2, 0] = code[:3], code[3]
    chip[1, 0, :], chip[1, CHIP - 1, :] = 0, 255
    return chip


@dataclass
class FakeEncoder:
    """A chip's embedding is the vector the test gave its face's left edge (``vectors``); counts the
    mirrored chips it was given (the product mirrors only faces near somebody enrolled)."""

    vectors: dict[float, np.ndarray] = field(default_factory=dict)
    mirrored: int = 0

    def encode(self, chips: np.ndarray) -> np.ndarray:
        rows = []
        for chip in chips:
            if chip[1, 0, 0] == 255:
                self.mirrored += 1
            key = float(np.frombuffer(bytes([*chip[0, 0, :], chip[0, 1, 0]]), np.float32)[0])
            rows.append(self.vectors[key])
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, DIM), np.float32)


def fake_models() -> tuple[FakeDetector, FakeEncoder, FaceModels]:
    """The fakes behind the seam: the detector and the encoder the test fills, and the bundle."""
    detector, encoder = FakeDetector(), FakeEncoder()
    return detector, encoder, FaceModels(detector, FakeAligner(), encoder)


def gallery(students: dict[str, np.ndarray], fingerprint: str = "fake-model") -> FaceIndex:
    """An index in memory: one template per student."""
    index = FaceIndex(fingerprint)
    for student_id, vector in students.items():
        index.add(Template(student_id, f"/refs/{student_id}.jpg", student_id.encode().hex().ljust(64, "0"), ""), vector)
    return index


# ---- faces painted into a clip's frames ------------------------------------------------------------
# The fakes above find a photo's faces by its sha256, the same for every frame of a clip. These find
# "faces" in a frame's own pixels: squares of a marker colour and black (10 px cells), pasted into a
# clip by tests/clips.py like a photo. A marker's key (its encoder vector's) is its number. The
# product's blur averages a marker to neither colour, so a blurred marker is not found again.
MARKERS = ((220, 40, 40), (40, 180, 60), (50, 70, 220))  # red, green, blue
_CELL = 10


def marker(path: Path, number: int, side: int = 200) -> Path:
    """An image of marker ``number`` to paste into a clip (``clips.Appearance(marker(...), …)``)."""
    y, x = np.indices((side, side))
    on = ((y // _CELL + x // _CELL) % 2 == 0)[..., None]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(on, np.array(MARKERS[number], np.uint8), np.uint8(0)).astype(np.uint8)).save(path)
    return path


def _markers(pixels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(marker number, box x, y, w, h in ``pixels``' pixels) of each marker in the frame (one a colour)."""
    import cv2

    found = []
    for number, colour in enumerate(MARKERS):
        centre = np.array(colour, np.int16)
        mask = cv2.inRange(np.ascontiguousarray(pixels), np.clip(centre - 59, 0, 255), np.clip(centre + 59, 0, 255)) > 0
        if mask.sum() < 30:
            continue
        ys, xs = np.nonzero(mask)
        x0, x1 = np.percentile(xs, [0.5, 99.5])
        y0, y1 = np.percentile(ys, [0.5, 99.5])
        inside = mask[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
        if x1 - x0 < 8 or y1 - y0 < 8 or inside.mean() < 0.2:
            continue
        found.append((number, np.array([x0, y0, x1 - x0 + 1, y1 - y0 + 1], np.float32)))
    return found


@dataclass
class MarkerDetector:
    """Finds the markers painted into a frame (or a photo) as faces."""

    calls: int = 0  # whole looks
    part_looks: int = 0

    def detect(self, image: LoadedImage, settings: Settings) -> list[Face]:
        self.calls += 1
        faces = []
        for page, pixels in enumerate(image.pages):
            for _number, box in _markers(pixels):
                x, y, w, h = (float(v) * image.scale for v in box)
                faces.append(Face(Box(x, y, w, h), 0.99, np.zeros((5, 2), np.float32), page=page))
        return faces

    def quick_boxes(self, pixels: np.ndarray, threshold: float) -> np.ndarray:
        return np.array([box for _, box in _markers(pixels)], np.float32).reshape(-1, 4)

    def detect_in(self, image: LoadedImage, regions: list[Box], settings: Settings, landmarks: bool = True) -> list[Face] | None:
        """The markers inside the regions, as the real detector's parts look: a marker cut by a
        region's edge asks for a whole look (None)."""
        self.part_looks += 1
        inside, every = [], self.detect(image, settings)
        self.calls -= 1  # counted as a part look, not a whole one
        for face in every:
            b = face.box.scaled(1.0 / image.scale)
            overlapping = [r for r in regions if b.x < r.right and r.x < b.right and b.y < r.bottom and r.y < b.bottom]
            if any(b.x >= r.x and b.y >= r.y and b.right <= r.right and b.bottom <= r.bottom for r in overlapping):
                inside.append(face)
            elif overlapping:
                return None
        return inside


class MarkerAligner:
    """A marker's chip carries the marker's number: the encoder gives it that number's vector."""

    def chips(self, pixels: np.ndarray, faces: list[Face], scale: float) -> list[np.ndarray]:
        made = []
        for f in faces:
            x0, y0 = int(f.box.x / scale), int(f.box.y / scale)
            crop = pixels[y0 : y0 + max(1, int(f.box.h / scale)), x0 : x0 + max(1, int(f.box.w / scale))]
            numbers = [n for n, _ in _markers(crop)]
            made.append(keyed_chip(float(numbers[0]) if numbers else -1.0))
        return made


def marker_models(vectors: dict[int, np.ndarray]) -> tuple[MarkerDetector, FakeEncoder, FaceModels]:
    """Models that see the markers of a clip: marker ``n`` embeds as ``vectors[n]``."""
    detector, encoder = MarkerDetector(), FakeEncoder({float(n): v for n, v in vectors.items()})
    return detector, encoder, FaceModels(detector, MarkerAligner(), encoder)
