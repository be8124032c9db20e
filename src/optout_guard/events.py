"""One decision per child across an event: faces of the same child in several photos checked together.

A child photographed a year after their picture day is often only *held* ("resembles student S"):
one photo's embedding is noisy. Several photos of the same event (what one `check` of a folder or a
batch covers; in the audit, the photos of one folder taken the same day; in the check folder, one
drop) give several looks at the same child; their embeddings averaged are much closer to
the child's own references than to anybody else's (measured on children_dev, docs/accuracy.md:
two appearances averaged, one reference photo: 61% within the pooled block distance where single
photos block 40%; two photos of other children averaged: 0 of 2,400 pairs that close).

This rule only **escalates**: a face held for student S is blocked when it and faces in the event's
other photos are the same child (every pair within LINK of each other, at most one face per photo)
and their pooled embedding is within POOLED_BLOCK of S. Nothing is cleared, a face a person decided
is never changed, and nothing about the groups is stored. It clears no face, so it costs no miss;
what it may cost is a wrong block, measured as above (0 of 2,400 pooled pairs of other children).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.types import Decision, FaceMatch, ReasonCode, ScanResult

if TYPE_CHECKING:
    from optout_guard.pipeline import Guard

log = logging.getLogger(__name__)

LINK = 0.45  # two faces of one child (complete linkage: every pair of a group within this)
POOLED_BLOCK = 0.36  # the pooled embedding this close to a student blocks the group's held faces


def pooled(vectors: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Several embeddings of one child as one: their mean, at the length of one embedding (as the
    gallery's templates are), so that distances compare with the thresholds."""
    stack = np.asarray(vectors, np.float64)
    mean = stack.mean(axis=0)
    mean *= float(np.mean(np.linalg.norm(stack, axis=1))) / max(float(np.linalg.norm(mean)), 1e-9)
    return mean.astype(np.float32)


def _held_or_blocked(m: FaceMatch) -> bool:
    return bool(m.candidates) and m.decision in (Decision.REVIEW, Decision.BLOCK)


def decide_across(
    guard: Guard, results: list[ScanResult], scope: Scope = WHOLE_DISTRICT, event: str = "check"
) -> list[ScanResult]:
    """The results of one event, with held faces of a child seen in several of its photos blocked
    where their pooled embedding matches (see the module's docstring). Photos are re-embedded from
    their known faces only when two or more of them hold or block a face (no detection again).
    ``event``: what the photos have in common, as the reason says it ("check": "of this check")."""
    photos = [i for i, r in enumerate(results) if r.clip is None and r.sha256 and any(map(_held_or_blocked, r.faces))]
    if len(photos) < 2 or not any(m.decision is Decision.REVIEW and m.candidates for i in photos for m in results[i].faces):
        return results
    members: list[tuple[int, int, np.ndarray]] = []  # (photo, face, embedding)
    for i in photos:
        r = results[i]
        try:
            again, vectors = guard.check_keeping_embeddings(r.path, [m.face for m in r.faces], scope)
        except Exception:  # noqa: BLE001 - the file changed or vanished: this photo keeps its own decision
            continue
        if vectors is None or again.sha256 != r.sha256:
            continue
        pairs = enumerate(zip(r.faces, vectors, strict=True))
        members += [(i, j, v) for j, (m, v) in pairs if _held_or_blocked(m) and v is not None]
    groups = _complete_linkage(members)
    out = list(results)
    for group in groups:
        together = pooled([v for _, _, v in group])
        found = guard.index.search(together[None, :], settings=guard.settings, only=scope.students)[0]
        if not found or found[0].distance > POOLED_BLOCK:
            continue
        best = found[0]
        photos_in = len({i for i, _, _ in group})
        for i, j, _ in group:
            m = out[i].faces[j]
            mine = next((c for c in m.candidates if c.student_id == best.student_id), None)
            if m.decision is not Decision.REVIEW or mine is None:
                continue  # only a face held for that very student is escalated; a person's answer stands
            why = (f"matches student {best.student_id} together with the same child in {photos_in - 1} other "
                   f"photo{'s' if photos_in > 2 else ''} of this {event} (pooled distance {best.distance:.3f})")  # fmt: skip
            others = tuple(c for c in m.candidates if c.student_id != best.student_id)
            blocked = dataclasses.replace(m, decision=Decision.BLOCK, candidates=(mine, *others), reason=why,
                                          code=ReasonCode.EVENT_MATCH)  # fmt: skip
            faces = list(out[i].faces)
            faces[j] = blocked
            matches, verdict, reasons = guard.settler.settle(out[i].sha256, faces, out[i].notes)
            out[i] = dataclasses.replace(out[i], faces=tuple(matches), verdict=verdict, reasons=reasons)
    for before, after in zip(results, out, strict=True):
        if after is not before and after.annotated_path:
            _mark_again(guard, after)
    return out


def _mark_again(guard: Guard, result: ScanResult) -> None:
    """The marked-up copy drawn again with the event's blocks (red, not amber): it was written
    when the photo was checked alone. A photo that changed since keeps its copy (its result says
    what the copy shows)."""
    from optout_guard.annotate import write_marked_copy
    from optout_guard.media.photos import load_image

    try:
        image = load_image(result.path, guard.settings)
        if image.sha256 == result.sha256 and result.annotated_path:
            write_marked_copy(image, list(result.faces), Path(result.annotated_path).parent)
    except Exception:  # any failure: the copy stays as written; the verdict and the JSON are right
        log.warning("could not draw the marked-up copy of %s again", result.path, exc_info=True)


def _complete_linkage(members: list[tuple[int, int, np.ndarray]]) -> list[list[tuple[int, int, np.ndarray]]]:
    """Groups of faces from different photos whose every pair is within LINK, closest pairs first;
    only groups of two or more."""
    groups: list[list[tuple[int, int, np.ndarray]]] = [[m] for m in members]
    pairs = sorted(
        (float(np.linalg.norm(a[2] - b[2])), ia, ib)
        for (ia, a), (ib, b) in itertools.combinations(enumerate(members), 2)
        if a[0] != b[0]
    )
    where = list(range(len(members)))  # member -> its group
    for distance, ia, ib in pairs:
        if distance > LINK:
            break
        ga, gb = where[ia], where[ib]
        if ga == gb:
            continue
        merged = groups[ga] + groups[gb]
        if len({p for p, _, _ in merged}) < len(merged):
            continue  # a child is at most one face per photo
        if any(float(np.linalg.norm(x[2] - y[2])) > LINK for x, y in itertools.combinations(merged, 2)):
            continue  # complete linkage: every pair must be close
        groups[ga], groups[gb] = merged, []
        for k, g in enumerate(where):
            if g == gb:
                where[k] = ga
    return [g for g in groups if len(g) >= 2]
