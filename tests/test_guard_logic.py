"""Guard's logic on fake models (tests/fakes.py): distances to verdicts, the quality gate, fail
closed, the settler, scopes, re-checks without detection. No model file is read: milliseconds."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fakes import at_distance, face, fake_models, gallery, photo, unit
from optout_guard.config import load_settings
from optout_guard.pipeline import Guard, NoDecisions
from optout_guard.scope import Scope
from optout_guard.types import Decision, FaceMatch, ReasonCode, ScanResult, Verdict

RNG = np.random.default_rng(7)
ANNA, BEN = unit(RNG, 2)


@pytest.fixture
def world(tmp_path):
    """A workspace setting, two enrolled students, and a guard on fake models."""
    settings = load_settings(tmp_path / "ws", environ={})
    detector, encoder, bundle = fake_models()
    index = gallery({"anna": ANNA, "ben": BEN})
    guard = Guard(settings, index=index, settler=NoDecisions(), face_models=bundle)
    return settings, guard, detector, encoder


def test_distances_become_block_review_allow(world, tmp_path):
    settings, guard, detector, encoder = world
    assert (settings.block_distance, settings.review_distance) == (0.40, 0.50)
    cases = {"close": (0.20, Verdict.BLOCK), "between": (0.45, Verdict.REVIEW), "far": (0.95, Verdict.ALLOW)}
    for i, (name, (distance, expected)) in enumerate(cases.items()):
        path = photo(tmp_path / f"{name}.png", (10 * i, 50, 90))
        detector.place(path, face(100.0 + i))
        encoder.vectors[100.0 + i] = at_distance(ANNA, distance, RNG)
        result = guard.check(path)
        assert result.verdict is expected, (name, result.reasons)
        if expected is not Verdict.ALLOW:
            assert result.faces[0].candidates[0].student_id == "anna"
            assert abs(result.faces[0].candidates[0].distance - distance) < 1e-4
    # The mirrored pass is asked for the faces near somebody only (close and between), not the far one.
    assert encoder.mirrored == 2


def test_a_face_too_small_to_judge_is_review_never_allow(world, tmp_path):
    _settings, guard, detector, encoder = world
    path = photo(tmp_path / "crowd.png", (1, 2, 3))
    detector.place(path, face(10.0, width=20.0), face(300.0))
    encoder.vectors[300.0] = at_distance(BEN, 0.9, RNG)  # the big face is nobody enrolled
    result = guard.check(path)
    assert result.verdict is Verdict.REVIEW
    assert [m.code for m in result.faces] == [ReasonCode.TOO_SMALL, ReasonCode.CLEAR]


def test_a_crash_inside_the_check_is_review_with_its_traceback_logged(world, tmp_path, caplog):
    _settings, guard, detector, _encoder = world
    detector.fail = RuntimeError("detector exploded")
    with caplog.at_level(logging.ERROR, logger="optout_guard.photo"):
        result = guard.check(photo(tmp_path / "any.png", (9, 9, 9)))
    assert result.verdict is Verdict.REVIEW and result.retry
    assert "could not be checked (RuntimeError: detector exploded)" in result.reasons[0]
    assert any(r.exc_info for r in caplog.records)  # the traceback is in the log, not lost


def test_a_file_that_is_not_a_photo_is_review_and_never_reaches_the_detector(world, tmp_path):
    _settings, guard, detector, _encoder = world
    bad = tmp_path / "half-copied.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    result = guard.check(bad)
    assert result.verdict is Verdict.REVIEW and detector.calls == 0


def test_the_settler_passed_in_decides_with_the_faces(world, tmp_path):
    settings, _guard, detector, encoder = world

    class PersonSaidBlock:
        def settle(self, sha256, matches, notes):
            return matches, Verdict.BLOCK, ("a person said so",)

        def settle_file(self, result: ScanResult) -> ScanResult:
            return result

        def decided_since(self, when: str) -> set[str]:
            return set()

    path = photo(tmp_path / "p.png", (4, 5, 6))
    detector.place(path, face(50.0))
    encoder.vectors[50.0] = at_distance(ANNA, 0.95, RNG)  # the faces alone: allow
    guard = Guard(settings, index=gallery({"anna": ANNA}), settler=PersonSaidBlock(), face_models=_guard.face_models)
    result = guard.check(path)
    assert (result.verdict, result.reasons) == (Verdict.BLOCK, ("a person said so",))


def test_a_scope_searches_only_its_students(world, tmp_path):
    _settings, guard, detector, encoder = world
    path = photo(tmp_path / "game.png", (7, 7, 7))
    detector.place(path, face(70.0))
    encoder.vectors[70.0] = at_distance(BEN, 0.2, RNG)
    assert guard.check(path).verdict is Verdict.BLOCK
    scoped = guard.check(path, scope=Scope("Lincoln", frozenset({"anna"})))
    assert scoped.verdict is Verdict.ALLOW and scoped.scope == "Lincoln"


def test_a_recheck_decides_stored_faces_again_without_detection(world, tmp_path):
    _settings, guard, detector, encoder = world
    path = photo(tmp_path / "old.png", (8, 8, 8))
    encoder.vectors[40.0] = at_distance(ANNA, 0.25, RNG)
    result = guard.recheck(path, [face(40.0)])
    assert detector.calls == 0 and result.verdict is Verdict.BLOCK


def test_one_student_is_at_most_one_face(world, tmp_path):
    """The joint assignment: two faces both close to anna cannot both be anna."""
    _settings, guard, detector, encoder = world
    path = photo(tmp_path / "twins.png", (3, 3, 3))
    detector.place(path, face(10.0), face(400.0))
    encoder.vectors[10.0] = at_distance(ANNA, 0.20, RNG)
    encoder.vectors[400.0] = at_distance(ANNA, 0.30, RNG)
    matches: tuple[FaceMatch, ...] = guard.check(path).faces
    blocked = [m for m in matches if m.decision is Decision.BLOCK]
    assert len(blocked) == 1 and blocked[0].face.box.x == 10.0
    assert matches[1].decision is not Decision.CLEAR  # the other face still resembles her: never cleared


def test_embeddings_for_the_audit_cache_come_beside_the_result_never_in_it(world, tmp_path):
    import dataclasses

    _settings, guard, detector, encoder = world
    path = photo(tmp_path / "cache.png", (6, 6, 6))
    detector.place(path, face(10.0, width=20.0), face(300.0))
    encoder.vectors[300.0] = at_distance(ANNA, 0.9, RNG)
    result, vectors = guard.check_keeping_embeddings(path)
    assert vectors is not None and vectors[0] is None  # too small: never embedded
    assert np.allclose(vectors[1], encoder.vectors[300.0])
    assert not any(isinstance(getattr(result, f.name), np.ndarray) for f in dataclasses.fields(result))
    assert "embeddings" not in {f.name for f in dataclasses.fields(result)}


def test_the_index_is_searched_once_for_a_photo_of_strangers(world, tmp_path):
    """One search per photo; only faces near somebody are searched again, mirror-averaged."""
    _settings, guard, detector, encoder = world
    calls: list[int] = []
    real_search = guard.index.search

    def counting(vectors, *args, **kwargs):
        calls.append(len(vectors))
        return real_search(vectors, *args, **kwargs)

    guard.index.search = counting
    strangers = photo(tmp_path / "strangers.png", (11, 12, 13))
    detector.place(strangers, *(face(100.0 * i + 1) for i in range(6)))
    for i in range(6):
        encoder.vectors[100.0 * i + 1] = at_distance(ANNA, 1.0, RNG)
    assert guard.check(strangers).verdict is Verdict.ALLOW and calls == [6]
    calls.clear()
    near = photo(tmp_path / "near.png", (14, 15, 16))
    detector.place(near, face(1.0), face(101.0))
    encoder.vectors[1.0] = at_distance(ANNA, 0.3, RNG)
    assert guard.check(near).verdict is Verdict.BLOCK and calls == [2, 1]


def test_a_copy_that_cannot_be_written_never_leaves_a_photo_allowed(world, tmp_path):
    """One rule for every copy (matching.copy_failed): the marked-up copy of an allowed photo that
    cannot be written makes the photo review, and says why; a blocked photo stays blocked."""
    _settings, guard, detector, encoder = world
    clear = photo(tmp_path / "clear.png", (9, 9, 9))
    detector.place(clear, face(10.0))
    encoder.vectors[10.0] = at_distance(ANNA, 0.95, RNG)
    assert guard.check(clear).verdict is Verdict.ALLOW
    not_a_folder = tmp_path / "marked"
    not_a_folder.write_text("a file where the folder for copies should be")
    result = guard.check(clear, annotate_dir=not_a_folder)
    assert result.verdict is Verdict.REVIEW and any(r.startswith("a copy could not be written") for r in result.reasons)
    close = photo(tmp_path / "close.png", (8, 8, 8))
    detector.place(close, face(20.0))
    encoder.vectors[20.0] = at_distance(ANNA, 0.2, RNG)
    assert guard.check(close, annotate_dir=not_a_folder).verdict is Verdict.BLOCK
