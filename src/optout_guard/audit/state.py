"""The audit's state: one SQLite database per library (WAL, on local disk, mode 0600), and the
opt-in embedding cache beside it.

A row per photo or clip: path (bytes, as the file system has it), size, modification time and
sha256 of the bytes checked, the verdict and its reasons, the geometry of its faces (boxes and
landmarks, never embeddings), the gallery key it was checked against, and the runs that saw and
changed it. ``retry`` = 1 marks a verdict that came from an error: every run checks it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from optout_guard.audit.listing import display_path
from optout_guard.config import Settings
from optout_guard.fsutil import open_private_db
from optout_guard.scope import named_scopes, scope_for_library_path

SCHEMA_VERSION = 1
UPSERT = """
INSERT INTO files (path, size, mtime_ns, sha256, verdict, reasons, faces, gallery, checked_at, last_run, changed_run,
                   prev_verdict, retry, kind)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256,
  verdict=excluded.verdict, reasons=excluded.reasons, faces=excluded.faces, gallery=excluded.gallery,
  checked_at=excluded.checked_at, last_run=excluded.last_run, retry=excluded.retry, kind=excluded.kind,
  changed_run=CASE WHEN files.verdict IS excluded.verdict THEN files.changed_run ELSE excluded.changed_run END,
  prev_verdict=CASE WHEN files.verdict IS excluded.verdict THEN files.prev_verdict ELSE files.verdict END
"""


# ---- storage -------------------------------------------------------------------------------------
def state_path(settings: Settings, library: Path) -> Path:
    key = hashlib.sha256(os.fsencode(str(Path(library).resolve()))).hexdigest()[:16]
    return settings.state_dir / f"audit-{key}.sqlite"


def review_paths(settings: Settings, library: Path) -> list[Path]:
    """Photos the last audit of ``library`` left at *review*, and photos with a face cleared by
    recognising a consenting student (a person may hold it), for the review desk; read-only."""
    path = state_path(settings, library)
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT path FROM files WHERE verdict = 'review' OR (verdict = 'allow' AND faces IS NOT NULL AND EXISTS "
            "(SELECT 1 FROM json_each(files.faces) WHERE json_extract(value, '$.code') = 'consenting'))"
        ).fetchall()
    finally:
        db.close()
    return [Path(os.fsdecode(p)) for (p,) in rows]


def connect(path: Path) -> sqlite3.Connection:
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

    def keep_only(self, in_use: Callable[[str], bool]) -> None:
        """Delete the vectors of photos that left the library (``in_use(sha256)`` False)."""
        # Streamed (a cursor, not a list of every photo's hash); only the stale ones are kept.
        stale = [(s,) for (s,) in self.db.execute("SELECT DISTINCT sha256 FROM vectors") if not in_use(s)]
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


def library_rows(
    settings: Settings, library: Path, verdicts: tuple[str, ...] = ("block", "review"), kind: str | None = None
) -> list[dict[str, Any]]:
    """The current state of the library's photos with these verdicts (for the report); ``kind``
    "clip" or "photo" for only those."""
    db = connect(state_path(settings, Path(library).resolve()))
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


MATTERING = ("block", "review")
LISTED_CHANGES = 500  # changes listed in the report (all of them are counted)


def changes_since_last_audit(settings: Settings, library: Path) -> dict[str, Any]:
    """What changed since the last audit that finished before the latest one, including runs that
    were killed: the changes that matter to a reader (a photo newly blocked or held, or cleared; a
    new photo that is simply allowed is not news), the first ``LISTED_CHANGES`` in path order and
    their count, and the photos that were deleted. Read with SQL, not into memory: a first audit
    changes every row."""
    db = connect(state_path(settings, Path(library).resolve()))
    try:
        runs = db.execute("SELECT id, finished, summary FROM runs ORDER BY id").fetchall()
        latest = runs[-1][0] if runs else 0
        previous = max((r[0] for r in runs if r[1] and r[0] != latest), default=0)
        deleted = [p for r in runs if r[0] > previous for p in json.loads(r[2] or "{}").get("deleted", [])]
        where = "changed_run > ? AND (verdict IN (?, ?) OR prev_verdict IN (?, ?))"
        args = (previous, *MATTERING, *MATTERING)
        count = db.execute(f"SELECT COUNT(*) FROM files WHERE {where}", args).fetchone()[0]
        changed = [
            {"path": display_path(bytes(p)), "verdict": v, "before": b}
            for p, v, b in db.execute(
                f"SELECT path, verdict, prev_verdict FROM files WHERE {where} ORDER BY path LIMIT ?",
                (*args, LISTED_CHANGES),
            )
        ]
    finally:
        db.close()
    return {"since_run": previous, "changed": changed, "changed_count": count, "deleted": sorted(set(deleted))}
