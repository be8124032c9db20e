"""The library audit: incremental, resumable, and safe to kill at any moment.

One run, top to bottom: list the library (``listing``), work out what to do against the stored
state (``plan``: unchanged photos skipped, a changed gallery decided again from stored faces, new
or changed photos checked, moved ones recognised, deleted ones reported), check what is left in
this machine's process pool or on a Dask cluster, and commit results as they arrive (``state``).
A killed audit resumes where it stopped and ends with the same results as an uninterrupted one;
two audits of one library at once are refused (an OS lock). Nothing proportional to the size of
the library is held in memory: the listing and the plan live in temporary SQLite tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optout_guard import jobs, stored_faces
from optout_guard.audit.listing import Passed, display_path, list_library
from optout_guard.audit.plan import plan_run, todo_pages
from optout_guard.audit.state import (
    UPSERT,
    EmbeddingCache,
    cache_path,
    connect,
    delete_cache,
    state_path,
)
from optout_guard.audit.task import Checked, as_checked, audit_task
from optout_guard.config import Settings
from optout_guard.errors import AuditBusy, ConfigError, LibraryLooksUnmounted, OptoutGuardError
from optout_guard.events import decide_across
from optout_guard.fsutil import utc_now
from optout_guard.matching import cleared_but_close
from optout_guard.pipeline import FaceVectors, Guard
from optout_guard.pool import run_in_workers
from optout_guard.scope import WHOLE_DISTRICT, Scope, named_scopes, resolve_scope, scope_for_library_path
from optout_guard.types import Decision, ReasonCode, ScanResult, Verdict

__all__ = ["AuditBusy", "AuditSummary", "LibraryLooksUnmounted", "run_audit"]
_COMMIT_EVERY = 2.0  # seconds between commits while results stream in
LISTED_CHANGES = 1000  # verdict changes kept by name in the run's summary (all are counted)


@dataclass
class AuditSummary:
    run_id: int
    library: str
    seen: int = 0
    checked: int = 0
    rechecked: int = 0
    unchanged: int = 0
    moved: int = 0
    not_images: int = 0
    clips: int = 0  # video clips among the files seen (checked like photos)
    cluster_workers: int = 0  # Dask workers the checks ran on (0: this machine's process pool)
    deleted: list[str] = field(default_factory=list)  # the first plan.LISTED_DELETIONS
    deleted_count: int = 0
    links_not_followed: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)  # their photos kept as they were
    changed: list[tuple[str, str | None, str]] = field(default_factory=list)  # (path, before, after), the first 1000
    changed_count: int = 0
    totals: dict[str, int] = field(default_factory=dict)  # verdicts over the whole library
    seconds: float = 0.0
    cleared_but_close: int = 0  # faces this run cleared within matching.CLOSE_MARGIN past review
    cleared_by_consenting: int = 0  # faces this run cleared by recognising a consenting student (consent.py)
    event_blocks: int = 0  # held faces blocked with the same child's faces in other photos of their folder and day


_now = utc_now


def _results(
    guard: Guard,
    tasks: Iterable[tuple[str, str, str | None]],
    count: int,
    workers: int,
    keep: bool,
    scope_of: Callable[[str], Scope] = lambda _name: WHOLE_DISTRICT,
    faces_of: Callable[[str], str | None] = lambda _name: None,
) -> Iterator[tuple[tuple, Checked]]:
    """(task, (result, embeddings)) for every (kind, path, faces) task, in order, in this process or
    in workers. A re-check's stored faces (None in the task) are read with ``faces_of`` just before
    it is sent."""
    resolved = ((k, p, f if f is not None or k != "recheck" else faces_of(p)) for k, p, f in tasks)
    if workers <= 1 or count < 8:
        for kind, path, faces in resolved:
            yield (kind, path, faces), audit_task(guard, path, kind, faces, keep, scope_of(path))
        return
    jobs = (((kind, path, faces), (path, kind, faces, keep, scope_of(path))) for kind, path, faces in resolved)
    for task, outcome in run_in_workers(guard.settings, workers, jobs, audit_task, Guard):
        yield task, as_checked(outcome, task[1])


def _from_cache(
    guard: Guard, name: str, faces_text: str, sha: str, cache: EmbeddingCache, scope: Scope = WHOLE_DISTRICT
) -> ScanResult | None:
    """Decide a photo again from cached embeddings; None when the cache does not cover it."""
    stored = stored_faces.decode(faces_text)
    vectors = cache.get(sha)
    unjudged = {i: why for i, f in enumerate(stored) if (why := f.unjudged) is not None}
    if any(i not in vectors for i in range(len(stored)) if i not in unjudged):
        return None
    faces = [f.face for f in stored]
    embeddings = [vectors.get(i) for i in range(len(stored))]
    matches, verdict, reasons = guard.decide(faces, embeddings, unjudged, sha256=sha, scope=scope)
    return ScanResult(name, verdict, reasons, tuple(matches), sha256=sha, scope="" if scope.is_district else scope.name)


def _students_digest(scope: Scope) -> str:
    return hashlib.sha256("\n".join(sorted(scope.students or ())).encode()).hexdigest()[:12]


class LibraryScopes:
    """Which scope each library path is checked with: the ``library_paths`` globs of config.toml's
    [scopes] (docs/scopes.md); the rest district-wide. A scope that names nobody, or a school the
    list does not know, stops the audit (exit 2) rather than check a folder against nobody."""

    def __init__(self, library: Path, settings: Settings, guard: Guard, gallery: str) -> None:
        from optout_guard.optout_list import load_list

        self.library = library
        self.gallery = gallery
        self.named = {n: d for n, d in named_scopes(settings.workspace).items() if d.library_paths}
        self.scopes: dict[str, Scope] = {}
        if self.named:
            optouts = load_list(settings.workspace)
            enrolled = set(guard.index.protected_students())
            self.scopes = {n: resolve_scope(n, None, enrolled, optouts, self.named) for n in self.named}
        # The gallery key of each scope, once (a photo whose scope changed is decided again, like one
        # whose gallery changed).
        self.keys = {n: f"{gallery}:{_students_digest(s)}" for n, s in self.scopes.items()}

    def scope(self, name: str) -> Scope:
        if not self.named:
            return WHOLE_DISTRICT
        try:
            relative = os.path.relpath(name, self.library)
        except ValueError:
            return WHOLE_DISTRICT
        found = scope_for_library_path(relative, self.named)
        return self.scopes[found] if found else WHOLE_DISTRICT

    def gallery_of(self, name: str) -> str:
        """The gallery key stored with a row: the gallery, and the scope's students when scoped."""
        scope = self.scope(name)
        return self.gallery if scope.is_district else self.keys[scope.name]


# ---- one audit run ---------------------------------------------------------------------------------
def run_audit(
    library: Path,
    settings: Settings,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    guard: Guard | None = None,
    embedding_cache: bool = False,
    accept_deletions: bool = False,
    recheck_all: bool = False,
    cluster: str | None = None,
) -> AuditSummary:
    """Audit ``library`` (see the module's docstring). ``accept_deletions``: record the photos gone
    even when so many are gone that the library looks unmounted; ``recheck_all``: check every photo
    again, whatever was stored (after a repaired install, say); ``cluster``: run the checks on a Dask
    cluster ("local:N" or "tls://HOST:PORT"; docs/cluster.md)."""
    from filelock import FileLock, Timeout

    library = Path(library).resolve()
    if not library.is_dir():
        raise OptoutGuardError(f"{library} is not a folder; give the photo library's top folder")
    try:
        with os.scandir(library):
            pass
    except OSError as exc:  # nothing could be listed: never a run that finds the whole library gone
        raise OptoutGuardError(
            f"cannot read the library folder {library} ({exc.strerror or exc}); check that it is mounted and that "
            "this account may read it"
        ) from None
    guard = guard or Guard(settings)
    guard.require_models()  # a broken install: exit 2 now, not every photo recorded as review
    gallery = guard.index.gallery_fingerprint()
    path = state_path(settings, library)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AuditBusy(f"another audit of {library} is running (lock {path}.lock); wait for it to finish") from None
    cache = engine = None
    try:
        if embedding_cache:
            cache = EmbeddingCache(cache_path(settings, library))
        elif delete_cache(cache_path(settings, library)):
            pass  # the cache was turned off: its biometric data goes with it
        scopes = LibraryScopes(library, settings, guard, gallery)
        if cluster:
            engine = _cluster_engine()(cluster, settings, guard)  # Dask is imported only here
        with jobs.track(settings, "audit", str(library)) as job:  # what the desk's status page shows

            def report(done: int, total: int) -> None:
                job.progress(done, total)
                if progress is not None:
                    progress(done, total)

            summary = _audit(
                library, settings, guard, scopes, connect(path), workers, report, cache, accept_deletions, recheck_all, engine
            )
            job.finish(True, {"checked": summary.checked, "seen": summary.seen, **summary.totals}, done=summary.checked)
        if engine is not None:
            summary.cluster_workers = engine.workers
        return summary
    finally:
        if cache is not None:
            cache.close()
        if engine is not None:
            engine.close()
        lock.release()


def _audit(
    library: Path,
    settings: Settings,
    guard: Guard,
    scopes: LibraryScopes,
    db: sqlite3.Connection,
    workers: int,
    progress: Callable[[int, int], None] | None,
    cache: EmbeddingCache | None = None,
    accept_deletions: bool = False,
    recheck_all: bool = False,
    engine: Any = None,
) -> AuditSummary:
    started = time.perf_counter()
    run = db.execute("INSERT INTO runs (started, gallery) VALUES (?, ?)", (_now(), scopes.gallery)).lastrowid
    assert run is not None
    summary = AuditSummary(run_id=run, library=str(library))

    # 1. List and plan. Photos a reviewer decided about since the last run are decided again.
    last_start = db.execute("SELECT MAX(started) FROM runs WHERE id < ? AND finished IS NOT NULL", (run,)).fetchone()[0]
    decided = guard.settler.decided_since(last_start or "")
    passed = Passed()
    try:
        plan = plan_run(
            db, run, list_library(library, passed, settings.listing_threads), scopes.gallery_of, decided,
            lambda: passed.unreadable_folders, recheck_all, accept_deletions, str(library),
        )  # fmt: skip
    except LibraryLooksUnmounted:
        db.execute("DELETE FROM runs WHERE id=?", (run,))
        db.close()
        raise
    summary.links_not_followed = passed.links
    summary.unreadable_folders = [display_path(f) for f in passed.unreadable_folders]
    summary.seen, summary.clips, summary.not_images = plan.seen, plan.clips, plan.not_images
    summary.unchanged, summary.moved = plan.unchanged, plan.moved
    summary.deleted, summary.deleted_count = plan.deleted, plan.deleted_count
    db.execute("UPDATE runs SET summary=? WHERE id=?", (json.dumps({"deleted": summary.deleted}), run))

    def faces_of(name: str) -> str | None:
        row = db.execute("SELECT faces FROM files WHERE path=?", (os.fsencode(name),)).fetchone()
        return row[0] if row else None

    # Photos checked this run with a face held or blocked for a student, by event (folder, day, scope):
    # decided once per child across each event when the checks are done (events.py).
    events: dict[tuple[str, str, str], list[tuple[str, ScanResult]]] = {}

    def record(kind: str, name: str, result: ScanResult, vectors: FaceVectors | None, counted: bool = True) -> None:
        key = os.fsencode(name)
        row = db.execute("SELECT verdict FROM files WHERE path=?", (key,)).fetchone()
        before = row[0] if row else None
        # As listed: the gallery key worked out in the plan, and the stat of a file a cache decision
        # read no bytes of (it was unchanged when listed).
        listed_size, listed_mtime, gallery = db.execute(
            "SELECT size, mtime_ns, gallery FROM walk WHERE path=?", (key,)
        ).fetchone() or (None, None, scopes.gallery_of(name))
        # Otherwise the size and time of the very bytes that were checked.
        size, mtime = result.identity if result.identity is not None else (listed_size, listed_mtime)
        db.execute(UPSERT, (
            key, size, mtime, result.sha256, result.verdict.value, json.dumps(list(result.reasons)), stored_faces.encode(result),
            gallery, _now(), run, run, None, int(result.retry), result.kind,
        ))  # fmt: skip
        listed = next((k for k, c in enumerate(summary.changed) if c[0] == display_path(name)), None)
        if not counted and listed is not None:  # decided again this run (an event): one change, from the last run's
            was = summary.changed[listed][1]
            if was == result.verdict.value:
                del summary.changed[listed]
                summary.changed_count -= 1
            else:
                summary.changed[listed] = (display_path(name), was, result.verdict.value)
        elif before != result.verdict.value:
            summary.changed_count += 1
            if len(summary.changed) < LISTED_CHANGES:
                summary.changed.append((display_path(name), before, result.verdict.value))
        if cache is not None and result.sha256 and vectors is not None:
            cache.put(result.sha256, vectors)
        if not counted:
            return
        if settings.recognition and result.clip is None and any(m.candidates and m.decision is not Decision.CLEAR
                                                                for m in result.faces):  # fmt: skip
            events.setdefault(event_of(name, scopes.scope(name)), []).append((name, result))
        summary.cleared_but_close += sum(cleared_but_close(m, settings.review_distance) for m in result.faces)
        summary.cleared_by_consenting += sum(m.code is ReasonCode.CONSENTING for m in result.faces)
        if kind == "recheck":
            summary.rechecked += 1
        else:
            summary.checked += 1

    # 2. Check, committing as results arrive (a killed audit keeps everything committed so far).
    total, done = plan.todo, 0
    last_commit = time.monotonic()

    def tick() -> None:
        nonlocal done, last_commit
        done += 1
        if progress:
            progress(done, total)
        if time.monotonic() - last_commit >= _COMMIT_EVERY:
            db.execute("COMMIT")
            db.execute("BEGIN")
            last_commit = time.monotonic()

    db.execute("BEGIN")
    try:
        if cache is not None:  # re-decisions the cache covers are made here, without reading a photo
            for seq, _kind, name in todo_pages(db, ("recheck",)):
                sha_row = db.execute("SELECT sha256, faces FROM files WHERE path=?", (os.fsencode(name),)).fetchone()
                cached = None
                if sha_row and sha_row[0]:
                    cached = _from_cache(guard, name, sha_row[1] or "[]", sha_row[0], cache, scopes.scope(name))
                if cached is not None:
                    db.execute("DELETE FROM todo WHERE seq=?", (seq,))
                    record("recheck", name, cached, None)
                    tick()
        pages = todo_pages(db, ("new", "check", "recheck"))
        tasks = (("check" if k == "new" else k, name, None) for _seq, k, name in pages)
        checked = (
            engine.results(tasks, cache is not None, scopes.scope, faces_of=faces_of)
            if engine is not None
            else _results(guard, tasks, total - done, workers, cache is not None, scopes.scope, faces_of)
        )
        for (kind, name, _), (result, vectors) in checked:
            record(kind, name, result, vectors)
            tick()
        db.execute("COMMIT")
        # 3. One decision per child across each event: a held face is blocked when the same child's
        # faces in the event's other photos, pooled, match (escalation only: nothing is cleared).
        db.execute("BEGIN")
        for (_folder, _day, _scope), members in events.items():
            if len(members) < 2:
                continue
            together = decide_across(guard, [r for _, r in members], scopes.scope(members[0][0]), "folder (same day)")
            for (member, alone), joint in zip(members, together, strict=True):
                if joint is not alone:
                    summary.event_blocks += sum(m.code is ReasonCode.EVENT_MATCH for m in joint.faces)
                    record("event", member, joint, None, counted=False)
        db.execute("COMMIT")
    except BaseException:
        db.execute("COMMIT")  # keep what was finished: the next run resumes from there
        raise

    summary.totals = {v.value: 0 for v in Verdict}
    for verdict, count in db.execute("SELECT verdict, COUNT(*) FROM files GROUP BY verdict"):
        summary.totals[verdict] = count
    if cache is not None:
        cache.keep_only(lambda sha: db.execute("SELECT 1 FROM files WHERE sha256=? LIMIT 1", (sha,)).fetchone() is not None)
    summary.seconds = time.perf_counter() - started
    db.execute("UPDATE runs SET finished=?, summary=? WHERE id=?", (_now(), json.dumps(summary.__dict__), run))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return summary


def event_of(name: str, scope: Scope) -> tuple[str, str, str]:
    """The event a library photo belongs to: its folder, the day it was taken (name, EXIF or file
    date) and the students it is checked against. A school's event folder is one event per day."""
    from optout_guard.media.photos import photo_date

    return str(Path(name).parent), photo_date(name), "" if scope.is_district else scope.name


def write_report(settings: Settings, summary: AuditSummary, out_dir: Path) -> Path:
    """The run's report for people (index.html, pages), spreadsheets (audit.csv) and scripts
    (audit.json), from the library's state after ``summary``'s run and the reviewers' latest decisions."""
    from optout_guard.audit.state import changes_since_last_audit, library_rows
    from optout_guard.report import write_audit_report
    from optout_guard.review import ReviewBook, book_path

    decisions: list[dict[str, Any]] = []
    if book_path(settings).exists():  # what reviewers decided lately, per reviewer, in the report
        book = ReviewBook.open(settings)
        try:
            decisions = book.decisions(500)
        finally:
            book.close()
    record = {k: v for k, v in summary.__dict__.items() if k != "changed"}
    library = Path(summary.library)
    return write_audit_report(
        out_dir, str(summary.library), record, library_rows(settings, library), changes_since_last_audit(settings, library),
        report_thumbnail(settings), decisions=decisions,
        clips=library_rows(settings, library, ("block", "review", "allow"), kind="clip"),
        desk_address=settings.desk_address,
    )  # fmt: skip


def record_run(settings: Settings, summary: AuditSummary, embedding_cache: bool, cluster: str | None) -> None:
    """The run in the activity log (counts only: no path, no face)."""
    from optout_guard.activity_log import ActivityLog

    ActivityLog(settings).record(
        "audit", checked=summary.checked, rechecked=summary.rechecked, unchanged=summary.unchanged, moved=summary.moved,
        deleted=summary.deleted_count, verdicts_changed=summary.changed_count, totals=summary.totals,
        embedding_cache=embedding_cache, cluster=cluster or "",
    )  # fmt: skip


def report_thumbnail(settings: Settings) -> Callable[[dict[str, Any], Path], bool]:
    """Draws a report row's photo with its stored faces marked (False when it cannot be read)."""
    from optout_guard.annotate import write_thumbnail
    from optout_guard.errors import ImageRejected
    from optout_guard.media.photos import load_image

    def draw(row: dict[str, Any], out: Path) -> bool:
        from optout_guard.media.handlers import handler_for

        handler = handler_for(row.get("kind") or "photo")  # the kind the audit stored for the file
        try:  # a clip's contact sheet, from the stored tracks' best frames (None for a photo)
            sheet = handler.stored_picture(row["fs_path"], stored_faces.decode(row["faces"]), settings)
        except Exception:  # noqa: BLE001 - no thumbnail is shown; the row still says why
            return False
        if sheet is not None:
            from PIL import Image

            from optout_guard.annotate import save_jpeg

            out.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(sheet, large_of(out), mode=0o600)
            sheet.thumbnail((360, 720), Image.Resampling.LANCZOS)
            save_jpeg(sheet, out, mode=0o600)
            return True
        try:
            image = load_image(row["fs_path"], settings)
        except ImageRejected:
            return False
        matches = [f.match() for f in stored_faces.decode(row["faces"])]
        try:
            write_thumbnail(image, matches, out)
            write_thumbnail(image, matches, large_of(out), width=1600, labels=True)  # what the thumbnail links to
        except OSError:
            return False
        return True

    return draw


def _cluster_engine() -> Any:
    """optout_guard.cluster.Cluster, or a set-up error saying how to install Dask."""
    try:
        from optout_guard.cluster import Cluster
    except ImportError as exc:
        raise ConfigError(
            f"--cluster needs Dask distributed ({exc.name or exc} is not installed): pip install 'optout-guard[cluster]' "
            "here and on every worker (the same version)"
        ) from None
    return Cluster


def large_of(thumbnail: Path) -> Path:
    """The labelled, larger marked-up copy a report thumbnail links to."""
    return thumbnail.with_name(thumbnail.stem + ".large.jpg")
