"""Faces in, faces out: boxes, scores and dlib's 5 landmarks, in original pixels. No I/O.

The working resolution is chosen from the smallest face we must find
(``Settings.detect_min_face_px``), not from a fixed cap: a 12 MP class photo is shrunk only as far
as its smallest wanted face stays visible to the detector. Landmarks are then placed on the full
decoded pixels, which is also where the embedding is taken from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from optout_guard.config import Settings
from optout_guard.models import Models
from optout_guard.types import Box, Face, LoadedImage

# Smallest face (px at the detector's input) each detector finds reliably: CenterFace (a stride-4
# heat map) finds ~96% of faces that are 24 px at its input (scripts/benchmark_groups.py); dlib's
# HOG scans an 80×80 window and finds little below ~80 px.
_CENTERFACE_MIN_PX = 24.0
_HOG_MIN_PX = 80.0
# Photos are never shrunk below this long side: small photos are cheap at full size.
_MIN_WORKING_SIDE = 1024
# Cap on pixels the HOG detector is run on (it slows down linearly and is single-threaded).
_HOG_MAX_WORKING_PIXELS = 16_000_000
_NMS_IOU = 0.3
# Large photos are detected in overlapping tiles of at most this side (detector pixels).
_TILE = 1024

# CenterFace's box covers forehead to chin; dlib's landmark model was trained on dlib's own, tighter
# and lower box. These affine factors map one onto the other (fitted on LFW, see
# scripts/fit_box_mapping.py): x += DX*w, y += DY*h, w *= SW, h *= SH.
_CF_TO_DLIB = (-0.10, 0.12, 1.13, 0.85)


def working_scale(height: int, width: int, settings: Settings, detector_min_px: float) -> float:
    """Scale factor from decoded pixels to detector input, from the smallest face we must find."""
    scale = detector_min_px / float(settings.detect_min_face_px)
    scale = max(scale, min(1.0, _MIN_WORKING_SIDE / max(height, width)))
    return min(scale, 2.0)


def _centerface_pass(image: np.ndarray, in_w: int, in_h: int, threshold: float, models: Models) -> tuple[np.ndarray, np.ndarray]:
    """One network pass: raw CenterFace boxes (x, y, w, h) in ``image`` pixels, and per box its
    score and whether the face is upright (N, 2)."""
    height, width = image.shape[:2]
    blob = cv2.dnn.blobFromImage(image, 1.0, (in_w, in_h), (0, 0, 0), swapRB=False, crop=False)
    heatmap, log_size, offset, landmarks = models.centerface(blob)
    heat = heatmap[0, 0]
    rows, cols = np.nonzero(heat > threshold)
    # Decode centre + offset and log-size at each heat-map peak (stride 4).
    box_h = np.exp(log_size[0, 0, rows, cols]) * 4.0
    box_w = np.exp(log_size[0, 1, rows, cols]) * 4.0
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * 4.0
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * 4.0
    boxes = np.stack([cx - box_w / 2, cy - box_h / 2, box_w, box_h], axis=1).reshape(-1, 4)
    # CenterFace's own 5 points (eyes, nose, mouth corners) follow the face's real orientation,
    # unlike dlib's upright-only landmark model: the mouth below the eyes means an upright face.
    eye_y = (landmarks[0, 0, rows, cols] + landmarks[0, 2, rows, cols]) / 2 * box_h
    eye_x = (landmarks[0, 1, rows, cols] + landmarks[0, 3, rows, cols]) / 2 * box_w
    mouth_y = (landmarks[0, 6, rows, cols] + landmarks[0, 8, rows, cols]) / 2 * box_h
    mouth_x = (landmarks[0, 7, rows, cols] + landmarks[0, 9, rows, cols]) / 2 * box_w
    angle = np.degrees(np.arctan2(mouth_y - eye_y, mouth_x - eye_x))  # 90° = mouth straight below eyes
    upright = ((angle >= 45.0) & (angle <= 135.0)).astype(np.float32)
    # score, upright, tilt (degrees the face is turned from upright; 0 = upright)
    info = np.stack([heat[rows, cols].astype(np.float32), upright, (angle - 90.0).astype(np.float32)], axis=1).reshape(-1, 3)
    return boxes * np.array([width / in_w, height / in_h] * 2), info


def quick_boxes(pixels: np.ndarray, threshold: float, models: Models) -> np.ndarray:
    """Face boxes (N, 4: x, y, w, h in ``pixels``' pixels) from one CenterFace pass at the picture's
    own size, no landmarks: the clip scout's look at frames between samples (~9 ms at 480×270)."""
    height, width = pixels.shape[:2]
    in_w, in_h = max(32, math.ceil(width / 32) * 32), max(32, math.ceil(height / 32) * 32)
    return _centerface_pass(pixels, in_w, in_h, threshold, models)[0]


def _tiles(length: float, overlap: float) -> tuple[int, list[int]]:
    """Split ``length`` (detector pixels) into the fewest equal tiles of at most _TILE that overlap
    by ``overlap``: returns the tile side (a multiple of 32) and the tile origins."""
    count = max(1, math.ceil((length - overlap) / (_TILE - overlap)))
    side = int(math.ceil((length + (count - 1) * overlap) / count / 32) * 32)
    if count == 1:
        return side, [0]
    step = (length - side) / (count - 1)
    return side, [round(i * step) for i in range(count)]


def _tiled_pass(
    pixels: np.ndarray, scale: float, overlap: float, threshold: float, models: Models
) -> tuple[np.ndarray, np.ndarray]:
    """Detect in overlapping tiles of at most _TILE detector pixels at ``scale``; boxes in ``pixels``
    coordinates. Both axes are tiled whatever the shape, so memory is bounded for any dimensions."""
    height, width = pixels.shape[:2]
    tile_w, xs = _tiles(width * scale, overlap)
    tile_h, ys = _tiles(height * scale, overlap)
    found_boxes, found_scores = [np.zeros((0, 4))], [np.zeros((0, 3), np.float32)]
    for ty in ys:
        for tx in xs:
            x0, y0 = round(tx / scale), round(ty / scale)
            crop = pixels[y0 : y0 + round(tile_h / scale), x0 : x0 + round(tile_w / scale)]
            ch, cw = crop.shape[:2]
            boxes, scores = _centerface_pass(crop, tile_w, tile_h, threshold, models)
            # A face cut by an inner tile edge is whole in the neighbouring tile (or, if large,
            # in the whole-photo pass): drop the piece.
            margin = 2.0 / scale
            cut = np.zeros(len(boxes), bool)
            if x0 > 0:
                cut |= boxes[:, 0] <= margin
            if y0 > 0:
                cut |= boxes[:, 1] <= margin
            if x0 + cw < width:
                cut |= boxes[:, 0] + boxes[:, 2] >= cw - margin
            if y0 + ch < height:
                cut |= boxes[:, 1] + boxes[:, 3] >= ch - margin
            found_boxes.append(boxes[~cut] + np.array([x0, y0, 0, 0]))
            found_scores.append(scores[~cut])
    return np.concatenate(found_boxes), np.concatenate(found_scores)


def _centerface(pixels: np.ndarray, settings: Settings, models: Models) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4: x, y, w, h, in dlib's box convention) in decoded pixels, and (N, 2) score and
    upright flag.

    A photo whose working size fits in one tile is one network pass. A larger one is cut into
    overlapping tiles of one fixed size (so memory stays bounded — one 12 MP pass needs ~1.7 GB —
    and the network is set up once for every photo), plus one pass over the whole photo shrunk to
    a tile, which finds the faces too large for a tile's overlap.
    """
    height, width = pixels.shape[:2]
    scale = working_scale(height, width, settings, _CENTERFACE_MIN_PX)
    work_w, work_h = width * scale, height * scale
    threshold = settings.detection_threshold
    found_boxes: list[np.ndarray] = []
    found_scores: list[np.ndarray] = []
    if work_w <= _TILE and work_h <= _TILE:
        # The network needs sides that are multiples of 32.
        in_w = max(32, int(math.ceil(work_w / 32.0) * 32))
        in_h = max(32, int(math.ceil(work_h / 32.0) * 32))
        boxes, scores = _centerface_pass(pixels, in_w, in_h, threshold, models)
        found_boxes.append(boxes)
        found_scores.append(scores)
    else:
        # Faces the shrunk whole-photo pass finds (at least _CENTERFACE_MIN_PX there) are taken
        # from it; the tiles must overlap by more than that, so smaller faces are whole in a tile.
        shrink = _TILE / max(width, height)
        whole_min = _CENTERFACE_MIN_PX / shrink * scale  # in detector pixels
        overlap = 1.25 * whole_min
        if overlap <= _TILE / 2:
            boxes, scores = _tiled_pass(pixels, scale, overlap, threshold, models)
            found_boxes.append(boxes)
            found_scores.append(scores)
        else:
            # A very long photo (a full-page screenshot, a panorama strip): one shrunk pass cannot see
            # faces the tiles' overlap is too small for. Levels of tiles instead, each at a smaller
            # scale, each finding the faces too large for the level before, until one pass covers all.
            level, smallest = scale, 0.0
            overlap = _TILE / 2
            while max(width, height) * level > _TILE:
                boxes, scores = _tiled_pass(pixels, level, overlap, threshold, models)
                large = boxes[:, 2] * scale >= smallest
                found_boxes.append(boxes[large])
                found_scores.append(scores[large])
                smallest = overlap / 1.25 / level * scale  # level-0 detector px: bigger faces from the next level
                level *= _CENTERFACE_MIN_PX / (overlap / 1.25)
            shrink, whole_min = level, smallest
        in_w, in_h = int(math.ceil(width * shrink / 32) * 32), int(math.ceil(height * shrink / 32) * 32)
        boxes, scores = _centerface_pass(pixels, in_w, in_h, threshold, models)
        big = boxes[:, 2] * scale >= whole_min  # the tiles find the smaller ones more reliably
        found_boxes.append(boxes[big])
        found_scores.append(scores[big])
    return _merged(found_boxes, found_scores, threshold)


def _merged(found_boxes: list[np.ndarray], found_scores: list[np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The passes' raw boxes, overlaps suppressed, in dlib's box convention (see ``_centerface``)."""
    boxes = np.concatenate(found_boxes) if found_boxes else np.zeros((0, 4))
    info = np.concatenate(found_scores) if found_scores else np.zeros((0, 3), np.float32)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32)
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), info[:, 0].tolist(), threshold, _NMS_IOU), np.int64).reshape(-1)
    boxes, scores = boxes[keep], info[keep]
    dx, dy, sw, sh = _CF_TO_DLIB
    mapped = np.stack(
        [boxes[:, 0] + dx * boxes[:, 2], boxes[:, 1] + dy * boxes[:, 3], boxes[:, 2] * sw, boxes[:, 3] * sh],
        axis=1,
    )
    return mapped.astype(np.float32), scores.astype(np.float32)


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
    n = len(scores)
    info = np.stack([np.asarray(scores, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32)], axis=1).reshape(-1, 3)
    return boxes / scale, info  # HOG only finds upright faces


def _landmarks(pixels: np.ndarray, box: np.ndarray, models: Models) -> np.ndarray:
    import dlib

    x, y, w, h = (float(v) for v in box)
    rect = dlib.rectangle(round(x), round(y), round(x + w - 1), round(y + h - 1))
    shape = models.landmarks(pixels, rect)
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float32)


def _centerface_in(
    pixels: np.ndarray, regions: Sequence[Box], settings: Settings, models: Models
) -> tuple[np.ndarray, np.ndarray] | None:
    """``_centerface`` on parts of a picture only, each at the scale the whole picture is examined
    at (the same network input per pixel, so a face gets the box it would get in a whole pass).
    A face cut by a region's inner edge (only part of it inside) is looked for again in the region
    grown around it; None when that would not be the same look: a picture larger than one tile, or
    a face still cut (the caller looks at the whole picture instead)."""
    height, width = pixels.shape[:2]
    scale = working_scale(height, width, settings, _CENTERFACE_MIN_PX)
    if width * scale > _TILE or height * scale > _TILE:
        return None
    threshold, margin = settings.detection_threshold, 2.0 / scale
    found_boxes: list[np.ndarray] = []
    found_scores: list[np.ndarray] = []
    pending = [(region, False) for region in regions]
    while pending:
        region, again = pending.pop()
        # Whole network cells (32 input px) of picture, so nothing is stretched to fit.
        cell = 32.0 / scale
        w = min(width, math.ceil(max(region.w, 1.0) / cell) * cell)
        h = min(height, math.ceil(max(region.h, 1.0) / cell) * cell)
        x0 = int(max(0.0, min(region.x, width - w)))
        y0 = int(max(0.0, min(region.y, height - h)))
        x1, y1 = min(width, x0 + math.ceil(w)), min(height, y0 + math.ceil(h))
        crop = pixels[y0:y1, x0:x1]
        # (0.1: a part of whole cells is not rounded up by a pixel's fraction; one at the frame's
        # edge is, as the whole pass rounds the frame up)
        in_w = max(32, math.ceil((x1 - x0) * scale / 32 - 0.1) * 32)
        in_h = max(32, math.ceil((y1 - y0) * scale / 32 - 0.1) * 32)
        boxes, scores = _centerface_pass(crop, in_w, in_h, threshold, models)
        inner = np.zeros(len(boxes), bool)
        if x0 > 0:
            inner |= boxes[:, 0] <= margin
        if y0 > 0:
            inner |= boxes[:, 1] <= margin
        if x1 < width:
            inner |= boxes[:, 0] + boxes[:, 2] >= (x1 - x0) - margin
        if y1 < height:
            inner |= boxes[:, 1] + boxes[:, 3] >= (y1 - y0) - margin
        if inner.any():
            if again:
                return None
            cut = boxes[inner] + np.array([x0, y0, 0, 0])
            grow = cut[:, 2:].max(axis=1, keepdims=True) * 0.5
            gx0, gy0 = min(x0, float((cut[:, 0:1] - grow).min())), min(y0, float((cut[:, 1:2] - grow).min()))
            gx1 = max(x1, float((cut[:, 0:1] + cut[:, 2:3] + grow).max()))
            gy1 = max(y1, float((cut[:, 1:2] + cut[:, 3:4] + grow).max()))
            gx0, gy0 = max(0.0, gx0), max(0.0, gy0)
            pending.append((Box(gx0, gy0, min(width, gx1) - gx0, min(height, gy1) - gy0), True))
            continue
        found_boxes.append(boxes + np.array([x0, y0, 0, 0]))
        found_scores.append(scores)
    return _merged(found_boxes, found_scores, threshold)


def _faces(
    pixels: np.ndarray, boxes: np.ndarray, info: np.ndarray, scale: float, page: int, models: Models, landmarks: bool = True
) -> list[Face]:
    """Faces of one page from a detector's boxes, largest first, with dlib's landmarks (zeros if not
    ``landmarks``)."""
    faces: list[Face] = []
    order: Sequence[int] = np.argsort(-(boxes[:, 2] * boxes[:, 3])).tolist() if len(boxes) else []
    for i in order:
        points = _landmarks(pixels, boxes[i], models) if landmarks else np.zeros((5, 2), np.float32)
        x, y, w, h = (float(v) * scale for v in boxes[i])
        faces.append(
            Face(
                box=Box(x, y, w, h),
                score=float(info[i, 0]),
                landmarks=points * np.float32(scale),
                page=page,
                upright=bool(info[i, 1]),
                tilt=float(info[i, 2]),
            )
        )
    return faces


def detect_faces(image: LoadedImage, settings: Settings, models: Models) -> list[Face]:
    """Every face on every page of the image, largest first within a page."""
    detector = _centerface if settings.detector == "centerface" else _hog
    faces: list[Face] = []
    for page_index, pixels in enumerate(image.pages):
        boxes, info = detector(pixels, settings, models)
        faces += _faces(pixels, boxes, info, image.scale, page_index, models)
    return faces


def detect_faces_in(
    image: LoadedImage, regions: Sequence[Box], settings: Settings, models: Models, landmarks: bool = True
) -> list[Face] | None:
    """The faces within ``regions`` (boxes in the page's pixels) of a one-page image, found as a
    whole-page look would find them; None when a whole look is needed (see ``_centerface_in``;
    the HOG detector always looks at the whole page)."""
    if settings.detector != "centerface" or len(image.pages) != 1:
        return None
    found = _centerface_in(image.pages[0], regions, settings, models)
    return None if found is None else _faces(image.pages[0], *found, image.scale, 0, models, landmarks)
