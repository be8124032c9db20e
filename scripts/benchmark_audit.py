"""Library audit benchmark on ≥ 10,000 real photos copied from ../shared/data into a temporary library.

Library: every LFW photo (12,203) in nested folders by year/letter/person, plus dlib's and the
ultralight group photos. Gallery: 20 LFW people enrolled from 2 photos each. Figures:
  1. first full audit with 2 workers (photos/s); 1 vs 2 workers on a 2,000-photo sub-library;
  2. second audit with nothing changed (seconds);
  3. 5 more students enrolled: re-check of the whole library (known faces re-embedded, no
     detection) vs a full re-audit from scratch, on the 2,000-photo sub-library (same verdicts?),
     and the re-check time on the full library;
  4. SIGKILL at 10 random moments during an audit of 500 photos, then a final run: verdicts equal
     to an uninterrupted audit?

    .venv/bin/python scripts/benchmark_audit.py [--work /tmp/optout-guard-audit-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from optout_guard.audit import run_audit, state_path
from optout_guard.config import load_settings
from optout_guard.enroll import enroll_folder
from optout_guard.face_models import get_face_models
from optout_guard.index import FaceIndex
from optout_guard.models import embedding_fingerprint

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = DATA / "lfw_deepfunneled_color250" / "lfw"
CLI = str(Path(sys.executable).with_name("optout-guard"))


def build_library(root: Path, limit: int | None = None) -> int:
    count = 0
    people = sorted(LFW.iterdir())
    for i, person in enumerate(people):
        folder = root / f"{2015 + i % 10}" / person.name[0] / person.name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in sorted(person.glob("*.jpg")):
            shutil.copy(photo, folder / photo.name)
            count += 1
            if limit and count >= limit:
                return count
    groups = root / "events"
    groups.mkdir(exist_ok=True)
    for photo in sorted((DATA / "dlib_examples" / "examples" / "faces").glob("20*.jpg")) + sorted(
        (DATA / "ultralight_crowd_imgs" / "imgs").glob("*.jpg")
    ):
        shutil.copy(photo, groups / photo.name)
        count += 1
    return count


def workspace(root: Path, people: list[str]) -> Path:
    for name in people:
        folder = root / "enrollments" / name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in sorted((LFW / name).glob("*.jpg"))[:2]:
            shutil.copy(photo, folder / photo.name)
    settings = load_settings(root, environ={})
    index = (
        FaceIndex.load(settings.index_file, embedding_fingerprint())
        if settings.index_file.exists()
        else FaceIndex(embedding_fingerprint())
    )
    enroll_folder(settings.enrollments, index, settings, get_face_models())
    index.save(settings.index_file)
    return root


def verdicts(settings, library: Path) -> dict[bytes, str]:
    with sqlite3.connect(state_path(settings, library.resolve())) as db:
        return {bytes(p): v for p, v in db.execute("SELECT path, verdict FROM files")}


FIGURES: dict = {"cores": os.cpu_count()}
OUT = Path(__file__).resolve().parents[1] / "bench-out" / "audit" / "audit.json"


def keep(key: str, value) -> None:
    """Figures as they come: written after every step (docs tables are rendered from this file)."""
    FIGURES[key] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(FIGURES, indent=1))


def timed(label: str, library: Path, ws: Path, workers: int):
    settings = load_settings(ws, environ={})
    started = time.perf_counter()
    summary = run_audit(library, settings, workers=workers)
    seconds = time.perf_counter() - started
    work = summary.checked + summary.rechecked
    print(
        f"{label}: {summary.seen} photos, {summary.checked} checked, {summary.rechecked} re-checked, "
        f"{summary.unchanged} unchanged in {seconds:.1f} s ({work / seconds if work else 0:.1f} photos/s); "
        f"library: {summary.totals}",
        flush=True,
    )
    keep(label, {"photos": summary.seen, "checked": summary.checked, "rechecked": summary.rechecked,
                 "unchanged": summary.unchanged, "seconds": round(seconds, 1), "totals": summary.totals})  # fmt: skip
    return seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/optout-guard-audit-bench"))
    parser.add_argument(
        "--cache-only", action="store_true", help="only the opt-in embedding cache figure (needs a previous run's library)"
    )
    args = parser.parse_args()
    rng = random.Random(3)
    multi = sorted(p.name for p in LFW.iterdir() if len(list(p.glob("*.jpg"))) >= 4)
    first_people = rng.sample(multi, 25)[:20]
    later_people = [p for p in rng.sample(multi, 40) if p not in first_people][:5]
    if args.cache_only:
        cache_figure(args.work / "library", args.work, first_people, later_people)
        return
    shutil.rmtree(args.work, ignore_errors=True)

    big = args.work / "library"
    n = build_library(big)
    print(f"library: {n} photos in {big}", flush=True)
    ws = workspace(args.work / "ws", first_people)
    full_2, _ = timed("first audit, 2 workers", big, ws, 2)
    timed("second audit, nothing changed", big, ws, 2)
    workspace(ws, later_people)
    recheck_big, _ = timed("after enrolling 5 students, 2 workers", big, ws, 2)
    print(
        f"   re-check after enrolling 5: {recheck_big:.1f} s vs first full audit {full_2:.1f} s → {full_2 / recheck_big:.1f}× faster",
        flush=True,
    )

    small = args.work / "library-2000"
    build_library(small, limit=2000)
    ws1 = workspace(args.work / "ws-small-1", first_people)
    one, _ = timed("2,000 photos, 1 worker", small, ws1, 1)
    ws2 = workspace(args.work / "ws-small-2", first_people)
    two, _ = timed("2,000 photos, 2 workers", small, ws2, 2)
    print(f"   2 workers vs 1: {one / two:.2f}×", flush=True)
    workspace(ws2, later_people)
    recheck, _ = timed("2,000 photos, re-check after enrolling 5", small, ws2, 2)
    fresh = workspace(args.work / "ws-small-3", first_people + later_people)
    full, _ = timed("2,000 photos, full audit with the new gallery", small, fresh, 2)
    same = verdicts(load_settings(ws2, environ={}), small) == verdicts(load_settings(fresh, environ={}), small)
    keep("recheck_identical_to_full_audit", same)
    print(
        f"   re-check {recheck:.1f} s vs full re-audit {full:.1f} s → {full / recheck:.1f}× faster; identical verdicts: {same}",
        flush=True,
    )

    kill_lib = args.work / "library-500"
    build_library(kill_lib, limit=500)
    clean = workspace(args.work / "ws-clean", first_people)
    timed("500 photos, uninterrupted", kill_lib, clean, 1)
    killed = workspace(args.work / "ws-killed", first_people)
    cmd = [CLI, "--workspace", str(killed), "audit", str(kill_lib), "--workers", "2"]
    for _ in range(10):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(1.0, 6.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    a = verdicts(load_settings(clean, environ={}), kill_lib)
    b = verdicts(load_settings(killed, environ={}), kill_lib)
    keep("killed_10_times_identical", a == b)
    print(
        f"killed 10 times at random moments, then finished: {len(b)} photos, verdicts identical to an uninterrupted run: {a == b}"
    )
    cache_figure(big, args.work, first_people, later_people)


def cache_figure(library: Path, work: Path, first_people: list[str], later_people: list[str]) -> None:
    """The opt-in embedding cache: re-check after enrolling 5 students, from cached embeddings."""
    ws = workspace(work / "ws-cache", first_people)
    started = time.perf_counter()
    run_audit(library, load_settings(ws, environ={}), workers=2, embedding_cache=True)
    first = time.perf_counter() - started
    workspace(ws, later_people)
    started = time.perf_counter()
    summary = run_audit(library, load_settings(ws, environ={}), workers=2, embedding_cache=True)
    recheck = time.perf_counter() - started
    keep("embedding_cache", {"first_audit_seconds": round(first, 1), "recheck_seconds": round(recheck, 1),
                             "rechecked": summary.rechecked})  # fmt: skip
    print(
        f"with --embedding-cache: first audit {first:.1f} s; after enrolling 5: {summary.rechecked} re-checked in "
        f"{recheck:.1f} s → {first / recheck:.0f}× faster than a full audit",
        flush=True,
    )


if __name__ == "__main__":
    main()
