"""The copies fit to post that optout-guard wrote, so that checking one again says what it is.

A copy fit to post has every face that is not clearly fine blurred; checked again, those blurred
faces are "too blurred to check" and the copy came back *review* — so staff who re-dropped the copy
they were told to post were told to wait for a reviewer (issue 28). Each copy written is recorded
here by its content hash, with where its blurred faces are (boxes, and for a clip the times); a
face found in that copy *inside a recorded blurred region* is optout-guard's own blur and is fine.
Every other face of the copy is judged as in any photo: a student enrolled since the copy was made
is still caught. A copy changed in any way (re-saved, cropped) is another file: judged as usual.

Kept in ``.optout-guard/postable-copies.jsonl`` (0600): hashes, boxes, times, the original's file
name and date; no pixels, no embeddings.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optout_guard.config import Settings
from optout_guard.fsutil import PRIVATE_FILE, private_dir, sha256_file, utc_now
from optout_guard.types import Box, Decision, FaceMatch, ReasonCode

REGISTRY = "postable-copies.jsonl"


@dataclass(frozen=True)
class Blurred:
    box: Box  # original pixels of the copy
    first: float | None = None  # a clip's: seconds the region is blurred from … to
    last: float | None = None


@dataclass(frozen=True)
class OwnCopy:
    made_at: str
    original: str  # the original's file name
    regions: tuple[Blurred, ...]

    def describe(self) -> str:
        return f"this is the copy fit to post that optout-guard made on {self.made_at[:10]} from {self.original}"

    def covers(self, box: Box, first: float | None = None, last: float | None = None) -> bool:
        """Whether a face found at ``box`` (for a clip: seen from ``first`` to ``last``) lies in a
        region this copy blurred."""
        for region in self.regions:
            if region.first is not None and first is not None and last is not None:
                if last < region.first or first > region.last:  # type: ignore[operator]
                    continue
            cx, cy = box.x + box.w / 2, box.y + box.h / 2
            inside = region.box.x <= cx <= region.box.right and region.box.y <= cy <= region.box.bottom
            if inside or region.box.iou(box) >= 0.2:
                return True
        return False


def _path(settings: Settings) -> Path:
    return settings.state_dir / REGISTRY


def record(settings: Settings, copy: Path | str, original: Path | str, regions: list[Blurred]) -> None:
    """Remember a copy fit to post just written (one line, appended; several processes may write)."""
    entry: dict[str, Any] = {
        "sha256": sha256_file(copy),
        "made_at": utc_now(),
        "original": Path(original).name,
        "regions": [
            {"box": [r.box.x, r.box.y, r.box.w, r.box.h], **({"first": r.first, "last": r.last} if r.first is not None else {})}
            for r in regions
        ],
    }
    private_dir(settings.state_dir)
    fd = os.open(_path(settings), os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


_cache: dict[Path, tuple[tuple[int, int], dict[str, OwnCopy]]] = {}


def lookup(settings: Settings, sha256: str | None) -> OwnCopy | None:
    """The copy fit to post with these bytes, if optout-guard wrote it (the registry is read again
    only when it changed: a watch checks many photos)."""
    if sha256 is None:
        return None
    path = _path(settings)
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _cache.get(path)
    if cached is None or cached[0] != stamp:
        copies: dict[str, OwnCopy] = {}
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    regions = tuple(Blurred(Box(*r["box"]), r.get("first"), r.get("last")) for r in entry["regions"])
                    copies[str(entry["sha256"])] = OwnCopy(str(entry["made_at"]), str(entry["original"]), regions)
        cached = _cache[path] = (stamp, copies)
    return cached[1].get(sha256)


def clear_own_blur(
    copy: OwnCopy, matches: list[FaceMatch], spans: list[tuple[float, float]] | None = None
) -> list[FaceMatch]:
    """Faces held only because optout-guard itself blurred them are fine; every other face stays as
    judged. ``spans``: for a clip, each match's (first, last) seconds on screen."""
    said = f"blurred by optout-guard in the copy fit to post made on {copy.made_at[:10]} from {copy.original}"
    out = []
    for i, m in enumerate(matches):
        first, last = spans[i] if spans is not None else (None, None)
        if m.decision is Decision.REVIEW and copy.covers(m.face.box, first, last):
            m = replace(m, decision=Decision.CLEAR, candidates=(), reason=said, code=ReasonCode.OWN_BLUR)
        out.append(m)
    return out
