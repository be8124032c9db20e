"""File safety, in one place: atomic private writes, file hashes with the stat of the bytes hashed,
private SQLite databases, UTC time stamps and exclusive OS locks.

Every state file optout-guard writes holds something sensitive (face templates, children's photos,
decisions about them), so files are *created* private (0600; never created with the default mode
and chmodded later) and replaced atomically (temp file in the same folder, fsync, rename, fsync of
the folder), and a temp file is removed whatever goes wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from optout_guard.errors import Busy

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def utc_now() -> str:
    """Now, as ISO-8601 UTC to the second (the one time stamp format of state files and logs)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; the folder itself is made 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(OSError):  # a folder we do not own (a share) keeps its mode
        os.chmod(path, PRIVATE_DIR)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = PRIVATE_FILE, prefix: str = ".tmp-") -> Path:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old file or the new one,
    never half of one. The temp file is created with ``mode`` from the start and removed on failure."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode != PRIVATE_FILE:
                os.fchmod(fh.fileno(), mode) if hasattr(os, "fchmod") else os.chmod(tmp, mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temps(folder: Path, prefix: str) -> int:
    """Delete temp files an interrupted :func:`atomic_write` left behind (they may hold data that
    was deleted since, such as a removed student's templates). Returns how many were removed."""
    removed = 0
    with contextlib.suppress(OSError):
        for leftover in Path(folder).glob(f"{prefix}*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
    return removed


@dataclass(frozen=True)
class FileIdentity:
    """What a file was when its bytes were read: compare with a later stat to know it is the same."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_with_identity(path: Path | str, limit: int | None = None) -> tuple[bytes, FileIdentity]:
    """The file's bytes and the identity of exactly those bytes (stat of the open file before and
    after reading; if it changed meanwhile, it is read again, up to three times, then refused)."""
    for _ in range(3):
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            if limit is not None and before.st_size > limit:
                raise ValueError(f"file larger than {limit} bytes")
            data = fh.read()
            after = os.fstat(fh.fileno())
        if FileIdentity.of(before) == FileIdentity.of(after) and len(data) == after.st_size:
            return data, FileIdentity.of(after)
    raise FileChangedError(f"{path} kept changing while it was read")


class FileChangedError(OSError):
    """A file changed while it was being read (still being written, or replaced)."""


def sha256_file(path: Path | str) -> str:
    return sha256_with_identity(path)[0]


def sha256_with_identity(path: Path | str) -> tuple[str, FileIdentity]:
    """The file's sha256 and the identity of the bytes hashed (see :func:`read_with_identity`)."""
    for _ in range(3):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            after = os.fstat(fh.fileno())
        if FileIdentity.of(before) == FileIdentity.of(after):
            return digest.hexdigest(), FileIdentity.of(after)
    raise FileChangedError(f"{path} kept changing while it was read")


def open_private_db(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A SQLite database in autocommit mode (explicit BEGIN/COMMIT), WAL, created 0600 from the start
    (its -wal and -shm files take the database file's mode)."""
    path = Path(path)
    private_dir(path.parent)
    if not path.exists():
        # Create the empty file with the private mode ourselves: sqlite would create it 0644.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        os.close(fd)
    db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=check_same_thread)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut loses at most the last commit
    return db


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold an OS lock (released by the OS if the process dies) for a read-modify-write of ``what``.
    Waits up to ``timeout`` seconds, then raises :class:`Busy` saying who to wait for."""
    from filelock import FileLock, Timeout

    private_dir(Path(lock_file).parent)
    lock = FileLock(str(lock_file), mode=PRIVATE_FILE)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise Busy(
            f"{what} is being changed by another optout-guard process (lock {lock_file}); try again when it is done"
        ) from None
    try:
        yield
    finally:
        lock.release()


def hide(path: Path | str) -> bool:
    """Mark bookkeeping files hidden where a leading dot does not (Windows, and so SMB shares seen from
    Windows): staff browsing the check folder see only what is theirs. True when it was marked."""
    if os.name != "nt":
        return False  # the leading dot already hides it
    import ctypes

    hidden = 0x2  # FILE_ATTRIBUTE_HIDDEN
    try:
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        current = kernel32.GetFileAttributesW(str(path))
        return current != -1 and bool(kernel32.SetFileAttributesW(str(path), current | hidden))
    except (AttributeError, OSError):
        return False
