"""Building the gallery from ``enrollments/<student_id>/<photos>`` with a quality gate.

A reference photo is used only if it shows one face that is large and sharp enough to embed
reliably, and no other face half its size or more; otherwise it is rejected with the reason
(never "use the first face"). A student with no usable photo is reported as *not protected*.
Re-running only embeds photos whose content changed; templates of photos that were deleted from a student's folder are removed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optout_guard.cohort import MAX_COHORT, MIN_COHORT, CohortCalibration, calibrate_cohort, cohort_digest, too_many_suspects
from optout_guard.config import Settings
from optout_guard.embedding import embed_faces
from optout_guard.errors import EnrollmentError, ImageRejected, Refused
from optout_guard.fsutil import atomic_write, private_dir, sha256_file, utc_now
from optout_guard.index import FaceIndex, Rejection, Template, now_iso
from optout_guard.media.photos import load_image, photo_date
from optout_guard.optout_list import is_valid_student_id
from optout_guard.types import Face, FaceModels

# A reference photo's face must be at least this wide (original px) — twice the size needed to
# check a face, so templates are taken from good pixels.
REFERENCE_MIN_FACE_FACTOR = 2
# Other faces in a reference photo are tolerated only when much smaller than the student's (a
# poster, a passer-by far behind): then there is no doubt whose face the photo is of.
DOMINANT_FACE_RATIO = 0.5
# … or when the largest face is the portrait: centred (its centre within PORTRAIT_CENTRE of the
# photo's side from the middle) and every other face under PORTRAIT_RATIO of its width. Measured on
# 1,500 LFW portraits (scripts/measure_portrait_faces.py), 289 of them with 2+ faces: the rule of
# before took 102 of those, this one 244, and in none did it pick a face other than the centred one
# (0.9 with a looser centre picked one wrong: 0.8 leaves a margin).
PORTRAIT_RATIO = 0.8
PORTRAIT_CENTRE = 0.15


@dataclass
class EnrollReport:
    added: list[tuple[str, str]] = field(default_factory=list)  # (student id, photo)
    unchanged: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (student id, photo, reason)
    removed: list[tuple[str, str]] = field(default_factory=list)  # templates whose photo is gone
    skipped_folders: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)
    not_protected: list[str] = field(default_factory=list)
    students: int = 0
    # Students the index had that the saved opt-out list does not name (after an interrupted sync).
    removed_by_list: list[str] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)  # folders in enrollments/ that no list covers
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (student id, photo, what was done)


    def as_json(self, index_file: Path) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "index": str(index_file),
            "students": self.students,
            "added": [{"student_id": s, "photo": p} for s, p in self.added],
            "unchanged": self.unchanged,
            "removed": [{"student_id": s, "photo": p} for s, p in self.removed],
            "rejected": [{"student_id": s, "photo": p, "reason": r} for s, p, r in self.rejected],
            "notes": [{"student_id": s, "photo": p, "note": n} for s, p, n in self.notes],
            "skipped_folders": [{"folder": f, "reason": r} for f, r in self.skipped_folders],
            "not_protected": self.not_protected,
            "removed_by_list": self.removed_by_list,
        }

    @property
    def weak(self) -> bool:
        """Someone is not protected: no usable photo, removed by the list, or a folder no list covers."""
        return bool(self.not_protected or self.removed_by_list or self.uncovered)


def enroll_workspace(
    settings: Settings,
    folder: Path | None = None,
    rebuild: bool = False,
    cohort: Path | None = None,
    progress: Callable[[Any], None] | None = None,
) -> tuple[EnrollReport, Any]:
    """``optout-guard enroll``: the enrollment folder (default: the workspace's) into the index,
    under the index lock and the "enrollment in progress" marker (a kill before the save leaves it,
    and check/people warn), then the cohort's calibration if ``cohort`` names a folder of photos of
    children who did not opt out; logged. Returns the report and the cohort's report (or None)."""
    from optout_guard.activity_log import ActivityLog
    from optout_guard.face_models import get_face_models
    from optout_guard.index import edit_index, enrollment_in_progress
    from optout_guard.optout_list import load_list
    from optout_guard.picture_day import PHOTO_SUFFIXES

    optouts = load_list(settings.workspace)
    cohort_photos: list[Path] = []
    if cohort is not None:
        if not cohort.is_dir():
            raise EnrollmentError(f"the cohort folder {cohort} does not exist; give a folder of photos")
        cohort_photos = sorted(
            p for p in cohort.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")
        )
    cohort_report = None
    with enrollment_in_progress(settings), edit_index(settings, rebuild) as index:
        report = enroll_folder(folder or settings.enrollments, index, settings, get_face_models(), progress=progress,
                               optouts=optouts.ids() if optouts is not None else None)  # fmt: skip
        if cohort is not None:
            cohort_report = calibrate_with_cohort(cohort_photos, index, settings, get_face_models(),
                                                  f"{cohort.name} ({len(cohort_photos)} photos)", progress=progress)  # fmt: skip
    added = {s: sum(1 for sid, _ in report.added if sid == s) for s in sorted({sid for sid, _ in report.added})}
    ActivityLog(settings).record("enroll", students=report.students, added=added, rejected=len(report.rejected),
                                 removed=len(report.removed), removed_by_list=report.removed_by_list,
                                 not_protected=report.not_protected)  # fmt: skip
    return report, cohort_report


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".txt")


def reference_embedding(
    path: Path, settings: Settings, face_models: FaceModels, notes: list[str] | None = None
) -> np.ndarray | str:
    """The embedding of a reference photo's single face, or the reason it cannot be used.
    ``notes``: told when other faces in the photo were left aside (the portrait was clear)."""
    try:
        image = load_image(path, settings)
    except ImageRejected as exc:
        return exc.reason
    faces = sorted(face_models.detector.detect(image, settings), key=lambda f: f.box.w, reverse=True)
    if not faces:
        return "no face found"
    if len(faces) > 1:
        ratio = faces[1].box.w / faces[0].box.w
        b, (w, h) = faces[0].box, image.size
        centred = max(abs(b.x + b.w / 2 - w / 2) / w, abs(b.y + b.h / 2 - h / 2) / h) <= PORTRAIT_CENTRE
        if ratio >= DOMINANT_FACE_RATIO and not (centred and ratio < PORTRAIT_RATIO):
            return (f"{len(faces)} faces found and none is clearly the portrait (centred, and larger than the others); "
                    "a reference photo must show the student")  # fmt: skip
        if notes is not None:
            notes.append(f"the centred portrait face was used; {len(faces) - 1} smaller face(s) in the photo left aside")
    faces = faces[:1]  # the student; any others are small faces far behind (a poster, a passer-by)
    need = settings.min_face_px * REFERENCE_MIN_FACE_FACTOR
    wide = faces[0].box.w / image.scale
    if wide < need:
        return f"face too small for a reference ({wide:.0f} px wide; at least {need} px needed)"
    embedded = embed_faces(image, faces, settings, face_models)
    if embedded.unjudged:
        return next(iter(embedded.unjudged.values())).text
    return embedded.vectors[0]


def enroll_folder(
    root: Path,
    index: FaceIndex,
    settings: Settings,
    face_models: FaceModels,
    progress: Callable[[str], None] | None = None,
    optouts: set[str] | None = None,
) -> EnrollReport:
    """Bring ``index`` up to date with the photos under ``root`` (changes are not saved here).

    ``optouts``: the imported opt-out list, when there is one. It is then authoritative: folders of
    students not on it are skipped (and any templates of theirs deleted), and students on it with
    no folder are listed as not protected."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise EnrollmentError(
            f"enrollment folder {root} does not exist; create it with one sub-folder per student "
            "(named by student id) holding that student's reference photos"
        )
    report = EnrollReport()
    seen: dict[tuple[str, str], str] = {}  # (student id, photo) -> sha256 now on disk
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        student_id = folder.name
        if not is_valid_student_id(student_id):
            report.skipped_folders.append((str(folder), "folder name is not a valid student id (letters, digits, . _ -)"))
            continue
        if optouts is not None and student_id not in optouts:
            # Never silently: a family may have opted out mid-year and somebody put the photos here.
            report.skipped_folders.append(
                (
                    str(folder),
                    f"not on the opt-out list, so NOT protected: if the family opted out, run "
                    f"optout-guard add {student_id} PHOTO…; if not, delete the folder",
                )
            )
            report.uncovered.append(student_id)
            continue
        index.add_student(student_id)
        for photo in _photos(folder):
            key = str(photo)
            if progress:
                progress(key)
            try:
                digest = sha256_file(photo)
            except OSError as exc:
                report.rejected.append((student_id, key, f"cannot read the file ({exc.strerror or exc})"))
                continue
            seen[(student_id, key)] = digest
            if index.has_template(student_id, digest):
                report.unchanged += 1
                continue
            earlier = index.rejection_for(student_id, digest)
            if earlier is not None:
                report.unchanged += 1
                report.rejected.append((student_id, key, earlier.reason))
                continue
            said: list[str] = []
            result = reference_embedding(photo, settings, face_models, said)
            if isinstance(result, str):
                index.reject(Rejection(student_id, key, digest, result))
                report.rejected.append((student_id, key, result))
            else:
                index.add(Template(student_id, key, digest, now_iso(), photo_date(photo)), result)
                report.added.append((student_id, key))
                report.notes += [(student_id, key, n) for n in said]

    # Templates whose photo was deleted (or changed) under this root are dropped.
    keep = []
    for t in index.templates:
        under_root = Path(t.photo).is_relative_to(root)
        gone = under_root and seen.get((t.student_id, t.photo)) != t.sha256
        keep.append(not gone)
        if gone:
            report.removed.append((t.student_id, t.photo))
    index.drop_templates(keep)
    index.rejections = [
        r for r in index.rejections if not Path(r.photo).is_relative_to(root) or seen.get((r.student_id, r.photo)) == r.sha256
    ]
    if optouts is not None:
        for student_id in sorted(index.students - optouts):
            removed = [t.photo for t in index.templates if t.student_id == student_id]
            index.remove_student(student_id)
            report.removed.extend((student_id, p) for p in removed)
            report.removed_by_list.append(student_id)
        for student_id in sorted(optouts):
            index.add_student(student_id)
    report.students = len(index.students)
    report.not_protected = index.not_protected()
    return report


@dataclass
class CohortReport:
    """What a cohort calibration did (no face data: counts and the numbers kept)."""

    photos: int = 0  # cohort photos offered
    used: int = 0  # faces embedded (one per usable photo)
    calibration: CohortCalibration | None = None
    skipped_because: str = ""  # why nothing was calibrated ("" when it was)
    refused: int = 0  # faces that looked like enrolled students when the cohort was refused for them
    bounds: tuple[float, float] = (0.0, 0.0)  # the settings' block and review distances it narrows from
    pairs: int = 0  # same-child pairs a year apart that were usable (sync --previous-photos)

    def as_json(self) -> dict[str, Any]:
        c = self.calibration
        return {
            "photos": self.photos,
            "faces_used": self.used,
            "calibrated": c is not None,
            "skipped_because": self.skipped_because,
            "refused_for_faces_like_students": self.refused,
            "faces_left_out_as_too_close": c.dropped if c else 0,
            "held_share_before": round(c.held_share, 4) if c else None,
            "thresholds": {g: {"block": b, "review": r} for g, (b, r) in c.thresholds.items()} if c else None,
            "students_with_a_hub_penalty": sum(1 for v in c.penalties.values() if v > 0) if c else 0,
            # What the thresholds in use cost (issue 26 §2): children caught and blocked a year after
            # one reference photo, on the district's own pairs or children_dev's curve, and held.
            "same_child_pairs_a_year_apart": self.pairs,
            "estimate": {"source": c.catch_source, "caught": round(c.catch, 4), "blocked": round(c.blocked, 4),
                         "other_children_held": round(c.held_after, 4), "review_floor": round(c.review_floor, 4),
                         "in_words": c.in_plain_words()} if c else None,
        }


def calibrate_with_cohort(
    photos: list[Path],
    index: FaceIndex,
    settings: Settings,
    face_models: FaceModels,
    source: str,
    progress: Callable[[str], None] | None = None,
    pairs: list[tuple[Path, Path]] | None = None,
) -> CohortReport:
    """Embed a cohort of children who are *not* opted out (in memory), reduce it to hub penalties
    and thresholds per reference count (``cohort.calibrate_cohort``), store those numbers in
    ``index`` and drop the embeddings. Nothing of the cohort is written anywhere: no embedding, no
    crop, no file name (only their count and a digest of their hashes, to tell cohorts apart).
    ``pairs``: photos of the same children (not on the list) a year apart, from last year's delivery
    and this year's: embedded the same way and kept only as how many of them the thresholds catch."""
    report = CohortReport(photos=len(photos), bounds=(settings.block_distance, settings.review_distance))
    if not settings.cohort:
        report.skipped_because = "the cohort setting is off"
        return report
    if len(photos) > MAX_COHORT:  # enough for stable numbers; sampled the same way every time
        photos = random.Random(0).sample(sorted(photos), MAX_COHORT)
    vectors: list[np.ndarray] = []
    hashes: list[str] = []
    references = {t.sha256 for t in index.templates}
    for photo in photos:
        if progress:
            progress(str(photo))
        try:
            digest = sha256_file(photo)
        except OSError:
            continue
        if digest in references:  # an enrolled student's own reference photo is not "another child"
            continue
        found = reference_embedding(photo, settings, face_models)
        if not isinstance(found, str):
            vectors.append(found)
            hashes.append(digest)
    report.used = len(vectors)
    if len(vectors) < MIN_COHORT:
        report.skipped_because = f"only {len(vectors)} usable cohort faces (at least {MIN_COHORT} needed)"
        return report
    if len(index.templates) == 0:
        report.skipped_because = "nobody is enrolled yet"
        return report
    counts: dict[str, int] = {}
    for t in index.templates:
        counts[t.student_id] = counts.get(t.student_id, 0) + 1
    cohort = np.stack(vectors)
    distances = _pair_distances(pairs or [], settings, face_models, references, progress)
    report.pairs = len(distances)
    try:
        calibration = calibrate_cohort(
            index.embeddings,
            [t.student_id for t in index.templates],
            counts,
            cohort,
            block_bound=settings.block_distance,
            review_bound=settings.review_distance,
            review_share=settings.cohort_review_share,
            digest=cohort_digest(hashes),
            made_at=utc_now(),
            source=source,
            pairs=np.asarray(distances) if distances else None,
            max_catch_loss=settings.max_catch_loss,
        )
    finally:
        cohort[:] = 0  # the cohort's embeddings end here
        vectors.clear()
    if too_many_suspects(calibration.dropped, calibration.faces):
        # Photos of enrolled students among "children not on the list" would narrow their own review
        # distance (review turns into allow): the whole cohort is refused, the thresholds stay.
        report.refused = calibration.dropped
        report.skipped_because = (
            f"{calibration.dropped} of its {calibration.faces} faces are within the block distance of an enrolled "
            "student: they may be opted-out students' own photos under other ids (check the delivery's ids "
            "against the list: leading zeros lost in Excel?) or a mix-up of folders. The cohort was refused"
        )
        return report
    report.calibration = index.cohort = calibration
    return report


def _pair_distances(
    pairs: list[tuple[Path, Path]],
    settings: Settings,
    face_models: FaceModels,
    references: set[str],
    progress: Callable[[str], None] | None,
) -> list[float]:
    """Distances between two photos of each child a year apart (the embeddings are dropped at once)."""
    distances: list[float] = []
    for before, after in pairs:
        if progress:
            progress(str(after))
        try:
            if sha256_file(before) in references or sha256_file(after) in references:
                continue  # an enrolled student's reference photo
        except OSError:
            continue
        first, second = reference_embedding(before, settings, face_models), reference_embedding(after, settings, face_models)
        if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
            distances.append(float(np.linalg.norm(first - second)))
    return distances


def add_reference_face(
    settings: Settings, face_models: FaceModels, path: Path, face: Face, student_id: str, tag: str
) -> str:
    """A face found in a checked photo (``path``), confirmed by a reviewer as ``student_id``, added
    as a dated reference photo of that student: a private crop of the face is kept in
    ``enrollments/<id>/`` (so every later ``enroll --rebuild`` and ``sync`` keeps it like any other
    reference photo) and its template added to the index. Validated before anything is written:
    the same size rule as enrolled photos and the quality gate; ``Refused`` (a ValueError) says why not.
    Returns the crop's sha256 (the template's key)."""
    from optout_guard.annotate import face_crop, jpeg_bytes
    from optout_guard.embedding import embed_faces
    from optout_guard.index import edit_index

    need = settings.min_face_px * REFERENCE_MIN_FACE_FACTOR
    if face.box.w < need:
        raise Refused(f"this face is {face.box.w:.0f} px wide; a reference needs at least {need} px")
    image = load_image(path, settings)
    embedded = embed_faces(image, [face], settings, face_models)
    if not len(embedded.vectors):
        reason = next(iter(embedded.unjudged.values()), None)
        raise Refused(reason.text if reason else "the face cannot be used as a reference")
    taken = photo_date(path)
    target = private_dir(settings.enrollments / student_id) / f"{taken}_{tag}.jpg"
    atomic_write(target, jpeg_bytes(face_crop(image.pages[face.page], face.box, image.scale, 0.5), quality=95))
    key = sha256_file(target)
    with edit_index(settings) as index:  # re-read under the lock: an enroll may have saved meanwhile
        if not index.has_template(student_id, key):
            index.add(Template(student_id, str(target.resolve()), key, now_iso(), taken), embedded.vectors[0])
    return key


def remove_reference_face(settings: Settings, student_id: str, key: str) -> bool:
    """Undo :func:`add_reference_face`: the template goes from the index and the crop it kept in
    ``enrollments/`` is deleted (never a file outside it). True if there was one."""
    from optout_guard.index import edit_index

    with edit_index(settings) as index:
        # ``key``: the template's sha256, or the tag of a reference whose key was never recorded (the
        # desk was stopped between the answer and the reference): its file name carries the tag.
        keep = [not (t.student_id == student_id and (t.sha256 == key or Path(t.photo).stem.endswith(f"_{key}")))
                for t in index.templates]  # fmt: skip
        for template, kept in zip(index.templates, keep, strict=True):
            if not kept and Path(template.photo).is_relative_to(settings.enrollments.resolve()):
                Path(template.photo).unlink(missing_ok=True)
        index.drop_templates(keep)
    return not all(keep)
