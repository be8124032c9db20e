"""Stand-ins for the models (``types.Detector`` and ``types.Embedder``): the pipeline's logic —
search, decisions, verdicts, fail-closed handling, settlers, scopes — tested in milliseconds, on
photos the test makes, with faces and embeddings the test chooses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from optout_guard.config import Settings
from optout_guard.fsutil import sha256_file
from optout_guard.index import FaceIndex, Template
from optout_guard.types import Box, Embeddings, Face, LoadedImage, ReasonCode, Unjudged

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


@dataclass
class FakeEmbedder:
    """A face's embedding is the vector the test gave its box's left edge; faces narrower than
    ``settings.min_face_px`` are too small to judge, as with the real quality gate."""

    vectors: dict[float, np.ndarray] = field(default_factory=dict)
    mirrored_rows: list[int] = field(default_factory=list)

    def embed(self, image: LoadedImage, faces: list[Face], settings: Settings, mirror: bool) -> Embeddings:
        judged, unjudged, rows = [], {}, []
        for i, f in enumerate(faces):
            if f.box.w < settings.min_face_px:
                unjudged[i] = Unjudged(ReasonCode.TOO_SMALL, f"face too small to check ({f.box.w:.0f} px)")
                continue
            judged.append(i)
            rows.append(self.vectors[f.box.x])
        vectors = np.stack(rows) if rows else np.zeros((0, DIM), np.float32)
        return Embeddings(vectors, tuple(judged), unjudged, (), (mirror,) * len(judged))

    def mirror(self, embedded: Embeddings, rows: list[int]) -> Embeddings:
        self.mirrored_rows.extend(rows)
        return Embeddings(embedded.vectors, embedded.judged, embedded.unjudged, (), (True,) * len(embedded.judged))


def gallery(students: dict[str, np.ndarray], fingerprint: str = "fake-model") -> FaceIndex:
    """An index in memory: one template per student."""
    index = FaceIndex(fingerprint)
    for student_id, vector in students.items():
        index.add(Template(student_id, f"/refs/{student_id}.jpg", student_id.encode().hex().ljust(64, "0"), ""), vector)
    return index
