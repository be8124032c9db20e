"""``Guard``: the loaded models and index, and ``check(path) -> ScanResult``.

load → detect → embed → search → decide → verdict (→ marked-up copy). Anything that goes wrong
with one photo becomes a *review* verdict with the reason; it never becomes *allow*.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from optout_guard import annotate
from optout_guard.config import Settings
from optout_guard.detection import detect_faces
from optout_guard.embedding import embed_faces
from optout_guard.errors import ImageRejected, IndexUnusable
from optout_guard.images import load_image, looks_like_image
from optout_guard.index import FaceIndex
from optout_guard.matching import decide_face, one_face_per_student, photo_verdict
from optout_guard.models import Models, embedding_fingerprint, get_models
from optout_guard.types import Decision, FaceMatch, ScanResult, Verdict


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Batch:
    results: list[ScanResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class UnreadableFolder:
    path: str
    reason: str


def collect_photos(paths: Iterable[Path | str], exclude: Iterable[Path] = ()) -> Iterator[Path | Skipped | UnreadableFolder]:
    """Files named explicitly are always checked; folders are walked recursively (sorted, hidden
    entries and ``exclude`` folders left out), and files in them that are not images are skipped.
    A folder that cannot be listed is reported, never silently passed over."""
    excluded = {Path(p).resolve() for p in exclude}
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            # Missing or unreadable files still go to check(), which reports them as review.
            yield path
            continue
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(path, onerror=errors.append):
            while errors:
                failed = errors.pop()
                yield UnreadableFolder(str(failed.filename or dirpath), failed.strerror or str(failed))
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                file = here / name
                if looks_like_image(file):  # includes broken links named like photos: check() reports them
                    yield file
                else:
                    yield Skipped(str(file), "not an image")
        for failed in errors:
            yield UnreadableFolder(str(failed.filename or path), failed.strerror or str(failed))


class Guard:
    """Holds the models and the index for the life of a process (a watch service, an audit worker)."""

    def __init__(self, settings: Settings, models: Models | None = None, index: FaceIndex | None = None) -> None:
        self.settings = settings
        self.models = models or get_models()
        self._index = index
        self._index_stamp: tuple[int, int] | None = None

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
            index = FaceIndex.load(path, embedding_fingerprint())
            if len(index) == 0:
                raise IndexUnusable(
                    f"the face index {path} has no usable reference photos, so nobody would be recognised; "
                    "enroll students first with: optout-guard enroll"
                )
            self._index, self._index_stamp = index, stamp
        return self._index

    def check(self, path: Path | str, annotate_dir: Path | None = None) -> ScanResult:
        """Check one photo. Never raises for a bad photo: the problem becomes a *review* reason."""
        started = time.perf_counter()
        index = self.index  # an unusable index is a setup error for the whole run, so it raises
        try:
            image = load_image(path, self.settings)
        except ImageRejected as exc:
            return ScanResult(str(path), Verdict.REVIEW, (exc.reason,), seconds=time.perf_counter() - started)
        if min(image.size) < self.settings.min_face_px:
            # Any face in so small a picture is too small to judge, and a person could still know it.
            reason = f"image too small to check ({image.size[0]}×{image.size[1]} px; a face needs {self.settings.min_face_px} px)"
            return ScanResult(
                str(path), Verdict.REVIEW, (reason,), sha256=image.sha256, size=image.size, seconds=time.perf_counter() - started
            )
        try:
            faces = detect_faces(image, self.settings, self.models)
            embedded = embed_faces(image, faces, self.settings, self.models)
            found = index.search(embedded.vectors)
            matches: list[FaceMatch] = []
            for i, face in enumerate(faces):
                if i in embedded.unjudged:
                    matches.append(FaceMatch(face, Decision.REVIEW, (), embedded.unjudged[i]))
                else:
                    candidates = found[embedded.judged.index(i)]
                    matches.append(decide_face(face, candidates, self.settings))
            matches = one_face_per_student(matches)
            verdict, reasons = photo_verdict(matches, image.notes)
        except Exception as exc:  # noqa: BLE001 - fail closed: an unexpected error is a review
            return ScanResult(
                str(path),
                Verdict.REVIEW,
                (f"could not be checked ({type(exc).__name__}: {exc}); please report this",),
                sha256=image.sha256,
                size=image.size,
                seconds=time.perf_counter() - started,
            )
        annotated = None
        if annotate_dir is not None:
            try:
                annotated = str(annotate.write_marked_copy(image, matches, annotate_dir))
            except OSError as exc:
                reasons = (*reasons, f"the marked-up copy could not be written ({exc})")
                if verdict is Verdict.ALLOW:
                    verdict = Verdict.REVIEW
        return ScanResult(
            path=str(path),
            verdict=verdict,
            reasons=reasons,
            faces=tuple(matches),
            sha256=image.sha256,
            size=image.size,
            pages=len(image.pages),
            seconds=time.perf_counter() - started,
            annotated_path=annotated,
        )

    def check_many(self, paths: Iterable[Path | str], annotate_dir: Path | None = None) -> Iterator[ScanResult | Skipped]:
        exclude = [annotate_dir] if annotate_dir is not None else []
        for item in collect_photos(paths, exclude=exclude):
            if isinstance(item, Skipped):
                yield item
            elif isinstance(item, UnreadableFolder):
                why = f"folder could not be read ({item.reason}); the photos in it were not checked"
                yield ScanResult(item.path, Verdict.REVIEW, (why,))
            else:
                yield self.check(item, annotate_dir)
