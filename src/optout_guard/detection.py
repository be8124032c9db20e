"""Faces in, faces out: boxes, scores and dlib's 5 landmarks, in original pixels. No I/O.

The working resolution is chosen from the smallest face we must find
(``Settings.detect_min_face_px``), not from a fixed cap: a 12 MP class photo is shrunk only as far
as its smallest wanted face stays visible to the detector. Landmarks are then placed on the full
decoded pixels, which is also where the embedding is taken from.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from optout_guard.config import Settings
from optout_guard.models import Models
from optout_guard.types import Box, Face, LoadedImage

# Smallest face (px at the detector's input) each detector finds reliably. CenterFace works on a
# stride-4 heat map; dlib's HOG scans an 80×80 window and finds little below ~80 px.
_CENTERFACE_MIN_PX = 16.0
_HOG_MIN_PX = 80.0
# Photos are never shrunk below this long side: small photos are cheap at full size.
_MIN_WORKING_SIDE = 1024
# Cap on pixels the HOG detector is run on (it slows down linearly and is single-threaded).
_HOG_MAX_WORKING_PIXELS = 16_000_000
_NMS_IOU = 0.3

# CenterFace's box covers forehead to chin; dlib's landmark model was trained on dlib's own, tighter
# and lower box. These affine factors map one onto the other (fitted on LFW, see
# scripts/fit_box_mapping.py): x += DX*w, y += DY*h, w *= SW, h *= SH.
_CF_TO_DLIB = (-0.10, 0.12, 1.13, 0.85)


def working_scale(height: int, width: int, settings: Settings, detector_min_px: float) -> float:
    """Scale factor from decoded pixels to detector input, from the smallest face we must find."""
    scale = detector_min_px / float(settings.detect_min_face_px)
    scale = max(scale, min(1.0, _MIN_WORKING_SIDE / max(height, width)))
    return min(scale, 2.0)


def _centerface(pixels: np.ndarray, settings: Settings, models: Models) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4: x, y, w, h) and scores (N,) in decoded-pixel coordinates."""
    height, width = pixels.shape[:2]
    scale = working_scale(height, width, settings, _CENTERFACE_MIN_PX)
    # The network needs sides that are multiples of 32.
    in_w = max(32, int(math.ceil(width * scale / 32.0) * 32))
    in_h = max(32, int(math.ceil(height * scale / 32.0) * 32))
    blob = cv2.dnn.blobFromImage(pixels, 1.0, (in_w, in_h), (0, 0, 0), swapRB=False, crop=False)
    net = models.centerface(in_w, in_h)
    net.setInput(blob)
    heatmap, log_size, offset, _ = net.forward(["537", "538", "539", "540"])
    heat = heatmap[0, 0]
    rows, cols = np.nonzero(heat > settings.detection_threshold)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    # Decode centre + offset and log-size at each heat-map peak (stride 4).
    box_h = np.exp(log_size[0, 0, rows, cols]) * 4.0
    box_w = np.exp(log_size[0, 1, rows, cols]) * 4.0
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * 4.0
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * 4.0
    scores = heat[rows, cols].astype(np.float32)
    boxes = np.stack([cx - box_w / 2, cy - box_h / 2, box_w, box_h], axis=1)
    keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), settings.detection_threshold, _NMS_IOU)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    boxes = boxes[keep] * np.array([width / in_w, height / in_h, width / in_w, height / in_h])
    dx, dy, sw, sh = _CF_TO_DLIB
    mapped = np.stack(
        [boxes[:, 0] + dx * boxes[:, 2], boxes[:, 1] + dy * boxes[:, 3], boxes[:, 2] * sw, boxes[:, 3] * sh],
        axis=1,
    )
    return mapped.astype(np.float32), scores[keep]


def _hog(pixels: np.ndarray, settings: Settings, models: Models) -> tuple[np.ndarray, np.ndarray]:
    height, width = pixels.shape[:2]
    scale = working_scale(height, width, settings, _HOG_MIN_PX)
    scale = min(scale, math.sqrt(_HOG_MAX_WORKING_PIXELS / float(height * width)))
    work = pixels
    if abs(scale - 1.0) > 1e-3:
        work = cv2.resize(pixels, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_LINEAR)
    rects, scores, _ = models.hog.run(work, 0, 0.0)
    boxes = np.array(
        [[r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1] for r in rects], np.float32
    ).reshape(-1, 4)
    return boxes / scale, np.asarray(scores, np.float32)


def _landmarks(pixels: np.ndarray, box: np.ndarray, models: Models) -> np.ndarray:
    import dlib

    x, y, w, h = (float(v) for v in box)
    rect = dlib.rectangle(round(x), round(y), round(x + w - 1), round(y + h - 1))
    shape = models.landmarks(pixels, rect)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float32)


def detect_faces(image: LoadedImage, settings: Settings, models: Models) -> list[Face]:
    """Every face on every page of the image, largest first within a page."""
    detector = _centerface if settings.detector == "centerface" else _hog
    faces: list[Face] = []
    for page_index, pixels in enumerate(image.pages):
        boxes, scores = detector(pixels, settings, models)
        order = np.argsort(-(boxes[:, 2] * boxes[:, 3])) if len(boxes) else []
        for i in order:
            points = _landmarks(pixels, boxes[i], models)
            x, y, w, h = (float(v) * image.scale for v in boxes[i])
            faces.append(
                Face(
                    box=Box(x, y, w, h),
                    score=float(scores[i]),
                    landmarks=points * np.float32(image.scale),
                    page=page_index,
                )
            )
    return faces
