"""The review desk: a small local web application (``optout-guard serve``).

- *Check photos*: drop photos on the page; verdict, marked-up copy, per face the closest students.
- *Review queue*: one card per face that needs a person (from the page, the check folder and the
  audit): the face enlarged beside up to 3 candidates' reference photos. Keyboard-first.
- Decisions go to the review book (``review.py``) and the activity log; "this student" can add
  the face as a new dated reference of that student (the index is updated on the spot).

Safety: bound to 127.0.0.1 unless ``lan=True``, which needs accounts (``users.py``: hashed
passwords) and a login. Every POST carries a CSRF token (Flask-WTF), the session cookie is
HttpOnly + SameSite=Strict, and the Host header must be the address served (no DNS rebinding).
No URL takes a file path: photos, faces and references are addressed by hash or id and looked up
in the book or the index, and a file is served only if it lies inside a folder the desk owns or
was told about. Pages load nothing from outside (no CDN, no fonts).
"""

from __future__ import annotations

import getpass
import io
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optout_guard.config import Settings
from optout_guard.errors import ConfigError, ImageRejected, NeedsConfirmation, OptoutGuardError
from optout_guard.fsutil import atomic_write, private_dir
from optout_guard.optout_list import is_valid_student_id
from optout_guard.review import BLURRED, NONE, PHOTO, UNNAMED, Card, ReviewBook

STATIC = Path(__file__).with_name("desk_static")
log = logging.getLogger("optout_guard.desk")
UPLOADS = "desk-uploads"
MARKED = "desk-marked"
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
CROP_PX = 260  # the face is shown this big on a card
REFERENCE_PX = 200


@dataclass
class DeskOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    lan: bool = False  # serve beyond this computer: login required
    show_names: bool = False  # localhost only: show imported names (LAN: per account)
    check_folders: list[Path] = field(default_factory=list)  # check folders whose review/ is queued
    audit_libraries: list[Path] = field(default_factory=list)  # audited libraries whose reviews are queued
    allowed_hosts: tuple[str, ...] = ()  # LAN: host names the desk answers to besides addresses
    upload_budget_bytes: int = 2_000_000_000  # photos checked on the page are kept up to this much in all…
    upload_days: int = 30  # …and this long; older ones are deleted (their decisions stay, by hash)


class Desk:
    """Everything the web layer needs: one Guard (models loaded once), the book, the sources."""

    def __init__(self, settings: Settings, options: DeskOptions) -> None:
        from optout_guard.pipeline import Guard

        self.settings = settings
        self.options = options
        self.guard = Guard(settings)
        self.guard.require_models()
        self.book = ReviewBook.open(settings)
        self.lock = threading.RLock()  # one check / one index change at a time
        self.state = settings.state_dir
        self.uploads = self.state / UPLOADS
        self.marked = self.state / MARKED
        for folder in (self.uploads, self.marked):
            private_dir(folder)
        self.uploads, self.marked = self.uploads.resolve(), self.marked.resolve()
        self.prune_uploads()  # the retention rule applies from the start, not only when photos arrive
        self.roots = [self.uploads, self.marked, settings.enrollments.resolve(), *[p.resolve() for p in options.check_folders]]
        self.roots += [p.resolve() for p in options.audit_libraries]
        self._names: dict[str, str] | None = None
        self.importing: dict[str, Any] = {"running": False, "done": 0, "total": 0, "added": 0}

    # ---- files ---------------------------------------------------------------------------
    def allowed(self, path: str | Path) -> Path | None:
        """The file, if it lies inside a folder the desk may serve from; else None."""
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_file() or not any(resolved.is_relative_to(root) for root in self.roots):
            return None
        return resolved

    def names(self) -> dict[str, str]:
        if self._names is None:
            from optout_guard.optout_list import load_list

            optouts = load_list(self.settings.workspace)
            self._names = {
                s.student_id: f"{s.first} {s.last}".strip()
                for s in (optouts.students.values() if optouts else [])
                if s.first or s.last
            }
        return self._names

    # ---- checking --------------------------------------------------------------------------
    def scopes(self) -> list[str]:
        """What the check page's scope picker offers: the schools on the list and config.toml's
        [scopes] (checking against a scope is never the default: the district is)."""
        from optout_guard.optout_list import load_list
        from optout_guard.scope import named_scopes

        optouts = load_list(self.settings.workspace)
        schools = {s.school for s in optouts.students.values() if s.school} if optouts is not None else set()
        return sorted(schools | set(named_scopes(self.settings.workspace)), key=str.lower)

    def check_upload(self, name: str, data: bytes, user: str, scope_name: str = "") -> dict[str, Any]:
        """Check a photo dropped on the page (against ``scope_name``, "" = the district); its review
        faces become cards. An unknown scope raises (the page says so; nothing is checked)."""
        import hashlib

        from optout_guard.activity_log import ActivityLog, photo_details
        from optout_guard.optout_list import load_list
        from optout_guard.scope import named_scopes, resolve_scope

        scope = resolve_scope(
            scope_name or None,
            None,
            set(self.guard.index.protected_students()),
            load_list(self.settings.workspace),
            named_scopes(self.settings.workspace),
        )

        digest = hashlib.sha256(data).hexdigest()
        suffix = Path(name).suffix.lower()[:6] if Path(name).suffix.isascii() else ""
        stored = self.uploads / f"{digest}{suffix}"
        if not stored.exists():
            self.prune_uploads(incoming=len(data))
            atomic_write(stored, data)
        with self.lock:
            result = self.guard.check(stored, annotate_dir=self.marked, scope=scope)
            self.book.add_result(result, "desk")
            self.prune_uploads()  # the marked copy counts too
        # The log names photos by content hash only: a file name can be a child's name.
        ActivityLog(self.settings).record("desk-check", reviewer=user, **photo_details(result))
        return self.result_json(result, Path(name).name)

    def add_student(self, fields: dict[str, str], photos: list[tuple[str, bytes]], user: str) -> dict[str, Any]:
        """A family opted out today: protect the student now (as ``optout-guard add``)."""
        import tempfile

        from optout_guard.activity_log import ActivityLog
        from optout_guard.enroll import enrollment_in_progress
        from optout_guard.index import edit_index
        from optout_guard.optout_list import Student
        from optout_guard.sync import add_student

        student_id = fields.get("student_id", "").strip()
        if not is_valid_student_id(student_id):
            raise ValueError(f"{student_id!r} is not a valid student id (letters, digits, . _ -)")
        if not photos:
            raise ValueError("add at least one photo of the student")
        student = Student(student_id, *(fields.get(k, "").strip() for k in ("first", "last", "grade", "school")))
        with tempfile.TemporaryDirectory(dir=self.state) as tmp:  # private folder: children's photos
            paths = []
            for i, (name, data) in enumerate(photos):
                suffix = Path(name).suffix.lower()[:6] if Path(name).suffix.isascii() else ".jpg"
                path = Path(tmp) / f"photo-{i + 1}{suffix}"  # the upload's own name is not kept
                atomic_write(path, data)
                paths.append(path)
            with self.lock, enrollment_in_progress(self.settings), edit_index(self.settings) as index:
                report = add_student(student, paths, index, self.settings, self.guard.models, user)
                templates = sum(1 for t in index.templates if t.student_id == student_id)
        ActivityLog(self.settings).record("add", student_id=student_id, photos=len(photos), templates=templates, reviewer=user)
        rejected = [why for sid, _photo, why in report.rejected if sid == student_id]
        return {"student_id": student_id, "protected": templates > 0, "reference_photos": templates, "rejected": rejected}

    def prune_uploads(self, incoming: int = 0) -> int:
        """Keep the page's uploads within their age and size budget: older than ``upload_days`` go,
        then the oldest until the new photo fits. Raises when one photo alone exceeds the budget."""
        if incoming > self.options.upload_budget_bytes:
            raise OptoutGuardError("this photo is larger than the desk keeps; check it with optout-guard check instead")
        files = [p for p in (*self.uploads.iterdir(), *self.marked.iterdir()) if p.is_file()]
        files.sort(key=lambda p: p.stat().st_mtime)
        cutoff = time.time() - self.options.upload_days * 86400
        total = sum(p.stat().st_size for p in files)
        removed = 0
        for p in files[:-2] if not incoming else files:  # never the photo just checked and its marked copy
            if p.stat().st_mtime >= cutoff and total + incoming <= self.options.upload_budget_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            removed += 1
        return removed

    def result_json(self, result: Any, name: str) -> dict[str, Any]:
        faces = []
        for i, m in enumerate(result.faces):
            faces.append(
                {
                    "face": i,
                    "decision": m.decision.value,
                    "reason": m.reason,
                    "box": [round(v) for v in m.face.box.as_ints()],
                    "candidates": [self.candidate_json(c.student_id, c.distance) for c in m.candidates],
                }
            )
        card_ids = self.book.open_cards(result.sha256) if result.sha256 else {}
        for f in faces:
            f["card"] = card_ids.get(f["face"])
        return {
            "name": name,
            "sha256": result.sha256,
            "verdict": result.verdict.value,
            "reasons": list(result.reasons),
            "students": list(result.blocked_students),
            "marked_url": f"/photo/{result.sha256}/marked.jpg" if result.annotated_path else None,
            "faces": faces,
            "scope": result.scope or "the whole district",
        }

    def candidate_json(self, student_id: str, distance: float, viewer_names: bool = False) -> dict[str, Any]:
        refs = self.reference_photos(student_id)
        doc: dict[str, Any] = {
            "student_id": student_id,
            "distance": round(distance, 3),
            "references": [f"/reference/{student_id}/{i}.jpg" for i in range(len(refs))][:2],
        }
        if viewer_names and student_id in self.names():
            doc["name"] = self.names()[student_id]
        return doc

    def reference_photos(self, student_id: str) -> list[Path]:
        """The student's reference photos the desk may show, newest first (from enrollments/)."""
        templates = sorted(
            (t for t in self.guard.index.templates if t.student_id == student_id), key=lambda t: t.taken, reverse=True
        )
        found = []
        for t in templates:
            path = self.allowed(t.photo)
            if path is not None and path.is_relative_to(self.settings.enrollments.resolve()):
                found.append(path)
        return found

    # ---- sources: the check folder and the audit ----------------------------------------
    def start_import(self) -> bool:
        """Import from the check folders and audits in the background (the page shows the progress
        and refreshes itself); False if an import is already running."""
        with self.lock:
            if self.importing["running"]:
                return False
            self.importing.update(running=True, done=0, total=0, added=0)

        def work() -> None:
            try:
                self.import_sources(budget_seconds=None)
            except Exception:
                log.exception("importing review photos failed")
            finally:
                self.importing["running"] = False

        threading.Thread(target=work, name="desk-import", daemon=True).start()
        return True

    def import_sources(self, budget_seconds: float | None = 60.0) -> int:
        """Queue review photos from the check folders' review/ and the audits' state (new ones only)."""
        from optout_guard.audit import review_paths
        from optout_guard.folders import collect_photos
        from optout_guard.fsutil import sha256_file

        started, added = time.monotonic(), 0
        paths: list[tuple[Path, str]] = []
        for folder in self.options.check_folders:
            review = folder / "review"
            if review.is_dir():
                paths += [
                    (p, "check folder") for p in collect_photos([review]) if isinstance(p, Path) and ".marked." not in p.name
                ]
        for library in self.options.audit_libraries:
            paths += [(p, "audit") for p in review_paths(self.settings, library)]
        self.importing["total"] = len(paths)
        for path, source in paths:
            self.importing["done"] += 1
            if budget_seconds is not None and time.monotonic() - started > budget_seconds:
                break
            try:
                digest = sha256_file(path)
            except OSError:
                continue
            if self.book.knows(digest):
                continue
            with self.lock:
                result = self.guard.check(path, annotate_dir=self.marked)
                added += self.book.add_result(result, source)
            self.importing["added"] = added
        return added

    # ---- cards -------------------------------------------------------------------------------
    def card_json(self, card: Card, viewer_names: bool) -> dict[str, Any]:
        photo = self.book.photo(card.sha256) or {}
        whole = card.face == PHOTO
        marked = f"/photo/{card.sha256}/marked.jpg" if photo.get("marked") else None
        # The photo's other faces waiting for a person: shown together, settled together ("A").
        group = [
            {"id": other.id, "crop_url": f"/face/{other.id}.jpg", "student_id": other.candidates[0].student_id}
            for other in (self.book.card(i) for i in self.book.open_cards(card.sha256).values())
            if other is not None and other.id != card.id and other.face != PHOTO and other.candidates
        ]
        return {
            "id": card.id,
            "kind": "photo" if whole else "face",
            "group": group if not whole else [],
            "sha256": card.sha256,
            "face": card.face,
            "reason": card.reason,
            "source": card.source,
            "photo_name": Path(card.photo_path).name if card.source != "desk" else "photo checked on this page",
            "photo_url": f"/photo/{card.sha256}/marked.jpg" if photo.get("marked") else f"/photo/{card.sha256}/original.jpg",
            # A photo card shows the whole photo with the faces in question boxed (the marked-up copy).
            "crop_url": (marked or f"/face/{card.id}.jpg") if whole else f"/face/{card.id}.jpg",
            "face_px": round(card.box.w),
            "clip_time": card.time,  # a clip's track: the time of the frame shown (None for photos)
            "undecodable": whole and card.box.w == 0,  # a file with no picture to show: open it elsewhere
            "candidates": [self.candidate_json(c.student_id, c.distance, viewer_names) for c in card.candidates[:3]],
        }

    def face_crop(self, card: Card) -> bytes:
        """The face, with some context around it, enlarged to CROP_PX (JPEG bytes). A whole-photo
        card of a file that cannot be decoded shows what to do instead."""
        from PIL import Image

        from optout_guard.media.photos import load_image

        path = self.allowed(card.photo_path)
        if path is None:
            raise FileNotFoundError(card.photo_path)
        if card.face == PHOTO and card.box.w == 0:
            name = Path(card.photo_path).name
            return _placeholder(f"{name} could not be decoded here. Open it in another program and answer for it.")
        if card.time is not None:  # a clip's track: its best frame
            from optout_guard.media.clip import frame_at

            pixels, s = frame_at(path, card.time), 1.0
        else:
            image = load_image(path, self.settings)
            pixels = image.pages[min(card.page, len(image.pages) - 1)]
            s = image.scale
        b = card.box
        margin = 0.35 * max(b.w, b.h)
        left, top = max(0, int((b.x - margin) / s)), max(0, int((b.y - margin) / s))
        right = min(pixels.shape[1], int((b.right + margin) / s))
        bottom = min(pixels.shape[0], int((b.bottom + margin) / s))
        crop = Image.fromarray(pixels[top:bottom, left:right])
        factor = CROP_PX / max(crop.size)  # small faces enlarged, large ones shrunk: one size per card
        crop = crop.resize((round(crop.size[0] * factor), round(crop.size[1] * factor)), Image.Resampling.LANCZOS)
        return _jpeg(crop)

    def thumbnail(self, path: Path, size: int) -> bytes:
        from PIL import Image

        from optout_guard.media.photos import load_image, sniff

        if sniff(path) == "clip":  # a clip without its contact sheet: its first frame
            from optout_guard.media.clip import frame_at

            picture = Image.fromarray(frame_at(path, 0.0))
        else:
            picture = Image.fromarray(load_image(path, self.settings).pages[0])
        picture.thumbnail((size, size))
        return _jpeg(picture)

    # ---- decisions ---------------------------------------------------------------------------
    def decide_photo(self, sha256: str, user: str, confirmed: bool = False) -> dict[str, Any]:
        """"None of these" for every open resemblance card of one photo at once (a group photo whose
        faces all need a person); the same confirmation rule as one by one."""
        open_cards = [self.book.card(cid) for cid in self.book.open_cards(sha256).values()]
        faces = [c for c in open_cards if c is not None and c.face != PHOTO and c.candidates]
        if not faces:
            raise KeyError(sha256)
        close = [c for c in faces if c.candidates[0].distance <= self.settings.block_distance]
        if close and not confirmed:
            raise NeedsConfirmation(
                f"{len(close)} of these faces are within the block distance of a student: optout-guard would block "
                "them on its own. Clear them all anyway?"
            )
        # Settled one by one (each in the log), the photo refiled once at the end, not once per face.
        decisions = [self.decide(c.id, NONE, user, add_reference=False, confirmed=True, refile=False)["decision"] for c in faces]
        moved = self.refile(faces[-1])
        photo = self.book.photo(sha256) or {}
        return {"decisions": decisions, "settled": len(decisions), "verdict": photo.get("verdict"), "moved_to": moved}

    def decide(
        self, card_id: int, answer: str, user: str, add_reference: bool, confirmed: bool = False, refile: bool = True
    ) -> dict[str, Any]:
        from optout_guard.activity_log import ActivityLog

        card = self.book.card(card_id)
        if card is None:
            raise KeyError(card_id)
        # Validate the answer before anything changes: a refused answer must leave no trace (a face
        # saved under an id that is not a candidate would become another student's template).
        if answer == BLURRED and card.face != PHOTO:
            raise ValueError("only a whole photo can be answered 'post the blurred copy'")
        if answer not in (NONE, UNNAMED, BLURRED):
            if not is_valid_student_id(answer) or answer not in {c.student_id for c in card.candidates}:
                raise ValueError(f"{answer!r} is not one of this face's candidates")
        if card.face == PHOTO and add_reference:
            raise ValueError("a whole photo cannot be a reference photo")
        if answer == NONE and not confirmed and card.candidates and card.candidates[0].distance <= self.settings.block_distance:
            # Pressing N through a queue clears faces that match a student outright: ask once more.
            c = card.candidates[0]
            raise NeedsConfirmation(
                f"This face is within the block distance of student {c.student_id} ({c.distance:.3f}): optout-guard "
                "would block it on its own. Clear it anyway?"
            )
        reference = None
        with self.lock:
            if answer not in (NONE, UNNAMED, BLURRED) and add_reference:
                reference = self.add_reference(card, answer)
            decision = self.book.settle(card_id, answer, user, reference)
        ActivityLog(self.settings).record(
            "review-decision",
            reviewer=user,
            decision=decision,
            sha256=card.sha256,
            face=card.face,
            student_id=answer if answer not in (NONE, UNNAMED, BLURRED) else None,
            answer={NONE: "none of them", UNNAMED: "an opted-out student not shown", BLURRED: "post the blurred copy"}.get(
                answer, "this student"
            ),
            reference_added=reference is not None,
        )
        moved = self.refile(card) if refile else None
        photo = self.book.photo(card.sha256) or {}
        return {
            "decision": decision,
            "verdict": photo.get("verdict"),
            "reference_added": reference is not None,
            "moved_to": moved,
        }

    def refile(self, card: Card) -> str | None:
        """A photo from a check folder moves to blocked/ or allowed/ once its review is settled (and
        back to review/ when a decision is undone), with a new marked copy and note."""
        from optout_guard.activity_log import ActivityLog
        from optout_guard.watch import CheckFolder

        path = Path(card.photo_path)
        for folder in self.options.check_folders:
            with self.lock:
                outcome = CheckFolder(folder, self.guard, activity=ActivityLog(self.settings)).refile(path)
            if outcome is not None:
                _verdict, where = outcome
                if where != path.resolve():
                    self.book.moved(card.sha256, str(where))
                    return f"{where.parent.name}/{where.name}"
                return None
        return None

    def add_reference(self, card: Card, student_id: str) -> str:
        """Embed the face again from the original and add it to the student's templates."""
        from optout_guard.embedding import embed_faces
        from optout_guard.enroll import REFERENCE_MIN_FACE_FACTOR
        from optout_guard.fsutil import sha256_file
        from optout_guard.index import Template, edit_index, now_iso
        from optout_guard.media.photos import load_image, photo_date
        from optout_guard.types import Face

        need = self.settings.min_face_px * REFERENCE_MIN_FACE_FACTOR
        if card.time is not None:
            raise ValueError("a frame of a video clip is not kept as a reference photo; add a portrait of the student instead")
        if card.box.w < need:
            raise ValueError(f"this face is {card.box.w:.0f} px wide; a reference needs at least {need} px")
        path = self.allowed(card.photo_path)
        if path is None:
            raise FileNotFoundError(card.photo_path)
        image = load_image(path, self.settings)
        face = Face(card.box, 1.0, card.landmarks, card.page, True)
        embedded = embed_faces(image, [face], self.settings, self.guard.models)
        if not len(embedded.vectors):
            reason = next(iter(embedded.unjudged.values()), None)
            raise ValueError(reason.text if reason else "the face cannot be used as a reference")
        # Kept as a dated reference photo of the student (a private crop of the face), so that every
        # later enroll --rebuild and sync keeps it like any other reference photo.
        taken = photo_date(path)
        target = private_dir(self.settings.enrollments / student_id) / f"{taken}_desk-{card.sha256[:12]}-face{card.face}.jpg"
        atomic_write(target, _face_crop_jpeg(image, card))
        key = sha256_file(target)
        with edit_index(self.settings) as index:  # re-read under the lock: an enroll may have saved meanwhile
            if not index.has_template(student_id, key):
                index.add(Template(student_id, str(target.resolve()), key, now_iso(), taken), embedded.vectors[0])
        return key

    def undo(self, decision_id: int, user: str) -> dict[str, Any]:
        from optout_guard.activity_log import ActivityLog
        from optout_guard.index import edit_index

        with self.lock:
            undone = self.book.undo(decision_id, user)
            if undone["reference"]:
                with edit_index(self.settings) as index:
                    keep = [
                        not (t.student_id == undone["student_id"] and t.sha256 == undone["reference"]) for t in index.templates
                    ]
                    for template, kept in zip(index.templates, keep, strict=True):
                        if not kept and Path(template.photo).is_relative_to(self.settings.enrollments.resolve()):
                            Path(template.photo).unlink(missing_ok=True)  # the crop the desk saved
                    index.drop_templates(keep)
        ActivityLog(self.settings).record(
            "review-undo",
            reviewer=user,
            decision=decision_id,
            sha256=undone["sha256"],
            reference_removed=bool(undone["reference"]),
        )
        card = self.book.card(undone["face_id"])
        undone["moved_to"] = self.refile(card) if card is not None else None
        return undone


def _face_crop_jpeg(image: Any, card: Card) -> bytes:
    """The face with half its width around it, from the decoded page, as a JPEG without metadata."""
    from PIL import Image

    page = image.pages[card.page]
    box = card.box.scaled(1.0 / image.scale)
    margin = 0.5 * max(box.w, box.h)
    x0, y0 = max(0, int(box.x - margin)), max(0, int(box.y - margin))
    x1, y1 = min(page.shape[1], int(box.right + margin)), min(page.shape[0], int(box.bottom + margin))
    buffer = io.BytesIO()
    Image.fromarray(page[y0:y1, x0:x1]).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _placeholder(text: str) -> bytes:
    """A plain card picture with a sentence on it (for a file that has no picture to show)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    picture = Image.new("RGB", (CROP_PX, CROP_PX), (235, 235, 235))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, CROP_PX // 18))
    draw.multiline_text((12, 12), "\n".join(textwrap.wrap(text, 24)), fill=(60, 60, 60), font=font)
    return _jpeg(picture)


def _jpeg(picture: Any) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


# ---- the web layer ---------------------------------------------------------------------------------
def create_app(desk: Desk) -> Any:
    from flask import Flask, Response, abort, jsonify, redirect, request, send_file, session, url_for
    from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

    from optout_guard.users import UserStore

    app = Flask(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=_secret_key(desk.state),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session: a reviewer's page stays open all day
        WTF_CSRF_SSL_STRICT=False,  # plain HTTP on a LAN; the token + SameSite cookie still apply
    )
    CSRFProtect(app)
    users = UserStore(desk.state)
    options = desk.options

    # Server-side sessions: the cookie only names one (signed); logout, a password change or a
    # re-created account ends it here, whatever copy of the cookie is still around.
    live: dict[str, tuple[str, str]] = {}  # session id -> (account, its epoch when signed in)
    failures = SignInThrottle()

    def current_user() -> str | None:
        if not options.lan:
            return f"{getpass.getuser()}@local"
        sid = session.get("sid")
        signed_in = live.get(sid) if isinstance(sid, str) else None
        if signed_in is None:
            return None
        name, epoch = signed_in
        if users.epoch(name) != epoch:
            live.pop(str(sid), None)
            return None
        return name

    def may_see_names() -> bool:
        if not options.lan:
            return options.show_names
        name = current_user()
        return bool(name and users.can_see_names(name))

    @app.before_request
    def guard_request() -> Any:
        # Only the address we serve on (a web page elsewhere cannot rebind a name to 127.0.0.1).
        host = (request.host or "").rsplit(":", 1)[0].strip("[]")
        if not options.lan and host not in ("127.0.0.1", "localhost", "::1"):
            abort(403)
        if options.lan and not _lan_host_allowed(host, options.allowed_hosts):
            abort(403)  # a name we were not told about: DNS rebinding from a web page
        if options.lan and request.endpoint not in ("login", "static_file") and current_user() is None:
            if request.path.startswith("/api/"):
                abort(401)
            return redirect(url_for("login"))
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        return jsonify(error=f"refused: {exc.description} (reload the page)"), 400

    def page(name: str) -> Response:
        html = (STATIC / name).read_text(encoding="utf-8").replace("{{csrf}}", generate_csrf())
        html = html.replace("{{user}}", _escape(current_user() or "")).replace("{{lan}}", "1" if options.lan else "0")
        return Response(html, mimetype="text/html")

    @app.get("/")
    def index() -> Response:
        return page("index.html")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if not options.lan:
            return redirect(url_for("index"))
        if request.method == "POST":
            name, password = request.form.get("user", ""), request.form.get("password", "")
            client = request.remote_addr or "?"
            wait = failures.wait(name, client)
            if wait > 0:
                text = f"Too many wrong passwords: try again in {int(wait) + 1} s."
                return Response(page("login.html").get_data(as_text=True).replace("<!--error-->", text), 429)
            if users.verify(name, password):
                failures.success(name, client)
                session.clear()
                sid = secrets.token_urlsafe(24)
                live[sid] = (name, users.epoch(name) or "")
                session["sid"] = sid
                return redirect(url_for("index"))
            failures.failure(name, client)
            time.sleep(0.5)  # slows down guessing
            return Response(page("login.html").get_data(as_text=True).replace("<!--error-->", "Wrong name or password."), 401)
        return page("login.html")

    @app.post("/logout")
    def logout() -> Any:
        live.pop(str(session.get("sid")), None)
        session.clear()
        return redirect(url_for("login") if options.lan else url_for("index"))

    @app.get("/static/<name>")
    def static_file(name: str) -> Any:
        if name not in ("desk.js", "desk.css"):
            abort(404)
        return send_file(STATIC / name, max_age=0)

    @app.get("/api/queue")
    def api_queue() -> Any:
        names = may_see_names()
        # Cards whose photo this desk does not serve now (started without that --audit or check
        # folder, a share not mounted) are held back, not shown broken; they return with their source.
        served = [c for c in desk.book.queue(300) if desk.allowed(c.photo_path) is not None]
        cards = [desk.card_json(c, names) for c in served[:30]]
        return jsonify(
            cards=cards,
            open=desk.book.open_count(),
            held_back=desk.book.open_count() - len(served) if len(served) < 300 else 0,
            skipped=desk.book.skipped_count(),
            decisions=desk.book.decisions(10),
            importing=desk.importing,
        )

    @app.post("/api/photos/<sha>/none")
    def api_photo_none(sha: str) -> Any:
        body = request.get_json(silent=True) or {}
        try:
            return jsonify(desk.decide_photo(sha, current_user() or "", bool(body.get("confirm"))))
        except NeedsConfirmation as exc:
            return jsonify(error=str(exc), confirm=str(exc)), 409
        except KeyError:
            abort(404)

    @app.post("/api/skipped/reopen")
    def api_reopen_skipped() -> Any:
        return jsonify(reopened=desk.book.reopen_skipped())

    @app.post("/api/refresh")
    def api_refresh() -> Any:
        return jsonify(started=desk.start_import(), importing=desk.importing)

    @app.post("/api/check")
    def api_check() -> Any:
        files = request.files.getlist("photos")
        if not files:
            return jsonify(error="no photos in the request"), 400
        scope = request.form.get("scope", "")
        try:
            results = [desk.check_upload(f.filename or "photo", f.read(), current_user() or "", scope) for f in files]
        except ConfigError as exc:  # an unknown scope: nothing checked against an empty gallery
            return jsonify(error=str(exc)), 400
        return jsonify(results=results)

    @app.get("/api/scopes")
    def api_scopes() -> Any:
        return jsonify(scopes=desk.scopes())

    @app.post("/api/students")
    def api_add_student() -> Any:
        # Adding a student changes who is protected: on the network only accounts trusted with names may.
        if options.lan and not may_see_names():
            return jsonify(error="this account may not add students; ask the privacy officer"), 403
        photos = [(f.filename or "photo", f.read()) for f in request.files.getlist("photos")]
        try:
            return jsonify(desk.add_student(dict(request.form), photos, current_user() or ""))
        except (ValueError, OptoutGuardError) as exc:
            return jsonify(error=str(exc)), 400

    @app.post("/api/cards/<int:card_id>/decide")
    def api_decide(card_id: int) -> Any:
        body = request.get_json(silent=True) or {}
        answer = {"student": str(body.get("student_id") or ""), "unnamed": UNNAMED, "blurred": BLURRED}.get(
            str(body.get("answer")), NONE
        )
        if body.get("answer") == "skip":
            desk.book.skip(card_id)
            return jsonify(skipped=card_id)
        if body.get("answer") not in ("student", "none", "unnamed", "blurred") or (
            body.get("answer") == "student" and not answer
        ):
            return jsonify(error="answer must be student (with student_id), unnamed, none, blurred or skip"), 400
        try:
            return jsonify(
                desk.decide(card_id, answer, current_user() or "", bool(body.get("add_reference")), bool(body.get("confirm")))
            )
        except NeedsConfirmation as exc:
            return jsonify(error=str(exc), confirm=str(exc)), 409
        except KeyError:
            abort(404)
        except (ValueError, OptoutGuardError, ImageRejected, FileNotFoundError) as exc:
            return jsonify(error=str(exc)), 409

    @app.post("/api/decisions/<int:decision_id>/undo")
    def api_undo(decision_id: int) -> Any:
        try:
            return jsonify(desk.undo(decision_id, current_user() or ""))
        except KeyError:
            abort(404)
        except ValueError as exc:
            return jsonify(error=str(exc)), 409

    @app.get("/face/<int:card_id>.jpg")
    def face(card_id: int) -> Any:
        card = desk.book.card(card_id)
        if card is None:
            abort(404)
        try:
            return Response(desk.face_crop(card), mimetype="image/jpeg")
        except (FileNotFoundError, ImageRejected):
            abort(404)

    @app.get("/photo/<sha>/<kind>.jpg")
    def photo(sha: str, kind: str) -> Any:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or kind not in ("marked", "original"):
            abort(404)
        info = desk.book.photo(sha)
        if info is None:
            abort(404)
        path = desk.allowed(info["marked"]) if kind == "marked" and info["marked"] else desk.allowed(info["path"])
        if path is None:
            abort(404)
        if kind == "marked":
            return send_file(path, mimetype="image/jpeg", max_age=0)
        try:
            return Response(desk.thumbnail(path, 1600), mimetype="image/jpeg")
        except ImageRejected:
            abort(404)

    @app.get("/reference/<student_id>/<int:n>.jpg")
    def reference(student_id: str, n: int) -> Any:
        refs = desk.reference_photos(student_id)
        if n >= len(refs):
            abort(404)
        try:
            return Response(desk.thumbnail(refs[n], REFERENCE_PX), mimetype="image/jpeg")
        except ImageRejected:
            abort(404)

    return app


class SignInThrottle:
    """Back-off after wrong passwords, per account and per address: 5 free tries, then a wait that
    doubles with every further failure (1 s, 2 s, 4 s … up to 15 minutes)."""

    FREE = 5
    LONGEST = 900.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.state: dict[str, tuple[int, float]] = {}  # key -> (failures, not before)

    def wait(self, name: str, client: str) -> float:
        now = self.clock()
        return max(0.0, *(self.state.get(k, (0, 0.0))[1] - now for k in (f"u:{name}", f"a:{client}")))

    def failure(self, name: str, client: str) -> None:
        for key in (f"u:{name}", f"a:{client}"):
            count = self.state.get(key, (0, 0.0))[0] + 1
            delay = 0.0 if count < self.FREE else min(self.LONGEST, 2.0 ** (count - self.FREE))
            self.state[key] = (count, self.clock() + delay)

    def success(self, name: str, client: str) -> None:
        self.state.pop(f"u:{name}", None)
        self.state.pop(f"a:{client}", None)


def _lan_host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """On the LAN the desk answers to an address typed as such, to this computer's own name, and to
    the names given with --allowed-host (e.g. the district's HTTPS proxy): never to any other name."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    names = {"localhost", socket.gethostname().lower(), *(h.lower() for h in allowed)}
    return host.lower() in names


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _secret_key(state: Path) -> bytes:
    """A random key kept (0600) beside the index: sessions survive a restart of the desk."""
    path = state / "desk-secret"
    if not path.exists():
        atomic_write(path, secrets.token_bytes(32))  # private from the start, never half-written
    return path.read_bytes()


def serve(desk: Desk, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the desk with waitress (a production WSGI server, pure Python) until interrupted."""
    from waitress.server import create_server

    app = create_app(desk)
    server = create_server(app, host=desk.options.host, port=desk.options.port, threads=4, max_request_body_size=MAX_UPLOAD_BYTES)
    if on_ready:
        on_ready(f"http://{desk.options.host}:{server.effective_port}/")
    server.run()


def require_accounts(desk_state: Path) -> None:
    from optout_guard.users import UserStore

    if not UserStore(desk_state).names():
        raise OptoutGuardError("serving on the network needs accounts: add one with: optout-guard users add NAME")
