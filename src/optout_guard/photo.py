"""A photo, top to bottom: load → detect (or the faces found before) → the quality gate and the
embeddings → one search of the index → decide → copies. ``media.handlers.PhotoHandler`` calls it
with the process's :class:`~optout_guard.pipeline.Guard` (models, index, what people decided);
``video`` is the same for a clip. Anything that goes wrong with one photo becomes a *review* verdict
with the reason; it never becomes *allow*.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optout_guard import annotate, postable
from optout_guard.embedding import embed_faces, is_upright, mirror_some
from optout_guard.errors import ImageRejected, ModelUnavailable
from optout_guard.fsutil import sha256_file
from optout_guard.matching import copy_failed, limits_of, photo_verdict
from optout_guard.media.photos import load_image
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.types import Candidate, Decision, Face, FaceMatch, LoadedImage, ReasonCode, ScanResult, Verdict

if TYPE_CHECKING:
    from optout_guard.pipeline import FaceVectors, Guard, Redaction

log = logging.getLogger("optout_guard.photo")

SIDEWAYS = (
    "faces were found only with the photo turned (it is stored on its side or upside down and its "
    "rotation tag is missing); boxes refer to the turned photo: rotate the original and check it again"
)
DETECTION_ONLY = "face found (detection-only mode: no recognition; a person decides, or post it blurred)"
# Faces whose plain embedding is within review_distance + this of an enrolled student get the
# mirrored pass too (the index holds mirror-averaged templates).
MIRROR_MARGIN = 0.05


def check_photo(
    guard: Guard,
    path: Path | str,
    annotate_dir: Path | None,
    known_faces: list[Face] | None,
    keep_embeddings: bool,
    redact: Redaction | None,
    scope: Scope = WHOLE_DISTRICT,
) -> tuple[ScanResult, FaceVectors | None]:
    """A photo's check (``media.handlers.PhotoHandler``): load → detect (or ``known_faces``) →
    embed → decide → copies; with ``keep_embeddings``, each face's embedding beside the result."""
    started = time.perf_counter()
    if guard.settings.recognition:
        guard.require_index()
    try:
        image = load_image(path, guard.settings)
    except ImageRejected as exc:
        seconds = time.perf_counter() - started
        problem = exc.code
        result = ScanResult.fail_closed(str(path), exc.reason, seconds=seconds, retry=exc.transient, problem=problem)
        return _undecodable_answered(guard, result), None
    if min(image.size) < guard.settings.min_face_px:
        # Any face in so small a picture is too small to judge, and a person could still know it.
        reason = f"image too small to check ({image.size[0]}×{image.size[1]} px; a face needs {guard.settings.min_face_px} px)"
        known = {"sha256": image.sha256, "size": image.size, "identity": image.identity}
        return ScanResult.fail_closed(str(path), reason, seconds=time.perf_counter() - started, **known), None
    try:
        faces = guard.face_models.detector.detect(image, guard.settings) if known_faces is None else known_faces
        # CenterFace finds faces lying on their side or upside down too (and says so). When most
        # faces are turned, the photo itself is: search it turned. (A few odd faces in an upright
        # crowd stay "turned" reviews; turning every crowd photo cost ~35% more time.)
        turned_faces = sum(1 for f in faces if not is_upright(f))
        if known_faces is None and guard.settings.try_rotations and turned_faces > len(faces) - turned_faces:
            image, faces = _sideways(guard, image, faces)
        if not guard.settings.recognition:  # detection only: nothing is embedded or compared
            matches = [FaceMatch(f, Decision.REVIEW, (), DETECTION_ONLY, ReasonCode.DETECTION_ONLY) for f in faces]
            verdict, reasons = photo_verdict(matches, image.notes)
            return _finish(guard, path, image, matches, verdict, reasons, started, annotate_dir, redact), None
        # Embeddings kept for the audit's cache are all mirror-averaged: a later gallery may
        # bring any face near somebody, and the cache has no pixels to mirror then.
        embedded = embed_faces(image, faces, guard.settings, guard.face_models, mirror=keep_embeddings)
        found = guard.index.search(embedded.vectors, settings=guard.settings, only=scope.students)  # the one search
        if len(embedded.vectors) and not keep_embeddings:
            # The mirrored pass only for faces near somebody enrolled: far faces are clear either
            # way (measured on LFW: the same misses and false alerts as mirroring every face).
            # Only those few are searched again, with their mirror-averaged embeddings.
            limits = guard.settings.thresholds
            near = [r for r, f in enumerate(found) if f and f[0].distance <= limits_of(f[0], limits).review + MIRROR_MARGIN]
            if near:
                embedded = mirror_some(embedded, near, guard.face_models.encoder)
                again = guard.index.search(embedded.vectors[near], settings=guard.settings, only=scope.students)
                for row, candidates in zip(near, again, strict=True):
                    found[row] = candidates
        per_face: list[np.ndarray | None] = [None] * len(faces)
        searched: dict[int, tuple[Candidate, ...]] = {}
        for row, i in enumerate(embedded.judged):
            per_face[i], searched[i] = embedded.vectors[row], found[row]
        matches, verdict, reasons = guard.decide(
            faces, per_face, embedded.unjudged, image.notes, image.sha256, scope, searched
        )
    except ModelUnavailable:
        raise  # a broken install stops the run (exit 2); it is not a property of this photo
    except Exception as exc:  # fail closed: an unexpected error is a review
        log.exception("checking %s failed", path)  # the traceback goes to the log, the reason to the user
        why = f"could not be checked ({type(exc).__name__}: {exc}); please report this"
        known = {"sha256": image.sha256, "size": image.size, "identity": image.identity}
        return ScanResult.fail_closed(str(path), why, seconds=time.perf_counter() - started, retry=True, **known), None
    result = _finish(guard, path, image, matches, verdict, reasons, started, annotate_dir, redact)
    return result, (tuple(per_face) if keep_embeddings else None)

def _undecodable_answered(guard: Guard, result: ScanResult) -> ScanResult:
    """A file that could not be decoded keeps its content hash (so that it can have a card on the
    desk), and a person's answer for it counts: they opened it elsewhere and said."""
    try:
        sha = sha256_file(result.path)
    except OSError:
        return result
    return guard.settler.settle_file(dataclasses.replace(result, sha256=sha))

def _sideways(guard: Guard, image: LoadedImage, faces: list[Face]) -> tuple[LoadedImage, list[Face]]:
    """Faces lying on their side or upside down: the photo may be stored turned with
    its rotation tag lost (some apps strip EXIF). Look again turned 90° both ways and 180°, and
    keep the way that shows the most upright faces; turned, it is at least *review* (SIDEWAYS)."""
    best, best_faces, best_upright = image, faces, sum(map(is_upright, faces))
    for turns in (1, 3, 2):
        turned = dataclasses.replace(
            image,
            pages=tuple(np.ascontiguousarray(np.rot90(page, turns)) for page in image.pages),
            size=(image.size[1], image.size[0]),
            notes=(*image.notes, SIDEWAYS),
        )
        found = guard.face_models.detector.detect(turned, guard.settings)
        upright = sum(map(is_upright, found))
        if upright > best_upright:
            best, best_faces, best_upright = turned, found, upright
    return best, best_faces

def _finish(
    guard: Guard,
    path: Path | str,
    image: LoadedImage,
    matches: list[FaceMatch],
    verdict: Verdict,
    reasons: tuple[str, ...],
    started: float,
    annotate_dir: Path | None,
    redact: Redaction | None,
) -> ScanResult:
    """Write the requested copies and assemble the result."""
    copies = annotate.write_copies(image, matches, annotate_dir, redact.folder if redact is not None else None)
    if copies.postable is not None:
        blurred = [postable.Blurred(m.face.box) for m in matches if m.decision is not Decision.CLEAR and m.face.page == 0]
        try:
            postable.record(guard.settings, copies.postable, path, blurred)
        except OSError as exc:  # the copy stands; re-checked, it is judged like any photo
            log.warning("could not record the copy fit to post %s: %s", copies.postable, exc)
    if copies.failure is not None:
        verdict, reasons = copy_failed(verdict, reasons, copies.failure)
    return ScanResult(
        path=str(path),
        verdict=verdict,
        reasons=reasons,
        faces=tuple(matches),
        sha256=image.sha256,
        size=image.size,
        pages=len(image.pages),
        seconds=time.perf_counter() - started,
        annotated_path=copies.marked,
        redacted_path=copies.postable,
        notes=image.notes,
        identity=image.identity,
    )
