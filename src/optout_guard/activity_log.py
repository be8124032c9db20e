"""The activity log: an append-only, hash-chained record of who ran what, and what came of it.

One JSON object per line in ``<workspace>/.optout-guard/activity.jsonl`` (mode 0600). Each entry
carries the SHA-256 of the previous entry and its own, so an edited, inserted or deleted line is
detected by :func:`verify` (``optout-guard log verify``). Photos are named by content hash and
students by id: no images, no face templates, no names, no paths (a file name can be a child's).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optout_guard.config import Settings

LOG_FILE = "activity.jsonl"
GENESIS = "0" * 64


def log_path(settings: Settings) -> Path:
    return settings.index_file.parent / LOG_FILE


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _last_entry(path: Path) -> dict[str, Any] | None:
    """The last line, read from the end (the log can grow large)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        block = b""
        pos = end
        while pos > 0 and block.count(b"\n") < 2:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step) + block
    lines = [line for line in block.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


class ActivityLog:
    def __init__(self, settings: Settings) -> None:
        self.path = log_path(settings)
        self.user = getpass.getuser()
        self.host = platform.node()  # from uname: no network lookup

    def record(self, action: str, **details: Any) -> None:
        """Append one entry; several processes (a watch and a CLI) may write at once."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(str(self.path) + ".lock"):
            previous = _last_entry(self.path) if self.path.exists() and self.path.stat().st_size else None
            entry = {
                "seq": (previous["seq"] + 1) if previous else 1,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "user": self.user,
                "host": self.host,
                "action": action,
                "details": details,
                "prev": previous["hash"] if previous else GENESIS,
            }
            entry["hash"] = _digest(entry)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())


@dataclass
class Verification:
    entries: int
    problem: str | None  # None when the chain is intact


def verify(settings: Settings) -> Verification:
    """Walk the whole chain; the first line that does not fit is reported with its number."""
    path = log_path(settings)
    if not path.exists():
        return Verification(0, None)
    previous_hash, expected_seq, count = GENESIS, 1, 0
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return Verification(count, f"line {number} is not valid JSON (edited or damaged)")
            if entry.get("hash") != _digest(entry):
                return Verification(count, f"line {number} was changed after it was written (its hash does not match)")
            if entry.get("prev") != previous_hash or entry.get("seq") != expected_seq:
                return Verification(count, f"line {number} does not follow the line before it (a line was removed or inserted)")
            previous_hash, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
    return Verification(count, None)


def photo_details(result: Any) -> dict[str, Any]:
    """What the log says about one checked photo: its content hash, verdict and blocked students."""
    return {"sha256": result.sha256, "verdict": result.verdict.value, "students": list(result.blocked_students)}
