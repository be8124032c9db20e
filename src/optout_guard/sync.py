"""The yearly sync: opt-out list + picture-day photos -> enrollments/ -> face index.

``plan_sync`` reads and checks everything (the list, every delivery, the person's confirmations)
and changes nothing; ``apply_sync`` then applies the plan: copies the matched photos into
``enrollments/<student_id>/<date>_<name>``, embeds them (the enrollment quality gate), deletes the
templates *and* reference photos of students no longer on the list, saves the index and the list.
A dry run is the plan alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optout_guard.config import Settings
from optout_guard.consent import ConsentPlan, ConsentReport, apply_consent, plan_consent
from optout_guard.errors import OptoutGuardError
from optout_guard.fsutil import atomic_write, private_dir, sha256_file, utc_now
from optout_guard.index import FaceIndex
from optout_guard.optout_list import PENDING_FILE, OptOutList, Student, load_list, load_pending, save_list, save_pending
from optout_guard.picture_day import DeliveryPhoto, Held, match_delivery, same_children, school_year, write_held

if TYPE_CHECKING:  # enrolling needs OpenCV and dlib: `people` reads this module's status without them
    from optout_guard.enroll import CohortReport, EnrollReport
    from optout_guard.types import FaceModels

STALE_DAYS = 365  # children change fast: a reference photo older than a year is flagged
HELD_FILE = "photos-to-confirm.csv"
# A sync may remove at most this many students, and this share of the saved list, without
# --confirm-removals N (the exact number).
MAX_SILENT_REMOVALS = 5
MAX_SILENT_SHARE = 0.10


@dataclass(frozen=True)
class NewPhoto:
    student_id: str
    source: Path
    name: str  # file name in enrollments/<student_id>/


@dataclass
class SyncPlan:
    optouts: OptOutList
    added_students: list[str]
    removed_students: list[str]
    new_photos: list[NewPhoto]
    already_enrolled_photos: int
    held: list[Held]
    missing_files: list[DeliveryPhoto]
    other_students: int
    no_new_photo: list[str]  # students on the list with no photo in the deliveries given
    kept_local: list[str] = field(default_factory=list)  # added with `optout-guard add`, not in the export: kept
    previous: OptOutList | None = None  # the list saved before this sync
    # Photos of students who did not opt out (the deliveries' other photos): the cohort, embedded
    # in memory at apply time and dropped (docs/accuracy.md "The cohort"); never copied.
    cohort_photos: list[Path] = field(default_factory=list)
    picture_day: str | None = None
    consent: ConsentPlan | None = None  # consent matching on: what happens to the Include list
    # Photos of the same children (not on the list) in last year's delivery and this year's: embedded
    # in memory for the cohort's catch estimate and floor, then dropped; never copied.
    previous_pairs: list[tuple[Path, Path]] = field(default_factory=list)

    @property
    def similar_schools(self) -> list[list[str]]:
        """Spellings of one school in the list ("Lincoln Elementary School", "Lincoln Elementary"):
        scopes treat them as one school; the district should fix the export all the same."""
        return similar_school_names(self.optouts)

    @property
    def removals_need_confirmation(self) -> bool:
        """More than a small share of the list would go at once: a partial or filtered export (one
        school, one grade, a truncated file) looks exactly like this, so a person must confirm."""
        before = len(self.previous.students) if self.previous is not None else len(self.removed_students)
        return len(self.removed_students) > MAX_SILENT_REMOVALS or len(self.removed_students) > MAX_SILENT_SHARE * before


@dataclass
class StudentStatus:
    student_id: str
    reference_photos: int
    newest_photo: str  # YYYY-MM-DD, "" if none/unknown
    protected: bool
    stale: bool

    @property
    def advice(self) -> str:
        """The one thing that helps most, for a student whose protection is weak ("" when none).
        Children change fast: one picture-day photo misses them a year or two later (an independent
        walk: 3 of 13 later appearances allowed at 0.51-0.56; a second year's photo caught all three)."""
        if not self.protected:
            return "no usable reference photo: add one (optout-guard add) or sync a picture-day delivery"
        if self.stale:
            return "newest photo over a year old: sync this year's picture-day delivery, or optout-guard add"
        if self.reference_photos == 1:
            return ("one reference photo only: back-fill last year's picture-day delivery (sync --photos LAST_YEAR "
                    "--picture-day DATE) or add a second photo (optout-guard add)")
        return ""


@dataclass
class SyncReport:
    plan: SyncPlan
    applied: bool
    enroll: EnrollReport | None = None
    status: list[StudentStatus] = field(default_factory=list)
    held_file: str | None = None
    cohort: CohortReport | None = None
    consent: ConsentReport | None = None

    @property
    def not_protected(self) -> list[str]:
        return [s.student_id for s in self.status if not s.protected]

    @property
    def stale(self) -> list[str]:
        return [s.student_id for s in self.status if s.protected and s.stale]

    @property
    def one_photo(self) -> list[str]:
        return [s.student_id for s in self.status if s.protected and not s.stale and s.reference_photos == 1]

    @property
    def new_photos_rejected(self) -> list[tuple[str, str, str]]:
        """(student, file, reason) of this sync's new photos the quality gate refused."""
        if self.enroll is None:
            return []
        new = {(n.student_id, n.name) for n in self.plan.new_photos}
        return [(sid, ph, why) for sid, ph, why in self.enroll.rejected if (sid, Path(ph).name) in new]

    @property
    def no_usable_new_photo(self) -> list[str]:
        """Students given new photos this sync of which none was usable (exit 3: a person must act)."""
        rejected = {(sid, Path(ph).name) for sid, ph, _ in self.new_photos_rejected}
        given: dict[str, list[str]] = {}
        for n in self.plan.new_photos:
            given.setdefault(n.student_id, []).append(n.name)
        return sorted(sid for sid, names in given.items() if all((sid, name) in rejected for name in names))

    def as_json(self) -> dict[str, Any]:
        p = self.plan
        doc: dict[str, Any] = {
            "schema_version": 1,
            "applied": self.applied,
            "students_on_list": len(p.optouts.students),
            "not_protected": self.not_protected,
            "stale": self.stale,
            "students_added": p.added_students,
            "students_removed": p.removed_students,
            "photos_to_add" if not self.applied else "photos_copied": [
                {"student_id": n.student_id, "photo": str(n.source), "as": n.name} for n in p.new_photos
            ],
            "photos_already_enrolled": p.already_enrolled_photos,
            "held_for_confirmation": [
                {"photo": str(h.photo.path), "could_be": list(h.candidates), "reason": h.reason} for h in p.held
            ],
            "held_file": self.held_file,
            "listed_but_missing": [str(m.path) for m in p.missing_files],
            "photos_of_other_students_ignored": p.other_students,
            "students_without_a_new_photo": p.no_new_photo,
            "school_names_alike": p.similar_schools,
            "school_ids_without_a_name": numeric_schools(p.optouts),
            "students_whose_school_or_grade_cannot_be_read": unreadable_school_or_grade(p.optouts),
        }
        if self.enroll is not None:
            doc["photos_rejected"] = [{"student_id": s, "photo": ph, "reason": r} for s, ph, r in self.enroll.rejected]
            doc["templates_deleted"] = len(self.enroll.removed)
        doc["students"] = [vars(s) | {"advice": s.advice} for s in self.status]
        doc["one_reference_photo"] = self.one_photo
        doc["cohort_photos"] = len(p.cohort_photos)
        doc["same_children_in_last_years_delivery"] = len(p.previous_pairs)
        if self.enroll is not None:
            doc["photos_usable"] = len(p.new_photos) - len(self.new_photos_rejected)
            doc["students_whose_new_photos_were_all_rejected"] = self.no_usable_new_photo
        if self.cohort is not None:
            doc["cohort"] = self.cohort.as_json()
        if self.consent is not None:
            doc["consenting_students"] = self.consent.as_json()
        elif p.consent is not None:  # a dry run: what would change
            doc["consenting_students"] = ConsentReport(p.consent).as_json() | {"photos_to_embed": len(p.consent.photos)}
        return doc


def _enrolled_students(index: FaceIndex, settings: Settings) -> set[str]:
    root = settings.enrollments
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()
    return set(index.students) | folders


def plan_sync(
    optouts: OptOutList,
    deliveries: list[Path],
    index: FaceIndex,
    settings: Settings,
    confirmed: dict[str, str] | None = None,
    picture_day: str | None = None,
    previous_delivery: Path | None = None,
) -> SyncPlan:
    """What a sync would do. Reads everything, changes nothing; raises if any input is unusable."""
    before = _enrolled_students(index, settings)
    new_photos: list[NewPhoto] = []
    held: list[Held] = []
    missing: list[DeliveryPhoto] = []
    other = already = 0
    with_photo: set[str] = set()
    cohort: list[Path] = []
    taken: set[Path] = set()  # photos of (maybe) opted-out students: never a consenting student's template
    # An earlier year's delivery (back-filling) says the grades students were in then.
    years_before = 0
    if picture_day:
        years_before = max(0, school_year(dt.date.today()) - school_year(dt.date.fromisoformat(picture_day)))
    from optout_guard.media.photos import photo_date

    for root in deliveries:
        found = match_delivery(Path(root), optouts, confirmed, years_before)
        cohort += found.others
        if found.problems:
            lines = "; ".join(f"line {n}: {m}" for n, m in found.problems[:20])
            raise OptoutGuardError(f"the picture-day folder {root} was not imported (nothing was changed): {lines}")
        held += found.held
        taken |= {p.path.resolve() for _, p in found.matched} | {h.photo.path.resolve() for h in found.held}
        missing += found.missing_files
        other += found.other_students
        for student_id, photo in found.matched:
            with_photo.add(student_id)
            date = picture_day or photo_date(photo.path)
            name = f"{date}_{photo.path.name}" if date else photo.path.name
            target = settings.enrollments / student_id / name
            if target.exists() and sha256_file(target) == sha256_file(photo.path):
                already += 1
            else:
                new_photos.append(NewPhoto(student_id, photo.path, name))
    previous = load_list(settings.workspace)
    # Students added by hand mid-year stay protected until the SIS export lists them (then the
    # export's entry replaces theirs) or a person removes them.
    kept_local = {}
    if previous is not None:
        kept_local = {sid: s for sid, s in previous.local_additions().items() if sid not in optouts.students}
        optouts.copied = {sid: names for sid, names in previous.copied.items() if sid in optouts.students or sid in kept_local}
    else:  # added with `add` before the first list: they join it as local additions
        kept_local = {s.student_id: s for s in load_pending(settings.workspace) if s.student_id not in optouts.students}
    optouts.students.update(kept_local)
    ids = optouts.ids()
    return SyncPlan(
        optouts=optouts,
        added_students=sorted(ids - before),
        removed_students=sorted(before - ids),
        kept_local=sorted(kept_local),
        previous=previous,
        new_photos=new_photos,
        already_enrolled_photos=already,
        held=held,
        missing_files=missing,
        other_students=other,
        no_new_photo=sorted(ids - with_photo) if deliveries else [],
        cohort_photos=cohort,
        picture_day=picture_day,
        consent=plan_consent(optouts, deliveries, index, taken, years_before) if settings.consent_matching else None,
        previous_pairs=same_children(previous_delivery, deliveries, optouts) if previous_delivery and deliveries else [],
    )


def gallery_status(index: FaceIndex, students: list[str], today: dt.date | None = None) -> list[StudentStatus]:
    today = today or dt.date.today()
    rows = []
    for sid in sorted(students):
        refs = [t for t in index.templates if t.student_id == sid]
        newest = index.newest_reference(sid)
        try:
            stale = (today - dt.date.fromisoformat(newest)).days > STALE_DAYS if newest else bool(refs)
        except ValueError:
            stale = True
        rows.append(StudentStatus(sid, len(refs), newest, bool(refs), stale))
    return rows


def _copy(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: a half-copied reference photo is never enrolled.
    Children's photos are private: 0600 in a 0700 folder."""
    private_dir(target.parent)
    atomic_write(target, Path(source).read_bytes(), prefix=f".{target.name}.")


def apply_sync(
    plan: SyncPlan,
    index: FaceIndex,
    settings: Settings,
    face_models: FaceModels,
    progress: Callable[[str], None] | None = None,
) -> SyncReport:
    """Apply a plan made by :func:`plan_sync` to ``index`` (the caller saves it, under the index lock,
    *after* this returns). The list is saved first: a sync stopped between the two leaves a list that
    is newer than the index, and the next enroll follows that list (saying so), never last year's."""
    from optout_guard.enroll import calibrate_with_cohort, enroll_folder

    for new in plan.new_photos:
        _copy(new.source, settings.enrollments / new.student_id / new.name)
        names = plan.optouts.copied.setdefault(new.student_id, [])
        if new.name not in names:
            names.append(new.name)
    settings.enrollments.mkdir(parents=True, exist_ok=True)
    save_list(plan.optouts, settings.workspace)
    (settings.workspace / PENDING_FILE).unlink(missing_ok=True)  # now on the list (as local additions)
    report = enroll_folder(settings.enrollments, index, settings, face_models, progress, optouts=plan.optouts.ids())
    report.removed_by_list = []  # removals are this sync's own plan, not a surprise
    copied_before = plan.previous.copied if plan.previous is not None else {}
    for student_id in plan.removed_students:  # the photos sync copied go with their templates
        folder = settings.enrollments / student_id
        if not folder.is_dir() or folder.resolve().parent != settings.enrollments.resolve():
            continue
        for name in copied_before.get(student_id, []):
            (folder / name).unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()
        # Photos put there by hand are never deleted by a sync: enroll lists the folder until a person decides.
    held_file = None
    if plan.held:
        held_path = settings.workspace / HELD_FILE
        write_held(plan.held, held_path)
        held_file = str(held_path)
    cohort = None
    if plan.cohort_photos:
        when = f"picture day {plan.picture_day}" if plan.picture_day else "picture day"
        cohort = calibrate_with_cohort(
            plan.cohort_photos, index, settings, face_models, f"{when} ({len(plan.cohort_photos)} photos)", progress,
            pairs=plan.previous_pairs,
        )  # fmt: skip
    consent = apply_consent(plan.consent, index, settings, face_models, progress) if plan.consent is not None else None
    status = gallery_status(index, sorted(plan.optouts.ids()))
    return SyncReport(plan, True, report, status, held_file, cohort, consent)


def addition_problem(settings: Settings, student_id: str, photos: list[Path], face_models: FaceModels) -> str | None:
    """Why adding these photos under ``student_id`` is probably a mistake, or None: an id that is
    another protected student's mistyped (101 beside 0101, s0102 beside 0102), or a photo unlike
    the student's other reference photos (another child's face under their id). Checked before
    anything changes, by `add` and by the desk's "a family opted out today"."""
    import numpy as np

    from optout_guard.enroll import reference_embedding
    from optout_guard.index import open_index
    from optout_guard.optout_list import id_lookalike

    index = open_index(settings) if settings.index_file.exists() else None
    known = set(index.student_ids()) if index is not None else set()
    listed = load_list(settings.workspace)
    known |= listed.ids() if listed is not None else set()
    other = id_lookalike(student_id, known)
    if other is not None:
        return (f"{student_id} looks like the student {other} already protected (the same id but for case, leading "
                "zeros or a letter prefix): use that id")  # fmt: skip
    if index is None or student_id not in index.student_ids():
        return None
    for photo in photos:
        vector = reference_embedding(photo, settings, face_models)
        if isinstance(vector, str):
            continue  # an unusable photo is said by the addition itself
        found = index.search(np.asarray(vector)[None, :], only=frozenset({student_id}))[0]
        if found and found[0].distance > settings.review_distance:
            return (f"{Path(photo).name} does not look like {student_id}'s other reference photos (distance "
                    f"{found[0].distance:.2f}, beyond the review distance {settings.review_distance}): is it the "
                    "right student, and the right photo?")  # fmt: skip
    return None


def add_student(
    student: Student, photos: list[Path], index: FaceIndex, settings: Settings, face_models: FaceModels, user: str
) -> EnrollReport:
    """Protect one student now (an opt-out form handed in mid-year): copy the photos into
    ``enrollments/<id>/`` (dated, private), record the student on the saved opt-out list as a local
    addition (kept by every sync until the SIS export lists them), and enroll. The list is saved
    before the index, as in a sync. The caller holds the index lock and saves the index."""
    from optout_guard.enroll import enroll_folder
    from optout_guard.media.photos import photo_date

    folder = settings.enrollments / student.student_id
    for photo in photos:
        date = photo_date(photo)
        name = f"{date}_{Path(photo).name}" if date and not Path(photo).name.startswith(date) else Path(photo).name
        _copy(Path(photo), folder / name)
    optouts = load_list(settings.workspace)
    if optouts is not None:
        if student.student_id not in optouts.students:  # already listed by the SIS: theirs stays
            optouts.students[student.student_id] = dataclasses.replace(
                student, source="local", added_at=utc_now(), added_by=user
            )
        save_list(optouts, settings.workspace)
    else:  # no list imported yet: kept aside, and the first sync takes the student in as a local addition
        save_pending(dataclasses.replace(student, source="local", added_at=utc_now(), added_by=user), settings.workspace)
    known = optouts.ids() if optouts is not None else None
    return enroll_folder(settings.enrollments, index, settings, face_models, optouts=known)


@dataclass(frozen=True)
class Addition:
    """What protecting one student now did (``optout-guard add``, the desk's "a family opted out today")."""

    student_id: str
    templates: int  # reference photos in use for them now (0: NOT protected)
    rejected: list[tuple[str, str]]  # (photo, why it could not be used)
    list_imported: bool  # False: no list yet, the first sync takes them in


def protect_student(
    settings: Settings, student: Student, photos: list[Path], face_models: FaceModels, user: str, force: bool = False,
    reviewer: str | None = None, lock: Any = None,
) -> Addition:
    """Protect one student now, the one way both the command line and the desk do it: a valid id, the
    checks that catch a wrong id or photo (refused unless ``force``), the photos enrolled under the
    index lock and the enrollment marker (and ``lock``, the desk's own), the addition logged."""
    import contextlib

    from optout_guard.activity_log import ActivityLog
    from optout_guard.errors import NeedsConfirmation
    from optout_guard.index import edit_index, enrollment_in_progress
    from optout_guard.optout_list import is_valid_student_id

    sid = student.student_id
    if not is_valid_student_id(sid):
        raise OptoutGuardError(f"{sid!r} is not a valid student id (letters, digits, . _ -)")
    if not photos:
        raise OptoutGuardError("add at least one photo of the student")
    missing = [str(p) for p in photos if not Path(p).is_file()]
    if missing:
        raise OptoutGuardError(f"no such photo: {', '.join(missing)}")
    if not force and (problem := addition_problem(settings, sid, photos, face_models)):
        raise NeedsConfirmation(f"{problem}; nothing was changed")
    with lock or contextlib.nullcontext(), enrollment_in_progress(settings), edit_index(settings) as index:
        report = add_student(student, photos, index, settings, face_models, user)
        templates = sum(1 for t in index.templates if t.student_id == sid)
    extra = {"reviewer": reviewer} if reviewer else {}
    ActivityLog(settings).record("add", student_id=sid, photos=len(photos), templates=templates, **extra)
    rejected = [(photo, why) for s_id, photo, why in report.rejected if s_id == sid]
    return Addition(sid, templates, rejected, load_list(settings.workspace) is not None)


PREVIOUS_DELIVERY = "previous-delivery.txt"


def previous_delivery(settings: Settings, given: Path | None, remember: bool) -> Path | None:
    """Last year's picture-day folder: as given (and remembered: a path, nothing copied), else the
    one remembered from an earlier sync while it is still there."""
    from optout_guard.errors import ConfigError

    note = settings.state_dir / PREVIOUS_DELIVERY
    if given is not None:
        if not given.is_dir():
            raise ConfigError(f"--previous-photos {given} is not a folder")
        if remember:
            private_dir(settings.state_dir)
            atomic_write(note, str(given.resolve()) + "\n")
        return given
    try:
        remembered = Path(note.read_text(encoding="utf-8").strip())
    except OSError:
        return None
    return remembered if remembered.is_dir() else None


def consent_column_for(settings: Settings, given: str | None) -> str | None:
    """The export's consent column (given, or ``[sis] consent_column``); refused while consent
    matching is off, so that nothing about consenting students is read or kept."""
    from optout_guard.errors import ConfigError
    from optout_guard.optout_list import sis_map

    column = given or sis_map(settings.workspace).consent_column or None
    if column and not settings.consent_matching:
        raise ConfigError(
            "a consent column was given but consent matching is off, so nothing about consenting students is read or "
            "kept. Turn it on in config.toml (consent_matching = true; read docs/privacy.md first), or leave out "
            "--consent-column / [sis] consent_column."
        )
    return column


def run_sync(
    settings: Settings,
    optouts: OptOutList,
    deliveries: list[Path],
    confirmed: dict[str, str] | None = None,
    picture_day: str | None = None,
    previous: Path | None = None,
    dry_run: bool = False,
    confirm_removals: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SyncReport:
    """``optout-guard sync``: plan, and unless ``dry_run``, apply under the index lock and the
    enrollment marker, then log. Removing students needs ``confirm_removals`` equal to their number
    when the plan says so (a partial or filtered export looks exactly like that): NeedsConfirmation."""
    from optout_guard import jobs
    from optout_guard.activity_log import ActivityLog
    from optout_guard.errors import NeedsConfirmation
    from optout_guard.face_models import get_face_models
    from optout_guard.index import edit_index, enrollment_in_progress, open_index

    index = open_index(settings, missing_ok=True)
    plan = plan_sync(optouts, deliveries, index, settings, confirmed, picture_day, previous)
    if dry_run:
        return dry_run_report(plan, index)
    if plan.removals_need_confirmation and confirm_removals != len(plan.removed_students):
        n = len(plan.removed_students)
        raise NeedsConfirmation(
            f"This export would remove {n} students from the opt-out list (templates deleted, their photos no longer "
            f"blocked): {', '.join(plan.removed_students)}. Nothing was changed. An export of one school or grade, or a "
            f"cut-off file, looks like this. If these families really withdrew their opt-out, run the same command "
            f"with --confirm-removals {n}."
        )
    with jobs.track(settings, "sync", "the opt-out list") as job:  # counts only, for the desk's status page
        with enrollment_in_progress(settings), edit_index(settings) as locked:
            plan = plan_sync(optouts, deliveries, locked, settings, confirmed, picture_day, previous)  # under the lock
            report = apply_sync(plan, locked, settings, get_face_models(), progress=progress)
        job.finish(True, {"students_on_list": len(optouts.students), "added": len(plan.added_students),
                          "removed": len(plan.removed_students), "photos_copied": len(plan.new_photos),
                          "held": len(plan.held), "not_protected": len(report.not_protected)})  # fmt: skip
    log = ActivityLog(settings)
    log.record("sync", students_on_list=len(optouts.students), students_added=len(plan.added_students),
               students_removed=plan.removed_students, export_sha256=optouts.export_sha256,
               photos_copied=len(plan.new_photos), held=len(plan.held), not_protected=report.not_protected)  # fmt: skip
    if report.consent is not None and (report.consent.plan.new or report.consent.plan.removed):
        c = report.consent
        log.record("consent sync", recorded=c.plan.new, deleted=c.plan.removed, templates_deleted=c.templates_deleted,
                   templates_added=c.templates_added, export_sha256=optouts.export_sha256)  # fmt: skip
    return report


def protection_source(student_id: str, optouts: OptOutList | None) -> str:
    """Where a student's protection comes from, for ``people``."""
    if optouts is None:
        return "enrollments folder (no opt-out list imported)"
    student = optouts.students.get(student_id)
    if student is None:
        return "not on the opt-out list"
    if student.source == "local":
        return f"added locally {student.added_at[:10]} by {student.added_by}".strip()
    return "opt-out list (SIS export)"


def similar_school_names(optouts: OptOutList) -> list[list[str]]:
    from optout_guard.optout_list import school_key

    spellings: dict[str, set[str]] = {}
    for student in optouts.students.values():
        if student.school:
            spellings.setdefault(school_key(student.school), set()).add(student.school)
    return [sorted(names) for names in spellings.values() if len(names) > 1]


def numeric_schools(optouts: OptOutList) -> list[str]:
    """School "names" that are numbers (PowerSchool's SchoolID): scopes and school sub-folders need
    names, so a [schools] map in config.toml should say which is which."""
    return sorted({s.school for s in optouts.students.values() if s.school.strip().isdigit()})


def unreadable_school_or_grade(optouts: OptOutList) -> list[str]:
    """Students without a school, or whose grade is not a grade: they are in every scope (never
    left out), listed so that the export can be fixed."""
    from optout_guard.optout_list import normalise_grade

    def readable(grade: str) -> bool:
        g = normalise_grade(grade)
        return g in ("K", "PK") or g.isdigit()

    return sorted(s.student_id for s in optouts.students.values() if not s.school or (s.grade and not readable(s.grade)))


def dry_run_report(plan: SyncPlan, index: FaceIndex) -> SyncReport:
    """The plan as a report; the status is the gallery as it is now, before the sync."""
    return SyncReport(plan, False, None, gallery_status(index, sorted(plan.optouts.ids())))
