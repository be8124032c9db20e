#!/usr/bin/env python3
"""How many review-desk cards the crowd photos in ../shared/data make: one per face under review
(before photo cards) against one per resemblance plus one photo card per photo (now). Two students
enrolled from LFW (Hugo Chávez, Colin Powell), default settings.

    .venv/bin/python scripts/measure_review_cards.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import LFW, make_workspace  # noqa: E402
from optout_guard.pipeline import Guard  # noqa: E402
from optout_guard.types import Decision  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def main() -> int:
    students = {
        "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)],
        "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)],
    }
    guard = Guard(make_workspace(Path(tempfile.mkdtemp()), students))
    photos = sorted((DATA / "ultralight_crowd_imgs" / "imgs").glob("*.jpg"))
    before = after = at_review = 0
    biggest = (0, 0)
    for photo in photos:
        result = guard.check(photo)
        if result.verdict.value != "review":
            continue
        at_review += 1
        review = [m for m in result.faces if m.decision is Decision.REVIEW]
        resemblance = [m for m in review if m.candidates]
        unjudged = [m for m in review if not m.candidates]
        cards_then, cards_now = len(review), len(resemblance) + (1 if unjudged or result.notes else 0)
        before, after = before + cards_then, after + cards_now
        biggest = max(biggest, (cards_then, cards_now))
    print(f"{len(photos)} crowd photos, {at_review} at review: {before} cards one per face, {after} with photo cards; "
          f"the biggest photo {biggest[0]} → {biggest[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
