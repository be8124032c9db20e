"""What ran, when, how far it got, and how it ended: one record per run of a long job — an audit,
a check folder's watcher, a sync, the review desk's imports — so that the status page shows in one
place what is running now, what finished, and what stopped half-way (issue 29 §6).

One small private SQLite file in the workspace's state folder. Only counts and one line of summary
are written: no path of a photo, no student, nothing about a face. A job that ends by an exception
is recorded as failed with the error's first line; a process killed mid-job leaves a run that never
finished, which reads as *stopped* once its process is gone (or, from another machine, once it has
not been heard from for :data:`SILENT_AFTER` seconds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optout_guard.config import Settings
from optout_guard.fsutil import open_private_db

JOBS_FILE = "jobs.sqlite"
KINDS = ("audit", "watch", "sync", "desk import")
HEARTBEAT = 30.0  # a running job writes at least this often (progress or a beat)
SILENT_AFTER = 300.0  # a job on another machine not heard from for this long reads as stopped
KEEP_RUNS = 200  # per kind and target: older runs are deleted

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, started TEXT NOT NULL,
    updated TEXT NOT NULL, finished TEXT, ok INTEGER, done INTEGER NOT NULL DEFAULT 0, total INTEGER,
    summary TEXT NOT NULL DEFAULT '{}', pid INTEGER NOT NULL, host TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_target ON runs (kind, target, id);
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def jobs_path(settings: Settings) -> Path:
    return settings.state_dir / JOBS_FILE


def _connect(settings: Settings) -> sqlite3.Connection:
    db = open_private_db(jobs_path(settings), check_same_thread=False)
    db.executescript(_SCHEMA)
    return db


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's process: it exists
        return True
    return True


@dataclass(frozen=True)
class JobRun:
    id: int
    kind: str
    target: str  # what the job works on: a library, a check folder, an export file's name
    started: str
    updated: str
    finished: str | None
    ok: bool | None
    done: int
    total: int | None
    summary: dict[str, Any]
    pid: int
    host: str

    def state(self, now: float | None = None) -> str:
        """``running``, ``finished``, ``failed`` or ``stopped`` (never finished, and its process is
        gone: killed, the machine restarted)."""
        if self.finished is not None:
            return "finished" if self.ok else "failed"
        if self.host == socket.gethostname():
            return "running" if _alive(self.pid) else "stopped"
        age = (now or time.time()) - dt.datetime.fromisoformat(self.updated).timestamp()
        return "running" if age <= SILENT_AFTER else "stopped"

    def as_json(self) -> dict[str, Any]:
        keys = ("id", "kind", "target", "started", "updated", "finished", "done", "total", "summary")
        return {k: getattr(self, k) for k in keys} | {"state": self.state()}


@dataclass
class Tracker:
    """One run of a job, as it goes: :meth:`progress` (written at most once a second, and at least
    every :data:`HEARTBEAT` seconds through :meth:`beat`), then :meth:`finish`."""

    settings: Settings
    run_id: int
    finished: bool = False
    _last_write: float = field(default=0.0)
    _written: tuple[int, int | None] = (0, None)

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        # A job is never stopped by its record: a locked or full disk only costs the status line.
        with contextlib.suppress(sqlite3.Error, OSError):
            db = _connect(self.settings)
            try:
                db.execute(sql, args)
            finally:
                db.close()
        self._last_write = time.monotonic()

    def progress(self, done: int, total: int | None = None) -> None:
        """How far the job got; written when it changed, at most once a second (an idle watch
        writes only its heartbeat)."""
        if (done, total) != self._written and time.monotonic() - self._last_write >= 1.0:
            sql = "UPDATE runs SET done=?, total=COALESCE(?, total), updated=? WHERE id=?"
            self._write(sql, (done, total, _now(), self.run_id))
            self._written = (done, total)

    def beat(self) -> None:
        if time.monotonic() - self._last_write >= HEARTBEAT:
            self._write("UPDATE runs SET updated=? WHERE id=?", (_now(), self.run_id))

    def finish(self, ok: bool, summary: dict[str, Any] | None = None, done: int | None = None) -> None:
        now = _now()
        self._write(
            "UPDATE runs SET finished=?, updated=?, ok=?, summary=?, done=COALESCE(?, done) WHERE id=?",
            (now, now, int(ok), json.dumps(summary or {}, sort_keys=True), done, self.run_id),
        )
        self.finished = True


def start(settings: Settings, kind: str, target: str) -> Tracker:
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    now = _now()
    run_id = 0
    with contextlib.suppress(sqlite3.Error, OSError):
        db = _connect(settings)
        try:
            run_id = int(db.execute(
                "INSERT INTO runs (kind, target, started, updated, pid, host) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, target, now, now, os.getpid(), socket.gethostname()),
            ).lastrowid or 0)  # fmt: skip
            db.execute(
                "DELETE FROM runs WHERE kind=? AND target=? AND id NOT IN "
                "(SELECT id FROM runs WHERE kind=? AND target=? ORDER BY id DESC LIMIT ?)",
                (kind, target, kind, target, KEEP_RUNS),
            )
        finally:
            db.close()
    return Tracker(settings, run_id)


@contextlib.contextmanager
def track(settings: Settings, kind: str, target: str) -> Iterator[Tracker]:
    """Record one run of a job around the block: started now; failed with the error's first line if
    the block raises (the exception goes on); finished (ok) at the end unless the block said how it
    finished (:meth:`Tracker.finish`)."""
    tracker = start(settings, kind, target)
    try:
        yield tracker
    except BaseException as exc:
        if not tracker.finished:
            first_line = (str(exc).splitlines() or [""])[0][:300]
            tracker.finish(False, {"error": f"{type(exc).__name__}: {first_line}".rstrip(": ")})
        raise
    if not tracker.finished:
        tracker.finish(True)


def latest(settings: Settings) -> list[JobRun]:
    """The last run of each job (kind and target), newest first. Nothing recorded yet: []."""
    path = jobs_path(settings)
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT id, kind, target, started, updated, finished, ok, done, total, summary, pid, host FROM runs "
                "WHERE id IN (SELECT MAX(id) FROM runs GROUP BY kind, target) ORDER BY id DESC"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    runs = []
    for row in rows:
        summary: dict[str, Any] = {}
        with contextlib.suppress(ValueError, TypeError):
            summary = json.loads(row[9])
        ok = None if row[6] is None else bool(row[6])
        runs.append(JobRun(row[0], row[1], row[2], row[3], row[4], row[5], ok, row[7], row[8], summary, row[10], row[11]))
    return runs
