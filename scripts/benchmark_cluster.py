"""The audit on one machine's process pool vs a local Dask cluster vs a real scheduler + workers.

Same library of real LFW photos each time (a fresh audit state per run), 2 processes each way:
photos/s, seconds from start to the first result, and the peak memory of a worker process. Also
how many results per second the coordinator's SQLite commits can take (the ceiling of a big
cluster), and hours for a first audit of 10 million photos at the measured per-core rate.

    .venv/bin/python scripts/benchmark_cluster.py [--photos 2000] [--out bench-out/cluster]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import LFW, make_workspace  # noqa: E402
from optout_guard.audit import run_audit  # noqa: E402
from optout_guard.index import new_key  # noqa: E402


def peak_rss_mb(pids: list[int]) -> float:
    best = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return round(best, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "cluster")
    args = parser.parse_args()
    os.environ["OPTOUT_GUARD_INDEX_KEY"] = new_key()
    results: dict = {"photos": args.photos, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        people = sorted(p for p in LFW.iterdir() if p.is_dir())
        enrolled = [p for p in people if len(list(p.glob("*.jpg"))) >= 4][:100]
        settings = make_workspace(tmp / "ws", {p.name: sorted(p.glob("*.jpg"))[:2] for p in enrolled}, dict(os.environ))
        library = tmp / "library"
        library.mkdir()
        photos = sorted(LFW.glob("*/*.jpg"))[: args.photos]
        for n, p in enumerate(photos):
            shutil.copy(p, library / f"{n:05d}_{p.name}")

        def fresh() -> None:
            shutil.rmtree(settings.index_file.parent / "audit", ignore_errors=True)
            for f in settings.index_file.parent.glob("audit-*"):
                f.unlink()

        def timed(label: str, **kw) -> None:
            fresh()
            first: list[float] = []
            started = time.perf_counter()

            def progress(done: int, total: int) -> None:
                if not first:
                    first.append(time.perf_counter() - started)

            summary = run_audit(library, settings, progress=progress, **kw)
            seconds = time.perf_counter() - started
            results[label] = {
                "seconds": round(seconds, 1),
                "photos_per_second": round(summary.checked / seconds, 1),
                "seconds_to_first_result": round(first[0], 1) if first else None,
                "totals": summary.totals,
            }
            print(f"{label:<38} {summary.checked} photos in {seconds:6.1f} s = {summary.checked / seconds:5.1f} photos/s "
                  f"(first result after {results[label]['seconds_to_first_result']} s)", flush=True)  # fmt: skip

        timed("local pool, --workers 2", workers=2)
        timed("local pool, --workers 1", workers=1)
        timed("Dask LocalCluster, local:2", cluster="local:2")
        timed("Dask LocalCluster, local:1", cluster="local:1")
        # A real scheduler and two worker processes on 127.0.0.1, as an IT person would start them.
        exe = [sys.executable, "-c", "from optout_guard.cli import run; run()"]
        log = open(tmp / "scheduler.log", "w+")
        scheduler = subprocess.Popen([*exe, "scheduler", "--port", "0"], stderr=log)
        workers = []
        try:
            address = None
            deadline = time.monotonic() + 60
            while address is None and time.monotonic() < deadline:
                time.sleep(0.3)
                text = (tmp / "scheduler.log").read_text()
                address = next((ln.split("at:")[-1].strip() for ln in text.splitlines() if "Scheduler at:" in ln), None)
            assert address, "the scheduler did not start"
            workers = [subprocess.Popen([*exe, "worker", "--scheduler", address], stderr=subprocess.DEVNULL) for _ in range(2)]
            time.sleep(5)
            timed("real scheduler + 2 workers (127.0.0.1)", cluster=address)
            results["real_worker_peak_rss_mb"] = max(
                peak_rss_mb([int(c.name) for c in Path("/proc").glob("[0-9]*") if _parent(int(c.name)) == w.pid] + [w.pid])
                for w in workers
            )
        finally:
            for proc in (*workers, scheduler):
                proc.terminate()
                proc.wait(20)
        # The coordinator's ceiling: results committed per second (SQLite, one writer).
        import sqlite3

        db = sqlite3.connect(tmp / "commit.sqlite")
        db.execute("CREATE TABLE files (path BLOB PRIMARY KEY, verdict TEXT, reasons TEXT, faces TEXT)")
        rows = [(f"/lib/{i:08d}.jpg".encode(), "allow", "[]", '[{"box":[1,2,3,4]}]') for i in range(200_000)]
        started = time.perf_counter()
        for i in range(0, len(rows), 2000):
            with db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?)", rows[i : i + 2000])
        results["coordinator_commits_per_second"] = round(len(rows) / (time.perf_counter() - started))
        print(f"coordinator SQLite: {results['coordinator_commits_per_second']} results/s committed")
    per_core = results["Dask LocalCluster, local:1"]["photos_per_second"]
    results["hours_for_10M_photos"] = {
        str(cores): round(10_000_000 / (per_core * cores) / 3600, 1) for cores in (8, 32, 128)
    }
    print(f"first audit of 10 million photos at {per_core} photos/s per core: {results['hours_for_10M_photos']} hours")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(results, indent=1))
    print(f"figures in {args.out / 'cluster.json'}")


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


if __name__ == "__main__":
    main()
