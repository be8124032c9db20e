"""The real models, each output computed once per test process for exactly the same input.

Many tests enroll the same LFW photos (Hugo Chávez 2–5, Colin Powell 1–3) into a workspace of their
own, and the cohort and sync tests embed the same cohort photos in every sync they run: about a
third of the suite's model time was those repeats. The models are deterministic, so these tests
share one memo: a detection is keyed by the exact pixels, their scale and the settings the detector
reads; an embedding by the exact aligned chips. It is not a fake: the first time an input is seen
the real model runs, and the classes are the real ones (``uses_loaded_models`` stays true, so a
``Guard`` still loads and checks its models). Tests of the models themselves, of their loading or
of a damaged model do not use it.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from optout_guard.config import Settings
from optout_guard.face_models import ModelDetector, ResNetEncoder, model_bundle
from optout_guard.models import get_models
from optout_guard.types import Face, FaceModels, LoadedImage


def _digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.digest()


class MemoDetector(ModelDetector):
    def __init__(self, models) -> None:
        super().__init__(models)
        self.memo: dict[tuple, list[Face]] = {}

    def detect(self, image: LoadedImage, settings: Settings) -> list[Face]:
        # What detection.detect_faces reads of the settings (checked by test_the_memo_keys_on_what_detection_reads).
        key = (_digest(*image.pages), image.scale, settings.detector, settings.detection_threshold, settings.detect_min_face_px)
        if key not in self.memo:
            faces = super().detect(image, settings)
            for face in faces:  # shared by every test that sees these pixels: a write would show
                face.landmarks.flags.writeable = False
            self.memo[key] = faces
        return list(self.memo[key])


class MemoEncoder(ResNetEncoder):
    def __init__(self, models) -> None:
        super().__init__(models)
        self.memo: dict[bytes, np.ndarray] = {}

    def encode(self, chips: np.ndarray) -> np.ndarray:
        key = _digest(np.asarray(chips))
        if key not in self.memo:
            self.memo[key] = super().encode(chips)
            self.memo[key].flags.writeable = False
        return self.memo[key].copy()


@functools.lru_cache(maxsize=1)
def memo_face_models() -> FaceModels:
    """The process's real models behind one memo (see the module's docstring)."""
    models = get_models()
    real = model_bundle(models)
    return FaceModels(MemoDetector(models), real.aligner, MemoEncoder(models))
