"""Thresholds measured on the district's own gallery (``optout-guard calibrate``).

Students with several reference photos (picture days of different years) give real same-person
pairs from the district's own children and cameras. Each reference photo is used in turn as a
probe, exactly as the matcher would see a new photo of that student:

- *mated*: the probe against its own student's other photos (closest photo and mean embedding,
  the same fusion as ``matching.student_distances``); it is missed at threshold t if that distance
  is above t or another student comes closer;
- *non-mated*: the probe against every other student: the closest of them is what a photo of a
  child who is not enrolled would look like to the matcher (a false alert at t if within t).

Nothing new is written but the summary (JSON) and the plot: no embedding leaves the index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optout_guard.config import Settings
from optout_guard.index import FaceIndex
from optout_guard.matching import blocks_alone, mean_templates, pairwise_distances, student_distances

# Below this many students with 2+ photos the rates are too coarse to set thresholds from: with
# 30 students and 2 photos each there are 60 probes, so one false alert moves FPIR by 1.7%.
MIN_MULTI_PHOTO_STUDENTS = 30
# The rule (docs/accuracy.md "Thresholds"), the same here and in scripts/benchmark_accuracy.py: block where
# about 1 in 1,000 faces of other children would be falsely blocked (a class photo of 25 other
# children is falsely blocked about 2.5% of the time); review down to where about 2 in 100 photos
# of an enrolled student slip through altogether.
FPIR_TARGET = 0.001
FNIR_TARGET = 0.02
MIN_REVIEW_BAND = 0.03  # suggestions keep review at least this far beyond block


def rule_thresholds(
    mated: np.ndarray,
    nonmated: np.ndarray,
    nonmated_second: np.ndarray,
    step: float = 0.01,
    margin: float = Settings().lookalike_margin,
) -> tuple[float | None, float | None]:
    """(block, review) by the rule. Review: the smallest distance (rounded up to ``step``) at
    which at most FNIR_TARGET of the mated probes are missed. Block: the largest distance (in
    ``step``s) at which the product's decision (``matching.decide_faces``: the closest within
    block, and no second student within review) blocks at most FPIR_TARGET of the non-mated
    probes. ``nonmated_second``: each non-mated probe's distance to the second-closest person."""
    found = threshold_at_fnir(mated)
    if found is None:
        return None, None
    review = math.ceil(found / step - 1e-9) * step
    block = None
    for t in np.arange(step, review + 1e-9, step):
        if np.mean(blocks_alone(nonmated, nonmated_second, t, review, margin)) <= FPIR_TARGET:
            block = round(float(t), 4)
    return block, round(review, 4)


def threshold_at_fpir(nonmated: np.ndarray, target: float = FPIR_TARGET) -> float:
    """The largest distance at which at most ``target`` of the non-mated probes are alerted
    (``nonmated``: each probe's distance to the closest enrolled person). With fewer than
    1/target probes this is just under the closest impostor: as strict as the data can say."""
    ordered = np.sort(nonmated[np.isfinite(nonmated)])
    if not len(ordered):
        return float("inf")
    allowed = int(np.floor(target * len(nonmated)))
    return float(ordered[allowed] - 1e-4) if allowed < len(ordered) else float(ordered[-1])


def threshold_at_fnir(mated: np.ndarray, target: float = FNIR_TARGET) -> float | None:
    """The smallest distance at which at most ``target`` of the mated probes are missed
    (``mated``: distance to the right person, inf when another person came closer). None when
    rank-1 errors alone already miss more than ``target``."""
    ordered = np.sort(mated[np.isfinite(mated)])
    may_miss = int(np.floor(target * len(mated))) - (len(mated) - len(ordered))
    if may_miss < 0 or not len(ordered):
        return None
    return float(ordered[max(0, len(ordered) - 1 - may_miss)])


@dataclass
class Calibration:
    students: int
    multi_photo_students: int
    probes: int
    mated: np.ndarray  # per probe: distance to its own student (leave-one-out), inf if another is closer
    nonmated: np.ndarray  # per probe: distance to the closest other student
    nonmated_second: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ... and to the second closest
    current: dict[str, dict[str, float]] = field(default_factory=dict)
    suggested: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def rates(self, threshold: float) -> tuple[float, float]:
        """(FNIR, FPIR) at a distance threshold."""
        return float(np.mean(self.mated > threshold)), float(np.mean(self.nonmated <= threshold))

    def summary(self) -> dict[str, Any]:
        def pct(values: np.ndarray) -> dict[str, float]:
            finite = values[np.isfinite(values)]
            if not len(finite):
                return {}
            return {f"p{q}": round(float(np.percentile(finite, q)), 4) for q in (1, 5, 25, 50, 75, 95, 99)}

        return {
            "students": self.students,
            "students_with_2_or_more_photos": self.multi_photo_students,
            "probes": self.probes,
            "genuine_distance_percentiles": pct(self.mated),
            "impostor_distance_percentiles": pct(self.nonmated),
            "rank1_errors": int(np.sum(~np.isfinite(self.mated))),
            "at_current_thresholds": self.current,
            "suggested": self.suggested,
            "rule": f"review down to FNIR <= {FNIR_TARGET:.0%}; block where at most {FPIR_TARGET:.1%} of other students "
            "would be blocked (closest within block, no second student within review)",
            "warnings": self.warnings,
        }


def calibrate(index: FaceIndex, settings: Settings) -> Calibration:
    ids = sorted({t.student_id for t in index.templates})
    number = {s: i for i, s in enumerate(ids)}
    owner = np.array([number[t.student_id] for t in index.templates], np.int64)
    counts = np.bincount(owner, minlength=len(ids))
    probes = [j for j in range(len(owner)) if counts[owner[j]] >= 2]
    mated, nonmated, nonmated_second = [], [], []
    for j in probes:
        keep = np.arange(len(owner)) != j  # leave the probe out of the gallery
        gallery, gallery_owner = index.embeddings[keep], owner[keep]
        means = mean_templates(gallery, gallery_owner, len(ids))
        probe = index.embeddings[j : j + 1]
        per_student = student_distances(pairwise_distances(probe, gallery), gallery_owner, pairwise_distances(probe, means))[0]
        own = per_student[owner[j]]
        others = np.delete(per_student, owner[j])
        ordered = np.sort(others)
        closest_other = float(ordered[0]) if len(ordered) else float("inf")
        mated.append(own if own < closest_other else float("inf"))  # rank-1 error counts as a miss
        nonmated.append(closest_other)
        nonmated_second.append(float(ordered[1]) if len(ordered) > 1 else float("inf"))
    result = Calibration(
        students=len(ids),
        multi_photo_students=int(np.sum(counts >= 2)),
        probes=len(probes),
        mated=np.asarray(mated, float),
        nonmated=np.asarray(nonmated, float),
        nonmated_second=np.asarray(nonmated_second, float),
    )
    if result.multi_photo_students < MIN_MULTI_PHOTO_STUDENTS:
        result.warnings.append(
            f"only {result.multi_photo_students} students have 2 or more reference photos; at least "
            f"{MIN_MULTI_PHOTO_STUDENTS} are needed before these rates mean much (each probe moves them by "
            f"{100 / max(1, result.probes):.1f} points)"
        )
    if result.probes == 0:
        return result
    for name, t in (("block_distance", settings.block_distance), ("review_distance", settings.review_distance)):
        fnir, fpir = result.rates(t)
        result.current[name] = {"threshold": t, "fnir": round(fnir, 4), "fpir": round(fpir, 4)}
    block, review = rule_thresholds(result.mated, result.nonmated, result.nonmated_second, margin=settings.lookalike_margin)
    if review is None:
        result.warnings.append(
            f"another student comes closer than the right one for more than {FNIR_TARGET:.0%} of the probes: "
            "no review distance can keep misses that low; add more (and more recent) reference photos"
        )
    else:
        few = len(result.nonmated) < 1 / FPIR_TARGET
        if block is not None and few and block > settings.block_distance:
            # Too few probes to show a 0.1% false-block rate: never loosen blocking past the
            # benchmark's bound on so little evidence (a 12-student gallery once suggested 0.49).
            block = settings.block_distance
        if block is not None and review - block < MIN_REVIEW_BAND:
            block = round(review - MIN_REVIEW_BAND, 4)  # always a band where a person looks
        result.suggested["review_distance"] = review
        if block is not None and block > 0:
            result.suggested["block_distance"] = block
    if len(result.nonmated) < 1 / FPIR_TARGET:
        result.warnings.append(
            f"{len(result.nonmated)} probes cannot show a {FPIR_TARGET:.1%} false-block rate (that needs at least "
            f"{round(1 / FPIR_TARGET)}): the suggested block distance is as strict as this gallery can say, and never "
            f"looser than the benchmark's {settings.block_distance}"
        )
    return result


def det_plot(result: Calibration, path: Any, settings: Settings) -> bool:
    """FNIR vs FPIR over thresholds (log axes), current thresholds marked. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    thresholds = np.linspace(0.2, 0.8, 121)
    pairs = np.array([result.rates(t) for t in thresholds])
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ax.plot(np.maximum(pairs[:, 1], 1e-4), np.maximum(pairs[:, 0], 1e-4), label="this gallery")
    for name, colour in (("block_distance", "red"), ("review_distance", "orange")):
        fnir, fpir = result.rates(getattr(settings, name))
        ax.scatter([max(fpir, 1e-4)], [max(fnir, 1e-4)], color=colour, zorder=3, label=f"{name} = {getattr(settings, name)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FPIR: faces of other children falsely alerted")
    ax.set_ylabel("FNIR: photos of an enrolled student missed")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"Calibration on {result.probes} reference photos of {result.multi_photo_students} students", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def calibrate_workspace(settings: Settings, out_dir: Path | None = None) -> tuple[Calibration, dict[str, Any], Any, list[Path]]:
    """``optout-guard calibrate``: the thresholds measured on the workspace's own gallery; its summary
    (with the cohort in use, if any); and, with ``out_dir``, calibration.json and det.png written
    there. Returns (result, summary, cohort or None, files written)."""
    import json

    from optout_guard.fsutil import atomic_write
    from optout_guard.index import open_index

    index = open_index(settings)
    result = calibrate(index, settings)
    summary = result.summary()
    cohort = index.cohort if settings.cohort else None
    if cohort is not None:
        summary["cohort"] = {k: v for k, v in cohort.as_json().items() if k != "penalties"}
    written: list[Path] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "calibration.json", json.dumps(summary, indent=2), mode=0o644)
        written.append(out_dir / "calibration.json")
        if det_plot(result, out_dir / "det.png", settings):
            written.append(out_dir / "det.png")
    return result, summary, cohort, written
