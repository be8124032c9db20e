"""Students whose families consented to recognition (the *Include* list), and the one rule that uses them.

Off by default (setting ``consent_matching``). Where a family said yes in writing, the district may
keep a template of their child's face, only to clear faces recognised as that child: on children,
17-21% of other children's faces resemble some opted-out child closely enough to be held for a
person, and a consenting child recognised as themself need not be (docs/accuracy.md "Consenting
students"). The rule (:func:`clear_consenting`) only ever turns a *review* into *clear*:

- the face's nearest consenting student is within the block distance, and
- every opted-out student searched is farther by at least ``consent_margin`` (raw distances, no
  hub penalty, so a penalty never helps a clearing), and
- the face was *review* because it resembles an opted-out student (look-alike, siblings,
  contested): a face that blocks alone stays blocked; a face that could not be judged (too small,
  blurred, cut by the edge) has no embedding to recognise and stays review.

Consenting templates never take part in the opted-out search: two children's templates never make a
block more likely for a third. What is stored (docs/privacy.md "Consenting students"): per student,
where the consent came from and its date; per template, the delivery photo's path and sha256 (never
the photo). All of it lives in the index file (encrypted with it, 0600, model-stamped) and is
deleted when consent is withdrawn, the student leaves the export, joins the opt-out list, or the
feature is turned off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optout_guard.optout_list import ConsentRow, OptOutList
from optout_guard.types import ConsentRecord, Decision, FaceMatch, ReasonCode, Recognised

if TYPE_CHECKING:  # the index imports this module; models load only when photos are embedded
    from optout_guard.config import Settings
    from optout_guard.index import FaceIndex
    from optout_guard.types import FaceModels

# Review reasons a consenting match may clear: the face resembles an opted-out student, nothing else.
CLEARABLE = frozenset({ReasonCode.LOOKALIKE, ReasonCode.SIBLINGS, ReasonCode.CONTESTED})
SOURCES = ("sis", "by hand")


def clear_consenting(match: FaceMatch, recognised: Recognised | None, block: float, margin: float) -> FaceMatch:
    """The match, cleared as "recognised as consenting student X" when the rule above allows it;
    else unchanged."""
    if recognised is None or match.decision is not Decision.REVIEW or match.code not in CLEARABLE:
        return match
    if recognised.distance > block or recognised.nearest_opted_out < recognised.distance + margin:
        return match
    reason = (
        f"recognised as consenting student {recognised.student_id} (distance {recognised.distance:.3f}; "
        f"nearest opted-out student at {recognised.nearest_opted_out:.3f})"
    )
    return dataclasses.replace(
        match, decision=Decision.CLEAR, reason=reason, code=ReasonCode.CONSENTING, consenting=recognised.student_id
    )


# ---- the yearly sync: consent from the SIS export, templates from the picture-day deliveries ----
@dataclass
class ConsentPlan:
    """What a sync does to the Include list (consent matching on). Withdrawals are never held back:
    deleting a consenting student's template costs only review work, never a family's privacy."""

    column_read: bool  # the export's consent column was read this sync
    new: list[str] = field(default_factory=list)  # consent recorded by this sync
    withdrawn: list[str] = field(default_factory=list)  # the export no longer says yes (consent from the export)
    left: list[str] = field(default_factory=list)  # in no row of the export: left the district
    opted_out: list[str] = field(default_factory=list)  # consenting and on the opt-out list: the opt-out wins
    kept_by_hand: list[str] = field(default_factory=list)  # recorded by hand, the export does not say yes: kept
    photos: list[tuple[str, Path]] = field(default_factory=list)  # (student, delivery photo) to embed
    rows: dict[str, ConsentRow] = field(default_factory=dict)

    @property
    def removed(self) -> list[str]:
        return sorted({*self.withdrawn, *self.left, *self.opted_out})


@dataclass
class ConsentReport:
    plan: ConsentPlan
    students: int = 0  # on the Include list after the sync
    templates: int = 0
    templates_added: int = 0
    templates_deleted: int = 0
    not_usable: list[tuple[str, str, str]] = field(default_factory=list)  # (student, photo, why)
    without_template: list[str] = field(default_factory=list)  # consenting, but no usable photo yet

    def as_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "consent_column_read": p.column_read,
            "consenting_students": self.students,
            "templates": self.templates,
            "consent_recorded": p.new,
            "consent_withdrawn": p.withdrawn,
            "left_the_export": p.left,
            "on_the_opt_out_list_too": p.opted_out,
            "kept_recorded_by_hand": p.kept_by_hand,
            "templates_added": self.templates_added,
            "templates_deleted": self.templates_deleted,
            "photos_not_usable": [{"student_id": s, "photo": ph, "reason": r} for s, ph, r in self.not_usable],
            "consenting_without_template": self.without_template,
        }


def plan_consent(
    optouts: OptOutList, deliveries: list[Path], index: FaceIndex, taken: set[Path], years_before: int
) -> ConsentPlan:
    """Compare the export's consent column (``optouts.consenting``; None: not read) with the Include
    list. ``taken``: delivery photos matched to or held for opted-out students (never anyone else's
    template). A plain list of opted-out ids has no rows for other students: it says nothing of who left."""
    from optout_guard.picture_day import match_consenting

    said = optouts.consenting
    plan = ConsentPlan(column_read=said is not None, rows=dict(said or {}))
    on_list = optouts.ids() | index.students
    for sid, record in sorted(index.consent.items()):
        if sid in on_list:
            plan.opted_out.append(sid)
        elif optouts.everyone and sid not in optouts.everyone:
            plan.left.append(sid)
        elif said is not None and sid not in said:
            (plan.kept_by_hand if record.source == "by hand" else plan.withdrawn).append(sid)
    for sid in sorted(said or {}):
        if sid not in index.consent and sid not in on_list:
            plan.new.append(sid)
    keeping = {sid: row for sid, row in plan.rows.items() if sid not in on_list}
    # Students recorded by hand have no row: they can only be found by the id on their photo.
    for sid in index.consent:
        if sid not in plan.removed and sid not in keeping:
            keeping[sid] = ConsentRow(sid)
    for root in deliveries:
        plan.photos += match_consenting(Path(root), keeping, taken, years_before)
    return plan


def apply_consent(
    plan: ConsentPlan,
    index: FaceIndex,
    settings: Settings,
    face_models: FaceModels,
    progress: Callable[[str], None] | None = None,
) -> ConsentReport:
    """Record, withdraw and embed as planned (the caller holds the index lock and saves)."""
    from optout_guard.enroll import reference_embedding
    from optout_guard.fsutil import sha256_file, utc_now
    from optout_guard.index import Template
    from optout_guard.media.photos import photo_date

    report = ConsentReport(plan)
    for sid in plan.removed:
        report.templates_deleted += index.withdraw_consent(sid)
    now = utc_now()
    for sid in plan.new:
        index.record_consent(ConsentRecord(sid, "sis", plan.rows[sid].date, now))
    for sid, photo in plan.photos:
        if sid not in index.consent:
            continue
        sha = sha256_file(photo)
        if any(t.student_id == sid and t.sha256 == sha for t in index.consenting_templates):
            continue
        vector = reference_embedding(photo, settings, face_models)
        if progress is not None:
            progress(str(photo))
        if isinstance(vector, str):
            report.not_usable.append((sid, str(photo), vector))
            continue
        template = Template(sid, str(photo), sha, now, photo_date(photo) or "")
        report.templates_added += index.add_consenting_template(template, vector)
    report.students = len(index.consent)
    report.templates = len(index.consenting_templates)
    report.without_template = sorted(s for s in index.consent if not index.consenting_references(s))
    return report


# ---- consent handled by hand (a paper form): `optout-guard include add/remove` ------------------
def record_by_hand(
    index: FaceIndex,
    student_id: str,
    consent_date: str,
    user: str,
    photos: list[Path],
    settings: Settings,
    face_models: FaceModels,
) -> list[tuple[str, str]]:
    """Record a family's written consent and embed the given photos of the child (more come from
    later syncs' deliveries). Returns (photo, why) for photos that could not be used. Raises
    ConfigError for an opted-out student (an opt-out always wins)."""
    from optout_guard.enroll import reference_embedding
    from optout_guard.fsutil import sha256_file, utc_now
    from optout_guard.index import Template
    from optout_guard.media.photos import photo_date

    now = utc_now()
    index.record_consent(ConsentRecord(student_id, "by hand", consent_date, now, user))
    refused: list[tuple[str, str]] = []
    for photo in photos:
        vector = reference_embedding(photo, settings, face_models)
        if isinstance(vector, str):
            refused.append((str(photo), vector))
            continue
        index.add_consenting_template(Template(student_id, str(photo), sha256_file(photo), now, photo_date(photo) or ""), vector)
    return refused
