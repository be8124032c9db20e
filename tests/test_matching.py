"""Pure unit tests of the matching arithmetic and the decision rules (numpy in, values out)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optout_guard.config import Settings
from optout_guard.index import FaceIndex, Template
from optout_guard.matching import (
    decide_faces,
    mean_templates,
    pairwise_distances,
    photo_verdict,
    student_distances,
)
from optout_guard.types import Box, Candidate, Decision, Face, FaceMatch, Limits, ReasonCode, Verdict

SETTINGS = Settings(block_distance=0.4, review_distance=0.5)


def face(x: float = 0) -> Face:
    return Face(Box(x, 0, 100, 100), 0.9, np.zeros((5, 2), np.float32))


def test_pairwise_distances_match_numpy_norm():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 128)), rng.normal(size=(7, 128))
    expected = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=2)
    np.testing.assert_allclose(pairwise_distances(q, g), expected, atol=1e-9)


def test_identical_vectors_have_zero_distance_not_nan():
    v = np.full((1, 128), 0.1, np.float32)
    d = pairwise_distances(v, v)
    assert d.shape == (1, 1) and d[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_student_distance_is_min_of_closest_photo_and_mean():
    # student 0 has photos at distance 1 and 3 along one axis; the query sits on the first photo.
    gallery = np.zeros((3, 128))
    gallery[0, 0], gallery[1, 0], gallery[2, 1] = 1.0, 3.0, 5.0
    owner = np.array([0, 0, 1])
    query = np.zeros((1, 128))
    query[0, 0] = 1.0
    means = mean_templates(gallery, owner, 2)
    np.testing.assert_allclose(means[0, 0], 2.0)
    per = student_distances(pairwise_distances(query, gallery), owner, pairwise_distances(query, means))
    assert per.shape == (1, 2)
    assert per[0, 0] == pytest.approx(0.0)  # the closest photo wins over the mean (distance 1)
    assert per[0, 1] == pytest.approx(np.hypot(1.0, 5.0))

    query2 = np.zeros((1, 128))
    query2[0, 0] = 2.0  # on the mean: distance 0 to the mean, 1 to each photo
    per2 = student_distances(pairwise_distances(query2, gallery), owner, pairwise_distances(query2, means))
    assert per2[0, 0] == pytest.approx(0.0)


def decide_one(candidates: tuple[Candidate, ...]) -> FaceMatch:
    return decide_faces([face()], [candidates], SETTINGS.thresholds)[0]


def test_decisions_follow_thresholds():
    assert decide_one((Candidate("a", 0.39),)).decision is Decision.BLOCK
    assert decide_one((Candidate("a", 0.40),)).decision is Decision.BLOCK
    review = decide_one((Candidate("a", 0.45), Candidate("b", 0.58)))
    assert review.decision is Decision.REVIEW and review.student_id == "a" and "resembles student a" in review.reason
    assert decide_one((Candidate("a", 0.51),)).decision is Decision.CLEAR
    assert decide_one(()).decision is Decision.CLEAR


def test_siblings_within_the_review_band_are_review_with_both_ids():
    # Within the look-alike margin (0.15) of each other: a person says which.
    twin = decide_one((Candidate("a", 0.30), Candidate("b", 0.44), Candidate("c", 0.60)))
    assert twin.decision is Decision.REVIEW
    assert "could be student a (0.300) or b (0.440)" in twin.reason
    both_in_band = decide_one((Candidate("a", 0.45), Candidate("b", 0.48)))
    assert both_in_band.decision is Decision.REVIEW and "a (0.450) or b (0.480)" in both_in_band.reason


def test_relaxed_lookalike_rule_blocks_when_the_next_student_is_clearly_further():
    clear_winner = decide_one((Candidate("a", 0.30), Candidate("b", 0.47), Candidate("c", 0.60)))
    assert clear_winner.decision is Decision.BLOCK and clear_winner.student_id == "a"
    just_inside = decide_one((Candidate("a", 0.30), Candidate("b", 0.4499)))
    assert just_inside.decision is Decision.REVIEW
    at_margin = decide_one((Candidate("a", 0.30), Candidate("b", 0.45)))
    assert at_margin.decision is Decision.BLOCK
    # The old rule (any second student within review stops a block) is margin 1.5.
    old = replace(SETTINGS, lookalike_margin=1.5)
    assert decide_faces([face()], [(Candidate("a", 0.30), Candidate("b", 0.47))], old.thresholds)[0].decision is Decision.REVIEW


def test_candidates_carry_their_own_thresholds():
    strict = Limits(0.30, 0.40, "cohort, 2 reference photos")
    assert decide_one((Candidate("a", 0.35, limits=strict),)).decision is Decision.REVIEW
    assert decide_one((Candidate("a", 0.45, limits=strict),)).decision is Decision.CLEAR
    assert decide_one((Candidate("a", 0.45),)).decision is Decision.REVIEW  # settings: 0.40 / 0.50


def test_a_student_is_at_most_one_face_per_photo():
    faces = [face(0), face(200), face(400)]
    out = decide_faces(faces, [(Candidate("s1", 0.30),), (Candidate("s1", 0.20),), (Candidate("s2", 0.35),)], SETTINGS.thresholds)
    assert [m.decision for m in out] == [Decision.REVIEW, Decision.BLOCK, Decision.BLOCK]
    assert "s1, who matched another face in this photo better" in out[0].reason
    assert [m.student_id for m in out[1:]] == ["s1", "s2"]


def test_identities_are_assigned_jointly_not_greedily():
    # Twins side by side: each face is closest to "its" twin, but the other twin is in the review
    # band too. Per face that is ambiguous; jointly, each face has its own student: both block.
    twins = decide_faces(
        [face(0), face(200)],
        [(Candidate("a", 0.30), Candidate("b", 0.44)), (Candidate("b", 0.32), Candidate("a", 0.45))],
        SETTINGS.thresholds,
    )
    assert [(m.decision, m.student_id) for m in twins] == [(Decision.BLOCK, "a"), (Decision.BLOCK, "b")]
    # Greedy per face would give "a" to face 0 (its closest) and leave face 1 without a student;
    # the assignment gives face 1 "a" (0.20) and face 0 "b" (0.35): both students found.
    out = decide_faces(
        [face(0), face(200)], [(Candidate("a", 0.25), Candidate("b", 0.35)), (Candidate("a", 0.20),)], SETTINGS.thresholds
    )
    assert [(m.decision, m.student_id) for m in out] == [(Decision.BLOCK, "b"), (Decision.BLOCK, "a")]
    assert out[0].candidates[0] == Candidate("b", 0.35)


def test_photo_verdicts_fail_closed():
    blocked = FaceMatch(face(), Decision.BLOCK, (Candidate("s1", 0.3),), "matches student s1")
    too_small = "face too small to check (20 px wide; at least 40 px needed)"
    small = FaceMatch(face(), Decision.REVIEW, (), too_small, ReasonCode.TOO_SMALL)
    clear = FaceMatch(face(), Decision.CLEAR, (Candidate("s1", 0.7),))
    assert photo_verdict([clear, blocked, small])[0] is Verdict.BLOCK
    verdict, reasons = photo_verdict([clear, small])
    assert verdict is Verdict.REVIEW and "1 face too small to check" in reasons
    assert photo_verdict([clear])[0] is Verdict.ALLOW
    assert photo_verdict([]) == (Verdict.ALLOW, ("no faces found",))
    # A note from the loader (e.g. frames skipped) alone makes a review, never an allow.
    assert photo_verdict([clear], ("only the first 50 of 90 frames/pages were checked",))[0] is Verdict.REVIEW
    # Decisions follow codes, not wording: a reworded message counts the same; each kind is named.
    reworded = FaceMatch(face(), Decision.REVIEW, (), "this face is tiny", ReasonCode.TOO_SMALL)
    cut = FaceMatch(face(), Decision.REVIEW, (), "half a face", ReasonCode.CUT_BY_EDGE)
    verdict, reasons = photo_verdict([small, reworded, cut])
    assert verdict is Verdict.REVIEW
    assert reasons == ("2 faces too small to check", "1 face cut by the photo's edge: cannot be cleared")


def test_index_search_ranks_students_and_handles_empty_gallery():
    index = FaceIndex("test-model")
    assert index.search(np.zeros((2, 128))) == [(), ()]
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3, 128)).astype(np.float32) * 0.05
    for i, v in enumerate(vecs):
        index.add(Template(f"s{i}", f"/p/{i}.jpg", f"{i:064x}", "2026-01-01T00:00:00+00:00"), v)
    found = index.search(vecs[[2, 0]])
    assert found[0][0].student_id == "s2"
    assert found[1][0].student_id == "s0"
    assert found[0][0].distance == pytest.approx(0.0, abs=1e-5)
    assert len(found[0]) == 3 and found[0][1].distance <= found[0][2].distance


def test_the_vectorised_rule_of_benchmarks_and_calibrate_agrees_with_decide_faces():
    from optout_guard.matching import blocks_alone

    rng = np.random.default_rng(3)
    nearest = rng.uniform(0.2, 0.6, 2000)
    second = nearest + rng.uniform(0.0, 0.3, 2000)
    vector = blocks_alone(nearest, second, SETTINGS.block_distance, SETTINGS.review_distance, SETTINGS.lookalike_margin)
    one_by_one = [
        decide_one((Candidate("a", float(n)), Candidate("b", float(s)))).decision is Decision.BLOCK
        for n, s in zip(nearest, second, strict=True)
    ]
    assert vector.tolist() == one_by_one and 0 < sum(one_by_one) < len(one_by_one)


def test_cleared_but_close_counts_faces_cleared_near_the_line():
    """Issue 26: faces cleared within 0.08 past the review distance that judged them are counted
    (a figure for the privacy officer; it changes no decision)."""
    from optout_guard.matching import cleared_but_close
    from optout_guard.types import Box, Candidate, Decision, Face, FaceMatch, Limits

    face = Face(Box(0, 0, 80, 80), 0.9, np.zeros((5, 2), np.float32))

    def clear(distance: float, limits: Limits | None = None) -> FaceMatch:
        return FaceMatch(face, Decision.CLEAR, (Candidate("s1", distance, 0.0, limits),), "")

    assert cleared_but_close(clear(0.52), 0.50) and cleared_but_close(clear(0.58), 0.50)
    assert not cleared_but_close(clear(0.59), 0.50)
    assert cleared_but_close(clear(0.50, Limits(0.35, 0.44)), 0.50)  # judged by the cohort's 0.44
    assert not cleared_but_close(clear(0.53, Limits(0.35, 0.44)), 0.50)
    assert not cleared_but_close(FaceMatch(face, Decision.REVIEW, (Candidate("s1", 0.45),), ""), 0.50)


def test_one_reason_given_for_many_faces_is_one_line_with_its_count():
    """Issue 28: "B" on a crowd photo wrote the same reason once per face (52 identical lines)."""
    from optout_guard.matching import photo_verdict
    from optout_guard.types import Box, Decision, Face, FaceMatch, ReasonCode

    face = Face(Box(0, 0, 30, 30), 0.9, np.zeros((5, 2), np.float32))
    said = "an opted-out student is in this photo, said officer (2026-12-03)"
    matches = [FaceMatch(face, Decision.BLOCK, (), said, ReasonCode.MATCH) for _ in range(52)]
    verdict, reasons = photo_verdict(matches)
    assert verdict.value == "block" and reasons == (f"{said} (52 faces)",)
