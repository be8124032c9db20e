"""The district's own children as a yardstick: hub penalties and thresholds per number of references.

A *cohort* is a set of faces of children who are **not** opted out — the picture-day delivery has
them: same age, same camera. At ``sync`` (or ``enroll --cohort DIR``) they are embedded in memory,
compared with the enrolled students, and reduced to a handful of numbers; the embeddings are then
dropped and never written anywhere (the same transient processing every checked photo gets).

What is kept (in the index, stamped with the cohort's size, a digest of its photos and the date):

- **hub penalty** per student: ``max(0, mean_r - r_s)``, where ``r_s`` is the mean of the
  ``PENALTY_K`` smallest distances from student *s* to the cohort. A student who sits in a crowded
  neighbourhood (many children look like them) is pushed away by that much; nobody is pulled closer.
- **thresholds per number of reference photos** (1, 2, 3+): a student with more references is
  closer to *everybody* (the mean of several photos and the nearest of them), so one fixed
  threshold doubles false reviews when a second photo arrives. Review is where each student draws
  the same small share of the cohort, chosen so that ``cohort_review_share`` of the cohort's faces
  come within review of *somebody*; block likewise at ``BLOCK_SHARE``. Neither goes above the
  settings' distances (the benchmark's bounds): the cohort only ever narrows them, and always leaves
  a review band.

Narrowing review is what turns a review into an allow, so the cohort is guarded (issue 26): a
cohort face within the block distance of an enrolled student sets no threshold (it may be that
student under another id), a cohort with more than a few such faces is refused outright, and no
student's review distance narrows below what their own reference photos need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optout_guard.matching import mean_templates, pairwise_distances, student_distances
from optout_guard.types import Limits

PENALTY_K = 10  # neighbours per student (the measurement: stable for k = 5-20)
MIN_COHORT = 40  # fewer faces than this say too little about a school's children: not used
MAX_COHORT = 600  # enough for stable numbers; a larger delivery is sampled (deterministically)
BLOCK_SHARE = 0.005  # share of the cohort within block distance of somebody (goal: <= 0.5% blocked)
MIN_BAND = 0.03  # review distance at least this far beyond block: always a band for a person
# A cohort face within the block distance of an enrolled student may be that student under another
# id (a delivery whose ids lost their leading zeros) or a look-alike: it never sets a threshold.
# More than this many such faces (or this share of the cohort) and the cohort is refused outright.
SUSPECT_LIMIT = 3
SUSPECT_SHARE = 0.02
GROUPS = ("1", "2", "3+")

# Never trade catch blind (issue 26 §2). Narrowing review is what turns a review into an allow, and
# on children it is steep: one reference photo, the same child 1-3 years later (children_dev, FG-NET,
# 193 pairs), is within 0.50 of it 90.7% of the time, within 0.48 86.5%, within 0.46 77.2%. So the
# cohort may narrow review only as far as it costs at most ``max_catch_loss`` (a setting) of that
# catch: measured on the district's own children a year apart when a previous delivery is given
# (``sync --previous-photos``; at least MIN_PAIRS pairs: fewer cannot place a quantile), else on
# this curve from children_dev (distance, share of later photos of the same child within it).
MIN_PAIRS = 100
CHILDREN_DEV_CATCH = (
    (0.30, 0.093), (0.32, 0.119), (0.34, 0.181), (0.36, 0.295), (0.38, 0.404), (0.40, 0.534), (0.42, 0.622),
    (0.44, 0.699), (0.46, 0.772), (0.48, 0.865), (0.50, 0.907), (0.52, 0.912), (0.54, 0.938), (0.56, 0.964),
    (0.58, 0.984), (0.60, 0.995),
)  # fmt: skip


@dataclass(frozen=True)
class CatchCurve:
    """How many later photos of the same child come within a distance: from the district's own
    children a year apart (``pairs``: their distances, transient) or children_dev's curve."""

    source: str
    pairs: int  # 0: children_dev's curve
    _distances: tuple[float, ...] = ()

    @classmethod
    def from_pairs(cls, distances: np.ndarray | None) -> CatchCurve:
        d = np.sort(np.asarray(distances if distances is not None else [], float))
        if len(d) >= MIN_PAIRS:
            return cls(f"{len(d)} of your own children a year apart", len(d), tuple(float(x) for x in d))
        why = f"only {len(d)} pairs of your own children a year apart (at least {MIN_PAIRS} needed); " if len(d) else ""
        return cls(why + "children's photos 1-3 years apart (children_dev)", 0)

    def catch(self, review: float) -> float:
        if self._distances:
            return float(np.searchsorted(self._distances, review, side="right") / len(self._distances))
        xs, ys = zip(*CHILDREN_DEV_CATCH, strict=True)
        return float(np.interp(review, xs, ys))

    def review_for(self, catch: float) -> float:
        """The smallest review distance that keeps at least ``catch`` of the curve."""
        if self._distances:
            k = max(0, min(len(self._distances) - 1, int(np.ceil(catch * len(self._distances))) - 1))
            return self._distances[k]
        xs, ys = zip(*CHILDREN_DEV_CATCH, strict=True)
        return float(np.interp(catch, ys, xs))

    def floor(self, review_bound: float, max_loss: float) -> float:
        """The narrowest review that costs at most ``max_loss`` of the catch at ``review_bound``
        (0.0, no floor, when the whole catch may go)."""
        keep = self.catch(review_bound) - max_loss
        return 0.0 if keep <= 0 else min(review_bound, self.review_for(keep))


def group_of(references: int) -> str:
    return "3+" if references >= 3 else str(max(1, references))


@dataclass(frozen=True)
class CohortCalibration:
    """Numbers derived from a cohort: nothing in here can be turned back into a face."""

    faces: int  # cohort faces used
    digest: str  # sha256 over the cohort photos' sha256s: "which cohort"
    made_at: str  # ISO-8601 UTC
    source: str  # e.g. "picture day 2026-09-12 (612 photos)"
    review_share: float
    held_share: float = 0.0  # share of the cohort within the settings' review distance of somebody, before
    penalties: dict[str, float] = field(default_factory=dict)  # student id -> hub penalty
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)  # group -> (block, review)
    # Student id -> the review distance that student's own reference photos need (each one's
    # distance to the others): the cohort never narrows that student's review below it.
    floors: dict[str, float] = field(default_factory=dict)
    dropped: int = 0  # cohort faces within the block distance of a student, left out
    # What the thresholds in use cost, said in plain words: one reference photo, a child a year
    # later, caught (within review) and blocked (within block), on ``catch_source``; and the share
    # of the cohort's faces within review of somebody with the thresholds and penalties in use.
    catch_source: str = ""
    catch: float = 0.0
    blocked: float = 0.0
    held_after: float = 0.0
    review_floor: float = 0.0  # review never narrower than this (the catch floor)

    def limits(self, references: int, student_id: str | None = None) -> Limits | None:
        found = self.thresholds.get(group_of(references))
        if found is None:
            return None
        label = group_of(references)
        block, review = found
        source = f"cohort, {label} reference photo{'' if label == '1' else 's'}"
        floor = self.floors.get(student_id or "", 0.0)
        if floor > review:
            review, source = floor, f"{source}; review kept at what the student's own photos need"
        return Limits(block, review, source)

    def as_json(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "digest": self.digest,
            "made_at": self.made_at,
            "source": self.source,
            "review_share": self.review_share,
            "held_share": round(self.held_share, 4),
            "penalties": {k: round(v, 5) for k, v in sorted(self.penalties.items())},
            "thresholds": {k: [round(b, 4), round(r, 4)] for k, (b, r) in self.thresholds.items()},
            "floors": {k: round(v, 4) for k, v in sorted(self.floors.items())},
            "dropped": self.dropped,
            "catch_source": self.catch_source,
            "catch": round(self.catch, 4),
            "blocked": round(self.blocked, 4),
            "held_after": round(self.held_after, 4),
            "review_floor": round(self.review_floor, 4),
        }

    def in_plain_words(self) -> str:
        """"On 312 of your own children a year apart: ~95% would be caught (55% blocked); 20% of
        other children's faces would be held." (empty for a calibration made before these figures)"""
        if not self.catch_source:
            return ""
        return (
            f"On {self.catch_source}: about {self.catch:.0%} of photos of a child enrolled from one reference photo "
            f"would be caught ({self.blocked:.0%} blocked); {self.held_after:.0%} of your other children's faces "
            "would be held for a person."
        )

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CohortCalibration:
        return cls(
            int(doc["faces"]),
            str(doc["digest"]),
            str(doc["made_at"]),
            str(doc.get("source", "")),
            float(doc.get("review_share", 0.1)),
            float(doc.get("held_share", 0.0)),
            {str(k): float(v) for k, v in dict(doc.get("penalties", {})).items()},
            {str(k): (float(v[0]), float(v[1])) for k, v in dict(doc.get("thresholds", {})).items()},
            {str(k): float(v) for k, v in dict(doc.get("floors", {})).items()},
            int(doc.get("dropped", 0)),
            str(doc.get("catch_source", "")),
            float(doc.get("catch", 0.0)),
            float(doc.get("blocked", 0.0)),
            float(doc.get("held_after", 0.0)),
            float(doc.get("review_floor", 0.0)),
        )


def cohort_digest(photo_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(photo_hashes)).encode()).hexdigest()[:32]


def student_cohort_distances(gallery: np.ndarray, owner: np.ndarray, n_students: int, cohort: np.ndarray) -> np.ndarray:
    """(C, S): each cohort face's distance to each student, fused as the matcher fuses them."""
    means = mean_templates(gallery, owner, n_students)
    return student_distances(pairwise_distances(cohort, gallery), owner, pairwise_distances(cohort, means))


def suspects(per_student: np.ndarray, block_bound: float) -> np.ndarray:
    """(C,) which cohort faces are within the block distance of some enrolled student."""
    return np.asarray(np.any(per_student <= block_bound, axis=1))


def too_many_suspects(count: int, cohort_size: int) -> bool:
    return count > max(SUSPECT_LIMIT, SUSPECT_SHARE * cohort_size)


def own_floors(gallery: np.ndarray, owner_ids: list[str], review_bound: float) -> dict[str, float]:
    """Per student with 2+ reference photos: the largest distance of one of them to the others (the
    closer of the nearest other photo and the others' mean, as the matcher measures). A new photo as
    unlike the others as one of their own must still be held: review never narrows below this
    (capped at the settings' review distance, which the cohort never widens)."""
    floors: dict[str, float] = {}
    by_student: dict[str, list[int]] = {}
    for i, s in enumerate(owner_ids):
        by_student.setdefault(s, []).append(i)
    for s, rows in by_student.items():
        if len(rows) < 2:
            continue
        refs = np.asarray(gallery[rows], np.float64)
        worst = 0.0
        for i in range(len(rows)):
            others = np.delete(refs, i, axis=0)
            nearest = float(np.min(np.linalg.norm(others - refs[i], axis=1)))
            to_mean = float(np.linalg.norm(others.mean(axis=0) - refs[i]))
            worst = max(worst, min(nearest, to_mean))
        floors[s] = round(min(worst, review_bound), 4)
    return floors


def hub_penalties(per_student: np.ndarray, k: int = PENALTY_K) -> np.ndarray:
    """(S,) penalty per student from (C, S) cohort distances: max(0, mean_r - r_s)."""
    k = max(1, min(k, per_student.shape[0]))
    r = np.sort(per_student, axis=0)[:k].mean(axis=0)
    return np.maximum(0.0, r.mean() - r)


def _out_of_sample(per_student: np.ndarray) -> np.ndarray:
    """Thresholds are set on faces the penalties were *not* computed from (two halves, each adjusted
    by the other half's penalties): in-sample, a penalty pushes exactly those cohort faces away, and
    the held share on new children came out ~2 points above the target (LFW, measured)."""
    half = np.arange(len(per_student)) % 2 == 0
    return np.vstack(
        [
            per_student[half] + hub_penalties(per_student[~half])[None, :],
            per_student[~half] + hub_penalties(per_student[half])[None, :],
        ]
    )


def _share_limits(adjusted: np.ndarray, groups: np.ndarray, share: float) -> dict[str, float]:
    """Per group, the distance within which each student draws the same share p of the cohort,
    with p chosen (bisection) so that ``share`` of the cohort's faces fall within some student's
    distance. Per-student rates come from every (face, student) pair of the group, so a group of
    a few students still gives a stable figure."""
    present = [g for g in GROUPS if np.any(groups == g)]
    pooled = {g: np.sort(adjusted[:, groups == g].ravel()) for g in present}

    def at(p: float) -> dict[str, float]:
        return {g: float(np.quantile(pooled[g], p)) for g in present}

    def union(p: float) -> float:
        t = at(p)
        limit = np.array([t[g] for g in groups])
        return float(np.mean(np.any(adjusted <= limit[None, :], axis=1)))

    low, high = 0.0, share
    for _ in range(40):
        mid = (low + high) / 2
        if union(mid) <= share:
            low = mid
        else:
            high = mid
    return at(low)


def calibrate_cohort(
    gallery: np.ndarray,
    owner_ids: list[str],
    references: dict[str, int],
    cohort: np.ndarray,
    *,
    block_bound: float,
    review_bound: float,
    review_share: float,
    digest: str,
    made_at: str,
    source: str,
    penalise_hubs: bool = True,
    pairs: np.ndarray | None = None,
    max_catch_loss: float = 0.02,
) -> CohortCalibration:
    """Hub penalties and per-count thresholds from a cohort's embeddings (which the caller drops).
    ``pairs``: distances between two photos of the same children a year apart (not on the list;
    transient), for the catch floor; ``max_catch_loss``: the catch the narrowing may cost."""
    ids = sorted(set(owner_ids))
    number = {s: i for i, s in enumerate(ids)}
    owner = np.array([number[s] for s in owner_ids], np.int64)
    per_student = student_cohort_distances(gallery, owner, len(ids), np.asarray(cohort, np.float64))
    held_now = float(np.mean(np.any(per_student <= review_bound, axis=1)))
    # Faces that close to a student may be that very student: they set no threshold (the caller
    # refuses a cohort with more than a few of them: ``too_many_suspects``).
    close = suspects(per_student, block_bound)
    dropped = int(close.sum())
    crowded = held_now > review_share
    hubs = crowded and penalise_hubs  # penalise_hubs=False: thresholds alone (the benchmark's lever)
    # Where the district's children do not crowd the review band beyond the target, the cohort
    # changes nothing: measured on LFW, the hub penalty in a 10-25 student gallery cost 4-6 points
    # of catch to save 0.2-0.5 points of held faces. Penalties and review (what loosens) come only
    # from faces that cannot be the students themselves; block (which only ever gets stricter) from all.
    # Each is the more careful of the two (with and without them), so leaving those faces out never
    # clears a face the whole cohort would have held: a penalty no larger, a review no narrower.
    kept = per_student[~close]
    penalty = np.minimum(hub_penalties(kept), hub_penalties(per_student)) if hubs else np.zeros(len(ids))
    groups = np.array([group_of(references.get(s, 1)) for s in ids])
    review_all = _share_limits(_out_of_sample(per_student), groups, review_share)
    review = {g: max(r, review_all[g]) for g, r in _share_limits(_out_of_sample(kept), groups, review_share).items()}
    block = _share_limits(_out_of_sample(per_student), groups, min(BLOCK_SHARE, review_share / 2))
    curve = CatchCurve.from_pairs(pairs)
    floor = curve.floor(review_bound, max_catch_loss)
    thresholds: dict[str, tuple[float, float]] = {}
    for g, r in review.items():
        b = min(block[g], block_bound)
        # Only ever narrowed: where the district's children crowd the review band it shrinks to the
        # target share; where they do not, it stays the benchmark's (widening it raised the held
        # share of small galleries 20-fold on LFW: 10 enrolled, 0.2% -> 4% of other faces). Never
        # below the catch floor: narrowing may cost at most max_catch_loss of children caught.
        r = max(min(r, review_bound), b + MIN_BAND, floor)
        thresholds[g] = (round(b, 4), round(r, 4))
    # A hub penalty moves a student away as surely as a narrower review: review minus penalty is
    # never below the floor either.
    room = np.array([max(0.0, thresholds[g][1] - floor) for g in groups]) if len(groups) else np.zeros(0)
    penalty = np.minimum(penalty, room) if len(groups) else penalty
    one = thresholds.get("1", (block_bound, review_bound))  # what judges a student with one reference photo
    limit = np.array([thresholds[g][1] for g in groups])
    held_after = float(np.mean(np.any(per_student + penalty[None, :] <= limit[None, :], axis=1))) if len(groups) else 0.0
    return CohortCalibration(
        faces=len(cohort),
        digest=digest,
        made_at=made_at,
        source=source,
        review_share=review_share,
        held_share=held_now,
        penalties={s: float(round(penalty[i], 5)) for i, s in enumerate(ids)},
        thresholds=thresholds,
        floors=own_floors(np.asarray(gallery, np.float64), owner_ids, review_bound),
        dropped=dropped,
        catch_source=curve.source,
        catch=curve.catch(one[1]),
        blocked=curve.catch(one[0]),
        held_after=held_after,
        review_floor=floor,
    )
