"""The roster of protected students: who is enrolled, how well each is protected (``people``), and
taking one student out cleanly (``remove``). Numbers and names only: no template leaves the index."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optout_guard.config import Settings
from optout_guard.errors import OptoutGuardError


@dataclass
class Roster:
    """What ``optout-guard people`` shows: one row per enrolled student (the JSON's ``students``)."""

    rows: list[dict[str, Any]]
    consenting: dict[str, Any]  # the Include list: students, templates, whether it is in use
    consent_dates: list[str] = field(default_factory=list)
    estimate: dict[str, Any] | None = None  # what the thresholds in use catch and hold (a cohort's measure)
    cohort: Any = None  # the cohort in use (cohort.CohortCalibration: numbers only), if any

    @property
    def weak(self) -> list[dict[str, Any]]:
        """Students with weak protection, each with the one action that helps most."""
        return [r for r in self.rows if r["advice"]]

    def as_json(self) -> dict[str, Any]:
        from optout_guard.sync import STALE_DAYS

        doc: dict[str, Any] = {"schema_version": 2, "stale_after_days": STALE_DAYS, "students": self.rows,
                               "consenting": self.consenting}  # fmt: skip
        if self.estimate is not None:
            doc["estimate"] = self.estimate
        return doc


def roster(settings: Settings) -> Roster:
    """Every enrolled student: reference photos (and those refused, with why), the newest photo's
    date, protected or stale, where their protection comes from, their cohort penalty and thresholds."""
    from optout_guard.index import open_index
    from optout_guard.optout_list import load_list
    from optout_guard.sync import gallery_status, protection_source

    index = open_index(settings)
    optouts = load_list(settings.workspace)
    rows = []
    for status in gallery_status(index, index.student_ids()):
        listed = optouts.students.get(status.student_id) if optouts is not None else None
        penalty = index.penalty_for(status.student_id, settings)
        limits = index.limits_for(status.student_id, settings)
        refused = [r for r in index.rejections if r.student_id == status.student_id]
        rows.append({
            "student_id": status.student_id,
            "school": listed.school if listed else None,
            "grade": listed.grade if listed else None,
            "section": listed.section if listed else None,
            "reference_photos": status.reference_photos,
            "rejected_photos": len(refused),
            # Which photos the quality gate refused, and why (a person can then give a better one).
            "rejected": [{"photo": Path(r.photo).name, "reason": r.reason} for r in refused],
            "newest_photo": status.newest_photo or None,
            "protected": status.protected,
            "stale": status.stale,
            "advice": status.advice,  # the one thing that helps most when protection is weak
            "protection_from": protection_source(status.student_id, optouts),
            # None: no cohort covered this student (enrolled after it, or none): penalty 0
            "hub_penalty": None if penalty is None else round(penalty, 4),
            "thresholds": {"block": limits.block, "review": limits.review, "source": limits.source},
        })  # fmt: skip
    consenting = {"students": len(index.consent), "templates": len(index.consenting_templates),
                  "in_use": settings.consent_matching}  # fmt: skip
    c = index.cohort if settings.cohort else None  # off: what an index holds from one is ignored
    estimate = None
    if c is not None and c.catch_source:  # what the thresholds in use catch, and hold (issue 26 §2)
        estimate = {"source": c.catch_source, "caught": c.catch, "blocked": c.blocked,
                    "other_children_held": c.held_after, "in_words": c.in_plain_words()}  # fmt: skip
    dates = sorted(r.consent_date for r in index.consent.values() if r.consent_date)
    return Roster(rows, consenting, dates, estimate, cohort=c)


@dataclass(frozen=True)
class Removal:
    student_id: str
    known: bool  # was in the index
    templates_deleted: int
    photos_deleted: bool
    photos_left: Path | None  # their reference photos still on disk (the next enroll would add them again)


def remove_student(settings: Settings, student_id: str, delete_photos: bool = False) -> Removal:
    """Take a student out of the index, the saved opt-out list and the pending additions (and, if
    asked, delete their reference photos), then log it. Order matters for a kill at any point:
    photos first, then the list, then the index, then the log — no template is left that an enroll
    would bring back from photos still on disk, and the log never claims what did not happen."""
    from optout_guard.activity_log import ActivityLog
    from optout_guard.index import edit_index
    from optout_guard.optout_list import drop_pending, is_valid_student_id, load_list, save_list

    if not is_valid_student_id(student_id):
        raise OptoutGuardError(f"{student_id!r} is not a valid student id")
    folder = settings.enrollments / student_id
    photos_deleted = False
    with edit_index(settings) as index:
        known = student_id in index.students
        if delete_photos and folder.is_dir():
            shutil.rmtree(folder)
            photos_deleted = True
        optouts = load_list(settings.workspace)
        if optouts is not None and optouts.students.pop(student_id, None) is not None:
            optouts.copied.pop(student_id, None)
            save_list(optouts, settings.workspace)  # the list before the index, as in a sync
        drop_pending(student_id, settings.workspace)  # an `add` before any list: forgotten too
        removed = index.remove_student(student_id)
    ActivityLog(settings).record("remove", student_id=student_id, templates_deleted=removed, photos_deleted=photos_deleted)
    return Removal(student_id, known, removed, photos_deleted, folder if folder.is_dir() else None)
