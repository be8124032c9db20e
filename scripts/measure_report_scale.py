"""The audit report's size at a district's scale, on made-up rows (no photos, no models): 20,000
blocked and 130,000 to review in 4,000 folders and 5 causes (a million-photo library's share, as
issue 27 §11 puts it). Prints the time, the thumbnails drawn, the first page's size and card count,
and the number and largest size of the other pages.

    .venv/bin/python scripts/measure_report_scale.py OUT_DIR
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from optout_guard.report import write_audit_report

LIBRARY = "/srv/lib"
CAUSES = [
    "3 faces too small to check",
    "resembles student S1 (distance 0.45); a person should look",
    "face too blurred to check",
    "face cut by the edge of the photo",
    "face turned to the side",
]


def row(path: str, verdict: str, reason: str) -> dict:
    return {"path": f"{LIBRARY}/{path}", "fs_path": f"{LIBRARY}/{path}", "verdict": verdict, "reasons": [reason],
            "faces": [], "checked_at": "2026-12-03T01:00:00+00:00", "changed_run": 1, "sha256": "ab" * 32, "scope": "",
            "kind": "photo"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder for the report (about 130 MB)")
    args = parser.parse_args()
    rng = random.Random(1)
    rows = [row(f"s{i % 20}/f{i % 4000}/b{i}.jpg", "block", "matches student S1") for i in range(20_000)]
    rows += [row(f"s{i % 20}/f{i % 4000}/r{i}.jpg", "review", rng.choice(CAUSES)) for i in range(130_000)]
    drawn: list[str] = []

    def thumbnail(r: dict, out: Path) -> bool:
        drawn.append(r["path"])
        out.write_bytes(b"\xff\xd8")
        return True

    out = args.out
    started = time.perf_counter()
    write_audit_report(out, LIBRARY, {"run_id": 1, "totals": {"block": 20_000, "review": 130_000}}, rows,
                       {"changed": [], "changed_count": 0, "deleted": []}, thumbnail)  # fmt: skip
    pages = list((out / "pages").glob("*.html")) if (out / "pages").exists() else []
    index = out / "index.html"
    biggest = max([index, *pages], key=lambda p: p.stat().st_size)
    print(f"{time.perf_counter() - started:.0f} s; thumbnails drawn {len(drawn)}; index.html {index.stat().st_size / 1e6:.2f} MB "
          f"with {index.read_text(encoding='utf-8').count('<article')} cards; {len(pages)} other pages, the largest "
          f"{biggest.stat().st_size / 1e3:.0f} kB")  # fmt: skip


if __name__ == "__main__":
    main()
