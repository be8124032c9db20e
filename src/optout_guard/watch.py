"""The check folder: staff drop photos in, verdicts come back beside them.

Layout of a watched folder (created on start)::

    Check folder/            drop photos here
      allowed/               photo.jpg, photo.jpg.marked.jpg, photo.jpg.txt (why)
                             [+ photo.jpg.postable.jpg with --redact: blocked and review faces blurred]
      blocked/               …
      review/                …
      NOT CHECKED.txt        files here that are not photos (left where they are)

A photo is read only once it has finished arriving (size and modification time unchanged for
``settle`` seconds); one that still looks cut off (truncated, empty) and was written less than
``arrival_grace`` seconds ago is given more time before it counts as broken.
Outputs (marked-up copy, then the note) are written first, atomically, and the original is moved
last, with a rename inside the same folder tree: a crash at any moment leaves the original either
still in the inbox (it is simply checked again; same names, so nothing is duplicated) or in its
verdict folder with its outputs. One bad photo, a vanished file, a permission error or a full disk
is logged and retried later; it never stops the service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optout_guard import jobs
from optout_guard.config import Settings, settings_stamp
from optout_guard.errors import AlreadyWatched, ConfigError, IndexUnusable, ModelUnavailable, OptoutGuardError
from optout_guard.fsutil import atomic_write, hide, remove_stale_temps, sha256_file
from optout_guard.media.handlers import OUTPUT_SUFFIXES, PHOTOS, handler_for
from optout_guard.media.photos import sniff
from optout_guard.pipeline import Guard, Redaction
from optout_guard.scope import WHOLE_DISTRICT, Scope, folder_scope
from optout_guard.types import Box, Decision, MediaKind, ReasonCode, ScanResult, Verdict

log = logging.getLogger("optout_guard.watch")

OUTPUT_DIRS = {Verdict.ALLOW: "allowed", Verdict.BLOCK: "blocked", Verdict.REVIEW: "review"}
NOTE_FILE = "NOT CHECKED.txt"
LOCK_FILE = ".optout-guard-watch.lock"
# Held while a photo is filed (moved into a verdict folder with its outputs), by the watch and by a
# review desk refiling a photo its reviewer settled: two processes never file in one folder at once.
FILING_LOCK = ".optout-guard-filing.lock"
CHECKING = " - checking.txt"  # beside a photo or clip while it is checked (a clip takes a while)
STOPPED_NOTE = "CHECK FOLDER STOPPED.txt"  # in the folder while the watch cannot work (removed when it can)
OPTIONS_FILE = "watch-options.json"  # in staging: how the running watch files (redact, recursive)
PID_FILE = ".optout-guard-watch.pid"  # the process that holds LOCK_FILE (said when a second watch is refused)
# Names that browsers and copy tools use while a file is still arriving.
_IN_PROGRESS = re.compile(r"(\.part|\.partial|\.crdownload|\.download|\.tmp|\.filepart|~)$|^~\$", re.IGNORECASE)
_WHAT_TO_DO = {
    Verdict.ALLOW: "You may post this photo (as far as the opt-out list is concerned).",
    Verdict.BLOCK: "Do not post this photo: it shows a student whose family opted out. Pick another photo{copy}.",
    Verdict.REVIEW: "Do not post this photo yet. {choices} A reviewer looks at it on the review desk; when they "
    "have decided, the photo moves to allowed/ or blocked/ by itself.",
}


def _where(box: Box, size: tuple[int, int] | None) -> str:
    """Where a face is, in words a person finds in the marked-up copy: "left, near the top"."""
    if not size:
        return ""
    cx, cy = (box.x + box.w / 2) / max(size[0], 1), (box.y + box.h / 2) / max(size[1], 1)
    across = "on the left" if cx < 1 / 3 else "on the right" if cx > 2 / 3 else "in the middle"
    down = "near the top" if cy < 1 / 3 else "near the bottom" if cy > 2 / 3 else "halfway down"
    return f"{across}, {down}"


def _what_to_do(result: ScanResult, marked_name: str, postable: str) -> list[str]:
    """What the person who dropped the photo can do now, in plain words, naming only files that exist."""
    lines: list[str] = []
    shown = [m for m in result.faces if m.decision is not Decision.CLEAR]
    if shown and marked_name:
        lines.append("Faces to look at in the marked-up copy:")
        for m in shown:
            colour = "red box" if m.decision is Decision.BLOCK else "amber box"
            what = (
                "an opted-out student" if m.decision is Decision.BLOCK
                else "looks like an opted-out student" if m.candidates
                else "could not be checked (too small, blurred, turned or cut off)"
            )  # fmt: skip
            where = _where(m.face.box, result.size)
            lines.append(f"  - {colour}{', ' + where if where else ''}: {what}")
        lines.append("")
    clip = result.clip is not None
    if result.verdict is Verdict.BLOCK:
        cut = ", or cut that student out of the clip" if clip else ", or crop that student out"
        copy = f", or post {postable} instead (those faces blurred)" if postable else cut
        lines.append(_WHAT_TO_DO[Verdict.BLOCK].format(copy=copy))
    elif result.verdict is Verdict.REVIEW:
        if not result.faces and not marked_name:  # the file itself is the problem
            choices = (
                "The file could not be checked: copy it again from the camera or phone (it may be incomplete), "
                "or pick another photo."
            )
        elif postable:
            choices = f"You may post {postable} instead now (every face in question blurred), or pick another photo."
        else:
            choices = "Pick another photo if you cannot wait."
        lines.append(_WHAT_TO_DO[Verdict.REVIEW].format(choices=choices))
    else:
        lines.append(_WHAT_TO_DO[Verdict.ALLOW])
    if clip:  # the same advice, for a video clip
        lines = [line.replace("this photo", "this clip").replace("another photo", "another clip")
                 .replace("the photo moves", "the clip moves") for line in lines]  # fmt: skip
    return lines


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float
    first_seen: float
    retry_after: float = 0.0
    failures: int = 0


@dataclass
class WatchStats:
    processed: dict[str, int] = field(default_factory=lambda: {v.value: 0 for v in Verdict})
    errors: int = 0


class CheckFolder:
    """Watches one folder; :meth:`process_ready` does the work, the rest only finds candidates."""

    def __init__(
        self,
        folder: Path,
        guard: Guard,
        *,
        settle: float = 2.0,
        recursive: bool = False,
        arrival_grace: float = 30.0,
        activity: Any = None,
        redact: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.guard = guard
        self.settle = settle
        self.arrival_grace = arrival_grace
        self.activity = activity  # an ActivityLog: every filed photo is recorded there
        self.redact = redact  # also write <name>.postable.jpg: every non-clear face blurred, no metadata
        self.recursive = recursive
        self.clock = clock
        self.stats = WatchStats()
        self._seen: dict[Path, _Seen] = {}
        self._not_photos: dict[str, str] = {}
        self._lock = threading.Lock()  # the observer thread adds candidates while we process
        self._out_dirs = {v: self.folder / name for v, name in OUTPUT_DIRS.items()}
        # Marked-up copies are drawn here first, then moved beside the photo they belong to.
        self.staging = self.folder / ".optout-guard-staging"
        self._burst: list[tuple[Path, ScanResult]] = []  # photos filed by the current process_ready: one drop
        self.claimed = self.staging / "claimed"  # originals being checked (moved out of the inbox first)

    # ---- finding candidates -------------------------------------------------------------------
    def prepare(self) -> None:
        for path in [*self._out_dirs.values(), self.staging]:
            path.mkdir(parents=True, exist_ok=True)
        hide(self.staging)  # Windows: the dot alone does not hide it
        # Staff who can open the check folder can open its results, whatever the service's umask;
        # staging (originals being checked) is for the service only.
        mode = self.folder.stat().st_mode & 0o777
        for path in self._out_dirs.values():
            with contextlib.suppress(OSError):
                os.chmod(path, mode)
        with contextlib.suppress(OSError):
            os.chmod(self.staging, 0o700)
        # Originals claimed before a crash go back to the inbox (checked again); copies drawn before a
        # crash are deleted (redrawn when needed).
        if self.claimed.is_dir():
            for claimed in sorted(p for p in self.claimed.rglob("*") if p.is_file()):
                self._unclaim(claimed, self.folder / claimed.relative_to(self.claimed))
        for leftover in self.staging.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
        for marker in self.folder.rglob(f"*{CHECKING}") if self.recursive else self.folder.glob(f"*{CHECKING}"):
            marker.unlink(missing_ok=True)  # a check that a stop cut short: the photo is back in the inbox
        # What this watch does when it files (a desk refiling a settled photo does the same, so a
        # copy fit to post is never lost to a refile by a desk that did not know about it).
        atomic_write(self.staging / OPTIONS_FILE, json.dumps({"redact": self.redact, "recursive": self.recursive}) + "\n")
        # Notes and copies half-written when the service was killed (temp names, never finished).
        for out_dir in self._out_dirs.values():
            for folder in (out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())):
                remove_stale_temps(folder, ".tmp-")
                remove_stale_temps(folder, ".copy-")

    def _ignored(self, path: Path) -> bool:
        try:
            rel = path.resolve().relative_to(self.folder)
        except (ValueError, OSError):
            return True
        parts = rel.parts
        if not parts or any(p.startswith(".") for p in parts) or parts[0] in OUTPUT_DIRS.values():
            return True
        if len(parts) > 1 and not self.recursive:
            return True
        return parts[-1] in (NOTE_FILE, STOPPED_NOTE) or parts[-1].endswith(CHECKING) or bool(_IN_PROGRESS.search(parts[-1]))

    def notice(self, path: Path | str) -> None:
        """A file may have appeared or changed (from a watchdog event or a rescan)."""
        path = Path(path)
        if self._ignored(path):
            return
        with self._lock:
            if path not in self._seen:
                now = self.clock()
                self._seen[path] = _Seen(-1, -1, now, now)

    def rescan(self) -> None:
        """The safety net: notice every file in the folder (network shares drop events)."""
        iterator = self.folder.rglob("*") if self.recursive else self.folder.iterdir()
        try:
            for path in iterator:
                if path.is_file():
                    self.notice(path)
                    self._say_if_passed_over(path)
                elif path.is_dir() and not self.recursive:
                    self._say_if_passed_over(path)
        except OSError as exc:
            log.warning("could not list %s: %s", self.folder, exc)

    def _say_if_passed_over(self, path: Path) -> None:
        """Things in the check folder that are deliberately not checked are listed in NOT CHECKED.txt,
        never passed over without a word (a folder dropped in, a hidden file)."""
        ours = {*OUTPUT_DIRS.values(), NOTE_FILE, LOCK_FILE, FILING_LOCK, PID_FILE, STOPPED_NOTE, self.staging.name}
        if path.parent != self.folder or path.name in ours:
            return
        if path.is_dir():
            self._note_not_photo(
                path, "a folder: photos in folders are not checked here; put the photos themselves in the check folder"
            )
        elif path.name.startswith("."):
            self._note_not_photo(path, "a hidden file (its name starts with a dot): not checked; rename it to check it")

    # ---- processing -----------------------------------------------------------------------------
    def _ready(self) -> list[Path]:
        """Files whose size and mtime have not changed for ``settle`` seconds."""
        now = self.clock()
        ready = []
        with self._lock:
            for path, seen in list(self._seen.items()):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    del self._seen[path]  # vanished (moved away, deleted): nothing to do
                    continue
                except OSError as exc:
                    log.warning("cannot look at %s: %s", path, exc)
                    continue
                if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
                    seen.size, seen.mtime_ns, seen.stable_since = st.st_size, st.st_mtime_ns, now
                    continue
                if now - seen.stable_since >= self.settle and now >= seen.retry_after:
                    ready.append(path)
        return sorted(ready)

    def process_ready(self) -> int:
        """Check and file every settled photo; returns how many were filed. A set-up problem (the
        index cannot be read — a new key, say —, a model file gone) stops the watch with a note in
        the folder: retrying every photo every few seconds would only fill the log."""
        done = 0
        self._burst = []  # (where it was filed, its result) of this drop
        for path in self._ready():
            try:
                if self._process(path):
                    done += 1
            except (IndexUnusable, ModelUnavailable, ConfigError) as exc:
                self.stopped(str(exc))
                raise
            except Exception as exc:
                self.stats.errors += 1
                seen = self._seen.get(path)
                if seen is not None:
                    seen.failures += 1
                    seen.retry_after = self.clock() + min(300.0, 5.0 * 2**seen.failures)
                log.exception("could not file %s (%s: %s); will retry", path, type(exc).__name__, exc)
        if len(self._burst) > 1:
            try:
                self._decide_burst(self._burst)
            except (IndexUnusable, ModelUnavailable, ConfigError) as exc:
                self.stopped(str(exc))
                raise
            except Exception:  # every photo is filed already, with its own verdict: nothing is lost
                log.exception("deciding once per child across the photos dropped together failed")
        return done

    def _decide_burst(self, filed: list[tuple[Path, ScanResult]]) -> None:
        """The photos filed from one drop (checked together) are one event, per sub-folder (scope):
        a face held for a student is blocked when the same child's faces in the drop's other photos,
        pooled, match that student (``events.decide_across``: escalation only). Such a photo moves
        from review/ to blocked/ with a new note and marked-up copy."""
        if not self.guard.settings.recognition:
            return
        from optout_guard.events import decide_across

        for members in self._events(filed):
            if len(members) < 2:
                continue
            scope = self.scope_of(Path(members[0][1].path).relative_to(self.folder))
            # Read from where they are now; their copies were filed with them (nothing is drawn in staging).
            results = [dataclasses.replace(r, path=str(t), annotated_path=None, redacted_path=None) for t, r in members]
            together = decide_across(self.guard, results, scope, "drop")
            for (target, original), alone, joint in zip(members, results, together, strict=True):
                if joint is alone or joint.verdict is not Verdict.BLOCK or original.verdict is not Verdict.REVIEW:
                    continue  # only a photo filed in review/ moves (one blocked already stays where it is)
                with self.filing():
                    moved = self._file_again(target, joint, marked=bool(original.annotated_path))
                log.info("%s: BLOCK with the same child in other photos of this drop (now %s)", target.name, moved)
                if self.activity is not None:
                    from optout_guard.activity_log import photo_details

                    self.activity.record("watch-event", previous=Verdict.REVIEW.value, **photo_details(joint))
                self.stats.processed[Verdict.REVIEW.value] -= 1
                self.stats.processed[Verdict.BLOCK.value] += 1

    def _events(self, filed: list[tuple[Path, ScanResult]]) -> list[list[tuple[Path, ScanResult]]]:
        """The drop's photos that hold or block a face, per sub-folder scope."""
        groups: dict[str, list[tuple[Path, ScanResult]]] = {}
        for target, result in filed:
            held = result.clip is None and any(m.candidates and m.decision is not Decision.CLEAR for m in result.faces)
            if held and target.is_file():
                scope = self.scope_of(Path(result.path).relative_to(self.folder))
                groups.setdefault(scope.name, []).append((target, result))
        return list(groups.values())

    def _file_again(self, path: Path, result: ScanResult, marked: bool) -> Path:
        """Move a photo filed in review/ to the folder of its new verdict (an event's block), with a
        marked-up copy drawn again and a new note; the copy fit to post (every face not clear was
        already blurred) moves with it. Under the filing lock."""
        from optout_guard import annotate
        from optout_guard.media.photos import load_image

        home = self._out_dirs[Verdict.REVIEW].resolve()
        path = path.resolve()
        image = load_image(path, self.guard.settings)
        if image.sha256 != result.sha256:
            return path  # changed since it was filed: it keeps its own verdict
        self.staging.mkdir(parents=True, exist_ok=True)
        copy = annotate.write_marked_copy(image, list(result.faces), self.staging) if marked else None
        postable = path.with_name(f"{path.name}{PHOTOS.postable_suffix}")  # events group photos only
        moved = dataclasses.replace(result, annotated_path=str(copy) if copy else None,
                                    redacted_path=str(postable) if postable.is_file() else None)  # fmt: skip
        old = [path.with_name(f"{path.name}{suffix}") for suffix in (PHOTOS.marked_suffix, ".txt")]
        target = self._file(path, moved, home)
        for leftover in old:
            leftover.unlink(missing_ok=True)
        return target

    def _process(self, path: Path) -> bool:
        kind = sniff(path)  # decided once: the check is handed the kind
        if not kind.checked:
            self._note_not_photo(path, "not a photo (left where it is)")
            with self._lock:
                self._seen.pop(path, None)
            return False
        # An unreadable file (whatever its name) is checked too: it becomes review, never "not a photo".
        claimed = self._claim(path)
        if claimed is None:  # gone since it settled (moved away, deleted): nothing to do
            with self._lock:
                self._seen.pop(path, None)
            return False
        # The file leaves the inbox while it is checked (a clip for a while): say so where it was.
        marker = path.with_name(path.name + CHECKING)
        with contextlib.suppress(OSError):
            atomic_write(marker, _text(
                f"optout-guard is checking {path.name} (since {dt.datetime.now().astimezone().strftime('%H:%M:%S')}).\n"
                "It will be in allowed/, blocked/ or review/ with a note in a moment (a video clip takes longer: "
                "about a quarter of its length).\n"), mode=0o644, prefix=".optout-guard-checking-")  # fmt: skip
        try:
            result = self._check_claimed(claimed, path, kind)
            seen = self._seen.get(path)
            if result.verdict is Verdict.REVIEW and seen is not None and _looks_unfinished(result):
                try:
                    age = time.time() - claimed.stat().st_mtime
                except OSError:
                    age = self.arrival_grace
                if age < self.arrival_grace:  # written moments ago: maybe a copy paused mid-file
                    for staged in (result.annotated_path, result.redacted_path):
                        if staged:
                            Path(staged).unlink(missing_ok=True)
                    self._unclaim(claimed, path)
                    seen.retry_after = self.clock() + max(self.settle, 1.0)
                    return False
            with self.filing():
                filed = self._file(claimed, result, origin=path)
            self._burst.append((filed, result))
        except BaseException:
            self._unclaim(claimed, path)  # the original goes back to the inbox, to be checked again
            raise
        finally:
            marker.unlink(missing_ok=True)
        with self._lock:
            if path.exists():  # something new was put at this name meanwhile: it is checked on its own
                now = self.clock()
                self._seen[path] = _Seen(-1, -1, now, now)
            else:
                self._seen.pop(path, None)
        self._not_photos.pop(path.name, None)
        self.stats.processed[result.verdict.value] += 1
        if self.activity is not None:
            from optout_guard.activity_log import photo_details

            self.activity.record("watch", **photo_details(result))
        log.info("%s: %s (%s)", path.name, result.verdict.value.upper(), "; ".join(result.reasons))
        return True

    # ---- claiming: what is checked is exactly what is filed ---------------------------------------
    def _claim(self, path: Path) -> Path | None:
        """Move the photo out of the inbox into the private staging folder before reading it, so that
        a file written, replaced or renamed over at the same name during the check cannot be filed
        under the verdict of other bytes. A crash leaves it in staging; :meth:`prepare` puts it back."""
        target = self.claimed / path.relative_to(self.folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        return target

    def _unclaim(self, claimed: Path, origin: Path) -> None:
        if not claimed.exists():
            return
        origin.parent.mkdir(parents=True, exist_ok=True)
        back = origin if not origin.exists() else _free_name(origin.parent, origin.name)
        os.replace(claimed, back)

    def scope_of(self, relative: Path) -> Scope:
        """A photo in a sub-folder named after a school or a [scopes] entry is checked against that
        scope's students (``Photo check/Lincoln Elementary/``); anything else district-wide."""
        if len(relative.parts) < 2 or not self.guard.settings.recognition:
            return WHOLE_DISTRICT
        return folder_scope(relative.parts[0], set(self.guard.index.protected_students()), self.guard.settings.workspace)

    def _check_claimed(self, claimed: Path, origin: Path, kind: MediaKind) -> ScanResult:
        """Check the claimed file; if its bytes are not the ones checked afterwards (a writer still had
        it open), check again — at most three times, then it is review."""
        redaction = Redaction(self.staging) if self.redact else None
        scope = self.scope_of(origin.relative_to(self.folder))
        for _ in range(3):
            result = self.guard.check(claimed, annotate_dir=self.staging, redact=redaction, scope=scope, kind=kind)
            result = dataclasses.replace(result, path=str(origin))
            try:
                now = sha256_file(claimed)
            except OSError:
                now = None
            if result.sha256 is None or now == result.sha256:
                return result
            for staged in (result.annotated_path, result.redacted_path):
                if staged:
                    Path(staged).unlink(missing_ok=True)
            log.warning("%s changed while it was checked; checking it again", origin.name)
        why = "the file kept changing while it was checked; copy it again when it is complete"
        return dataclasses.replace(result, verdict=Verdict.REVIEW, reasons=(*result.reasons, why),
                                   annotated_path=None, redacted_path=None)  # fmt: skip

    def stopped(self, why: str) -> None:
        """Tell the people who drop photos here that nothing is being checked, and why."""
        text = (
            f"optout-guard stopped checking this folder at {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M')}:\n"
            f"  {why}\n\nPhotos dropped here wait and are checked once it runs again. Tell the person who runs "
            "optout-guard (the service restarts itself; the log says the same).\n"
        )
        with contextlib.suppress(OSError):
            atomic_write(self.folder / STOPPED_NOTE, _text(text), mode=0o644, prefix=".optout-guard-stopped-")
        log.error("the check folder %s stopped: %s", self.folder, why)

    @classmethod
    def as_recorded(cls, folder: Path, guard: Guard, activity: Any = None) -> CheckFolder:
        """The check folder with the options its watch recorded (a copy fit to post, sub-folders as
        scopes): what a review desk uses to refile a photo there as the watch would."""
        options: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            options = json.loads((Path(folder) / ".optout-guard-staging" / OPTIONS_FILE).read_text())
        return cls(folder, guard, activity=activity, redact=bool(options.get("redact")),
                   recursive=bool(options.get("recursive")))  # fmt: skip

    @contextlib.contextmanager
    def filing(self, timeout: float = 120.0) -> Iterator[None]:
        """The folder's filing lock (an OS lock, freed if the process dies)."""
        from filelock import FileLock

        lock = FileLock(str(self.folder / FILING_LOCK))
        with lock.acquire(timeout=timeout):
            hide(self.folder / FILING_LOCK)
            yield

    def refile(self, path: Path) -> tuple[Verdict, Path] | None:
        """Check a photo already filed in one of the verdict folders again — after a person settled
        its faces on the review desk, their decisions count — and move it (with a new marked copy
        and note) when its verdict changed. Returns (verdict, where it is now); None if ``path`` is
        not a filed photo of this check folder. Done under the folder's filing lock."""
        with self.filing():
            return self._refile(Path(path))

    def _refile(self, path: Path) -> tuple[Verdict, Path] | None:
        path = Path(path).resolve()
        home = next((v for v, d in self._out_dirs.items() if path.is_relative_to(d.resolve())), None)
        if home is None or not path.is_file() or path.name.endswith(OUTPUT_SUFFIXES):
            return None
        self.staging.mkdir(parents=True, exist_ok=True)
        redaction = Redaction(self.staging) if self.redact else None
        scope = self.scope_of(path.relative_to(self._out_dirs[home].resolve()))
        result = self.guard.check(path, annotate_dir=self.staging, redact=redaction, scope=scope)
        if result.verdict is home:
            for staged in (result.annotated_path, result.redacted_path):
                if staged:
                    Path(staged).unlink(missing_ok=True)
            return home, path
        base = self._out_dirs[home].resolve()
        old = [path.with_name(f"{path.name}{suffix}") for suffix in (*OUTPUT_SUFFIXES, ".txt")]
        target = self._file(path, result, base)
        for leftover in old:
            leftover.unlink(missing_ok=True)
        if self.activity is not None:
            from optout_guard.activity_log import photo_details

            self.activity.record("watch-refile", previous=home.value, **photo_details(result))
        return result.verdict, target

    def _file(self, path: Path, result: ScanResult, base: Path | None = None, origin: Path | None = None) -> Path:
        """Move ``path`` (a claimed original, or a filed one when ``base`` is its verdict folder) into
        the folder of its verdict, with its outputs; ``origin`` is where it was dropped."""
        origin = origin or path
        out_dir = self._out_dirs[result.verdict]
        if base is not None:  # moving from one verdict folder to another: same sub-folders
            out_dir = out_dir / path.parent.relative_to(base)
        elif self.recursive:  # keep the sub-folder structure under the verdict folder
            out_dir = out_dir / origin.parent.relative_to(self.folder)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = _free_name(out_dir, origin.name)
        marked_name = ""
        if result.annotated_path:
            marked_name = f"{target.name}{handler_for(result.kind).marked_suffix}"  # full name: face.heic and face.bmp differ
            os.replace(result.annotated_path, out_dir / marked_name)
        postable = ""
        if result.redacted_path:
            postable = f"{target.name}{handler_for(result.kind).postable_suffix}"  # .jpg, or .mp4 for a clip
            os.replace(result.redacted_path, out_dir / postable)
        atomic_write(out_dir / f"{target.name}.txt", _note(target.name, result, marked_name, postable), mode=0o644)
        os.replace(path, target)  # last: until here the original is untouched (in the inbox or staging)
        return target

    def _note_not_photo(self, path: Path, why: str) -> None:
        if self._not_photos.get(path.name) == why:
            return
        self._not_photos[path.name] = why
        lines = ["These files are not photos, so optout-guard did not check them. They were left here.", ""]
        lines += [f"- {name}: {reason}" for name, reason in sorted(self._not_photos.items())]
        try:
            atomic_write(self.folder / NOTE_FILE, _text("\n".join(lines) + "\n"), mode=0o644)
        except OSError as exc:
            log.warning("could not write %s: %s", NOTE_FILE, exc)
        log.info("%s: not a photo, left alone", path.name)

    # ---- running ----------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Process everything present now (waiting for files still arriving), then return."""
        self.prepare()
        self.rescan()
        done = 0
        deadline = self.clock() + self.arrival_grace + self.settle + 5
        while self._seen and self.clock() < deadline:
            done += self.process_ready()
            if self._seen:
                time.sleep(0.1)
        return done

    def run_forever(
        self,
        polling: bool = False,
        rescan_every: float = 60.0,
        stop: threading.Event | None = None,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """Watch until ``stop`` (or Ctrl+C). ``tick``: called every loop, a few times a second (the
        job record's heartbeat)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        folder = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event):  # noqa: ANN001, ANN202
                if not event.is_directory:
                    folder.notice(event.src_path)

            def on_modified(self, event):  # noqa: ANN001, ANN202
                if not event.is_directory:
                    folder.notice(event.src_path)

            def on_moved(self, event):  # noqa: ANN001, ANN202
                if not event.is_directory:
                    folder.notice(event.dest_path)

        self.prepare()
        (self.folder / STOPPED_NOTE).unlink(missing_ok=True)  # it works again
        stamp, next_look = settings_stamp(self.guard.settings), self.clock() + 2.0
        observer = PollingObserver(timeout=2) if polling else Observer()
        observer.schedule(Handler(), str(self.folder), recursive=True)
        observer.start()
        stop = stop or threading.Event()
        self.rescan()  # files that arrived while the service was down
        next_rescan = self.clock() + rescan_every
        log.info("watching %s (%s)", self.folder, "polling" if polling else "native events")
        try:
            while not stop.is_set():
                self.process_ready()
                if self.clock() >= next_look:  # config.toml or the index key edited: start again with them
                    if settings_stamp(self.guard.settings) != stamp:
                        raise SettingsChanged(
                            "config.toml or the index key changed: the watch stops so that its service starts it "
                            "again with them"
                        )
                    next_look = self.clock() + 2.0
                if self.clock() >= next_rescan:
                    self.rescan()
                    next_rescan = self.clock() + rescan_every
                if tick is not None:
                    tick()
                stop.wait(0.25)
        finally:
            observer.stop()
            observer.join(timeout=5)


class SettingsChanged(OptoutGuardError):
    """config.toml or the index key changed under a running watch (exit 2: the service restarts it)."""


def watch_folder(
    settings: Settings,
    folder: Path,
    *,
    once: bool = False,
    polling: bool = False,
    rescan_every: float = 60.0,
    settle: float = 2.0,
    recursive: bool = False,
    redact: bool = False,
    stop: threading.Event | None = None,
) -> WatchStats:
    """``optout-guard watch``: refuse to start with a broken install or an unusable index (and say
    so in the folder, where staff look), take the folder's lock (a second watch is refused), then
    check what is there (``once``) or keep watching until ``stop`` or Ctrl+C. SettingsChanged is
    raised when config.toml or the key changes (the service restarts with the new ones)."""
    from optout_guard.activity_log import ActivityLog
    from optout_guard.errors import ConfigError

    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; create it or give the right path")
    guard = Guard(settings)
    try:
        guard.require_models()  # a broken install: refuse to start (never file everything into review/)
        if settings.recognition:
            guard.require_index()  # refuse to start without a usable index (nothing would ever be blocked)
    except OptoutGuardError as exc:  # said in the folder too: staff see why nothing is filed
        CheckFolder(folder, guard).stopped(str(exc))
        raise
    lock = folder_lock(folder)
    try:
        checker = CheckFolder(folder, guard, settle=settle, recursive=recursive, activity=ActivityLog(settings), redact=redact)
        with jobs.track(settings, "watch", str(folder)) as job:  # what the desk's status page shows

            def filed() -> int:
                return sum(checker.stats.processed.values())

            def tick() -> None:
                job.progress(filed())
                job.beat()

            if once:
                checker.run_once()
            else:
                with contextlib.suppress(KeyboardInterrupt):
                    checker.run_forever(polling=polling, rescan_every=rescan_every, stop=stop, tick=tick)
            job.finish(True, {**checker.stats.processed, "errors": checker.stats.errors}, done=filed())
    finally:
        lock.release()
    return checker.stats


def folder_lock(folder: Path):  # noqa: ANN201 - filelock.FileLock
    """An OS-level lock (released by the OS if the process dies): a second watch is refused."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(folder) / LOCK_FILE))
    owner = Path(folder) / PID_FILE
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            pid = owner.read_text().split()[0]
            who = f" (process {pid}: stop it with `kill {pid}`, or stop its service)"
        except (OSError, IndexError):
            who = ""
        raise AlreadyWatched(
            f"{folder} is already being watched by another optout-guard watch{who}; stop that one first"
        ) from None
    hide(Path(folder) / LOCK_FILE)
    # Who holds the lock, for the next watch that is refused (the lock itself is the OS's, freed at exit).
    with contextlib.suppress(OSError):
        atomic_write(owner, f"{os.getpid()} {socket.gethostname()}\n", mode=0o644, prefix=".optout-guard-watch-pid-")
        hide(owner)
    return lock


def _looks_unfinished(result: ScanResult) -> bool:
    # A clip still being copied looks damaged (its index, at the end of an MP4, is not there yet).
    return result.problem in (ReasonCode.TRUNCATED, ReasonCode.EMPTY_FILE, ReasonCode.CLIP_DAMAGED)


def _free_name(folder: Path, name: str) -> Path:
    """``name``, or ``stem (2).ext``… if a different photo of that name was already filed."""
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem} ({n}){suffix}"
        n += 1
    return candidate


def _note(name: str, result: ScanResult, marked_name: str, postable: str = "") -> str:
    lines = [
        f"optout-guard: {result.verdict.value.upper()}",
        f"Photo: {name}",
        f"Checked: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M')}",
        "Checked against: "
        + (f"the opted-out students of {result.scope}" if result.scope else "every opted-out student in the district"),
        "Why:",
        *[f"  - {reason}" for reason in result.reasons],
    ]
    if marked_name:
        lines.append(f"Marked-up copy: {marked_name} (red = opted-out student, amber = needs a look, green = fine)")
    if postable and result.verdict is not Verdict.ALLOW and not result.notes:
        blurred = [m for m in result.faces if m.decision is not Decision.CLEAR]
        why = ", ".join(
            f"{n} {what}"
            for what, n in (
                ("opted-out student" + ("s" if sum(m.decision is Decision.BLOCK for m in blurred) > 1 else ""),
                 sum(m.decision is Decision.BLOCK for m in blurred)),
                ("resembling a student", sum(m.decision is Decision.REVIEW and bool(m.candidates) for m in blurred)),
                ("that could not be checked", sum(m.decision is Decision.REVIEW and not m.candidates for m in blurred)),
            )
            if n
        )  # fmt: skip
        lines.append(
            f"Copy you may post instead, without waiting for a reviewer: {postable} — {len(blurred)} "
            f"face{'s' if len(blurred) != 1 else ''} blurred ({why}); no photo metadata."
        )
    lines += ["", *_what_to_do(result, marked_name, postable), ""]
    return _text("\n".join(lines))


def _text(text: str) -> str:
    """File names that are not valid UTF-8 shown with \\xNN escapes: a note is text, and a photo
    whose note cannot be written would never be filed."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
