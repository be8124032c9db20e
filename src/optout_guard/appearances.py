"""Every photo of one student: where optout-guard blocked or held them, or a reviewer confirmed them.

The first thing a privacy officer needs when a family opts out mid-year is what is *already*
posted or filed with that child in it. This reads only what is stored today — the audit states of
every library audited from this workspace, the review book (the desk, and what it imported from
check folders and audits), and the notes a check folder wrote beside its filed photos — so it
makes no new biometric data: candidates and decisions, never embeddings. A student enrolled only
today has no appearances yet: the next audit re-decides every photo with faces against them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optout_guard import stored_faces
from optout_guard.config import Settings
from optout_guard.types import Decision


@dataclass(frozen=True)
class Appearance:
    path: str
    source: str  # "audit", "check folder", "desk"
    verdict: str  # the photo's verdict now
    how: str  # "blocked", "held for review", "confirmed by NAME", "held, answered 'none' by NAME"
    when: str  # ISO time of the check or the decision
    distance: float | None = None
    marked: str | None = None  # the marked-up copy, where one is kept

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _audits(settings: Settings, student_id: str) -> list[Appearance]:
    found = []
    needle = f'"student_id": {json.dumps(student_id)}'
    for path in sorted(settings.state_dir.glob("audit-*.sqlite")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT path, verdict, faces, checked_at FROM files WHERE faces LIKE ?", (f"%{needle}%",)
            ).fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            db.close()
        for raw, verdict, faces, checked in rows:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                for face in stored_faces.decode(faces):
                    if face.student_id == student_id and face.decision in (Decision.BLOCK, Decision.REVIEW):
                        how = "blocked" if face.decision is Decision.BLOCK else "held for review (resembles them)"
                        found.append(Appearance(os.fsdecode(bytes(raw)), "audit", verdict, how, checked or "",
                                                face.distance))  # fmt: skip
                        break
    return found


def _review_book(settings: Settings, student_id: str) -> list[Appearance]:
    from optout_guard.review import NONE, UNNAMED, book_path

    path = book_path(settings)
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT p.path, p.source, p.verdict, p.marked, f.candidates, f.status, f.answer, f.settled_by, f.settled_at, "
            "p.updated_at FROM faces f JOIN photos p ON p.sha256 = f.sha256 WHERE f.candidates LIKE ?",
            (f"%{json.dumps(student_id)}%",),
        ).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        db.close()
    found = []
    for photo, source, verdict, marked, candidates, status, answer, by, at, updated in rows:
        with contextlib.suppress(ValueError, TypeError):
            near = {c[0]: c[1] for c in json.loads(candidates)}
            if student_id not in near:
                continue
            if status != "settled":
                how = "waiting on the review desk (resembles them)"
            elif answer == student_id:
                how = f"confirmed as this student by {by}"
            elif answer == UNNAMED:
                how = f"an opted-out student is in it, said {by} (not named)"
            elif answer == NONE:
                how = f"resembled them; answered 'none of these' by {by}"
            else:
                how = f"resembled them; answered as student {answer} by {by}"
            found.append(Appearance(photo, source, verdict or "", how, at or updated or "", near[student_id], marked))
    return found


def _check_folder(folder: Path, student_id: str) -> list[Appearance]:
    """Photos a check folder filed in blocked/ or review/ whose note names the student."""
    pattern = re.compile(rf"\bstudent {re.escape(student_id)}\b")
    found = []
    for verdict, sub in (("block", "blocked"), ("review", "review")):
        for note in sorted((folder / sub).rglob("*.txt")) if (folder / sub).is_dir() else []:
            if note.name.endswith((".marked.jpg.txt",)):
                continue
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if pattern.search(note.read_text(encoding="utf-8")):
                    photo = note.with_suffix("")
                    marked = photo.with_name(photo.name + ".marked.jpg")
                    when = _mtime(note)
                    how = "blocked" if verdict == "block" else "held for review (resembles them)"
                    found.append(Appearance(str(photo), "check folder", verdict, how, when, None,
                                            str(marked) if marked.exists() else None))  # fmt: skip
    return found


def _mtime(path: Path) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")


def appearances(settings: Settings, student_id: str, check_folders: list[Path] | None = None) -> list[Appearance]:
    """Every photo and clip where ``student_id`` was blocked, held or confirmed, newest first."""
    # One line per photo and place. What a person answered on the desk says the most about a photo,
    # so the review book's line wins over the audit's or the check folder's for the same file, even
    # when the filing's note was written after the answer (a refile on a busy machine).
    # (Within each, the newest line of a file wins, as before.)
    others = _audits(settings, student_id)
    for folder in check_folders or []:
        others += _check_folder(Path(folder), student_id)
    newest_first = sorted(_review_book(settings, student_id), key=lambda a: a.when, reverse=True)
    newest_first += sorted(others, key=lambda a: a.when, reverse=True)
    kept: dict[tuple[str, str], Appearance] = {}
    for a in newest_first:
        kept.setdefault((a.path, a.source), a)
    return sorted(kept.values(), key=lambda a: a.when, reverse=True)
