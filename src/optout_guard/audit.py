"""The library audit: incremental, resumable, and safe to kill at any moment.

State lives in one SQLite database (WAL mode, on local disk, mode 0600) per library. Each photo is
remembered by path, size, modification time and sha256, with its verdict, the geometry of its faces
(boxes and landmarks — not embeddings) and the gallery fingerprint it was checked against:

- unchanged photo, same gallery            → skipped
- unchanged photo, gallery changed         → its known faces are re-embedded and decided again
                                             (no detection); photos without faces need nothing
- new or changed photo                     → full check (a moved/renamed photo is recognised by
                                             its sha256 and keeps its result)
- photo gone                               → reported once in that run, then forgotten

Results are committed in small transactions as they arrive, so a killed audit resumes where it
stopped and ends with the same results as an uninterrupted one. Two audits of one library at once
are refused (an OS lock).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optout_guard.config import Settings
from optout_guard.errors import ConfigError, OptoutGuardError
from optout_guard.fsutil import open_private_db, sha256_with_identity, utc_now
from optout_guard.images import sniff
from optout_guard.pipeline import Guard, run_in_workers
from optout_guard.scope import WHOLE_DISTRICT, Scope, named_scopes, resolve_scope, scope_for_library_path
from optout_guard.types import Box, Face, ReasonCode, ScanResult, Unjudged, Verdict

SCHEMA_VERSION = 1
# Folders that hold no photos of people but system clutter (Windows, macOS, Synology, Samba).
SYSTEM_DIRS = {"$RECYCLE.BIN", "System Volume Information", "@eaDir", "#recycle", "lost+found", "#snapshot", ".Trash"}
_COMMIT_EVERY = 2.0  # seconds between commits while results stream in
_UPSERT = """
INSERT INTO files (path, size, mtime_ns, sha256, verdict, reasons, faces, gallery, checked_at, last_run, changed_run,
                   prev_verdict, retry, kind)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256,
  verdict=excluded.verdict, reasons=excluded.reasons, faces=excluded.faces, gallery=excluded.gallery,
  checked_at=excluded.checked_at, last_run=excluded.last_run, retry=excluded.retry, kind=excluded.kind,
  changed_run=CASE WHEN files.verdict IS excluded.verdict THEN files.changed_run ELSE excluded.changed_run END,
  prev_verdict=CASE WHEN files.verdict IS excluded.verdict THEN files.prev_verdict ELSE files.verdict END
"""


class AuditBusy(OptoutGuardError):
    """Another audit of this library is running."""


class LibraryLooksUnmounted(OptoutGuardError):
    """Most (or all) photos the library had are gone at once: an unmounted share, not deletions."""


# A run that finds more than this share of the library's photos gone (and at least MIN_GONE of
# them), or all of them, stops without recording anything: a share that did not mount looks
# exactly like a library whose photos were all deleted, and forgetting every result would hide
# blocked photos until the next full audit.
MAX_GONE_SHARE = 0.2
MIN_GONE = 10


def _looks_unmounted(known: int, gone: int) -> bool:
    return gone == known or (gone >= MIN_GONE and gone > MAX_GONE_SHARE * known)


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
    deleted: list[str] = field(default_factory=list)
    links_not_followed: list[str] = field(default_factory=list)
    changed: list[tuple[str, str | None, str]] = field(default_factory=list)  # (path, before, after)
    totals: dict[str, int] = field(default_factory=dict)  # verdicts over the whole library
    seconds: float = 0.0


def display_path(raw: bytes | str) -> str:
    """A path as text for people and reports: bytes that are not UTF-8 shown as \\xNN."""
    raw = raw if isinstance(raw, bytes) else os.fsencode(raw)
    return raw.decode("utf-8", "backslashreplace")


_now = utc_now


def _stat_now(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(name)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


# ---- storage -------------------------------------------------------------------------------------
def state_path(settings: Settings, library: Path) -> Path:
    key = hashlib.sha256(os.fsencode(str(Path(library).resolve()))).hexdigest()[:16]
    return settings.index_file.parent / f"audit-{key}.sqlite"


def review_paths(settings: Settings, library: Path) -> list[Path]:
    """Photos the last audit of ``library`` left at *review* (for the review desk); read-only."""
    path = state_path(settings, library)
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT path FROM files WHERE verdict = 'review'").fetchall()
    finally:
        db.close()
    return [Path(os.fsdecode(p)) for (p,) in rows]


def _connect(path: Path) -> sqlite3.Connection:
    db = open_private_db(path)
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE IF NOT EXISTS files (
            path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT,
            verdict TEXT, reasons TEXT, faces TEXT, gallery TEXT, checked_at TEXT,
            last_run INTEGER, changed_run INTEGER, prev_verdict TEXT);
        CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
        CREATE TABLE IF NOT EXISTS runs (
            id INTEGER PRIMARY KEY, started TEXT, finished TEXT, gallery TEXT, summary TEXT);
        """
    )
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    columns = {r[1] for r in db.execute("PRAGMA table_info(files)")}
    if "retry" not in columns:
        # 1 = the verdict came from an error (a crash, an unreadable file): checked again by every run.
        db.execute("ALTER TABLE files ADD COLUMN retry INTEGER NOT NULL DEFAULT 0")
    if "kind" not in columns:
        db.execute("ALTER TABLE files ADD COLUMN kind TEXT NOT NULL DEFAULT 'photo'")  # 'photo' or 'clip'

    return db


def _faces_json(result: ScanResult) -> str:
    """Geometry and decisions only: boxes, landmarks, page, decision, student id, distance. For a
    clip, per track also its times and the geometry of the sightings it was decided from."""
    tracks = result.clip.tracks if result.clip is not None else None
    return json.dumps(
        [
            ({
                "clip_size": list(result.size) if result.size else None,
                "track": {
                    "first": t.first, "last": t.last, "best_time": t.best_time, "seen": t.seen, "judged": t.judged,
                    "best": [
                        {"time": when, "box": [f.box.x, f.box.y, f.box.w, f.box.h],
                         "landmarks": np.asarray(f.landmarks, float).round(2).tolist()}
                        for when, f in t.best
                    ],
                },
            } if tracks is not None and (t := tracks[i]) else {}) | {
                "box": [m.face.box.x, m.face.box.y, m.face.box.w, m.face.box.h],
                "landmarks": np.asarray(m.face.landmarks, float).round(1).tolist(),
                "page": m.face.page,
                "score": round(m.face.score, 3),
                "upright": m.face.upright,
                "decision": m.decision.value,
                "student_id": m.student_id,
                "distance": None if m.distance is None else round(m.distance, 4),
                "reason": m.reason,
                "code": m.code.value,
                "judged": bool(m.candidates),  # False: too small/blurred, never embedded
            }
            for i, m in enumerate(result.faces)
        ]
    )  # fmt: skip


def faces_from_json(text: str | None) -> list[Face]:
    return [
        Face(
            Box(*f["box"]), f.get("score", 1.0), np.asarray(f["landmarks"], np.float32), f.get("page", 0), f.get("upright", True)
        )
        for f in json.loads(text or "[]")
    ]


# ---- walking the library -------------------------------------------------------------------------
def walk_library(library: Path, links: list[str] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under ``library``: hidden and system folders skipped, symbolic links
    never followed (so nothing outside the library is read, and no loop), non-UTF-8 names kept as
    they are. Every link passed over is added to ``links`` (the report lists them: never silent)."""
    root = os.fsencode(str(library))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if links is not None:
            links.extend(display_path(os.path.join(dirpath, d)) for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(b".") and os.fsdecode(d) not in SYSTEM_DIRS)
        for name in sorted(filenames):
            if name.startswith(b"."):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                if links is not None:
                    links.append(display_path(full))
                continue
            if not stat.S_ISREG(st.st_mode):  # devices, sockets, pipes
                continue
            yield os.fsdecode(full), st


# ---- the work done in (worker) processes ---------------------------------------------------------
def _audit_task(
    guard: Guard, path: str, kind: str, faces: str | None, keep: bool, scope: Scope = WHOLE_DISTRICT
) -> ScanResult:
    if kind == "recheck" and faces and '"track"' in faces:
        from optout_guard.video import recheck_clip  # a clip: its tracks' frames only, not a full decode

        return recheck_clip(guard, path, json.loads(faces), scope)
    if kind == "recheck":
        return guard.recheck(path, faces_from_json(faces), keep_embeddings=keep, scope=scope)
    return guard.check(path, keep_embeddings=keep, scope=scope)


def _results(
    guard: Guard,
    tasks: list[tuple[str, str, str | None]],
    workers: int,
    keep: bool,
    scope_of: Callable[[str], Scope] = lambda _name: WHOLE_DISTRICT,
    faces_of: Callable[[str], str | None] = lambda _name: None,
) -> Iterator[tuple[tuple, ScanResult]]:
    """(task, result) for every (kind, path, faces) task, in order, in this process or in workers. A
    re-check's stored faces (None in the task) are read with ``faces_of`` just before it is sent."""
    resolved = ((k, p, f if f is not None or k != "recheck" else faces_of(p)) for k, p, f in tasks)
    if workers <= 1 or len(tasks) < 8:
        for kind, path, faces in resolved:
            yield (kind, path, faces), _audit_task(guard, path, kind, faces, keep, scope_of(path))
        return
    jobs = (((kind, path, faces), (path, kind, faces, keep, scope_of(path))) for kind, path, faces in resolved)
    for task, result in run_in_workers(guard.settings, workers, jobs, _audit_task):
        assert result is not None
        yield task, result


# ---- the opt-in embedding cache ----------------------------------------------------------------------
def cache_path(settings: Settings, library: Path) -> Path:
    state = state_path(settings, library)
    return state.with_name(state.stem + "-embeddings.sqlite")


class EmbeddingCache:
    """Embeddings of every face in the library, so that a changed opt-out list is checked in seconds.

    OFF by default, and deleted when an audit runs without it: it is biometric data about every
    pictured student, not only opted-out ones. Same protection as the index: mode 0600 in the
    private 0700 folder; entries of photos that left the library are deleted at the end of a run.
    """

    def __init__(self, path: Path) -> None:
        self.db = open_private_db(path)
        self.db.execute("PRAGMA secure_delete=ON")  # deleted vectors are overwritten, not left in free pages
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (sha256 TEXT, face INTEGER, vector BLOB, PRIMARY KEY (sha256, face))")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        from optout_guard.models import embedding_fingerprint

        made_by = self.db.execute("SELECT value FROM meta WHERE key='embedding'").fetchone()
        if made_by is None or made_by[0] != embedding_fingerprint():
            # Vectors made by another model or recipe cannot be compared with today's gallery.
            self.db.execute("DELETE FROM vectors")
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('embedding', ?)", (embedding_fingerprint(),))

    def get(self, sha256: str) -> dict[int, np.ndarray]:
        rows = self.db.execute("SELECT face, vector FROM vectors WHERE sha256=?", (sha256,))
        return {face: np.frombuffer(blob, np.float32) for face, blob in rows}

    def put(self, sha256: str, embeddings: tuple[np.ndarray | None, ...]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            [(sha256, i, np.asarray(v, np.float32).tobytes()) for i, v in enumerate(embeddings) if v is not None],
        )

    def keep_only(self, shas: set[str]) -> None:
        stale = [(s,) for (s,) in self.db.execute("SELECT DISTINCT sha256 FROM vectors") if s not in shas]
        self.db.executemany("DELETE FROM vectors WHERE sha256=?", stale)
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.db.close()


def delete_cache(path: Path) -> bool:
    removed = False
    for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        if p.exists():
            p.unlink()
            removed = True
    return removed


def _from_cache(
    guard: Guard, name: str, faces_text: str, sha: str, cache: EmbeddingCache, scope: Scope = WHOLE_DISTRICT
) -> ScanResult | None:
    """Decide a photo again from cached embeddings; None when the cache does not cover it."""
    stored = json.loads(faces_text)
    vectors = cache.get(sha)
    unjudged = {
        i: Unjudged(ReasonCode(f.get("code", "not_judged")), f.get("reason") or "face could not be judged")
        for i, f in enumerate(stored)
        if not f.get("judged", True)
    }
    if any(i not in vectors for i in range(len(stored)) if i not in unjudged):
        return None
    faces = faces_from_json(faces_text)
    embeddings = [vectors.get(i) for i in range(len(stored))]
    matches, verdict, reasons = guard.decide(faces, embeddings, unjudged, sha256=sha, scope=scope)
    return ScanResult(name, verdict, reasons, tuple(matches), sha256=sha, scope="" if scope.is_district else scope.name)


class LibraryScopes:
    """Which scope each library path is checked with: the ``library_paths`` globs of config.toml's
    [scopes] (README "Scopes"); the rest district-wide. A scope that names nobody, or a school the
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
        """The gallery key stored with a row: the gallery, and the scope's students when scoped (a
        photo whose scope changed is decided again, like one whose gallery changed)."""
        scope = self.scope(name)
        if scope.is_district:
            return self.gallery
        assert scope.students is not None
        digest = hashlib.sha256("\n".join(sorted(scope.students)).encode()).hexdigest()[:12]
        return f"{self.gallery}:{digest}"


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
    cluster ("local:N" or "tls://HOST:PORT"; README "Running the audit on a cluster")."""
    from filelock import FileLock, Timeout

    library = Path(library).resolve()
    if not library.is_dir():
        raise OptoutGuardError(f"{library} is not a folder; give the photo library's top folder")
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
            logging.getLogger(__name__).info("audit on the Dask cluster %s: %d workers", cluster, engine.workers)
        summary = _audit(
            library, settings, guard, scopes, _connect(path), workers, progress, cache, accept_deletions, recheck_all, engine
        )
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
    gallery = scopes.gallery
    run = db.execute("INSERT INTO runs (started, gallery) VALUES (?, ?)", (_now(), gallery)).lastrowid
    summary = AuditSummary(run_id=run, library=str(library))
    # path -> (size, mtime_ns, gallery, verdict, has faces, sha256, retry). The faces themselves (the
    # bulk of a row) are read only for the photos that need a re-decision, when they are sent.
    known = {
        bytes(r[0]): r[1:]
        for r in db.execute(
            "SELECT path, size, mtime_ns, gallery, verdict, COALESCE(faces NOT IN ('', '[]'), 0), sha256, retry FROM files"
        )
    }

    def faces_of(name: str) -> str | None:
        row = db.execute("SELECT faces FROM files WHERE path=?", (os.fsencode(name),)).fetchone()
        return row[0] if row else None


    # 1. Walk: what is unchanged, what needs a re-decision, what needs a full check.
    tasks: list[tuple[str, str, str | None]] = []
    ready: list[tuple[tuple, ScanResult]] = []  # decided from the embedding cache, no image read
    new_files: list[str] = []
    seen_unchanged: list[bytes] = []
    present: set[bytes] = set()
    walked: dict[str, tuple[int, int]] = {}  # what each file looked like when listed
    # Photos a reviewer decided about since the last run are decided again (with those decisions).
    last_start = db.execute("SELECT MAX(started) FROM runs WHERE id < ? AND finished IS NOT NULL", (run,)).fetchone()[0]
    book = guard.review_book
    decided = book.decided_since(last_start or "") if book is not None else set()
    for name, st in walk_library(library, summary.links_not_followed):
        kind = sniff(name)
        if kind not in ("image", "clip"):
            summary.not_images += 1
            continue
        if kind == "clip":
            summary.clips += 1
        key = os.fsencode(name)
        present.add(key)
        summary.seen += 1
        row = known.get(key)
        walked[name] = (st.st_size, st.st_mtime_ns)
        # row: size, mtime_ns, gallery, verdict, faces, sha256, retry
        if row is None:
            new_files.append(name)
        elif recheck_all or (row[0], row[1]) != (st.st_size, st.st_mtime_ns) or row[3] is None or row[6]:
            tasks.append(("check", name, None))  # new bytes, or last time's verdict came from an error
        elif row[2] == scopes.gallery_of(name) and row[5] not in decided:
            seen_unchanged.append(key)
        elif row[4]:  # a new gallery, or a reviewer decided about its faces since
            scope = scopes.scope(name)
            cached = None
            if cache is not None and row[5]:
                cached = _from_cache(guard, name, faces_of(name) or "[]", row[5], cache, scope)
            if cached is not None:
                ready.append((("recheck", name, None), cached))
            else:
                tasks.append(("recheck", name, None))  # its stored faces are read when it is sent
        else:
            # No faces (or an unreadable file): a changed gallery cannot change its verdict.
            seen_unchanged.append(key)
            db.execute("UPDATE files SET gallery=? WHERE path=?", (scopes.gallery_of(name), key))
    summary.unchanged = len(seen_unchanged)
    db.execute("BEGIN")
    db.executemany("UPDATE files SET last_run=? WHERE path=?", [(run, k) for k in seen_unchanged])
    # 2. Gone since the last run: moved (same content elsewhere) or deleted.
    gone = {k: v for k, v in known.items() if k not in present}
    by_sha = {v[5]: k for k, v in gone.items() if v[5]}
    for name in new_files:
        moved_from = identity = None
        if by_sha:
            try:
                digest, identity = sha256_with_identity(name)
                moved_from = by_sha.get(digest)
            except OSError:
                moved_from = None
        same_gallery = moved_from is not None and gone[moved_from][2] == scopes.gallery_of(name)
        if moved_from is not None and identity is not None and same_gallery and not gone[moved_from][6]:
            # The stat stored is that of the bytes just hashed, not a later one.
            db.execute(
                "UPDATE files SET path=?, size=?, mtime_ns=?, last_run=? WHERE path=?",
                (os.fsencode(name), identity.size, identity.mtime_ns, run, moved_from),
            )
            del gone[moved_from]
            del by_sha[next(s for s, k in by_sha.items() if k == moved_from)]
            summary.moved += 1
        else:
            tasks.append(("check", name, None))
    if gone and not accept_deletions and _looks_unmounted(len(known), len(gone)):
        db.execute("ROLLBACK")
        db.execute("DELETE FROM runs WHERE id=?", (run,))
        db.close()
        raise LibraryLooksUnmounted(
            f"{len(gone)} of the {len(known)} photos last seen in {library} are gone: the library looks unmounted or "
            "emptied, so nothing was recorded (the saved results are kept). Check that the share is mounted; if the "
            "photos really were deleted, run the audit again with --accept-deletions"
        )
    for key in gone:
        summary.deleted.append(display_path(key))
    db.executemany("DELETE FROM files WHERE path=?", [(k,) for k in gone])
    # Recorded now, with the deletion itself: a run killed later still reports them.
    db.execute("UPDATE runs SET summary=? WHERE id=?", (json.dumps({"deleted": summary.deleted}), run))
    db.execute("COMMIT")

    # 3. Check, committing as results arrive (a killed audit keeps everything committed so far).
    total = len(tasks) + len(ready)
    done = 0
    last_commit = time.monotonic()
    changed_meanwhile: list[tuple[str, str, str | None]] = []
    db.execute("BEGIN")
    try:
        for round_ in range(2):
            todo = tasks if round_ == 0 else changed_meanwhile
            checked = engine.results(todo, cache is not None, scopes.scope, faces_of=faces_of) if engine is not None else \
                _results(guard, todo, workers, cache is not None, scopes.scope, faces_of)
            results = itertools.chain(ready, checked) if round_ == 0 else checked  # fmt: skip
            again: list[tuple[str, str, str | None]] = []
            for (kind, name, _), result in results:
                key = os.fsencode(name)
                before = known.get(key, (None,) * 7)[3]
                # The size and time of the very bytes that were checked (a cache decision read none:
                # the file was unchanged when listed). Never a stat taken after the check.
                size, mtime = result.identity if result.identity is not None else walked.get(name, (None, None))
                if result.identity is not None and round_ == 0 and _stat_now(name) not in (result.identity, None):
                    again.append(("check", name, None))  # changed while it was checked: once more, below
                sha = result.sha256
                changed = before != result.verdict.value
                db.execute(_UPSERT, (
                    key, size, mtime, sha, result.verdict.value, json.dumps(list(result.reasons)), _faces_json(result),
                    scopes.gallery_of(name), _now(), run, run, None, int(result.retry), result.kind,
                ))  # fmt: skip
                if changed and round_ == 0:
                    summary.changed.append((display_path(name), before, result.verdict.value))
                if cache is not None and sha and result.embeddings is not None:
                    cache.put(sha, result.embeddings)
                if round_ == 0:
                    if kind == "recheck":
                        summary.rechecked += 1
                    else:
                        summary.checked += 1
                    done += 1
                    if progress:
                        progress(done, total)
                if time.monotonic() - last_commit >= _COMMIT_EVERY:
                    db.execute("COMMIT")
                    db.execute("BEGIN")
                    last_commit = time.monotonic()
            changed_meanwhile = again
            if not changed_meanwhile:
                break
        db.execute("COMMIT")
    except BaseException:
        db.execute("COMMIT")  # keep what was finished: the next run resumes from there
        raise

    summary.totals = {v.value: 0 for v in Verdict}
    for verdict, count in db.execute("SELECT verdict, COUNT(*) FROM files GROUP BY verdict"):
        summary.totals[verdict] = count
    if cache is not None:
        cache.keep_only({sha for (sha,) in db.execute("SELECT DISTINCT sha256 FROM files WHERE sha256 IS NOT NULL")})
    summary.seconds = time.perf_counter() - started
    record = {k: v for k, v in summary.__dict__.items() if k not in ("changed",)}
    record["changed"] = summary.changed[:1000]
    db.execute(
        "UPDATE runs SET finished=?, summary=? WHERE id=?",
        (_now(), json.dumps(record), run),
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return summary


def library_rows(
    settings: Settings, library: Path, verdicts: tuple[str, ...] = ("block", "review"), kind: str | None = None
) -> list[dict[str, Any]]:
    """The current state of the library's photos with these verdicts (for the report); ``kind``
    "clip" or "photo" for only those."""
    db = _connect(state_path(settings, Path(library).resolve()))
    try:
        marks = ",".join("?" for _ in verdicts)
        columns = "path, verdict, reasons, faces, checked_at, changed_run, sha256, kind"
        query = f"SELECT {columns} FROM files WHERE verdict IN ({marks})" + (" AND kind = ?" if kind else "")
        rows = db.execute(query + " ORDER BY path", (*verdicts, *((kind,) if kind else ()))).fetchall()
    finally:
        db.close()
    named = {n: d for n, d in named_scopes(settings.workspace).items() if d.library_paths}
    library = Path(library).resolve()

    def scope_of(name: str) -> str:
        if not named:
            return ""
        return scope_for_library_path(os.path.relpath(name, library), named) or ""

    return [
        {
            "path": display_path(bytes(r[0])),
            "fs_path": os.fsdecode(bytes(r[0])),  # for opening the file; not for display
            "verdict": r[1],
            "reasons": json.loads(r[2] or "[]"),
            "faces": json.loads(r[3] or "[]"),
            "checked_at": r[4],
            "changed_run": r[5],
            "sha256": r[6],
            "scope": scope_of(os.fsdecode(bytes(r[0]))),  # "" = the whole district
            "kind": r[7],  # "photo" or "clip"
        }
        for r in rows
    ]


def changes_since_last_audit(settings: Settings, library: Path) -> dict[str, Any]:
    """What changed since the last audit that finished before the latest one: photos whose verdict
    changed (or that are new) and photos that were deleted — including from runs that were killed."""
    db = _connect(state_path(settings, Path(library).resolve()))
    try:
        runs = db.execute("SELECT id, finished, summary FROM runs ORDER BY id").fetchall()
        latest = runs[-1][0] if runs else 0
        previous = max((r[0] for r in runs if r[1] and r[0] != latest), default=0)
        deleted = [p for r in runs if r[0] > previous for p in json.loads(r[2] or "{}").get("deleted", [])]
        changed = [
            {"path": display_path(bytes(p)), "verdict": v, "before": b}
            for p, v, b in db.execute(
                "SELECT path, verdict, prev_verdict FROM files WHERE changed_run > ? ORDER BY path", (previous,)
            )
        ]
    finally:
        db.close()
    return {"since_run": previous, "changed": changed, "deleted": sorted(set(deleted))}


def report_thumbnail(settings: Settings) -> Callable[[dict[str, Any], Path], bool]:
    """Draws a report row's photo with its stored faces marked (False when it cannot be read)."""
    from optout_guard.annotate import write_thumbnail
    from optout_guard.errors import ImageRejected
    from optout_guard.images import load_image
    from optout_guard.types import Candidate, Decision, FaceMatch, ReasonCode

    def draw(row: dict[str, Any], out: Path) -> bool:
        if row.get("kind") == "clip":  # the clip's contact sheet, from the stored tracks' best frames
            from PIL import Image

            from optout_guard.annotate import save_jpeg
            from optout_guard.video import stored_contact_sheet

            try:
                sheet = stored_contact_sheet(row["fs_path"], [f for f in row["faces"] if "track" in f])
            except Exception:  # noqa: BLE001 - no thumbnail is shown; the row still says why
                return False
            out.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(sheet, large_of(out), mode=0o600)
            sheet.thumbnail((360, 720), Image.Resampling.LANCZOS)
            save_jpeg(sheet, out, mode=0o600)
            return True
        try:
            image = load_image(row["fs_path"], settings)
        except ImageRejected:
            return False
        matches = []
        for stored, face in zip(row["faces"], faces_from_json(json.dumps(row["faces"])), strict=True):
            who = (Candidate(stored["student_id"], stored["distance"] or 0.0),) if stored.get("student_id") else ()
            code = ReasonCode(stored.get("code", "not_judged"))
            matches.append(FaceMatch(face, Decision(stored["decision"]), who, stored.get("reason") or "", code))
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
