"""The seam where the models are: the detector, the aligner and the encoder a check uses, made from
the process's loaded models (``models.Models``, each loaded once, lazily).

Everything that finds or embeds faces — the pipeline, clips, enrollment, the sync and its cohort,
the desk, the cluster's workers — takes a :class:`~optout_guard.types.FaceModels` bundle; tests give
it fakes. What is *not* here is the product's judgement: which faces may be embedded (the quality
gate) and how a face's embedding is made from the encoder's outputs (the mirror average) live in
``embedding``, the same for real models and fakes.
"""

from __future__ import annotations

import functools

import numpy as np

from optout_guard.config import Settings
from optout_guard.detection import detect_faces, detect_faces_in, quick_boxes
from optout_guard.models import Models, get_models
from optout_guard.types import EMBEDDING_DIM, Box, Face, FaceModels, LoadedImage

CHIP_SIZE = 150  # dlib's ResNet input: a 150×150 chip aligned on the 5 landmarks
CHIP_PADDING = 0.25


class ModelDetector:
    """The configured detector (CenterFace or dlib's HOG) and dlib's 5 landmarks."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def detect(self, image: LoadedImage, settings: Settings) -> list[Face]:
        return detect_faces(image, settings, self.models)

    def quick_boxes(self, pixels: np.ndarray, threshold: float) -> np.ndarray:
        return quick_boxes(pixels, threshold, self.models)

    def detect_in(self, image: LoadedImage, regions: list[Box], settings: Settings, landmarks: bool = True) -> list[Face] | None:
        return detect_faces_in(image, regions, settings, self.models, landmarks)


class DlibAligner:
    """dlib's aligned chips: 150×150, 25% padding, on the 5 landmarks the detector gave each face."""

    def chips(self, pixels: np.ndarray, faces: list[Face], scale: float) -> list[np.ndarray]:
        import dlib

        shapes = dlib.full_object_detections()
        for face in faces:
            box = face.box.scaled(1.0 / scale)
            rect = dlib.rectangle(round(box.x), round(box.y), round(box.right - 1), round(box.bottom - 1))
            points = dlib.points()
            for px, py in face.landmarks / np.float32(scale):
                points.append(dlib.point(round(float(px)), round(float(py))))
            shapes.append(dlib.full_object_detection(rect, points))
        return list(dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=CHIP_PADDING))


class ResNetEncoder:
    """dlib's ResNet (its weights, run on onnxruntime: ``resnet.OnnxResNet``)."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def encode(self, chips: np.ndarray) -> np.ndarray:
        return np.asarray(self.models.resnet(chips), np.float32).reshape(-1, EMBEDDING_DIM)


def model_bundle(models: Models) -> FaceModels:
    """The real models behind the seam (each still loads on first use)."""
    return FaceModels(ModelDetector(models), DlibAligner(), ResNetEncoder(models))


def uses_loaded_models(bundle: FaceModels) -> bool:
    """Whether ``bundle`` runs the real models (tests pass fakes, which load nothing)."""
    return isinstance(bundle.detector, ModelDetector) or isinstance(bundle.encoder, ResNetEncoder)


@functools.lru_cache(maxsize=1)
def get_face_models() -> FaceModels:
    """The process-wide bundle over :func:`models.get_models`."""
    return model_bundle(get_models())
