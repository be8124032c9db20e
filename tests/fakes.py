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


CHIP = 150
_KEY_COLUMNS = (0, 1, CHIP - 2, CHIP - 1)  # where a chip carries its face's key (read the same mirrored)


class FakeAligner:
    """A face's chip: sharp noise (the real gate measures it) that carries the face's box's left edge
    in its first row, where a mirrored chip carries it too; its second row says if it was mirrored."""

    def chips(self, pixels: np.ndarray, faces: list[Face], scale: float) -> list[np.ndarray]:
        made = []
        for f in faces:
            chip = np.random.default_rng(int(f.box.x * 1000)).integers(0, 256, (CHIP, CHIP, 3), dtype=np.uint8)
            key = np.frombuffer(np.float32(f.box.x).tobytes(), np.uint8)
            chip[0, 0, :], chip[0, 1, 0] = key[:3], key[3]
            chip[0, CHIP - 1, :], chip[0, CHIP - 2, 0] = key[:3], key[3]
            chip[1, 0, :], chip[1, CHIP - 1, :] = 0, 255
            made.append(chip)
        return made


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
