#!/usr/bin/env python3
"""Fault drills: what a crash, a race or a torn write does to the index, the list, the check folder,
the audit and the activity log. Prints one row per drill (how many runs, how many held) and exits 1
if any run did not hold. Run by the test suite (tests/test_drill.py) and by hand:

    .venv/bin/python scripts/drill.py [--workspace-root DIR]

Every drill uses photos that installed packages ship (matplotlib's Grace Hopper, scikit-image's
astronaut), so it runs on any machine the product is installed on.

- kill at every rename: ``sync``, ``enroll`` and ``remove --delete-photos`` are run once to count the
  renames they make, then once per rename with the process "killed" (an exception no handler takes)
  at exactly that rename; after each kill the routine next step (``enroll``, then the same command
  again) must leave every student that the saved list names protected, and nobody else.
- file replaced mid-check: the check folder and the audit, with the photo swapped for a student's
  photo while it is being checked.
- concurrent enrolls: two processes enroll different students into one index at once.
- torn log line: a half-written last line of the activity log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from optout_guard.activity_log import ActivityLog, log_path, verify
from optout_guard.audit import run_audit
from optout_guard.cli import app
from optout_guard.config import Settings, load_settings
from optout_guard.demo import sample_images
from optout_guard.index import open_index
from optout_guard.optout_list import load_list
from optout_guard.pipeline import Guard
from optout_guard.watch import CheckFolder

runner = CliRunner()


class Killed(BaseException):
    """Stands for SIGKILL: no except clause of the product takes a BaseException that is not its own."""


@dataclass
class Drill:
    name: str
    runs: int = 0
    held: int = 0
    failures: list[str] | None = None

    def record(self, ok: bool, what: str) -> None:
        self.runs += 1
        self.held += ok
        if not ok:
            self.failures = [*(self.failures or []), what]


@contextlib.contextmanager
def kill_at_rename(n: int | None) -> Iterator[list[int]]:
    """Count ``os.replace`` calls; raise :class:`Killed` instead of the ``n``-th (1-based)."""
    real = os.replace
    count = [0]

    def replace(src, dst, *args, **kwargs):
        count[0] += 1
        if n is not None and count[0] == n:
            raise Killed(f"killed at rename {n}: {dst}")
        return real(src, dst, *args, **kwargs)

    os.replace = replace
    try:
        yield count
    finally:
        os.replace = real


def cli(workspace: Path, *args: str) -> int:
    try:
        result = runner.invoke(app, ["--workspace", str(workspace), *args])
    except Killed:
        return -9  # the process "died": whatever it had written stays as it is
    return result.exit_code


def protected(workspace: Path) -> set[str]:
    try:
        return set(open_index(load_settings(workspace, environ={})).protected_students())
    except Exception:  # noqa: BLE001 - no index yet
        return set()


def saved_list(workspace: Path) -> set[str]:
    found = load_list(workspace)
    return found.ids() if found is not None else set()


# ---- kill at every rename --------------------------------------------------------------------------
def _district(root: Path, photos: dict[str, Path]) -> tuple[Path, Path, Path]:
    """A workspace synced with last year's list (S1), and this year's export (S1, S2) with photos."""
    ws = root / "ws"
    ws.mkdir(parents=True)
    delivery = root / "picture-day"
    delivery.mkdir()
    for sid, photo in photos.items():
        shutil.copy(photo, delivery / f"{sid}.jpg")
    old, new = root / "old.txt", root / "new.txt"
    old.write_text("S1\n")
    new.write_text("S1\nS2\n")
    assert cli(ws, "sync", str(old), "--format", "ids", "--photos", str(delivery)) == 0
    return ws, new, delivery


def drill_sync(root: Path, photos: dict[str, Path]) -> Drill:
    drill = Drill("sync killed at every rename")
    probe = root / "probe"
    ws, new, delivery = _district(probe, photos)
    with kill_at_rename(None) as count:
        assert cli(ws, "sync", str(new), "--format", "ids", "--photos", str(delivery)) == 0
    expected = protected(ws)
    for n in range(1, count[0] + 1):
        ws, new, delivery = _district(root / f"sync-{n}", photos)
        with kill_at_rename(n):
            cli(ws, "sync", str(new), "--format", "ids", "--photos", str(delivery))
        before = protected(ws)
        code = cli(ws, "enroll")  # the routine next step after a crash
        listed = saved_list(ws)
        ok = protected(ws) <= listed and "S1" in protected(ws)  # nobody off the list; S1 never lost
        # This year's export only adds a student: whatever the kill left, the routine enroll must not
        # take protection from anybody (and an enroll that drops a student always says so, exit 3).
        ok &= before <= protected(ws) and (not (before - protected(ws)) or code == 3)
        ok &= ("S2" in protected(ws)) or ("S2" not in listed)  # a newly listed student is never dropped
        cli(ws, "sync", str(new), "--format", "ids", "--photos", str(delivery))  # then the sync again
        ok &= protected(ws) == expected
        drill.record(ok, f"rename {n}: protected {sorted(protected(ws))}, list {sorted(saved_list(ws))}")
    return drill


def _with_photos(where: Path, photos: dict[str, Path], enroll: bool = False) -> Path:
    """A workspace whose enrollments/<id>/ref.jpg hold ``photos`` (enrolled when asked)."""
    for sid, photo in photos.items():
        (where / "enrollments" / sid).mkdir(parents=True)
        shutil.copy(photo, where / "enrollments" / sid / "ref.jpg")
    if enroll:
        cli(where, "enroll")
    return where


def drill_enroll(root: Path, photos: dict[str, Path]) -> Drill:
    drill = Drill("enroll killed at every rename")

    def fresh(where: Path) -> Path:
        return _with_photos(where, photos)

    ws = fresh(root / "enroll-probe")
    with kill_at_rename(None) as count:
        cli(ws, "enroll")
    expected = protected(ws)
    for n in range(1, count[0] + 1):
        ws = fresh(root / f"enroll-{n}")
        with kill_at_rename(n):
            cli(ws, "enroll")
        # Killed before its work was saved: the next check or people must say so (or there is no index yet).
        saved = protected(ws) == expected
        warned = not (ws / ".optout-guard" / "index.npz").exists() or "did not finish" in runner.invoke(
            app, ["--workspace", str(ws), "people"]
        ).stderr
        cli(ws, "enroll")
        ok = (saved or warned) and protected(ws) == expected
        drill.record(ok, f"rename {n}: saved {saved}, warned {warned}, then {sorted(protected(ws))}")
    return drill


def drill_remove(root: Path, photos: dict[str, Path]) -> Drill:
    drill = Drill("remove --delete-photos killed at every rename")

    def fresh(where: Path) -> Path:
        return _with_photos(where, photos, enroll=True)

    ws = fresh(root / "remove-probe")
    with kill_at_rename(None) as count:
        cli(ws, "remove", "S2", "--delete-photos")
    for n in range(1, count[0] + 1):
        ws = fresh(root / f"remove-{n}")
        with kill_at_rename(n):
            cli(ws, "remove", "S2", "--delete-photos")
        photos_gone = not (ws / "enrollments" / "S2").exists()
        logged = any('"remove"' in line for line in log_path(load_settings(ws, environ={})).read_text().splitlines())
        cli(ws, "enroll")
        ok = ("S2" not in protected(ws)) if photos_gone else not logged  # no resurrection; the log never lies
        ok &= "S1" in protected(ws)
        drill.record(ok, f"rename {n}: photos gone {photos_gone}, logged {logged}, protected {sorted(protected(ws))}")
    return drill


# ---- races ---------------------------------------------------------------------------------------------
def _workspace_with(root: Path, photos: dict[str, Path]) -> Settings:
    _with_photos(root, photos, enroll=True)
    assert protected(root) == set(photos)
    return load_settings(root, environ={})


class _Swap(Guard):
    def __init__(self, settings: Settings, change: Callable[[Path], None]) -> None:
        super().__init__(settings)
        self.change: Callable[[Path], None] | None = change

    def check(self, path, *args, **kwargs):
        result = super().check(path, *args, **kwargs)
        if self.change is not None:
            change, self.change = self.change, None
            change(Path(path))
        return result


def drill_replaced_mid_check(root: Path, photos: dict[str, Path], blank: bytes) -> Drill:
    drill = Drill("photo replaced while checked (watch, audit)")
    settings = _workspace_with(root / "swap-ws", {"S1": photos["S1"]})
    student = photos["S1"].read_bytes()
    for how in ("rename over", "write into"):
        inbox = root / f"inbox-{how.replace(' ', '-')}"
        inbox.mkdir()
        (inbox / "post.jpg").write_bytes(blank)
        staged = root / f"student-{how.replace(' ', '-')}.jpg"
        staged.write_bytes(student)

        def change(checked: Path, how: str = how, inbox: Path = inbox, staged: Path = staged) -> None:
            if how == "rename over":
                os.replace(staged, inbox / "post.jpg")
            else:
                checked.write_bytes(student)

        folder = CheckFolder(inbox, _Swap(settings, change), settle=0.0, arrival_grace=0.0)
        folder.run_once()
        folder.run_once()
        allowed = [p.read_bytes() for p in (inbox / "allowed").glob("*.jpg") if ".marked" not in p.name]
        blocked = [p.read_bytes() for p in (inbox / "blocked").glob("*.jpg") if ".marked" not in p.name]
        drill.record(student not in allowed and student in blocked, f"watch, {how}")
    library = root / "library"
    library.mkdir()
    (library / "a.jpg").write_bytes(blank)
    summary = run_audit(library, settings, workers=1, guard=_Swap(settings, lambda p: p.write_bytes(student)))
    again = run_audit(library, settings, workers=1)
    drill.record(summary.totals.get("block") == 1 and again.totals.get("block") == 1, "audit, write into")
    return drill


def drill_concurrent_enrolls(root: Path, photos: dict[str, Path]) -> Drill:
    drill = Drill("two enrolls at once")
    cli_path = str(Path(sys.executable).with_name("optout-guard"))
    for attempt in range(2):
        ws = root / f"concurrent-{attempt}"
        for sid, photo in photos.items():
            (ws / f"in-{sid}" / sid).mkdir(parents=True)
            shutil.copy(photo, ws / f"in-{sid}" / sid / "ref.jpg")
        env = {**os.environ, "OPTOUT_GUARD_WORKSPACE": str(ws)}
        procs = [
            subprocess.Popen([cli_path, "enroll", str(ws / f"in-{sid}")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for sid in photos
        ]
        codes = [p.wait(300) for p in procs]
        drill.record(codes == [0, 0] and protected(ws) == set(photos), f"attempt {attempt}: {codes}, {sorted(protected(ws))}")
    return drill


def drill_torn_log(root: Path) -> Drill:
    drill = Drill("torn last line of the activity log")
    for torn in ('{"v": 2, "seq": 3, "acti', "\x00\x00\x00", '{"seq": 3}'):
        settings = load_settings(root / f"log-{len(torn)}-{torn[:2].encode().hex()}", environ={})
        log = ActivityLog(settings)
        log.record("check", photos=[])
        log.record("check", photos=[])
        with open(log_path(settings), "a", encoding="utf-8") as fh:
            fh.write(torn)
        log.record("check", photos=[])
        drill.record(verify(settings).problem is None, f"torn {torn!r}: {verify(settings).problem}")
    return drill


def run_drills(root: Path) -> list[Drill]:
    samples = sample_images()
    photos = {"S1": samples["grace_hopper"], "S2": samples["astronaut"]}
    # A photo without a face (scikit-image's coffee cup), as a JPEG.
    from PIL import Image

    blank_path = root / "coffee.jpg"
    Image.open(samples["coffee"]).convert("RGB").save(blank_path, quality=90)
    return [
        drill_sync(root, photos),
        drill_enroll(root, photos),
        drill_remove(root, photos),
        drill_replaced_mid_check(root, photos, blank_path.read_bytes()),
        drill_concurrent_enrolls(root, photos),
        drill_torn_log(root),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace-root", type=Path, help="Where to build the drills' workspaces [default: a temp folder].")
    args = parser.parse_args()
    root = args.workspace_root or Path(tempfile.mkdtemp(prefix="optout-guard-drill-"))
    root.mkdir(parents=True, exist_ok=True)
    drills = run_drills(root)
    width = max(len(d.name) for d in drills)
    print(f"{'drill':{width}}  runs  held")
    for d in drills:
        print(f"{d.name:{width}}  {d.runs:4}  {d.held:4}")
        for failure in d.failures or []:
            print(f"{'':{width}}  FAILED: {failure}")
    runs, held = sum(d.runs for d in drills), sum(d.held for d in drills)
    print(f"{runs} drills run, {held} held")
    if args.workspace_root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if runs and held == runs else 1


if __name__ == "__main__":
    sys.exit(main())
