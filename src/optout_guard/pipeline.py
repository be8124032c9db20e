"""``Guard``: the loaded models and index, and ``check(path) -> ScanResult``.

load → detect → embed → search → decide → verdict (→ marked-up copy). Anything that goes wrong
with one photo becomes a *review* verdict with the reason; it never becomes *allow*.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optout_guard import annotate, postable, stored_faces
from optout_guard.config import Settings
from optout_guard.consent import CLEARABLE, clear_consenting
from optout_guard.embedding import embed_faces, is_upright, mirror_some
from optout_guard.errors import ImageRejected, IndexUnusable, ModelUnavailable
from optout_guard.face_models import model_bundle
from optout_guard.fsutil import sha256_file
from optout_guard.index import FaceIndex, index_key
from optout_guard.matching import copy_failed, decide_faces, limits_of, photo_verdict, unjudged_decision
from optout_guard.media.handlers import handler_for, handler_of
from optout_guard.media.photos import load_image
from optout_guard.models import Models, embedding_fingerprint, get_models, models_needed
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.stored_faces import StoredFace
from optout_guard.types import (
    Candidate,
    Decision,
    Face,
    FaceMatch,
    FaceModels,
    LoadedImage,
    MediaKind,
    ReasonCode,
    ScanResult,
    Settler,
    Unjudged,
    Verdict,
)

log = logging.getLogger("optout_guard.pipeline")


SIDEWAYS = (
    "faces were found only with the photo turned (it is stored on its side or upside down and its "
    "rotation tag is missing); boxes refer to the turned photo: rotate the original and check it again"
)
DETECTION_ONLY = "face found (detection-only mode: no recognition; a person decides, or post it blurred)"


@dataclass(frozen=True)
class Redaction:
    """Where to write postable copies. A copy called postable has every face that is not clear
    blurred: blocked faces and faces under review alike."""

    folder: Path


FaceVectors = tuple[np.ndarray | None, ...]  # per face of a result: its embedding (None: not judged)


def _scoped(result: ScanResult, scope: Scope) -> ScanResult:
    return result if scope.is_district else dataclasses.replace(result, scope=scope.name)


class NoDecisions:
    """A settler that applies no human decision: the verdict from the faces alone."""

    def settle(
        self, sha256: str | None, matches: list[FaceMatch], notes: tuple[str, ...]
    ) -> tuple[list[FaceMatch], Verdict, tuple[str, ...]]:
        return (matches, *photo_verdict(matches, notes))

    def settle_file(self, result: ScanResult) -> ScanResult:
        return result

    def decided_since(self, when: str) -> set[str]:
        return set()


# Faces whose plain embedding is within review_distance + this of an enrolled student get the
# mirrored pass too (the index holds mirror-averaged templates).
MIRROR_MARGIN = 0.05


class Guard:
    """Holds the models and the index for the life of a process (a watch service, an audit worker)."""

    def __init__(
        self,
        settings: Settings,
        models: Models | None = None,
        index: FaceIndex | None = None,
        settler: Settler | None = None,
        face_models: FaceModels | None = None,
    ) -> None:
        """``settler``: what people decided, applied to every result; by default this workspace's
        review book (``review.WorkspaceDecisions``); ``NoDecisions()`` on a cluster worker (the
        coordinator applies them). ``face_models``: the detector, aligner and encoder; the loaded
        models' by default (tests pass fakes: ``tests/fakes.py``)."""
        self.settings = settings
        self.models = models or get_models()
        self.face_models: FaceModels = face_models or model_bundle(self.models)
        self._index = index
        self._index_stamp: tuple[int, int] | None = None
        self._settler = settler

    def require_models(self) -> None:
        """Load every model this run needs now, before any photo: a broken install is a set-up
        error (exit 2, "re-install"), never a run of photos all sent to review."""
        try:
            self.models.preload(models_needed(self.settings.detector, self.settings.recognition))
        except ModelUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged model file is a broken install too
            raise ModelUnavailable(
                f"a face model could not be loaded ({type(exc).__name__}: {exc}); re-run the README install command"
            ) from None

    def require_index(self) -> FaceIndex:
        """The gallery, or :class:`IndexUnusable` (exit 2): a missing, empty or foreign index is a
        set-up error for the whole run, said before any photo, never a photo's verdict."""
        return self.index

    @property
    def settler(self) -> Settler:
        if self._settler is None:
            from optout_guard.review import WorkspaceDecisions  # the default: this workspace's review book

            self._settler = WorkspaceDecisions(self.settings)
        return self._settler

    @property
    def index(self) -> FaceIndex:
        """The gallery, re-read when the index file changed on disk (an enroll or a remove)."""
        if self._index is not None and self._index_stamp is None:
            return self._index  # given in memory, not backed by the file
        path = self.settings.index_file
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if self._index is None or stamp != self._index_stamp:
            index = FaceIndex.load(path, embedding_fingerprint(), index_key(self.settings))
            if len(index) == 0:
                raise IndexUnusable(
                    f"the face index {path} has no usable reference photos, so nobody would be recognised; "
                    "enroll students first with: optout-guard enroll"
                )
            if not self.settings.consent_matching and index.consenting_templates:
                # Turned off: never used, from this moment (deleted from the file at the next change
                # of the gallery, or now with `optout-guard include purge`).
                index.purge_consenting()
            self._index, self._index_stamp = index, stamp
        return self._index

    def judge(
        self,
        faces: list[Face],
        vectors: np.ndarray,
        scope: Scope = WHOLE_DISTRICT,
        found: list[tuple[Candidate, ...]] | None = None,
    ) -> list[FaceMatch]:
        """Decide judged faces of one photo (or a clip's tracks) from their embeddings: the search
        (unless ``found`` already holds it), the opted-out rules, then the consenting-students rule
        (consent.py), which may only turn a look-alike *review* into *clear*. Every path that decides
        faces from embeddings comes through here."""
        if found is None:
            found = self.index.search(vectors, settings=self.settings, only=scope.students) if len(faces) else []
        matches = decide_faces(faces, found, self.settings.thresholds)
        if not self.settings.consent_matching or not self.index.consenting_templates:
            return matches
        held = [i for i, m in enumerate(matches) if m.decision is Decision.REVIEW and m.code in CLEARABLE]
        if not held:
            return matches
        recognised = self.index.recognise(np.asarray(vectors)[held], only=scope.students)
        for i, who in zip(held, recognised, strict=True):
            matches[i] = clear_consenting(matches[i], who, self.settings.block_distance, self.settings.consent_margin)
        return matches

    def check(
        self,
        path: Path | str,
        annotate_dir: Path | None = None,
        redact: Redaction | None = None,
        scope: Scope = WHOLE_DISTRICT,
        kind: MediaKind | None = None,
    ) -> ScanResult:
        """Check one photo (or video clip) against the students of ``scope``. Never raises for a bad
        file: the problem becomes a *review* reason. ``kind``: what the caller's ``sniff`` found
        already (else it is sniffed here); the kind's handler does the work (``media.handlers``)."""
        handler = handler_for(kind) if kind is not None else handler_of(path)
        return _scoped(handler.check(self, path, annotate_dir, redact, scope), scope)

    def recheck(self, path: Path | str, faces: list[Face], scope: Scope = WHOLE_DISTRICT) -> ScanResult:
        """Decide again, against the current gallery, on faces found earlier in this photo (their
        boxes and landmarks): the faces are re-embedded, detection is not run again."""
        result, _ = self.check_photo(path, None, faces, False, None, scope)
        return _scoped(result, scope)

    def recheck_stored(
        self, path: Path | str, stored: list[StoredFace], scope: Scope = WHOLE_DISTRICT, keep: bool = False
    ) -> tuple[ScanResult, FaceVectors | None]:
        """The audit's re-decision of a file from what it stored (``stored_faces``): the stored kind's
        handler decides how (a photo's faces re-embedded, a clip's tracks' frames decoded)."""
        handler = handler_for(MediaKind.CLIP if stored_faces.is_clip(stored) else MediaKind.PHOTO)
        result, vectors = handler.recheck(self, path, stored, scope, keep)
        return _scoped(result, scope), vectors

    def check_keeping_embeddings(
        self, path: Path | str, faces: list[Face] | None = None, scope: Scope = WHOLE_DISTRICT
    ) -> tuple[ScanResult, FaceVectors | None]:
        """:meth:`check` (or :meth:`recheck` when ``faces`` are given), and every face's embedding
        for the audit's opt-in cache — mirror-averaged, since a later gallery may bring any face near
        somebody — kept apart from the result, which never carries vectors. None for a clip."""
        if faces is not None:
            result, vectors = self.check_photo(path, None, faces, True, None, scope)
            return _scoped(result, scope), vectors
        result, vectors = handler_of(path).first_check(self, path, scope, keep=True)
        return _scoped(result, scope), vectors

    def decide(
        self,
        faces: list[Face],
        embeddings: list[np.ndarray | None],
        unjudged: dict[int, Unjudged],
        notes: tuple[str, ...] = (),
        sha256: str | None = None,
        scope: Scope = WHOLE_DISTRICT,
        searched: dict[int, tuple[Candidate, ...]] | None = None,
    ) -> tuple[list[FaceMatch], Verdict, tuple[str, ...]]:
        """Per-face decisions and the photo's verdict from embeddings (None for faces in ``unjudged``),
        with what reviewers already said about the faces of this photo (``sha256``) applied.
        ``searched``: each judged face's candidates when the caller has searched the index already."""
        judged = [i for i in range(len(faces)) if i not in unjudged]
        judged_vectors = [v for v in (embeddings[i] for i in judged) if v is not None]  # every judged face has one
        vectors = np.stack(judged_vectors) if judged_vectors else np.zeros((0, 128), np.float32)
        found = [searched[i] for i in judged] if searched is not None else None
        decided = dict(zip(judged, self.judge([faces[i] for i in judged], vectors, scope, found), strict=True))
        matches = [
            decided[i] if i in decided else FaceMatch(face, unjudged_decision(u := unjudged[i]), (), u.text, u.code)
            for i, face in enumerate(faces)
        ]
        own = postable.lookup(self.settings, sha256)
        if own is None:
            return self.settler.settle(sha256, matches, notes)
        # A copy fit to post this tool wrote: the faces it blurred are its own doing, and it says so.
        matches, verdict, reasons = self.settler.settle(sha256, postable.clear_own_blur(own, matches), notes)
        return matches, verdict, (*reasons, own.describe())

    def check_photo(
        self,
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
        if self.settings.recognition:
            self.require_index()
        try:
            image = load_image(path, self.settings)
        except ImageRejected as exc:
            seconds = time.perf_counter() - started
            problem = exc.code
            result = ScanResult.fail_closed(str(path), exc.reason, seconds=seconds, retry=exc.transient, problem=problem)
            return self._undecodable_answered(result), None
        if min(image.size) < self.settings.min_face_px:
            # Any face in so small a picture is too small to judge, and a person could still know it.
            reason = f"image too small to check ({image.size[0]}×{image.size[1]} px; a face needs {self.settings.min_face_px} px)"
            known = {"sha256": image.sha256, "size": image.size, "identity": image.identity}
            return ScanResult.fail_closed(str(path), reason, seconds=time.perf_counter() - started, **known), None
        try:
            faces = self.face_models.detector.detect(image, self.settings) if known_faces is None else known_faces
            # CenterFace finds faces lying on their side or upside down too (and says so). When most
            # faces are turned, the photo itself is: search it turned. (A few odd faces in an upright
            # crowd stay "turned" reviews; turning every crowd photo cost ~35% more time.)
            turned_faces = sum(1 for f in faces if not is_upright(f))
            if known_faces is None and self.settings.try_rotations and turned_faces > len(faces) - turned_faces:
                image, faces = self._sideways(image, faces)
            if not self.settings.recognition:  # detection only: nothing is embedded or compared
                matches = [FaceMatch(f, Decision.REVIEW, (), DETECTION_ONLY, ReasonCode.DETECTION_ONLY) for f in faces]
                verdict, reasons = photo_verdict(matches, image.notes)
                return self._finish(path, image, matches, verdict, reasons, started, annotate_dir, redact), None
            # Embeddings kept for the audit's cache are all mirror-averaged: a later gallery may
            # bring any face near somebody, and the cache has no pixels to mirror then.
            embedded = embed_faces(image, faces, self.settings, self.face_models, mirror=keep_embeddings)
            found = self.index.search(embedded.vectors, settings=self.settings, only=scope.students)  # the one search
            if len(embedded.vectors) and not keep_embeddings:
                # The mirrored pass only for faces near somebody enrolled: far faces are clear either
                # way (measured on LFW: the same misses and false alerts as mirroring every face).
                # Only those few are searched again, with their mirror-averaged embeddings.
                limits = self.settings.thresholds
                near = [r for r, f in enumerate(found) if f and f[0].distance <= limits_of(f[0], limits).review + MIRROR_MARGIN]
                if near:
                    embedded = mirror_some(embedded, near, self.face_models.encoder)
                    again = self.index.search(embedded.vectors[near], settings=self.settings, only=scope.students)
                    for row, candidates in zip(near, again, strict=True):
                        found[row] = candidates
            per_face: list[np.ndarray | None] = [None] * len(faces)
            searched: dict[int, tuple[Candidate, ...]] = {}
            for row, i in enumerate(embedded.judged):
                per_face[i], searched[i] = embedded.vectors[row], found[row]
            matches, verdict, reasons = self.decide(
                faces, per_face, embedded.unjudged, image.notes, image.sha256, scope, searched
            )
        except ModelUnavailable:
            raise  # a broken install stops the run (exit 2); it is not a property of this photo
        except Exception as exc:  # fail closed: an unexpected error is a review
            log.exception("checking %s failed", path)  # the traceback goes to the log, the reason to the user
            why = f"could not be checked ({type(exc).__name__}: {exc}); please report this"
            known = {"sha256": image.sha256, "size": image.size, "identity": image.identity}
            return ScanResult.fail_closed(str(path), why, seconds=time.perf_counter() - started, retry=True, **known), None
        result = self._finish(path, image, matches, verdict, reasons, started, annotate_dir, redact)
        return result, (tuple(per_face) if keep_embeddings else None)

    def _undecodable_answered(self, result: ScanResult) -> ScanResult:
        """A file that could not be decoded keeps its content hash (so that it can have a card on the
        desk), and a person's answer for it counts: they opened it elsewhere and said."""
        try:
            sha = sha256_file(result.path)
        except OSError:
            return result
        return self.settler.settle_file(dataclasses.replace(result, sha256=sha))

    def _sideways(self, image: LoadedImage, faces: list[Face]) -> tuple[LoadedImage, list[Face]]:
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
            found = self.face_models.detector.detect(turned, self.settings)
            upright = sum(map(is_upright, found))
            if upright > best_upright:
                best, best_faces, best_upright = turned, found, upright
        return best, best_faces

    def _finish(
        self,
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
                postable.record(self.settings, copies.postable, path, blurred)
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
