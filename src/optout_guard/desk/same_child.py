"""One answer per child across an event on the review desk (issue 26 §3): the open face cards of the
same event (an audit's or a check folder's photos in one folder, taken the same day) that resemble
the same student and seem to be the same child are shown beside the card, and answered with it.

"The same child" is the events module's rule: every pair of faces within ``events.LINK`` of each
other (complete linkage, 99.4% pairwise precise on children_dev), at most one face per photo. The
embeddings are made again from each card's stored box and landmarks, kept in memory only (never
written), and dropped when the desk stops. Nothing here changes a verdict by itself: a reviewer
answers, and each face's answer is recorded on its own card (undoable one by one, or all at once).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optout_guard.review import PHOTO, Card

if TYPE_CHECKING:
    from optout_guard.desk.service import Desk

EVENT_SOURCES = ("audit", "check folder")  # photos checked on the page are not one event
MAX_LOOKED_AT = 60  # cards of one event embedded for one group at most (each is a photo decoded)


class SameChild:
    def __init__(self) -> None:
        self._vectors: dict[int, np.ndarray | None] = {}  # card id -> its face's embedding (None: unusable)
        self._days: dict[str, str] = {}  # photo path -> the day it was taken (a header read once, not every refresh)
        self._lock = threading.Lock()

    def group(self, desk: Desk, card: Card) -> list[Card]:
        """The other open face cards showing, it seems, the same child as ``card`` in the same event,
        each resembling ``card``'s closest student; closest first. [] for photo cards and clips."""
        if card.face == PHOTO or card.time is not None or not card.candidates or card.source not in EVENT_SOURCES:
            return []
        from optout_guard.events import LINK

        student = card.candidates[0].student_id
        day = self.day(card.photo_path)
        others = [
            c for c in desk.book.open_cards_in(str(Path(card.photo_path).parent))
            if c.id != card.id and c.sha256 != card.sha256 and c.face != PHOTO and c.time is None
            and c.source in EVENT_SOURCES and student in {x.student_id for x in c.candidates}
            and desk.allowed(c.photo_path) is not None and self.day(c.photo_path) == day
        ][:MAX_LOOKED_AT]  # fmt: skip
        if not others:
            return []
        mine = self.vector(desk, card)
        if mine is None:
            return []
        near = sorted(
            ((float(np.linalg.norm(v - mine)), c, v) for c in others if (v := self.vector(desk, c)) is not None),
            key=lambda t: t[0],
        )
        members: list[tuple[Card, np.ndarray]] = [(card, mine)]
        for distance, other, vector in near:
            if distance > LINK:
                break
            if any(m.sha256 == other.sha256 for m, _ in members):
                continue  # a child is at most one face per photo
            if all(float(np.linalg.norm(vector - v)) <= LINK for _, v in members):
                members.append((other, vector))
        return [m for m, _ in members[1:]]

    def day(self, path: str) -> str:
        """The day a photo was taken (its name, EXIF or file date: ``media.photos.photo_date``)."""
        from optout_guard.media.photos import photo_date

        if path not in self._days:
            self._days[path] = photo_date(path)
        return self._days[path]

    def vector(self, desk: Desk, card: Card) -> np.ndarray | None:
        """The card's face embedded again (as the check embedded it), if its photo is unchanged."""
        with self._lock:
            if card.id in self._vectors:
                return self._vectors[card.id]
        from optout_guard.types import Face

        vector = None
        path = desk.allowed(card.photo_path)
        if path is not None:
            face = Face(card.box, 1.0, np.asarray(card.landmarks, np.float32), card.page)
            try:
                with desk.lock:  # one check at a time in the desk, as its imports and the page's checks do
                    result, vectors = desk.guard.check_keeping_embeddings(path, [face])
                if vectors is not None and result.sha256 == card.sha256 and vectors[0] is not None:
                    vector = np.asarray(vectors[0], np.float32)
            except Exception:  # noqa: BLE001 - a photo that cannot be read now: the card stands alone
                vector = None
        with self._lock:
            self._vectors[card.id] = vector
        return vector
