"""The library audit on real photos: incremental, re-decides on gallery changes, resumable."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from conftest import LFW, make_workspace
from optout_guard.audit import AuditBusy, run_audit, state_path
from optout_guard.index import FaceIndex
from optout_guard.models import embedding_fingerprint

CLI = str(Path(sys.executable).with_name("optout-guard"))
NON_UTF8 = os.fsdecode(b"caf\xe9 concert.jpg")


def build_library(root: Path, data_dir: Path) -> dict[str, Path]:
    """A small district library: nested years, a hidden folder, a link out, odd names and files."""
    placed = {}
    for i in (21, 22, 23):
        placed[f"hugo{i}"] = root / "2024" / "sports" / f"Hugo_Chavez_00{i}.jpg"
        placed[f"colin{i}"] = root / "2025" / "assembly" / f"Colin_Powell_00{i}.jpg"
    for target in placed.values():
        target.parent.mkdir(parents=True, exist_ok=True)
    for key, target in placed.items():
        person = "Hugo_Chavez" if key.startswith("hugo") else "Colin_Powell"
        shutil.copy(LFW / person / target.name, target)
    others = [sorted(p.glob("*.jpg"))[0] for p in sorted(LFW.iterdir())[100:108]]
    for p in others:
        shutil.copy(p, root / "2025" / p.name)
    shutil.copy(data_dir / "dlib_examples" / "examples" / "faces" / "dogs.jpg", root / "2025" / "dogs.jpg")
    shutil.copy(data_dir / "odd_inputs" / "truncated.jpg", root / "2025" / "half-copied.jpg")
    shutil.copy(LFW / "Hugo_Chavez" / "Hugo_Chavez_0024.jpg", root / "2025" / NON_UTF8)
    (root / "2025" / ".thumbnails").mkdir()
    shutil.copy(LFW / "Hugo_Chavez" / "Hugo_Chavez_0025.jpg", root / "2025" / ".thumbnails" / "hidden.jpg")
    (root / "link-out.jpg").symlink_to(LFW / "Hugo_Chavez" / "Hugo_Chavez_0026.jpg")
    (root / "minutes.txt").write_text("not a photo")
    return placed


def verdicts(settings, library: Path) -> dict[str, tuple[str, str]]:
    db = sqlite3.connect(state_path(settings, library))
    try:
        return {os.fsdecode(bytes(p)): (v, r) for p, v, r in db.execute("SELECT path, verdict, reasons FROM files")}
    finally:
        db.close()


def test_audit_is_incremental_and_follows_the_opt_out_list(tmp_path, data_dir):
    library = tmp_path / "Photo library"
    placed = build_library(library, data_dir)
    ws = make_workspace(tmp_path / "ws", {"hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)]})

    first = run_audit(library, ws)
    assert (first.seen, first.checked, first.not_images) == (17, 17, 1)  # not the hidden one, not the link
    state = verdicts(ws, library)
    assert all(state[str(placed[f"hugo{i}"])][0] == "block" for i in (21, 22, 23))
    assert all(state[str(placed[f"colin{i}"])][0] != "block" for i in (21, 22, 23))  # one has a tiny face: review
    assert state[str(library / "2025" / "half-copied.jpg")][0] == "review"
    assert state[str(library / "2025" / NON_UTF8)][0] == "block"  # a non-UTF-8 name is checked like any other
    assert not any("hidden" in p or "link-out" in p for p in state)

    second = run_audit(library, ws)
    assert (second.checked, second.rechecked, second.unchanged) == (0, 0, 17)

    # A family opts out: Colin Powell is enrolled. Known faces are re-embedded, nothing re-detected.
    make_workspace(ws.workspace, {"colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)]})
    third = run_audit(library, ws)
    faces_photos = 17 - 2  # dogs.jpg and the broken file have no faces to re-decide
    assert (third.checked, third.rechecked) == (0, faces_photos)
    state = verdicts(ws, library)
    assert all(state[str(placed[f"colin{i}"])][0] == "block" for i in (21, 22, 23))
    assert {p for p, before, after in third.changed} >= {str(placed[f"colin{i}"]) for i in (21, 22, 23)}

    # A student leaves the list: their earlier blocks are re-evaluated.
    index = FaceIndex.load(ws.index_file, embedding_fingerprint())
    index.remove_student("hugo")
    index.save(ws.index_file)
    fourth = run_audit(library, ws)
    assert fourth.checked == 0
    state = verdicts(ws, library)
    assert all(state[str(placed[f"hugo{i}"])][0] == "allow" for i in (21, 22, 23))

    # A photo moved (recognised by content, not re-checked) and one deleted (reported once).
    placed["colin21"].rename(library / "moved-colin.jpg")
    placed["colin22"].unlink()
    fifth = run_audit(library, ws)
    assert (fifth.moved, fifth.checked, fifth.deleted) == (1, 0, [str(placed["colin22"])])
    assert verdicts(ws, library)[str(library / "moved-colin.jpg")][0] == "block"
    assert run_audit(library, ws).deleted == []


def test_two_audits_of_one_library_are_refused(tmp_path, lfw_ws):
    library = tmp_path / "lib"
    library.mkdir()
    lock = FileLock(str(state_path(lfw_ws, library.resolve())) + ".lock")
    state_path(lfw_ws, library.resolve()).parent.mkdir(parents=True, exist_ok=True)
    with lock:
        with pytest.raises(AuditBusy):
            run_audit(library, lfw_ws)


def test_a_killed_audit_resumes_to_the_same_results(tmp_path, data_dir):
    library = tmp_path / "lib"
    library.mkdir()
    for person in sorted(LFW.iterdir())[200:230]:
        shutil.copy(sorted(person.glob("*.jpg"))[0], library / f"{person.name}.jpg")
    for i in range(6, 12):
        shutil.copy(LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg", library)
    refs = {"hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)]}
    clean_ws = make_workspace(tmp_path / "clean", refs)
    killed_ws = make_workspace(tmp_path / "killed", refs)
    run_audit(library, clean_ws)

    args = [CLI, "--workspace", str(killed_ws.workspace), "audit", str(library), "--workers", "1"]
    db_path = state_path(killed_ws, library.resolve())
    for _ in range(2):  # killed twice at different points, with SIGKILL
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        target = 8 if _ == 0 else 20
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db_path.exists():
                try:
                    with sqlite3.connect(db_path) as db:
                        if db.execute("SELECT COUNT(*) FROM files").fetchone()[0] >= target:
                            break
                except sqlite3.Error:
                    pass
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # Hugo's photos are blocked
    assert verdicts(killed_ws, library) == verdicts(clean_ws, library)
    assert len(verdicts(killed_ws, library)) == 36


def test_report_is_written_for_people_and_scripts(tmp_path, data_dir):
    library = tmp_path / "lib"
    build_library(library, data_dir)
    ws = make_workspace(tmp_path / "ws", {"hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)]})
    report = tmp_path / "report"
    done = subprocess.run(
        [CLI, "--workspace", str(ws.workspace), "audit", str(library), "--report", str(report)], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr  # something is blocked: needs attention
    html = (report / "index.html").read_text()
    assert "Blocked photos" in html and "Hugo_Chavez_0021.jpg" in html and "caf\\xe9 concert.jpg" in html
    assert html.index("Blocked photos") < html.index("Photos to review") < html.index("What changed")  # what matters first
    # Nothing external: the only addresses are links to the review desk on this computer (its filtered queue).
    assert "https://" not in html and html.count("http://") == html.count("http://127.0.0.1:8765/") > 0
    # Paths relative to the library, the full path on hover (issue 18).
    assert ">2025/" in html or ">2024/" in html or "<code title=" in html
    assert f'title="{library.resolve()}' in html and f">{library.resolve()}/" not in html
    thumbs = list((report / "thumbs").glob("*.jpg"))
    assert len(thumbs) >= 5 and all(f"thumbs/{t.name}" in html for t in thumbs)
    large = [t for t in thumbs if t.name.endswith(".large.jpg")]  # each thumbnail links to a labelled copy
    assert large and all(f'<a href="thumbs/{t.name}"' in html for t in large)
    assert (report / "audit.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads it as UTF-8
    csv_text = (report / "audit.csv").read_text(encoding="utf-8-sig")
    assert csv_text.splitlines()[0] == "verdict,path,students,reasons,checked_at" and "hugo" in csv_text
    import json

    doc = json.loads((report / "audit.json").read_text())
    assert doc["summary"]["totals"]["block"] == 4 and "embedding" not in json.dumps(doc)
    assert all("landmarks" not in f for p in doc["photos"] for f in p["faces"])


def test_report_renders_in_a_real_browser_without_network(tmp_path, data_dir, chromium):
    library = tmp_path / "lib"
    build_library(library, data_dir)
    ws = make_workspace(tmp_path / "ws", {"hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)]})
    report = tmp_path / "report"
    subprocess.run([CLI, "--workspace", str(ws.workspace), "audit", str(library), "--report", str(report)], capture_output=True)
    requests = []
    context = chromium.new_context()
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto((report / "index.html").as_uri())
    page.wait_for_load_state("load")
    for image in page.query_selector_all("img"):  # thumbnails load lazily: bring each into view
        image.scroll_into_view_if_needed()
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=10_000)
    loaded = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    heading = page.inner_text("h1")
    page.screenshot(path=str(report / "screenshot.png"), full_page=True)
    # The "what changed" table filters in place (no external script): type a file name.
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    shown = "() => [...document.querySelectorAll('#changes tr:not(.folder)')].filter(r => r.style.display !== 'none').length"
    before = page.evaluate(shown)
    page.fill("#filter", "Hugo_Chavez_0021")
    after = page.evaluate(shown)
    context.close()
    assert before > 3 and after == 2, (before, after)  # the header row and the one photo
    assert "opt-out" in heading
    assert len(loaded) >= 5 and all(loaded)
    assert all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file://")]


def test_opt_in_embedding_cache_gives_the_same_verdicts_and_is_removed_when_off(tmp_path, data_dir):
    import stat as stat_module

    from optout_guard.audit import cache_path

    library = tmp_path / "lib"
    build_library(library, data_dir)
    refs = {"hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)]}
    colin = {"colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)]}
    plain = make_workspace(tmp_path / "plain", refs)
    cached = make_workspace(tmp_path / "cached", refs)
    run_audit(library, plain)
    run_audit(library, cached, embedding_cache=True)
    cache = cache_path(cached, library.resolve())
    assert cache.exists() and stat_module.S_IMODE(cache.stat().st_mode) == 0o600

    make_workspace(plain.workspace, colin)
    make_workspace(cached.workspace, colin)
    without = run_audit(library, plain)
    from optout_guard import photo

    loads = []
    real_load = photo.load_image
    photo.load_image = lambda *a, **k: loads.append(a) or real_load(*a, **k)
    try:
        with_cache = run_audit(library, cached, embedding_cache=True)
    finally:
        photo.load_image = real_load
    assert without.rechecked == with_cache.rechecked == 15
    assert loads == []  # decided from the cache: not one photo was opened again
    assert verdicts(plain, library) == verdicts(cached, library)

    run_audit(library, cached)  # the cache was not asked for this time: it is deleted
    assert not cache.exists()


def test_cluster_without_dask_installed_says_how_to_install_it(monkeypatch):
    import sys

    from optout_guard.audit.run import _cluster_engine
    from optout_guard.errors import ConfigError

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the [cluster] extra were not installed
    monkeypatch.delitem(sys.modules, "optout_guard.cluster", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'optout-guard\[cluster\]'"):
        _cluster_engine()


def test_the_audit_log_says_starting_until_it_has_a_rate(tmp_path, data_dir, caplog):
    """Issue 28: off a terminal the first progress line gave a meaningless rate ("0.1 photos/s",
    start-up included); it says "starting" until photos have been checked for a while."""
    import logging
    import shutil as _shutil

    from typer.testing import CliRunner

    from conftest import LFW, make_workspace
    from optout_guard.cli import app

    ws = make_workspace(tmp_path / "ws", {"colin": [LFW / "Colin_Powell" / "Colin_Powell_0001.jpg"]})
    library = tmp_path / "lib"
    library.mkdir()
    _shutil.copy(LFW / "Colin_Powell" / "Colin_Powell_0004.jpg", library / "a.jpg")
    with caplog.at_level(logging.INFO, logger="optout_guard.audit"):
        CliRunner().invoke(app, ["--workspace", str(ws.workspace), "audit", str(library)])
    lines = [r.getMessage() for r in caplog.records if r.name == "optout_guard.audit"]
    assert "audit: 1 of 1 photos checked (starting)" in lines, lines
    assert not any("photos/s" in line for line in lines)
