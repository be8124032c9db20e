"""What the review desk does, without HTTP (the package's docstring says what the desk is): checks
of dropped photos, the queue of cards, decisions and their undo, the pictures a card shows. Every
photo it opens must lie in a folder it owns or was told about (``Desk.allowed``)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optout_guard.config import Settings, settings_stamp
from optout_guard.desk.same_child import SameChild
from optout_guard.errors import AlreadySettled, NeedsConfirmation, NotFound, OptoutGuardError, Refused
from optout_guard.fsutil import atomic_write, private_dir, sha256_file
from optout_guard.optout_list import is_valid_student_id
from optout_guard.review import BLURRED, NONE, PHOTO, UNNAMED, Card, ReviewBook

log = logging.getLogger("optout_guard.desk")
UPLOADS = "desk-uploads"
MARKED = "desk-marked"
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
CROP_PX = 260  # the face is shown this big on a card
REFERENCE_PX = 200


def _playable(path: str) -> bool:
    return Path(path).suffix.lower() in (".mp4", ".m4v", ".mov", ".webm")


PENDING = "pending:"  # a decision's reference before it is written (its tag, not yet its key)


@dataclass
class DeskOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    lan: bool = False  # serve beyond this computer: login required
    show_names: bool = False  # localhost only: show imported names (LAN: per account)
    check_folders: list[Path] = field(default_factory=list)  # check folders whose review/ is queued
    audit_libraries: list[Path] = field(default_factory=list)  # audited libraries whose reviews are queued
    allowed_hosts: tuple[str, ...] = ()  # LAN: host names the desk answers to besides addresses
    # LAN behind a reverse proxy: the proxy's addresses, whose X-Forwarded-For names the real client
    # (anyone else's such header is ignored: it could name any address).
    trusted_proxies: tuple[str, ...] = ()
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
        self.same = SameChild()  # the same child's faces in other photos of an event (embeddings in memory only)
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
        self._schools: dict[str, str] = {}  # student id -> school key (with the names)
        self._names_stamp: tuple[tuple[int, int] | None, ...] = ()
        self.importing: dict[str, Any] = {"running": False, "done": 0, "total": 0, "added": 0}
        self._stamp = settings_stamp(settings)

    def follow_settings(self) -> bool:
        """Take config.toml and the index key again when either changed since they were read
        (thresholds edited, encryption turned on, a key rotated): the next check uses them, no
        restart needed. Returns whether they changed. Cheap: two stats."""
        from optout_guard.config import load_settings
        from optout_guard.pipeline import Guard

        stamp = settings_stamp(self.settings)
        if stamp == self._stamp:
            return False
        with self.lock:
            self.settings = load_settings(self.settings.workspace)
            self.guard = Guard(self.settings, models=self.guard.models, face_models=self.guard.face_models)  # models stay loaded
            self._stamp = settings_stamp(self.settings)
        return True

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
        """Student id -> name, from the saved list and students added before any list; read again
        whenever either file changes (a student added with `add` or on the page showed as an id)."""
        from optout_guard.optout_list import LIST_FILE, PENDING_FILE, load_list, load_pending

        files = [self.settings.workspace / LIST_FILE, self.settings.workspace / PENDING_FILE]
        stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files)
        if self._names is None or stamp != self._names_stamp:
            from optout_guard.optout_list import school_key

            optouts = load_list(self.settings.workspace)
            students = [*(optouts.students.values() if optouts else []), *load_pending(self.settings.workspace)]
            self._names = {s.student_id: f"{s.first} {s.last}".strip() for s in students if s.first or s.last}
            self._schools = {s.student_id: school_key(s.school) for s in students}
            self._names_stamp = stamp
        return self._names

    # ---- accounts limited to schools (users add NAME --school …) ------------------------------
    def student_within(self, student_id: str, schools: tuple[str, ...]) -> bool:
        """Is this student one a school account answers for? ``schools``: the account's school keys
        (empty: the whole district). A student the list gives no school is every school's (as in
        scopes: an incomplete export never hides anyone), a student not on the list nobody's but the district's."""
        if not schools:
            return True
        self.names()
        school = self._schools.get(student_id)
        return school is not None and (school == "" or school in schools)

    def card_within(self, card: Card, schools: tuple[str, ...]) -> bool:
        """A card a school account may see and answer: a student it resembles (its closest candidate,
        or another within review distance) is their school's; a photo card (no candidates) when its
        path has a folder named after their school (a check folder's or the library's sub-folder)."""
        if not schools:
            return True
        if card.candidates:
            return any(self.student_within(s, schools) for s in self.resembles(card))
        from optout_guard.optout_list import school_key

        return any(school_key(part) in schools for part in Path(card.photo_path).parts[:-1])

    def resembles(self, card: Card) -> list[str]:
        """The students a face card is about: its closest candidate, and any other within review distance."""
        return [c.student_id for i, c in enumerate(card.candidates) if i == 0 or c.distance <= self.settings.review_distance]

    def photo_within(self, sha256: str, schools: tuple[str, ...]) -> bool:
        """A photo a school account may open: one of its cards (open, settled or recognised) is theirs."""
        if not schools:
            return True
        ids = [row[0] for row in self.book.db.execute("SELECT id FROM faces WHERE sha256=?", (sha256,))]
        return any(c is not None and self.card_within(c, schools) for c in map(self.book.card, ids))

    # ---- checking --------------------------------------------------------------------------
    def scopes(self) -> list[str]:
        """What the check page's scope picker offers: the schools on the list and config.toml's
        [scopes] (checking against a scope is never the default: the district is)."""
        from optout_guard.optout_list import load_list
        from optout_guard.scope import named_scopes

        optouts = load_list(self.settings.workspace)
        schools = {s.school for s in optouts.students.values() if s.school} if optouts is not None else set()
        return sorted(schools | set(named_scopes(self.settings.workspace)), key=str.lower)

    def check_upload(
        self, name: str, data: bytes, user: str, scope_name: str = "", viewer_names: bool = False
    ) -> dict[str, Any]:
        """Check a photo dropped on the page (against ``scope_name``, "" = the district); its review
        faces become cards. An unknown scope raises (the page says so; nothing is checked)."""
        import hashlib

        from optout_guard.activity_log import ActivityLog, photo_details
        from optout_guard.scope import workspace_scope

        scope = workspace_scope(self.settings.workspace, scope_name or None, None, set(self.guard.index.protected_students()))

        digest = hashlib.sha256(data).hexdigest()
        suffix = Path(name).suffix.lower()[:6] if Path(name).suffix.isascii() else ""
        stored = self.uploads / f"{digest}{suffix}"
        if not stored.exists():
            self.prune_uploads(incoming=len(data))
            atomic_write(stored, data)
        from optout_guard.pipeline import Redaction

        with self.lock:
            # The marked-up copy and the copy fit to post, both offered for download on the page
            # (kept with the uploads: the same age and size budget).
            result = self.guard.check(stored, annotate_dir=self.marked, redact=Redaction(self.marked), scope=scope)
            self.book.add_result(result, "desk")
            self.prune_uploads()  # the marked copy counts too
        # The log names photos by content hash only: a file name can be a child's name.
        ActivityLog(self.settings).record("desk-check", reviewer=user, **photo_details(result))
        return self.result_json(result, Path(name).name, viewer_names)

    def add_student(self, fields: dict[str, str], photos: list[tuple[str, bytes]], user: str) -> dict[str, Any]:
        """A family opted out today: protect the student now (as ``optout-guard add``)."""
        import tempfile

        from optout_guard.optout_list import Student
        from optout_guard.sync import protect_student

        student_id = fields.get("student_id", "").strip()
        student = Student(student_id, *(fields.get(k, "").strip() for k in ("first", "last", "grade", "school")))
        # Private folder (children's photos); index.sweep_leftovers removes one a kill left behind.
        with tempfile.TemporaryDirectory(prefix="desk-add-", dir=self.state) as tmp:
            paths = []
            for i, (name, data) in enumerate(photos):
                suffix = Path(name).suffix.lower()[:6] if Path(name).suffix.isascii() else ".jpg"
                path = Path(tmp) / f"photo-{i + 1}{suffix}"  # the upload's own name is not kept
                atomic_write(path, data)
                paths.append(path)
            # The one way to protect a student now, as `optout-guard add` (the same checks and log).
            done = protect_student(self.settings, student, paths, self.guard.face_models, user, fields.get("force") == "yes",
                                   reviewer=user, lock=self.lock)  # fmt: skip
        return {"student_id": student_id, "protected": done.templates > 0, "reference_photos": done.templates,
                "rejected": [why for _photo, why in done.rejected]}

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

    def postable_copy(self, sha256: str) -> Path | None:
        """The copy fit to post the page made of a photo it checked (``None`` when there is none)."""
        found = sorted(self.marked.glob(f"{sha256}.*.redacted.*"))
        return self.allowed(found[0]) if found else None

    def result_json(self, result: Any, name: str, viewer_names: bool = False) -> dict[str, Any]:
        """The page's view of a result: the faces as ``check --json`` renders them (one renderer,
        ``report.face_to_dict``), with the desk's own candidates (names, reference photos) and cards."""
        from optout_guard.report import face_to_dict

        card_ids = self.book.open_cards(result.sha256) if result.sha256 else {}
        faces = [
            face_to_dict(m)
            | {
                "face": i,
                "candidates": [self.candidate_json(c.student_id, c.distance, viewer_names) for c in m.candidates],
                "card": card_ids.get(i),
            }
            for i, m in enumerate(result.faces)
        ]
        return {
            "name": name,
            "sha256": result.sha256,
            "verdict": result.verdict.value,
            "reasons": list(result.reasons),
            "students": list(result.blocked_students),
            "marked_url": f"/photo/{result.sha256}/marked.jpg" if result.annotated_path else None,
            "postable_url": f"/postable/{result.sha256}" if result.redacted_path else None,
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
            from optout_guard import jobs

            try:
                with jobs.track(self.settings, "desk import", "check folders and audits") as job:
                    added = self.import_sources(budget_seconds=None)
                    job.finish(True, {"added": added}, done=added)
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
            paths += [(p, "check folder") for p in recognised_in(folder / "allowed")]
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
            # The clip itself, where a browser plays its container (MP4/MOV/WebM); others show the frame only.
            "clip_url": f"/clip/{card.sha256}" if card.time is not None and _playable(card.photo_path) else None,
            "undecodable": whole and card.box.w == 0,  # a file with no picture to show: open it elsewhere
            "candidates": [self.candidate_json(c.student_id, c.distance, viewer_names) for c in card.candidates[:3]],
        }

    def face_crop(self, card: Card) -> bytes:
        """The face, with some context around it, enlarged to CROP_PX (JPEG bytes). A whole-photo
        card of a file that cannot be decoded shows what to do instead."""
        from PIL import Image

        from optout_guard.annotate import face_crop
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
        crop = face_crop(pixels, card.box, s, 0.35)
        factor = CROP_PX / max(crop.size)  # small faces enlarged, large ones shrunk: one size per card
        crop = crop.resize((round(crop.size[0] * factor), round(crop.size[1] * factor)), Image.Resampling.LANCZOS)
        return _jpeg(crop)

    def thumbnail(self, path: Path, size: int) -> bytes:
        from optout_guard.media.handlers import handler_of

        picture = handler_of(path).picture(path, self.settings)  # a clip without its contact sheet: its first frame
        picture.thumbnail((size, size))
        return _jpeg(picture)

    # ---- decisions ---------------------------------------------------------------------------
    def decide_photo(
        self, sha256: str, user: str, confirmed: bool = False, shown: list[int] | None = None
    ) -> dict[str, Any]:
        """"None of these" for every open resemblance card of one photo at once (a group photo whose
        faces all need a person). ``shown``: the card ids the reviewer's page showed; if the open
        cards are not exactly those now (another face opened, one was answered elsewhere), nothing
        is settled. Every face this clears resembles a student (it is within review distance), so
        one confirmation listing each of them, with its closest student and distance, is needed."""
        open_cards = [self.book.card(cid) for cid in self.book.open_cards(sha256).values()]
        faces = [c for c in open_cards if c is not None and c.face != PHOTO and c.candidates]
        if not faces:
            raise NotFound(sha256)
        if shown is not None and sorted(shown) != sorted(c.id for c in faces):
            raise AlreadySettled(
                "the faces waiting in this photo are not the ones on your screen any more (answered or added "
                "elsewhere): nothing was changed; reload the page"
            )
        close = [c for c in faces if c.candidates[0].distance <= self.settings.review_distance]
        if close and not confirmed:
            listed = "; ".join(
                f"face {c.face + 1}: closest {c.candidates[0].student_id} at {c.candidates[0].distance:.3f}"
                + (" (would block on its own)" if c.candidates[0].distance <= self.settings.block_distance else "")
                for c in close
            )
            raise NeedsConfirmation(
                f"{len(close)} of these faces resemble an opted-out student: {listed}. Clear every one of them "
                "as none of these?"
            )
        # Settled one by one (each in the log), the photo refiled once at the end, not once per face.
        decisions = [self.decide(c.id, NONE, user, add_reference=False, confirmed=True, refile=False)["decision"] for c in faces]
        moved = self.refile(faces[-1])
        photo = self.book.photo(sha256) or {}
        return {"decisions": decisions, "settled": len(decisions), "verdict": photo.get("verdict"), "moved_to": moved}

    def same_child_json(self, card: Card) -> list[dict[str, Any]]:
        """The same child in other photos of the card's event (``same_child``), for the page."""
        return [
            {"id": c.id, "crop_url": f"/face/{c.id}.jpg", "photo_name": Path(c.photo_path).name,
             "distance": round(next(x.distance for x in c.candidates if x.student_id == card.candidates[0].student_id), 3),
             "others": [x.student_id for x in c.candidates if x.student_id not in {y.student_id for y in card.candidates[:3]}]}
            for c in self.same.group(self, card)
        ]  # fmt: skip

    def decide_same_child(
        self, card_id: int, answer: str, user: str, with_ids: list[int], confirmed: bool = False, ignored: bool = False,
        add_reference: bool = False,
    ) -> dict[str, Any]:
        """One answer for a card and the same child's cards in other photos of its event (those the
        page showed, ``with_ids``; each must still be one, found again now). "This student" or "an
        opted-out student" settle them all; "none of these" only faces whose every candidate is on
        the page (the card's), after one confirmation listing each face — a face that resembles
        a student not shown needs its own card. Each face's answer is its own decision (undoable)."""
        card = self.book.card(card_id)
        if card is None:
            raise NotFound(card_id)
        group = {c.id: c for c in self.same.group(self, card)}
        if any(i not in group for i in with_ids):
            raise AlreadySettled(
                "the faces shown as the same child are not all waiting any more (answered elsewhere, or the photo "
                "changed): nothing was changed; reload the page"
            )
        members = [group[i] for i in with_ids]
        if answer == NONE:
            shown = {c.student_id for c in card.candidates[:3]}
            if any(not {x.student_id for x in m.candidates} <= shown for m in members):
                raise Refused("a face in the group also resembles a student not shown here: answer it on its own card")
            if not confirmed:
                listed = "; ".join(f"{Path(m.photo_path).name}: {m.candidates[0].student_id} at {m.candidates[0].distance:.3f}"
                                   for m in [card, *members])  # fmt: skip
                raise NeedsConfirmation(
                    f"Clear this face and the same child in {len(members)} other photo(s) as none of these students? "
                    f"Each resembles an opted-out student: {listed}."
                )
        # The card's own face may become a reference (R); the others are answered only.
        first = self.decide(card_id, answer, user, add_reference, confirmed=True, refile=False, ignored=ignored)
        decisions = [first["decision"]]
        for m in members:
            decisions.append(self.decide(m.id, answer, user, add_reference=False, confirmed=True, refile=False,
                                         ignored=ignored)["decision"])  # fmt: skip
        moved = [x for c in (card, *members) if (x := self.refile(c))]
        photo = self.book.photo(card.sha256) or {}
        return {"decision": decisions[0], "decisions": decisions, "settled": len(decisions), "verdict": photo.get("verdict"),
                "reference_added": first["reference_added"], "moved_to": moved[0] if moved else None}  # fmt: skip

    def decide_photos(self, card_ids: list[int], user: str) -> dict[str, Any]:
        """"No opted-out student in these photos" for several *photo* cards at once (faces too small,
        cut by the edge, turned, blurred: nobody near a student). Refused whole if any card is not an
        open photo card — a face card (a face within review distance of a student) is never cleared
        in bulk: it needs its candidates' reference photos on screen, one card at a time."""
        cards = [self.book.card(i) for i in card_ids]
        if not cards or any(c is None for c in cards):
            raise NotFound(card_ids)
        for c in cards:
            assert c is not None
            if c.face != PHOTO or c.candidates:
                raise Refused("only photo cards are answered together; a face that resembles a student needs its own answer")
            if not self.book.is_open(c.id):
                raise AlreadySettled(self.book.settled_message(c.id))
        decisions = [self.decide(c.id, NONE, user, add_reference=False, refile=False)["decision"] for c in cards if c]
        moved = [m for c in cards if c and (m := self.refile(c))]
        return {"decisions": decisions, "settled": len(decisions), "moved_to": moved}

    def decide(
        self,
        card_id: int,
        answer: str,
        user: str,
        add_reference: bool,
        confirmed: bool = False,
        refile: bool = True,
        ignored: bool = False,
    ) -> dict[str, Any]:
        """Settle a card. ``ignored``: "this face is not a student" (a poster, a painting, an adult):
        cleared like "none of them" — by content hash, never asked again for that photo, undoable —
        and recorded as such in the history."""
        from optout_guard.activity_log import ActivityLog

        card = self.book.card(card_id)
        if card is None:
            raise NotFound(card_id)
        # Validate the answer before anything changes: a refused answer must leave no trace (a face
        # saved under an id that is not a candidate would become another student's template).
        if answer == BLURRED and card.face != PHOTO:
            raise Refused("only a whole photo can be answered 'post the blurred copy'")
        if answer not in (NONE, UNNAMED, BLURRED):
            if not is_valid_student_id(answer) or answer not in {c.student_id for c in card.candidates}:
                raise Refused(f"{answer!r} is not one of this face's candidates")
        if card.face == PHOTO and add_reference:
            raise Refused("a whole photo cannot be a reference photo")
        if ignored and (answer != NONE or card.face == PHOTO):
            raise Refused("only a face is ignored (it is cleared as not a student)")
        if not self.book.is_open(card_id):  # before anything is written (a reference, a note)
            raise AlreadySettled(self.book.settled_message(card_id))
        if answer == NONE and not confirmed and card.candidates and card.candidates[0].distance <= self.settings.block_distance:
            # Pressing N through a queue clears faces that match a student outright: ask once more.
            c = card.candidates[0]
            raise NeedsConfirmation(
                f"This face is within the block distance of student {c.student_id} ({c.distance:.3f}): optout-guard "
                "would block it on its own. Clear it anyway?"
            )
        reference = None
        with self.lock:
            wants_reference = answer not in (NONE, UNNAMED, BLURRED) and add_reference
            if wants_reference:
                self.check_reference(card)  # refused before anything is written (a replaced photo, a clip)
            # The decision is recorded first, naming the reference it is about to add: a kill between
            # the two leaves a decision whose undo removes that reference, never a template that no
            # decision records (nobody could undo it from the desk).
            planned = f"{PENDING}{self.reference_tag(card)}" if wants_reference else None
            decision = self.book.settle(card_id, answer, user, planned, "ignored (not a student)" if ignored else None)
            if wants_reference:
                try:
                    reference = self.add_reference(card, answer)
                except BaseException:
                    self.book.undo(decision, user)  # the answer goes with the reference it asked for
                    raise
                self.book.set_reference(decision, reference)
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

    # ---- faces cleared by recognising a consenting student (consent.py) -------------------------
    def recognised_json(self) -> list[dict[str, Any]]:
        """Faces cleared because they were recognised as a consenting student, newest first: a
        reviewer sees each one (the face, who it was recognised as, whom it resembled) and may hold it."""
        rows = []
        for card in self.book.recognised(200):
            if self.allowed(card.photo_path) is None:
                continue  # a source this desk does not serve now
            rows.append(
                {
                    "id": card.id,
                    "crop_url": f"/face/{card.id}.jpg",
                    "photo_url": f"/photo/{card.sha256}/original.jpg",
                    "photo_name": Path(card.photo_path).name if card.source != "desk" else "photo checked on the page",
                    "source": card.source,
                    "reason": card.reason,
                    "resembles": [{"student_id": c.student_id, "distance": round(c.distance, 3)} for c in card.candidates],
                }
            )
        return rows

    def hold(self, face_id: int, user: str) -> dict[str, Any]:
        """A reviewer holds a face cleared by recognition: it is a card in the queue, its photo is
        review (a check-folder photo moves back to review/) until someone answers. Undoable."""
        from optout_guard.activity_log import ActivityLog

        card = self.book.card(face_id)
        if card is None:
            raise NotFound(face_id)
        with self.lock:
            decision = self.book.hold_recognised(face_id, user)
        ActivityLog(self.settings).record("review-hold", reviewer=user, decision=decision, sha256=card.sha256, face=card.face)
        moved = self.refile(card)
        return {"decision": decision, "verdict": (self.book.photo(card.sha256) or {}).get("verdict"), "moved_to": moved}

    def refile(self, card: Card) -> str | None:
        """A photo from a check folder moves to blocked/ or allowed/ once its review is settled (and
        back to review/ when a decision is undone), with a new marked copy and note."""
        from optout_guard.activity_log import ActivityLog
        from optout_guard.watch import CheckFolder

        path = Path(card.photo_path)
        for folder in self.options.check_folders:
            with self.lock:
                outcome = CheckFolder.as_recorded(folder, self.guard, activity=ActivityLog(self.settings)).refile(path)
            if outcome is not None:
                _verdict, where = outcome
                if where != path.resolve():
                    self.book.moved(card.sha256, str(where))
                    return f"{where.parent.name}/{where.name}"
                return None
        return None

    @staticmethod
    def reference_tag(card: Card) -> str:
        return f"desk-{card.sha256[:12]}-face{card.face}"

    def check_reference(self, card: Card) -> Path:
        """The card's photo, if its face may become a reference photo (else Refused / FileNotFoundError)."""
        if card.time is not None:
            raise Refused("a frame of a video clip is not kept as a reference photo; add a portrait of the student instead")
        path = self.allowed(card.photo_path)
        if path is None:
            raise FileNotFoundError(card.photo_path)
        if sha256_file(path) != card.sha256:
            raise Refused(
                f"{path.name} has changed since this card was made: it is not kept as a reference photo; "
                "answer without adding it, and add a portrait of the student instead"
            )
        return path

    def add_reference(self, card: Card, student_id: str) -> str:
        """The card's face as a new dated reference of ``student_id`` (``enroll.add_reference_face``)."""
        from optout_guard.enroll import add_reference_face
        from optout_guard.types import Face

        # The face is embedded from the file on disk: it must still be the photo the card was made from
        # (a library photo replaced since would put another person's face in the student's references).
        path = self.check_reference(card)
        face = Face(card.box, 1.0, card.landmarks, card.page, True)
        tag = self.reference_tag(card)
        return add_reference_face(self.settings, self.guard.face_models, path, face, student_id, tag)

    def undo(self, decision_id: int, user: str) -> dict[str, Any]:
        from optout_guard.activity_log import ActivityLog
        from optout_guard.enroll import remove_reference_face

        with self.lock:
            undone = self.book.undo(decision_id, user)
            if undone["reference"]:  # "pending:<tag>" when a kill came between the answer and the reference
                remove_reference_face(self.settings, undone["student_id"], undone["reference"].removeprefix(PENDING))
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
    from optout_guard.annotate import jpeg_bytes

    return jpeg_bytes(picture)


# ---- the web layer ---------------------------------------------------------------------------------


def recognised_in(allowed: Path) -> list[Path]:
    """Photos a check folder allowed with a face cleared by recognising a consenting student (their
    note says so): the desk lists those faces for a person who may hold one."""
    if not allowed.is_dir():
        return []
    found = []
    for note in allowed.glob("*.txt"):
        photo = note.with_suffix("")
        try:
            if photo.is_file() and "recognised as consenting student" in note.read_text(encoding="utf-8", errors="replace"):
                found.append(photo)
        except OSError:
            continue
    return sorted(found)
