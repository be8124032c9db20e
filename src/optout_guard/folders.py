"""Finding the photos to check in the files and folders someone names (``check``, the desk).

Files named explicitly are always checked; folders are walked recursively in name order, hidden
entries left out, links to folders reported (never followed) and folders that cannot be read
reported — each becomes a *review* result, never a silent gap. (The audit lists a whole library
its own way: ``audit.listing``.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from optout_guard.media.photos import sniff
from optout_guard.types import ScanResult

# A file that is neither a photo nor a clip anything here can decode: listed, never silently passed
# over (a document may hold photos of students), and a run that has one says *review* (exit 3).
NOT_CHECKED = "not checked: neither a photo nor a video clip that can be decoded; a person must look at it"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class UnreadableFolder:
    path: str
    reason: str
    link: bool = False  # a linked folder, deliberately not followed


def collect_photos(paths: Iterable[Path | str], exclude: Iterable[Path] = ()) -> Iterator[Path | Skipped | UnreadableFolder]:
    """Files named explicitly are always checked; folders are walked recursively (sorted, hidden
    entries and ``exclude`` folders left out); files in them that are neither photos nor clips are
    yielded as :class:`Skipped` (not checked, said).
    A folder that cannot be listed is reported, never silently passed over."""
    excluded = {Path(p).resolve() for p in exclude}
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            # Missing or unreadable files still go to check(), which reports them as review.
            yield path
            continue
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(path, onerror=errors.append):
            while errors:
                failed = errors.pop()
                yield UnreadableFolder(str(failed.filename or dirpath), failed.strerror or str(failed))
            here = Path(dirpath)
            for d in sorted(dirnames):
                if (here / d).is_symlink() and not d.startswith("."):
                    yield UnreadableFolder(str(here / d), "symbolic link", link=True)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                file = here / name
                if sniff(file).checked:  # photos, clips, and files that cannot be read: check() reports those
                    yield file
                else:
                    yield Skipped(str(file), NOT_CHECKED)
        for failed in errors:
            yield UnreadableFolder(str(failed.filename or path), failed.strerror or str(failed))


def unreadable_folder(item: UnreadableFolder) -> ScanResult:
    why = f"folder could not be read ({item.reason}); the photos in it were not checked"
    if item.link:
        # Links are not followed inside a folder walk (they can lead outside it, or loop); never silently.
        why = (
            "a linked folder was not followed, so the photos in it were not checked: "
            f"check it directly (optout-guard check {item.path}/)"
        )
    return ScanResult.fail_closed(item.path, why)
