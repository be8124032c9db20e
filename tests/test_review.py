"""The review book's rules, on made-up faces (no model): what a settled face becomes in later checks."""

from __future__ import annotations

import numpy as np

from optout_guard.review import NONE, UNNAMED, ReviewBook, settle_matches
from optout_guard.types import Box, Candidate, Decision, Face, FaceMatch, ScanResult, Verdict

SHA = "ab" * 32


def face(x: float) -> Face:
    return Face(Box(x, 0, 100, 100), 0.9, np.zeros((5, 2), np.float32))


def review(x: float, *cands: Candidate) -> FaceMatch:
    return FaceMatch(face(x), Decision.REVIEW, cands, "resembles")


def book_with_cards(tmp_path) -> tuple[ReviewBook, list[int]]:
    book = ReviewBook(tmp_path / "review.sqlite")
    result = ScanResult(
        "/p/x.jpg", Verdict.REVIEW, ("r",), (review(0, Candidate("a", 0.45)), review(200, Candidate("b", 0.47))), SHA
    )
    assert book.add_result(result, "desk") == 2
    assert book.add_result(result, "desk") == 0  # the same photo again: no new cards
    assert (tmp_path / "review.sqlite").stat().st_mode & 0o777 == 0o600
    return book, [c.id for c in book.queue()]


def test_none_of_them_clears_only_while_no_unseen_student_comes_close(tmp_path):
    book, (first, _) = book_with_cards(tmp_path)
    book.settle(first, NONE, "ann")
    same = settle_matches(SHA, [review(0, Candidate("a", 0.45)), review(200, Candidate("b", 0.47))], book)
    assert [m.decision for m in same] == [Decision.CLEAR, Decision.REVIEW] and "cleared by ann" in same[0].reason
    # A student enrolled later comes close to the cleared face: a person must look again.
    newcomer = settle_matches(SHA, [review(0, Candidate("c", 0.41), Candidate("a", 0.45))], book)
    assert newcomer[0].decision is Decision.REVIEW
    # A face that blocks is never turned into anything else by a settlement.
    blocked = FaceMatch(face(0), Decision.BLOCK, (Candidate("a", 0.30),), "matches")
    assert settle_matches(SHA, [blocked], book)[0] is blocked
    # Another photo (another hash) is untouched.
    assert settle_matches("cd" * 32, [review(0, Candidate("a", 0.45))], book)[0].decision is Decision.REVIEW


def test_student_and_unnamed_answers_block_and_undo_reopens(tmp_path):
    book, (first, second) = book_with_cards(tmp_path)
    d1 = book.settle(first, "a", "ann")
    d2 = book.settle(second, UNNAMED, "bob")
    out = settle_matches(SHA, [review(0, Candidate("a", 0.45)), review(200, Candidate("b", 0.47))], book)
    assert [(m.decision, m.student_id) for m in out] == [(Decision.BLOCK, "a"), (Decision.BLOCK, None)]
    assert book.photo(SHA)["verdict"] == "block"
    assert [d["action"] for d in book.decisions()] == ["unnamed student", "student"]
    book.undo(d1, "ann")
    book.undo(d2, "ann")
    assert book.open_count() == 2 and book.photo(SHA)["verdict"] == "review"
    assert settle_matches(SHA, [review(0, Candidate("a", 0.45))], book)[0].decision is Decision.REVIEW


def test_skipped_cards_go_to_the_back_in_the_order_skipped(tmp_path):
    book, (first, second) = book_with_cards(tmp_path)
    book.skip(first)
    assert [c.id for c in book.queue()] == [second, first]
    book.skip(second)
    assert [c.id for c in book.queue()] == [first, second]  # ids never change: the page's card ids stay valid
    assert book.open_cards(SHA) == {0: first, 1: second}
