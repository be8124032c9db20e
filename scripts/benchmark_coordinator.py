"""What the audit's coordinator can do on its own, with no photo checked: list a library, plan a
run against the stored state, and commit results. These are the limits a big cluster meets.

1. Listing: a made-up library of small files (folders of a district: school / year / event), listed
   by ``list_library`` with 1, 2, 4 and 8 threads, and by the walk the audit had before (one
   ``os.walk`` plus an ``lstat`` per file), page cache warm. On a network share every directory
   read waits for a round trip; ``--latency-ms`` adds that wait to each directory read to show what
   threads do there (a simulation: measure on the real share with ``--library``).
2. Planning: ``plan_run`` for a first audit (empty state) and for a nightly run (everything
   unchanged) of ``--rows`` made-up files, with the coordinator's peak memory for each size.
3. Committing: results recorded the way the run records them (read the old verdict, UPSERT the row
   with ~1 KB of faces JSON, commit every 2 s): results per second.

    .venv/bin/python scripts/benchmark_coordinator.py [--files 100000] [--rows 1000000 --rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from optout_guard.audit import listing as listing_module  # noqa: E402
from optout_guard.audit.listing import Passed, list_library  # noqa: E402
from optout_guard.audit.state import UPSERT, connect  # noqa: E402

FACES = json.dumps([{"box": [120, 80, 64, 64], "landmarks": [[130.5, 100.5]] * 5, "page": 0, "score": 0.91,
                     "upright": True, "decision": "clear", "student_id": None, "distance": 0.7123,
                     "reason": "", "code": "clear", "judged": True}] * 3)  # fmt: skip


def make_library(root: Path, files: int) -> None:
    schools, years, per_folder = 20, 5, 50
    events = max(1, files // (schools * years * per_folder))
    n = 0
    for s in range(schools):
        for y in range(years):
            for e in range(events):
                folder = root / f"School {s:02d}" / f"{2020 + y}" / f"event {e:03d}"
                folder.mkdir(parents=True)
                for i in range(per_folder):
                    (folder / f"IMG_{i:04d}.jpg").write_bytes(b"\xff\xd8\xff")
                    n += 1


def old_walk(library: Path) -> int:
    """The audit's listing before the package: one os.walk, an islink per folder, an lstat per file."""
    import stat

    count = 0
    for dirpath, dirnames, filenames in os.walk(os.fsencode(str(library))):
        [os.path.islink(os.path.join(dirpath, d)) for d in dirnames]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(b"."))
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            count += stat.S_ISREG(st.st_mode)
    return count


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def listing(library: Path, latency_ms: float, results: dict) -> None:
    real_scandir = os.scandir

    def slow_scandir(path):  # a share: each directory read waits a round trip (the GIL is released)
        time.sleep(latency_ms / 1000)
        return real_scandir(path)

    if latency_ms:
        listing_module.os.scandir = slow_scandir  # type: ignore[attr-defined]
    rows = {}
    if not latency_ms:
        seconds, count = timed(lambda: old_walk(library))
        rows["before (os.walk + lstat, 1 thread)"] = (count, seconds)
    for threads in (1, 2, 4, 8):
        seconds, count = timed(lambda t=threads: sum(1 for _ in list_library(library, Passed(), t)))
        rows[f"list_library, {threads} thread{'s' if threads > 1 else ''}"] = (count, seconds)
    listing_module.os.scandir = real_scandir  # type: ignore[attr-defined]
    key = f"listing (+{latency_ms:g} ms per folder)" if latency_ms else "listing (local disk, warm)"
    results[key] = {name: {"files": c, "seconds": round(s, 2), "files_per_second": round(c / s)} for name, (c, s) in rows.items()}
    print(f"\n{key}")
    for name, (c, s) in rows.items():
        print(f"  {name:40s} {c:>9,} files {s:7.2f} s {c / s:>10,.0f} files/s")


def planning(rows: int, results: dict) -> None:
    """In a child process each, so that peak memory is that of the plan alone."""
    code = f"""
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {str(ROOT / "src")!r})
from optout_guard.audit.listing import Listed
from optout_guard.audit.plan import plan_run
from optout_guard.audit.state import connect
def listed():
    for i in range({rows}):
        yield Listed(f"/srv/library/School {{i % 20:02d}}/{{2020 + i % 5}}/event {{i // 5000:04d}}/IMG_{{i:08d}}.jpg".encode(), 2_500_000 + i, 1_700_000_000_000_000_000, "photo")
with tempfile.TemporaryDirectory() as tmp:
    db = connect(Path(tmp) / "state.sqlite")
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter(); plan = plan_run(db, 1, listed(), lambda _n: "g", set()); first = time.perf_counter() - t
    # Pretend every photo was checked (rows as a run leaves them), then plan the next night.
    db.execute("BEGIN")
    db.execute("INSERT INTO files (path, size, mtime_ns, sha256, verdict, reasons, faces, gallery, last_run, retry, kind) "
               "SELECT path, size, mtime_ns, lower(hex(randomblob(32))), 'allow', '[]', '[]', gallery, 1, 0, 'photo' FROM walk")
    db.execute("COMMIT")
    t = time.perf_counter(); again = plan_run(db, 2, listed(), lambda _n: "g", set()); nightly = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"first_audit_plan_s": round(first, 1), "nightly_plan_s": round(nightly, 1),
                      "todo_first": plan.todo, "unchanged_nightly": again.unchanged,
                      "peak_rss_mb": round(peak / 1024), "rss_before_mb": round(start / 1024)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    results.setdefault("planning", {})[str(rows)] = figures
    print(f"\nplanning {rows:,} files: first audit {figures['first_audit_plan_s']} s, nightly (all unchanged) "
          f"{figures['nightly_plan_s']} s; peak memory {figures['peak_rss_mb']} MB "
          f"(after imports {figures['rss_before_mb']} MB)")  # fmt: skip


def committing(results: dict, count: int = 50_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = connect(Path(tmp) / "state.sqlite")  # the audit's schema
        started = time.perf_counter()
        last = started
        db.execute("BEGIN")
        for i in range(count):
            key = f"/srv/library/School {i % 20:02d}/IMG_{i:08d}.jpg".encode()
            db.execute("SELECT verdict FROM files WHERE path=?", (key,)).fetchone()
            db.execute(UPSERT, (key, 2_500_000, 1, f"{i:064x}", "allow", "[]", FACES, "g", "2026-11-29T00:00:00Z",
                                1, 1, None, 0, "photo"))  # fmt: skip
            if time.perf_counter() - last >= 2.0:
                db.execute("COMMIT")
                db.execute("BEGIN")
                last = time.perf_counter()
        db.execute("COMMIT")
        rate = count / (time.perf_counter() - started)
        db.close()
    results["coordinator_results_per_second"] = round(rate)
    print(f"\ncommitting results the way the run does (faces JSON {len(FACES)} bytes each): {rate:,.0f} results/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the made-up library to list")
    parser.add_argument("--library", type=Path, help="list this real library instead (a share, say)")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="simulated round trip per folder read")
    parser.add_argument("--rows", type=int, action="append", help="library sizes to plan (default 100k and 1M)")
    parser.add_argument("--per-core", type=float, default=21.3, help="photos/s per worker core (benchmark_cluster)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "coordinator")
    args = parser.parse_args()
    results: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        library = args.library
        if library is None:
            library = Path(tmp) / "library"
            started = time.perf_counter()
            make_library(library, args.files)
            print(f"made {args.files:,} files in {time.perf_counter() - started:.0f} s")
        listing(library, 0, results)
        if args.latency_ms and args.library is None:
            listing(library, args.latency_ms, results)
    for rows in args.rows or [100_000, 1_000_000]:
        planning(rows, results)
    committing(results)
    # On paper: a first audit of 10 million photos. Workers check at the measured per-core rate; the
    # coordinator lists first (at the threaded local rate here; a share is slower), then commits.
    local = results["listing (local disk, warm)"]["list_library, 8 threads"]["files_per_second"]
    commit = results["coordinator_results_per_second"]
    table = {}
    for cores in (8, 32, 128, 512):
        check_h = 10_000_000 / (cores * args.per_core) / 3600
        table[cores] = {"checking_hours": round(check_h, 2), "limited_by": "worker cores" if cores * args.per_core < commit else "coordinator commits"}
    results["first_audit_of_10M"] = {"listing_hours_local": round(10_000_000 / local / 3600, 2),
                                     "commit_ceiling_photos_per_second": commit, "by_worker_cores": table}  # fmt: skip
    print(f"\n10 million photos: listing {10_000_000 / local / 3600:.2f} h at the local rate (before the first check); "
          f"the coordinator commits up to {commit:,} results/s")  # fmt: skip
    for cores, row in table.items():
        print(f"  {cores:4d} worker cores at {args.per_core} photos/s each: {row['checking_hours']:6.2f} h ({row['limited_by']})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coordinator.json").write_text(json.dumps(results, indent=2))
    print(f"\nfigures written to {args.out / 'coordinator.json'}")
    print(f"peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
