"""Is everything running? What the review desk's status page shows (Immich has a Jobs page).

For the one IT person: is each check folder's watcher alive (its OS lock is held), when did it
last file a photo, how many files wait in its inbox and for how long, did it stop and why; when
did each audit last run and with what result; can the face index be read, and how many students
does it protect; when was the opt-out list last synced; and the last run of every job (an audit in
progress with how far it got, a sync, a watcher, the desk's imports; one that stopped half-way).
Everything is read from what is on disk now (locks, files, the audit's state, the job record), so
the page is true even when a service is down.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

from optout_guard.config import Settings


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


def check_folder_status(folder: Path) -> dict[str, Any]:
    from filelock import FileLock, Timeout

    from optout_guard.watch import CHECKING, LOCK_FILE, NOTE_FILE, OUTPUT_DIRS, PID_FILE, STOPPED_NOTE

    folder = Path(folder)
    alive = False
    if folder.is_dir():
        lock = FileLock(str(folder / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
            lock.release()  # nobody held it: no watcher runs on this folder
        except Timeout:
            alive = True
    ours = {*OUTPUT_DIRS.values(), NOTE_FILE, STOPPED_NOTE}
    inbox = list(folder.iterdir()) if folder.is_dir() else []
    waiting = [p for p in inbox if p.is_file() and not p.name.startswith(".") and p.name not in ours
               and not p.name.endswith(CHECKING)]  # fmt: skip
    filed = [p for d in OUTPUT_DIRS.values() if (folder / d).is_dir() for p in (folder / d).rglob("*.txt")]
    stopped = None
    with contextlib.suppress(OSError):
        stopped = (folder / STOPPED_NOTE).read_text(encoding="utf-8").strip()
    pid = None
    with contextlib.suppress(OSError, IndexError):
        pid = (folder / PID_FILE).read_text().split()[0]
    oldest = min((p.stat().st_mtime for p in waiting), default=None)
    return {
        "folder": str(folder),
        "watcher_running": alive,
        "watcher_pid": pid if alive else None,
        "stopped_because": stopped,
        "last_filed": _iso(max(p.stat().st_mtime for p in filed)) if filed else None,
        "waiting": len(waiting),
        "oldest_waiting_since": _iso(oldest) if oldest is not None else None,
    }


def audit_status(settings: Settings, library: Path) -> dict[str, Any]:
    from optout_guard.audit.state import state_path

    library = Path(library).resolve()
    path = state_path(settings, library)
    out: dict[str, Any] = {"library": str(library), "last_started": None, "last_finished": None, "totals": None}
    if not path.exists():
        return out
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT started, finished, summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        done = db.execute("SELECT finished, summary FROM runs WHERE finished IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        row = done = None
    finally:
        db.close()
    if row is not None:
        out["last_started"] = row[0]
        out["running_or_stopped"] = row[1] is None  # started, not (yet) finished
    if done is not None:
        out["last_finished"] = done[0]
        with contextlib.suppress(ValueError, TypeError):
            out["totals"] = json.loads(done[1]).get("totals")
    return out


def index_status(settings: Settings) -> dict[str, Any]:
    from optout_guard.index import open_index

    try:
        index = open_index(settings)
    except Exception as exc:  # noqa: BLE001 - whatever it is, the page says it
        return {"readable": False, "problem": str(exc)}
    return {"readable": True, "students": len(index.student_ids()), "not_protected": len(index.not_protected())}


def list_status(settings: Settings) -> dict[str, Any]:
    from optout_guard.optout_list import LIST_FILE, load_list

    path = settings.workspace / LIST_FILE
    if not path.exists():
        return {"synced": None}
    try:
        listed = load_list(settings.workspace)
    except Exception as exc:  # noqa: BLE001
        return {"synced": _iso(path.stat().st_mtime), "problem": str(exc)}
    return {"synced": _iso(path.stat().st_mtime), "students": len(listed.students) if listed else 0}


def status(settings: Settings, check_folders: list[Path], libraries: list[Path]) -> dict[str, Any]:
    from optout_guard import jobs

    return {
        "index": index_status(settings),
        "opt_out_list": list_status(settings),
        "check_folders": [check_folder_status(f) for f in check_folders],
        "audits": [audit_status(settings, lib) for lib in libraries],
        # The last run of every job this workspace ran (audits, watchers, syncs, the desk's imports),
        # running, finished, failed or stopped half-way (jobs.py).
        "jobs": [run.as_json() for run in jobs.latest(settings)],
    }


_JOB_NAMES = {"audit": "Audit of", "watch": "Check folder watcher of", "sync": "Sync of", "desk import": "Import from"}


def places_from_jobs(settings: Settings) -> tuple[list[Path], list[Path]]:
    """The check folders and libraries this workspace's watchers and audits ran on (the job
    record): what `optout-guard status` looks at when it is given none."""
    from optout_guard import jobs

    runs = jobs.latest(settings)
    return [Path(r.target) for r in runs if r.kind == "watch"], [Path(r.target) for r in runs if r.kind == "audit"]


def status_lines(doc: dict[str, Any]) -> list[tuple[bool, str]]:
    """The status as lines a person reads, each well (True) or needing a look (False) — what the
    desk's Status tab shows, for the command line and monitoring scripts."""
    lines: list[tuple[bool, str]] = []
    index = doc["index"]
    if index["readable"]:
        missing = f", {index['not_protected']} NOT protected" if index["not_protected"] else ""
        lines.append((not index["not_protected"], f"Face index readable: {index['students']} students protected{missing}."))
    else:
        lines.append((False, f"Face index cannot be read: {index['problem']}"))
    listed = doc["opt_out_list"]
    if listed.get("problem"):
        lines.append((False, f"The saved opt-out list cannot be read: {listed['problem']}"))
    elif listed.get("synced"):
        lines.append((True, f"Opt-out list last synced {listed['synced']} ({listed['students']} students)."))
    else:
        lines.append((False, "No opt-out list synced yet (optout-guard sync)."))
    for f in doc["check_folders"]:
        waiting = f" {f['waiting']} file(s) waiting since {f['oldest_waiting_since']}." if f["waiting"] else " Inbox empty."
        stopped = f" It stopped: {f['stopped_because']}" if f["stopped_because"] else ""
        running = "running" if f["watcher_running"] else "NOT running"
        text = f"Check folder {f['folder']}: watcher {running}; last photo filed {f['last_filed'] or 'never'}."
        lines.append((f["watcher_running"] and not f["stopped_because"], text + waiting + stopped))
    for a in doc["audits"]:
        totals = a.get("totals") or {}
        said = f": {totals.get('block', 0)} blocked, {totals.get('review', 0)} to review, {totals.get('allow', 0)} allowed"
        said = said if totals else ""
        lines.append((bool(a["last_finished"]), f"Audit of {a['library']}: last finished {a['last_finished'] or 'never'}{said}."))
    for j in doc["jobs"]:
        name = f"{_JOB_NAMES.get(j['kind'], j['kind'])} {j['target']}"
        if j["state"] == "running":
            far = f"{j['done']} of {j['total']}" if j["total"] else str(j["done"])
            lines.append((True, f"{name}: running since {j['started']}, {far} done (last heard from {j['updated']})."))
        elif j["state"] == "finished":
            counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in j["summary"].items())
            lines.append((True, f"{name}: last run finished {j['finished']}" + (f" ({counts})." if counts else ".")))
        elif j["state"] == "failed":
            lines.append((False, f"{name}: last run FAILED {j['finished']}: {j['summary'].get('error', 'see the log')}."))
        else:
            lines.append((False, f"{name}: last run STOPPED without finishing (started {j['started']}, last heard from "
                                 f"{j['updated']}; its process is gone): run it again."))  # fmt: skip
    return lines
