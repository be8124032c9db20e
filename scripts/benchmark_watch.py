"""Check-folder latency: seconds from a photo landing in the folder to its verdict note appearing.

A watcher (native file events, the shipped settle time unless --settle) runs in this process on a
temporary folder; real LFW photos are dropped one at a time (waiting for each verdict), then as a
burst all at once. Prints median and 95th percentile.

    .venv/bin/python scripts/benchmark_watch.py --workspace WS [--settle 2.0] [--singles 20] [--burst 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from optout_guard.config import load_settings
from optout_guard.pipeline import Guard
from optout_guard.watch import CheckFolder

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw_deepfunneled_color250" / "lfw"


def note_for(inbox: Path, name: str) -> Path | None:
    for verdict in ("allowed", "blocked", "review"):
        note = inbox / verdict / f"{name}.txt"
        if note.exists():
            return note
    return None


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    photos = [p for person in sorted(LFW.iterdir())[:400] for p in sorted(person.glob("*.jpg"))[:1]]
    guard = Guard(load_settings(args.workspace))
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        checker = CheckFolder(inbox, guard, settle=args.settle)
        stop = threading.Event()
        thread = threading.Thread(target=checker.run_forever, kwargs={"stop": stop}, daemon=True)
        thread.start()
        time.sleep(1.0)
        guard.check(photos[0])  # models loaded before timing, as in a running service

        singles = []
        for src in photos[1 : 1 + args.singles]:
            landed = time.monotonic()
            shutil.copy(src, inbox / src.name)
            while note_for(inbox, src.name) is None:
                time.sleep(0.01)
            singles.append(time.monotonic() - landed)

        burst = photos[1 + args.singles : 1 + args.singles + args.burst]
        landed = {}
        for src in burst:
            shutil.copy(src, inbox / src.name)
            landed[src.name] = time.monotonic()
        waits = {}
        while len(waits) < len(burst):
            for name, t0 in landed.items():
                if name not in waits and note_for(inbox, name) is not None:
                    waits[name] = time.monotonic() - t0
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=10)
    b = list(waits.values())
    print(
        f"settle {args.settle:.1f} s; single photos ({len(singles)}): median {statistics.median(singles):.2f} s, "
        f"95th percentile {p95(singles):.2f} s"
    )
    print(
        f"burst of {len(b)} dropped at once: median {statistics.median(b):.2f} s, 95th percentile {p95(b):.2f} s, "
        f"last {max(b):.2f} s"
    )


if __name__ == "__main__":
    main()
