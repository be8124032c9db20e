"""The activity log: an append-only, keyed hash chain of who ran what, and what came of it.

One JSON object per line in ``<workspace>/.optout-guard/activity.jsonl`` (mode 0600). Each entry
carries the previous entry's MAC and its own: HMAC-SHA256 with a key kept outside the log (derived
from the index key when the index is encrypted, else ``activity.key``, 0600), so an edited,
inserted or forged line cannot be made to fit without the key. The head (count and last MAC) is
kept in ``activity.head`` as well, so a log that lost its tail, was emptied or deleted is detected
too. A line torn by a crash or a full disk is moved aside (``activity.torn-*``), recorded, and the
log goes on. Photos are named by content hash and students by id: no images, no face templates, no
names, no paths (a file name can be a child's). Entries from before the key (plain SHA-256) still
verify as the start of the chain.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import hmac
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optout_guard.config import Settings
from optout_guard.errors import OptoutGuardError
from optout_guard.fsutil import atomic_write, private_dir, utc_now

LOG_FILE = "activity.jsonl"
HEAD_FILE = "activity.head"
KEY_FILE = "activity.key"
GENESIS = "0" * 64
log = logging.getLogger("optout_guard.activity_log")


def log_path(settings: Settings) -> Path:
    return settings.state_dir / LOG_FILE


def _body(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(entry: dict[str, Any], key: bytes | None = None) -> str:
    """The entry's MAC (version 2 entries) or plain SHA-256 (entries written before the log was keyed)."""
    if entry.get("v") == 2 and key is not None:
        return hmac.new(key, _body(entry), hashlib.sha256).hexdigest()
    return hashlib.sha256(_body(entry)).hexdigest()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in a log entry")
    return dict(pairs)


def _parse(line: bytes | str) -> dict[str, Any]:
    entry = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    if not isinstance(entry, dict):
        raise ValueError("not a log entry")
    return entry


def log_key(settings: Settings) -> bytes:
    """The MAC key: from the index key when there is one (kept outside the workspace), else a random
    key made once in the private state folder."""
    from optout_guard.index import index_key

    index_secret = index_key(settings)
    if index_secret is not None:
        return hmac.new(index_secret, b"optout-guard activity log", hashlib.sha256).digest()
    path = settings.state_dir / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    private_dir(path.parent)
    # Made whole under a temp name, then linked into place: the link fails if another process made
    # the key first, and nobody ever reads a key file that is still being written.
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    atomic_write(tmp, os.urandom(32).hex() + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    key = _read_key(path)
    if key is None:
        raise OptoutGuardError(f"the activity log's key {path} is unreadable; restore it from a backup")
    return key


def _read_key(path: Path) -> bytes | None:
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return key if len(key) == 32 else None


def _head_path(path: Path) -> Path:
    return path.with_name(HEAD_FILE)


def _read_head(path: Path, key: bytes) -> tuple[int, str] | None:
    """(entries, last MAC) as last recorded; None if no head was ever written."""
    try:
        doc = json.loads(_head_path(path).read_text())
    except (OSError, ValueError):
        return None
    seq, last = int(doc.get("seq", 0)), str(doc.get("hash", ""))
    if doc.get("mac") != hmac.new(key, f"{seq}:{last}".encode(), hashlib.sha256).hexdigest():
        return (-1, "")  # a head that was edited: never matches
    return seq, last


def _write_head(path: Path, key: bytes, seq: int, last: str) -> None:
    mac = hmac.new(key, f"{seq}:{last}".encode(), hashlib.sha256).hexdigest()
    atomic_write(_head_path(path), json.dumps({"seq": seq, "hash": last, "mac": mac}))


def _last_entry(path: Path) -> tuple[dict[str, Any] | None, int]:
    """The last complete line, read from the end (the log can grow large), and the byte offset where
    the good part of the file ends (a torn last line starts there)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        block = b""
        pos = end
        while pos > 0 and block.count(b"\n") < 3:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step) + block
    good_end = end
    if block and not block.endswith(b"\n"):  # the last line was never finished
        good_end = end - (len(block) - (block.rfind(b"\n") + 1))
        block = block[: block.rfind(b"\n") + 1]
    lines = [line for line in block.splitlines() if line.strip()]
    if lines:
        try:
            return _parse(lines[-1]), good_end
        except ValueError:
            # A complete but unreadable last line (garbage written by a failing disk): torn too.
            return (_parse(lines[-2]) if len(lines) > 1 else None), good_end - len(lines[-1]) - 1
    return None, good_end


class ActivityLog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = log_path(settings)
        self.user = getpass.getuser()
        self.host = platform.node()  # from uname: no network lookup

    def record(self, action: str, **details: Any) -> None:
        """Append one entry; several processes (a watch and a CLI) may write at once."""
        from filelock import FileLock

        private_dir(self.path.parent)
        key = log_key(self.settings)
        with FileLock(str(self.path) + ".lock"):
            previous = None
            if self.path.exists() and self.path.stat().st_size:
                previous, good_end = _last_entry(self.path)
                if good_end < self.path.stat().st_size:
                    self._quarantine_tail(good_end, key, previous)
                    previous, _ = _last_entry(self.path)
            self._append(key, previous, action, details)

    def _append(self, key: bytes, previous: dict[str, Any] | None, action: str, details: dict[str, Any]) -> None:
        seq = int(previous["seq"]) + 1 if previous else 1
        entry: dict[str, Any] = {
            "v": 2,
            "seq": seq,
            "time": utc_now(),
            "user": self.user,
            "host": self.host,
            "action": action,
            "details": details,
            "prev": previous["hash"] if previous else GENESIS,
        }
        entry["hash"] = _digest(entry, key)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _write_head(self.path, key, seq, str(entry["hash"]))

    def _quarantine_tail(self, good_end: int, key: bytes, previous: dict[str, Any] | None) -> None:
        """A crash or a full disk tore the last line: keep its bytes aside, cut the log back to its
        last whole line and say so in the log itself, then carry on (never stop checking photos)."""
        with open(self.path, "r+b") as fh:
            fh.seek(good_end)
            torn = fh.read()
            aside = self.path.with_name(f"activity.torn-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}")
            atomic_write(aside, torn)
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning("the activity log's last line was incomplete; its %d bytes were moved to %s", len(torn), aside)
        self._append(key, previous, "log-repaired", {"torn_bytes": len(torn), "kept_in": aside.name})


@dataclass
class Verification:
    entries: int
    problem: str | None  # None when the chain is intact


def verify(settings: Settings) -> Verification:
    """Walk the whole chain; the first line that does not fit is reported with its number. The end
    of the chain must be the head recorded beside it (no line dropped from the end)."""
    path = log_path(settings)
    key = log_key(settings)
    head = _read_head(path, key)
    if not path.exists():
        if head is not None and head[0] > 0:
            return Verification(0, f"the log is missing, but {head[0]} entries were recorded (deleted?)")
        return Verification(0, None)
    previous_hash, expected_seq, count, keyed = GENESIS, 1, 0, False
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = _parse(line)
            except ValueError:
                return Verification(count, f"line {number} is not valid JSON (edited or damaged)")
            if keyed and entry.get("v") != 2:
                return Verification(count, f"line {number} has no MAC after keyed lines (inserted or forged)")
            keyed = keyed or entry.get("v") == 2
            if entry.get("hash") != _digest(entry, key):
                return Verification(count, f"line {number} was changed after it was written (its hash does not match)")
            if entry.get("prev") != previous_hash or entry.get("seq") != expected_seq:
                return Verification(count, f"line {number} does not follow the line before it (a line was removed or inserted)")
            previous_hash, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
    if head is not None:
        seq, last = head
        # The head is written just after its line: a crash between the two leaves it one behind.
        behind_by_one = seq == count - 1
        if seq == -1 or not ((seq == count and last == previous_hash) or behind_by_one):
            return Verification(
                count, f"the log ends at entry {count} but {seq} entries were recorded (lines removed from the end, or replaced)"
            )
    elif count:
        return Verification(count, f"the log's recorded head ({HEAD_FILE}) is missing: deleted, or the log was replaced")
    return Verification(count, None)


def photo_details(result: Any) -> dict[str, Any]:
    """What the log says about one checked photo: its content hash, verdict, blocked students and
    the scope it was checked against (when not the whole district)."""
    details = {"sha256": result.sha256, "verdict": result.verdict.value, "students": list(result.blocked_students)}
    if getattr(result, "scope", ""):
        details["scope"] = result.scope
    if getattr(result, "clip", None) is not None:
        details["kind"] = "clip"
    return details
