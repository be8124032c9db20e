"""``Guard``: the loaded models and index, what people decided, and ``check(path) -> ScanResult``.

A file's kind decides who checks it (``media.handlers``: a photo top to bottom in ``photo``, a clip
in ``video``); both come back here for the one place faces are decided from embeddings
(:meth:`Guard.judge`, :meth:`Guard.decide`). Anything that goes wrong with one file becomes a
*review* verdict with the reason; it never becomes *allow*.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optout_guard import postable, stored_faces
from optout_guard.config import Settings
from optout_guard.consent import CLEARABLE, clear_consenting
from optout_guard.errors import IndexUnusable, ModelUnavailable
from optout_guard.face_models import model_bundle, uses_loaded_models
from optout_guard.index import FaceIndex, index_key
from optout_guard.matching import decide_faces, photo_verdict, unjudged_decision
from optout_guard.media.handlers import handler_for, handler_of
from optout_guard.models import Models, embedding_fingerprint, get_models, models_needed
from optout_guard.photo import check_photo
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.stored_faces import StoredFace
from optout_guard.types import (
    Candidate,
    Decision,
    Face,
    FaceMatch,
    FaceModels,
    MediaKind,
    ScanResult,
    Settler,
    Unjudged,
    Verdict,
)


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
        if not uses_loaded_models(self.face_models):
            return  # fakes (tests/fakes.py): nothing to load
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
        result, _ = check_photo(self, path, None, faces, False, None, scope)
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
            result, vectors = check_photo(self, path, None, faces, True, None, scope)
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
