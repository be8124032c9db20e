"""The review book: faces that need a person, and what people decided about them.

Every face a check leaves at *review* becomes a card. A reviewer settles a card as "this student"
(the face is that opted-out student: the photo is blocked) or "none of them" (the face is not
any of the students shown: it is cleared for this photo, identified by its content hash, so the
same photo is not asked again). Decisions can be undone; every decision and undo is kept in the
book and in the activity log (who, when, photo hash, student id). Nothing here holds a face
template: "none of them" never stores anything about a child who is not enrolled.

Settlements feed back into every check (``apply_settlements``): a face settled "none" is clear
only while its closest students are still the ones the reviewer saw; a student enrolled later
who matches the face makes it a review again. A face settled as a student blocks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optout_guard.config import Settings
from optout_guard.errors import AlreadySettled, NotFound, Refused
from optout_guard.fsutil import open_private_db, utc_now
from optout_guard.matching import photo_verdict
from optout_guard.types import Box, Candidate, Decision, FaceMatch, ReasonCode, ScanResult, Settler, Verdict

BOOK_FILE = "review.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, source TEXT NOT NULL, verdict TEXT, reasons TEXT,
    marked TEXT, added_at TEXT, updated_at TEXT, base TEXT);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, face INTEGER NOT NULL, box TEXT NOT NULL, landmarks TEXT, page INTEGER,
    candidates TEXT NOT NULL, reason TEXT, status TEXT NOT NULL DEFAULT 'open', answer TEXT,
    settled_by TEXT, settled_at TEXT, skipped INTEGER, UNIQUE (sha256, face));
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, user TEXT NOT NULL, sha256 TEXT NOT NULL, face INTEGER NOT NULL,
    face_id INTEGER NOT NULL, action TEXT NOT NULL, student_id TEXT, reference TEXT, undone_at TEXT, undone_by TEXT);
CREATE INDEX IF NOT EXISTS faces_status ON faces (status, id);
"""
NONE = ""  # the answer "none of them"
UNNAMED = "?"  # the answer "an opted-out student, but not one of those shown" (or too small to say which)
# A photo card's answer "post the blurred copy": nobody could say who the unjudged faces are, but the
# copy with every one of them blurred may be posted. The original stays *review*.
BLURRED = "~blurred"
# A settlement belongs to the face at the same place: the photo is the same file (same sha256), so
# its faces are found at the same boxes; half overlap tolerates a re-detection's jitter, never a neighbour.
SAME_FACE_IOU = 0.5
PHOTO = -1  # the face number of a photo card: the whole photo (faces too small, blurred, turned, cut off; notes)


def book_path(settings: Settings) -> Path:
    return settings.state_dir / BOOK_FILE


_now = utc_now


@dataclass(frozen=True)
class Settlement:
    face: int
    box: Box
    answer: str  # a student id, or NONE
    shown: tuple[str, ...]  # the candidates the reviewer saw
    by: str
    at: str


@dataclass(frozen=True)
class Card:
    id: int
    sha256: str
    face: int
    box: Box
    landmarks: np.ndarray  # (5, 2), for embedding the face again (adding it as a reference)
    page: int
    candidates: tuple[Candidate, ...]
    reason: str
    photo_path: str
    source: str
    marked: str | None
    time: float | None = None  # a clip's track: seconds of the frame the box is in (None: a photo)


class ReviewBook:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db = open_private_db(self.path, check_same_thread=False)  # created 0600, never chmodded after
        self.db.executescript(SCHEMA)
        if "time" not in {r[1] for r in self.db.execute("PRAGMA table_info(faces)")}:
            self.db.execute("ALTER TABLE faces ADD COLUMN time REAL")  # a clip track's best frame (seconds)

    @classmethod
    def open(cls, settings: Settings) -> ReviewBook:
        return cls(book_path(settings))

    def close(self) -> None:
        self.db.close()

    # ---- cards in ------------------------------------------------------------------------
    def knows(self, sha256: str) -> bool:
        return self.db.execute("SELECT 1 FROM photos WHERE sha256=?", (sha256,)).fetchone() is not None

    def add_result(self, result: ScanResult, source: str) -> int:
        """Record a checked photo; each of its review faces becomes a card (once per photo content).
        Returns the number of new cards."""
        if result.sha256 is None:
            return 0
        # A clip's faces are its tracks: each card shows the track's best frame (``time``).
        times = [t.best_time for t in result.clip.tracks] if result.clip is not None else [None] * len(result.faces)
        now = _now()
        # The verdict the photo has once every review face is settled "none of them": its other
        # faces and its own notes (a photo that could not be read at all has no face to settle).
        # (Without the notes and the faces nobody could judge: the photo card settles those.)
        settled_faces = [m for m in result.faces if m.decision is not Decision.REVIEW]
        base = photo_verdict(settled_faces)[0].value if result.faces else result.verdict.value
        # One photo, one set of cards, whichever way it arrived: a photo already queued from the check
        # folder and then dropped on the page keeps its place, name and source while its file is there.
        known = self.db.execute("SELECT path, source FROM photos WHERE sha256=?", (result.sha256,)).fetchone()
        path = result.path
        if known is not None and known[0] != result.path and os.path.exists(known[0]):
            path, source = known[0], known[1]
        with self.db:
            self.db.execute(
                "INSERT INTO photos VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET path=excluded.path, "
                "source=excluded.source, verdict=excluded.verdict, reasons=excluded.reasons, "
                "marked=COALESCE(excluded.marked, photos.marked), updated_at=excluded.updated_at, base=excluded.base",
                (
                    result.sha256,
                    path,
                    source,
                    result.verdict.value,
                    json.dumps(list(result.reasons)),
                    result.annotated_path,
                    now,
                    now,
                    base,
                ),
            )
            new = 0
            for i, m in enumerate(result.faces):
                if m.code is ReasonCode.CONSENTING:
                    # Cleared by recognising a consenting student: kept out of the queue, listed for a
                    # person who may hold it (``hold_recognised``), never asked by itself.
                    self.db.execute(
                        "INSERT INTO faces (sha256, face, box, landmarks, page, candidates, reason, time, status) "
                        "VALUES (?,?,?,?,?,?,?,?, 'recognised') ON CONFLICT(sha256, face) DO UPDATE SET "
                        "reason=excluded.reason WHERE faces.status = 'recognised'",
                        (result.sha256, i, json.dumps([m.face.box.x, m.face.box.y, m.face.box.w, m.face.box.h]),
                         json.dumps(np.asarray(m.face.landmarks, float).round(1).tolist()), m.face.page,
                         json.dumps([[c.student_id, c.distance] for c in m.candidates]), m.reason, times[i]),
                    )  # fmt: skip
                    continue
                if m.decision is not Decision.REVIEW or not m.candidates:
                    continue  # faces nobody could judge share the photo's one card (below)
                box = json.dumps([m.face.box.x, m.face.box.y, m.face.box.w, m.face.box.h])
                candidates = json.dumps([[c.student_id, c.distance] for c in m.candidates])
                landmarks = json.dumps(np.asarray(m.face.landmarks, float).round(1).tolist())
                known = self.db.execute("SELECT 1 FROM faces WHERE sha256=? AND face=?", (result.sha256, i)).fetchone()
                self.db.execute(
                    "INSERT INTO faces (sha256, face, box, landmarks, page, candidates, reason, time) VALUES (?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(sha256, face) DO UPDATE SET candidates=excluded.candidates, reason=excluded.reason "
                    "WHERE faces.status != 'settled'",
                    (result.sha256, i, box, landmarks, m.face.page, candidates, m.reason, times[i]),
                )
                new += known is None
            # One photo card for everything that is not a resemblance: faces too small, blurred,
            # turned or cut off, and the photo's own notes. A person answers for the whole photo.
            unjudged = [m for m in result.faces if m.decision is Decision.REVIEW and not m.candidates]
            # A file that could not be decoded at all (damaged, cut off) gets a card too: a person
            # opens it elsewhere and answers for it (before, such reviews had nowhere to go).
            undecodable = not result.faces and result.verdict is Verdict.REVIEW and result.size is None
            if (unjudged or result.notes or undecodable) and (result.size is not None or undecodable):
                why = [r for r in result.reasons if not any(r == m.reason for m in result.faces if m.candidates)]
                known = self.db.execute("SELECT 1 FROM faces WHERE sha256=? AND face=?", (result.sha256, PHOTO)).fetchone()
                self.db.execute(
                    "INSERT INTO faces (sha256, face, box, landmarks, page, candidates, reason) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT(sha256, face) DO UPDATE SET reason=excluded.reason WHERE faces.status != 'settled'",
                    (result.sha256, PHOTO, json.dumps([0, 0, *(result.size or (0, 0))]), "[]", 0, "[]", "; ".join(why)),
                )
                new += known is None
        return new



    # ---- cards out -----------------------------------------------------------------------
    def _card(self, row: tuple) -> Card:
        fid, sha, face, box, landmarks, page, cands, reason, path, source, marked, time = row
        return Card(
            fid,
            sha,
            face,
            Box(*json.loads(box)),
            np.asarray(json.loads(landmarks or "[]"), np.float32).reshape(-1, 2),
            page or 0,
            tuple(Candidate(s, float(d)) for s, d in json.loads(cands)),
            reason or "",
            path,
            source,
            marked,
            time,
        )

    _CARD_SQL = (
        "SELECT f.id, f.sha256, f.face, f.box, f.landmarks, f.page, f.candidates, f.reason, p.path, p.source, p.marked, "
        "f.time "
        "FROM faces f JOIN photos p ON p.sha256 = f.sha256"
    )

    def queue(self, limit: int = 50) -> list[Card]:
        """Open cards first, then skipped ones; among them staff's photos (the check folder, the page)
        before the audit's backlog, then likely hits (closest candidate first), then oldest first."""
        rows = self.db.execute(
            self._CARD_SQL + " WHERE f.status IN ('open', 'skipped') ORDER BY f.status = 'skipped', f.skipped, "
            "p.source = 'audit', json_extract(f.candidates, '$[0][1]') IS NULL, json_extract(f.candidates, '$[0][1]'), "
            "f.id LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._card(r) for r in rows]

    def card(self, face_id: int) -> Card | None:
        row = self.db.execute(self._CARD_SQL + " WHERE f.id=?", (face_id,)).fetchone()
        return self._card(row) if row else None

    def open_cards(self, sha256: str) -> dict[int, int]:
        """Face index -> card id of a photo's cards still waiting for a person."""
        rows = self.db.execute("SELECT face, id FROM faces WHERE sha256=? AND status IN ('open', 'skipped')", (sha256,))
        return dict(rows.fetchall())

    def open_cards_in(self, folder: str, limit: int = 500) -> list[Card]:
        """Open face cards of the photos directly in ``folder`` (one event's candidates), oldest first."""
        pattern = folder.rstrip("/\\").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.db.execute(
            self._CARD_SQL + " WHERE f.status IN ('open', 'skipped') AND f.face >= 0 AND p.path LIKE ? ESCAPE '\\' "
            "ORDER BY f.id LIMIT ?",
            (pattern, limit),
        ).fetchall()
        cards = [self._card(r) for r in rows]
        return [c for c in cards if str(Path(c.photo_path).parent) == folder]

    def recognised(self, limit: int = 200) -> list[Card]:
        """Faces cleared by recognising a consenting student, newest first (a person may hold one)."""
        rows = self.db.execute(self._CARD_SQL + " WHERE f.status = 'recognised' ORDER BY f.id DESC LIMIT ?", (limit,))
        return [self._card(r) for r in rows.fetchall()]

    def hold_recognised(self, face_id: int, user: str) -> int:
        """A person wants to look at a face cleared by recognition: it becomes a card in the queue
        and the photo is *review* again until it is answered. Returns the decision id (undoable)."""
        card = self.card(face_id)
        if card is None:
            raise NotFound(face_id)
        now = _now()
        with self.db:
            updated = self.db.execute("UPDATE faces SET status='open' WHERE id=? AND status='recognised'", (face_id,))
            if updated.rowcount != 1:
                raise AlreadySettled("this face is not (or no longer) one cleared by recognition")
            cursor = self.db.execute(
                "INSERT INTO decisions (at, user, sha256, face, face_id, action) VALUES (?,?,?,?,?,?)",
                (now, user, card.sha256, card.face, face_id, HOLD_ACTION),
            )
            self._refresh_verdict(card.sha256)
        return int(cursor.lastrowid or 0)

    def open_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM faces WHERE status IN ('open', 'skipped')").fetchone()[0])

    def photo(self, sha256: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT path, source, verdict, reasons, marked FROM photos WHERE sha256=?", (sha256,)).fetchone()
        if row is None:
            return None
        return {"path": row[0], "source": row[1], "verdict": row[2], "reasons": json.loads(row[3] or "[]"), "marked": row[4]}

    # ---- decisions -----------------------------------------------------------------------
    def moved(self, sha256: str, path: str) -> None:
        """The photo now lives elsewhere (the check folder re-filed it)."""
        self.db.execute("UPDATE photos SET path=?, marked=NULL WHERE sha256=?", (path, sha256))

    def settle(
        self, face_id: int, answer: str, user: str, reference: str | None = None, action: str | None = None
    ) -> int:
        """Settle a card: ``answer`` is a student id among its candidates, or NONE. Returns the decision id."""
        card = self.card(face_id)
        if card is None:
            raise NotFound(face_id)
        if answer == BLURRED and card.face != PHOTO:
            raise Refused("only a whole photo's card can be answered 'post the blurred copy'")
        if answer not in (NONE, UNNAMED, BLURRED) and answer not in {c.student_id for c in card.candidates}:
            raise Refused(f"{answer} is not one of this face's candidates")
        now = _now()
        with self.db:
            # Only an open card takes an answer, checked in the same statement that settles it: a second
            # answer (another browser, a page loaded earlier) never overwrites the first.
            updated = self.db.execute(
                "UPDATE faces SET status='settled', answer=?, settled_by=?, settled_at=? "
                "WHERE id=? AND status IN ('open', 'skipped')",
                (answer, user, now, face_id),
            )
            if updated.rowcount != 1:
                raise AlreadySettled(self.settled_message(face_id))
            cursor = self.db.execute(
                "INSERT INTO decisions (at, user, sha256, face, face_id, action, student_id, reference) VALUES (?,?,?,?,?,?,?,?)",
                (
                    now,
                    user,
                    card.sha256,
                    card.face,
                    face_id,
                    action or _action(answer),
                    answer if answer not in (NONE, UNNAMED, BLURRED) else None,
                    reference,
                ),
            )
            self._refresh_verdict(card.sha256)
        return int(cursor.lastrowid or 0)

    def set_reference(self, decision_id: int, reference: str) -> None:
        """The reference photo a decision added, once it is written (it named the plan before)."""
        with self.db:
            self.db.execute("UPDATE decisions SET reference=? WHERE id=?", (reference, decision_id))

    def is_open(self, face_id: int) -> bool:
        row = self.db.execute("SELECT status FROM faces WHERE id=?", (face_id,)).fetchone()
        return row is not None and row[0] in ("open", "skipped")

    def settled_message(self, face_id: int) -> str:
        row = self.db.execute("SELECT settled_by, settled_at FROM faces WHERE id=?", (face_id,)).fetchone()
        by, at = (row or (None, None))
        return (
            f"this card was already answered by {by or 'someone'} at {(at or '')[:16].replace('T', ' ')} UTC; "
            "undo that decision first to answer it again"
        )

    def decision_user(self, decision_id: int) -> str | None:
        row = self.db.execute("SELECT user FROM decisions WHERE id=?", (decision_id,)).fetchone()
        if row is None:
            raise NotFound(decision_id)
        return str(row[0])

    def skip(self, face_id: int) -> None:
        # A skipped card goes to the back of the queue (behind cards skipped earlier).
        self.db.execute(
            "UPDATE faces SET status='skipped', skipped=(SELECT COALESCE(MAX(skipped), 0) + 1 FROM faces) "
            "WHERE id=? AND status IN ('open', 'skipped')",
            (face_id,),
        )

    def skipped_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM faces WHERE status='skipped'").fetchone()[0])

    def reopen_skipped(self) -> int:
        """Bring every skipped card back to its place in the queue (a skipped real hit is never lost)."""
        cursor = self.db.execute("UPDATE faces SET status='open', skipped=NULL WHERE status='skipped'")
        return cursor.rowcount

    def undo(self, decision_id: int, user: str) -> dict[str, Any]:
        """Undo a decision: its card is open again. Returns the decision (with any reference added)."""
        row = self.db.execute(
            "SELECT face_id, sha256, student_id, reference, undone_at, action FROM decisions WHERE id=?", (decision_id,)
        ).fetchone()
        if row is None:
            raise NotFound(decision_id)
        face_id, sha, student, reference, undone, action = row
        if undone:
            raise Refused("this decision was already undone")
        now = _now()
        with self.db:
            self.db.execute("UPDATE decisions SET undone_at=?, undone_by=? WHERE id=?", (now, user, decision_id))
            # Undoing "hold it" puts the face back among those cleared by recognition (if unanswered).
            status, only = ("recognised", "AND status IN ('open', 'skipped')") if action == HOLD_ACTION else ("open", "")
            self.db.execute(
                f"UPDATE faces SET status=?, answer=NULL, settled_by=NULL, settled_at=NULL WHERE id=? {only}", (status, face_id)
            )
            self._refresh_verdict(sha)
        return {"face_id": face_id, "sha256": sha, "student_id": student, "reference": reference}

    def decided_since(self, when: str) -> set[str]:
        """Content hashes of photos with a decision (or an undo) at or after ``when`` (ISO UTC)."""
        rows = self.db.execute(
            "SELECT DISTINCT sha256 FROM decisions WHERE at >= ? OR (undone_at IS NOT NULL AND undone_at >= ?)", (when, when)
        )
        return {sha for (sha,) in rows}

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest decisions, newest first, each with the photo it is about (its file name and
        where it came from): a history a person can read, not a list of hashes."""
        rows = self.db.execute(
            "SELECT d.id, d.at, d.user, d.sha256, d.face, d.face_id, d.action, d.student_id, d.reference, d.undone_at, "
            "d.undone_by, p.path, p.source FROM decisions d LEFT JOIN photos p ON p.sha256 = d.sha256 "
            "ORDER BY d.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        keys = ("id", "at", "user", "sha256", "face", "face_id", "action", "student_id", "reference", "undone_at", "undone_by")
        out = []
        for r in rows:
            entry = dict(zip(keys, r[:11], strict=True))
            path, source = r[11], r[12]
            entry["photo_name"] = (Path(path).name if source != "desk" else "photo checked on the page") if path else None
            entry["source"] = source
            out.append(entry)
        return out

    def settlements(self, sha256: str) -> list[Settlement]:
        rows = self.db.execute(
            "SELECT face, box, answer, candidates, settled_by, settled_at FROM faces WHERE sha256=? AND status='settled'",
            (sha256,),
        ).fetchall()
        return [
            Settlement(face, Box(*json.loads(box)), answer or NONE, tuple(s for s, _ in json.loads(cands)), by or "", at or "")
            for face, box, answer, cands, by, at in rows
        ]

    def _refresh_verdict(self, sha256: str) -> None:
        """The photo's verdict with its settled faces counted (for the page and for reports)."""
        # (faces cleared by recognition and not held count as the check decided them: in ``base``)
        faces = self.db.execute(
            "SELECT status, answer FROM faces WHERE sha256=? AND status != 'recognised'", (sha256,)
        ).fetchall()
        row = self.db.execute("SELECT verdict, reasons, base FROM photos WHERE sha256=?", (sha256,)).fetchone()
        if row is None:
            return
        if any(status == "settled" and answer and answer != BLURRED for status, answer in faces):
            verdict = Verdict.BLOCK.value
        elif any(status != "settled" or answer == BLURRED for status, answer in faces):
            # (an approved blurred copy leaves the original under review: nobody said who is in it)
            verdict = Verdict.REVIEW.value
        else:
            verdict = row[2] or row[0]
        self.db.execute("UPDATE photos SET verdict=? WHERE sha256=?", (verdict, sha256))


HOLD_ACTION = "hold recognised face"  # a person asked to look at a face cleared by recognising a consenting student


def _action(answer: str) -> str:
    return {NONE: "none", UNNAMED: "unnamed student", BLURRED: "post blurred copy"}.get(answer, "student")


def apply_decisions(settler: Settler, result: ScanResult) -> ScanResult:
    """What people decided, applied to a result made without it (a cluster worker's): the faces'
    answers and the whole photo's for a photo with faces or notes; for a file with neither (one
    that could not be decoded, or a photo without faces), a whole-file answer. The one way every
    path that did not decide with the settler applies it."""
    if result.sha256 is None:
        return result
    if result.faces or result.notes:
        matches, verdict, reasons = settler.settle(result.sha256, list(result.faces), result.notes)
        return dataclasses.replace(result, faces=tuple(matches), verdict=verdict, reasons=reasons)
    return settler.settle_file(result)


def settle_matches(
    sha256: str,
    matches: list[FaceMatch],
    book: ReviewBook,
    settled: list[Settlement] | None = None,
    reopen_distance: float = 0.6,
) -> list[FaceMatch]:
    """A photo's face decisions with people's decisions about its faces applied (``settled``: the
    photo's settlements, when the caller has read them already). A face cleared as "none of them"
    opens again when a student the reviewer was not shown comes within ``reopen_distance``
    (setting ``reopen_distance``: a student enrolled since)."""
    if settled is None:
        settled = book.settlements(sha256) if matches else []
    recognised = [i for i, m in enumerate(matches) if m.code is ReasonCode.CONSENTING]
    held = set(book.open_cards(sha256)) & set(recognised) if recognised else set()
    if not settled and not held:
        return matches
    result = list(matches)
    whole = next((s for s in settled if s.face == PHOTO), None)
    for i, m in enumerate(matches):
        if i in held:  # a person asked to look although it was recognised: review until they answer
            why = f"held for a person although {m.reason}"
            result[i] = FaceMatch(m.face, Decision.REVIEW, m.candidates, why, ReasonCode.LOOKALIKE)
            continue
        if m.decision is not Decision.REVIEW and m.code is not ReasonCode.CONSENTING:
            continue  # a block stays a block; a clear needs nobody (but a person's answer beats a recognition)
        if not m.candidates:  # a face nobody could judge: the photo card's answer counts
            if whole is not None and whole.answer == UNNAMED:
                why = f"an opted-out student is in this photo, said {whole.by} ({whole.at[:10]})"
                result[i] = FaceMatch(m.face, Decision.BLOCK, (), why, ReasonCode.REVIEWER_UNNAMED)
            elif whole is not None and whole.answer == NONE:
                why = f"no opted-out student in this photo, said {whole.by} ({whole.at[:10]})"
                result[i] = FaceMatch(m.face, Decision.CLEAR, (), why, ReasonCode.REVIEWER_CLEARED)
            continue
        s = next((s for s in settled if s.face == i and s.box.iou(m.face.box) > SAME_FACE_IOU), None)
        if s is None:
            continue
        if s.answer == UNNAMED:
            # A person saw an opted-out student the matcher did not name: blocked, no student recorded.
            result[i] = FaceMatch(
                m.face, Decision.BLOCK, (), f"an opted-out student, said {s.by} ({s.at[:10]})", ReasonCode.REVIEWER_UNNAMED
            )
        elif s.answer:
            chosen = next((c for c in m.candidates if c.student_id == s.answer), Candidate(s.answer, float("nan")))
            rest = tuple(c for c in m.candidates if c.student_id != s.answer)
            result[i] = FaceMatch(
                m.face,
                Decision.BLOCK,
                (chosen, *rest),
                f"confirmed as student {s.answer} by {s.by} ({s.at[:10]})",
                ReasonCode.REVIEWER_CONFIRMED,
            )
        elif {c.student_id for c in m.candidates if c.distance <= reopen_distance} <= set(s.shown):
            # Cleared only while no student the reviewer did not see has come close (a new enrollment).
            result[i] = FaceMatch(
                m.face,
                Decision.CLEAR,
                m.candidates,
                f"none of {', '.join(s.shown)}: cleared by {s.by} ({s.at[:10]})",
                ReasonCode.REVIEWER_CLEARED,
            )
    return result


class WorkspaceDecisions:
    """What reviewers decided in this workspace's review book, applied to every check: the
    pipeline's default *settler* (``types.Settler``). The book is opened once it exists (the desk
    may create it while a watch runs); until then nothing is applied."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._book: ReviewBook | None = None

    @property
    def book(self) -> ReviewBook | None:
        if self._book is None and book_path(self.settings).exists():
            self._book = ReviewBook.open(self.settings)
        return self._book

    def settle(
        self, sha256: str | None, matches: list[FaceMatch], notes: tuple[str, ...]
    ) -> tuple[list[FaceMatch], Verdict, tuple[str, ...]]:
        """The faces' and the whole photo's decisions applied, then the photo's verdict."""
        book = self.book
        whole = None
        if book is not None and sha256 is not None:
            settled = book.settlements(sha256)  # read once: the faces' answers and the whole photo's
            matches = settle_matches(sha256, matches, book, settled, self.settings.thresholds.reopen)
            whole = next((s for s in settled if s.face == PHOTO), None)
        if whole is not None and whole.answer == NONE:
            notes = ()  # a person looked at the whole photo: its notes are answered
        verdict, reasons = photo_verdict(matches, notes)
        if whole is not None and whole.answer == UNNAMED and verdict is not Verdict.BLOCK:
            verdict, reasons = Verdict.BLOCK, (f"an opted-out student is in this photo, said {whole.by} ({whole.at[:10]})",)
        if whole is not None and whole.answer == BLURRED and verdict is Verdict.REVIEW:
            reasons = (*reasons, f"the blurred copy may be posted, said {whole.by} ({whole.at[:10]}); not this original")
        return matches, verdict, reasons

    def settle_file(self, result: ScanResult) -> ScanResult:
        """A file that could not be decoded (``result.sha256`` its content hash): a person who
        opened it elsewhere and said what is in it decides it."""
        book = self.book
        if book is None or result.sha256 is None:
            return result
        whole = next((s for s in book.settlements(result.sha256) if s.face == PHOTO), None)
        if whole is None or whole.answer == BLURRED:
            return result
        if whole.answer == UNNAMED:
            why = f"an opted-out student is in this file, said {whole.by} ({whole.at[:10]}), who opened it"
            return dataclasses.replace(result, verdict=Verdict.BLOCK, reasons=(*result.reasons, why), retry=False)
        why = f"no opted-out student in it, said {whole.by} ({whole.at[:10]}), who opened it"
        return dataclasses.replace(result, verdict=Verdict.ALLOW, reasons=(*result.reasons, why), retry=False)

    def decided_since(self, when: str) -> set[str]:
        """Content hashes of the photos decided about since ``when`` (the audit decides them again)."""
        book = self.book
        return book.decided_since(when) if book is not None else set()
