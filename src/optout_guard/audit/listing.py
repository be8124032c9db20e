"""Listing the library: every photo and clip under its top folder, fast on a network share.

A share answers every directory read after a network round trip, so one thread listing 10⁷ files
spends most of its time waiting. The top-level folders (a school, a year…) are listed in parallel
threads, and each file's size and time come from the directory read itself (``os.scandir``: free on
Windows, one ``lstat`` on Linux) — ``scripts/benchmark_coordinator.py`` measures both.

Hidden and system folders are skipped; symbolic links are never followed (nothing outside the
library is read, no loop) but reported; a folder that cannot be read is reported too, so that the
audit keeps what it knew about the photos in it instead of taking them for deleted.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from optout_guard.types import MediaKind

# Folders that hold no photos of people but system clutter (Windows, macOS, Synology, Samba).
SYSTEM_DIRS = {"$RECYCLE.BIN", "System Volume Information", "@eaDir", "#recycle", "lost+found", "#snapshot", ".Trash"}
LISTING_THREADS = 4  # top-level folders listed at once (measured: scripts/benchmark_coordinator.py)
_CHUNK = 2000  # files handed from a listing thread to the audit at a time


@dataclass(frozen=True)
class Listed:
    """One file found: its path (bytes, as the file system has it), size, time and what it is."""

    path: bytes
    size: int
    mtime_ns: int
    kind: MediaKind  # media.photos.sniff


@dataclass
class Passed:
    """What the listing did not descend into: never silent (the report lists both)."""

    links: list[str] = field(default_factory=list)
    unreadable_folders: list[bytes] = field(default_factory=list)


def display_path(raw: bytes | str) -> str:
    """A path as text for people and reports: bytes that are not UTF-8 shown as \\xNN."""
    raw = raw if isinstance(raw, bytes) else os.fsencode(raw)
    return raw.decode("utf-8", "backslashreplace")


@functools.cache
def _image_suffixes() -> frozenset[bytes]:
    from optout_guard.media.photos import IMAGE_EXTENSIONS  # here: the decoder's libraries load only when listing

    return frozenset(e.encode() for e in IMAGE_EXTENSIONS)


def _skipped_folder(name: bytes) -> bool:
    return name.startswith(b".") or os.fsdecode(name) in SYSTEM_DIRS


def _read_folder(folder: bytes, passed: Passed) -> tuple[list[bytes], list[Listed]]:
    """One directory read: its sub-folders to descend into, and its files (bytes throughout: no
    name is re-encoded; only a file without an image extension is opened to see what it is)."""
    from optout_guard.media.photos import sniff

    try:
        with os.scandir(folder) as entries:
            found = sorted(entries, key=lambda e: e.name)
    except OSError:
        passed.unreadable_folders.append(folder)
        return [], []
    folders: list[bytes] = []
    files: list[Listed] = []
    for entry in found:
        name = entry.name
        try:
            if entry.is_symlink():
                passed.links.append(display_path(entry.path))
                continue
            if entry.is_dir(follow_symlinks=False):
                if not _skipped_folder(name):
                    folders.append(entry.path)
                continue
            if name.startswith(b".") or not entry.is_file(follow_symlinks=False):
                continue  # hidden files; devices, sockets, pipes
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone between the directory read and the stat: it is not in the library now
        dot = name.rfind(b".")
        kind = MediaKind.PHOTO if dot > 0 and name[dot:].lower() in _image_suffixes() else sniff(os.fsdecode(entry.path))
        files.append(Listed(entry.path, st.st_size, st.st_mtime_ns, kind))
    return folders, files


def _walk(top: bytes, passed: Passed) -> Iterator[Listed]:
    stack = [top]
    while stack:
        folders, files = _read_folder(stack.pop(), passed)
        yield from files
        stack.extend(reversed(folders))  # depth first, in name order


def list_library(library: Path, passed: Passed | None = None, threads: int = LISTING_THREADS) -> Iterator[Listed]:
    """Every regular file under ``library`` (see the module's docstring), in no fixed order. What
    was passed over is added to ``passed``."""
    passed = passed if passed is not None else Passed()
    root = os.fsencode(str(library))
    top_folders, top_files = _read_folder(root, passed)
    yield from top_files
    if threads <= 1 or len(top_folders) <= 1:
        for folder in top_folders:
            yield from _walk(folder, passed)
        return
    # Each thread lists whole top-level folders and hands files over in chunks; a bounded queue
    # keeps memory flat when the audit's database falls behind the listing.
    chunks: queue.Queue[list[Listed] | None] = queue.Queue(maxsize=4 * threads)
    stop = threading.Event()

    def hand_over(item: list[Listed] | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def list_folder(folder: bytes) -> None:
        chunk: list[Listed] = []
        try:
            for listed in _walk(folder, passed):
                chunk.append(listed)
                if len(chunk) >= _CHUNK:
                    if not hand_over(chunk):
                        return
                    chunk = []
            hand_over(chunk)
        finally:
            hand_over(None)  # this folder is finished (or failed: its files so far were handed over)

    with ThreadPoolExecutor(min(threads, len(top_folders)), thread_name_prefix="listing") as pool:
        try:
            futures = [pool.submit(list_folder, folder) for folder in top_folders]
            finished = 0
            while finished < len(top_folders):
                chunk = chunks.get()
                if chunk is None:
                    finished += 1
                    continue
                yield from chunk
            for future in futures:
                future.result()  # a listing thread's own error (not an OSError of a folder) surfaces here
        finally:
            stop.set()  # the audit stopped early: the threads give up instead of waiting on a full queue
