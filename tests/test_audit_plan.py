"""The audit's listing and plan, without models: made-up libraries and made-up stored state.

What a run must do is worked out in SQL against the stored rows (nothing proportional to the
library held in memory); these tests pin every branch of it, and the listing's threads.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from optout_guard.audit import listing as listing_module
from optout_guard.audit import plan as plan_module
from optout_guard.audit.listing import Listed, Passed, list_library
from optout_guard.audit.plan import plan_run, todo_pages
from optout_guard.audit.state import UPSERT, connect
from optout_guard.errors import LibraryLooksUnmounted
from optout_guard.fsutil import sha256_with_identity
from optout_guard.types import MediaKind

GALLERY = "g1"


def _store(db, path: Path, verdict: str = "allow", faces: str = "[]", gallery: str = GALLERY, retry: int = 0) -> None:
    """A row as an earlier run left it (with the file's real size, time and sha256)."""
    digest, identity = sha256_with_identity(str(path))
    db.execute(UPSERT, (os.fsencode(str(path)), identity.size, identity.mtime_ns, digest, verdict, "[]", faces,
                        gallery, "2026-01-01T00:00:00Z", 0, 0, None, retry, "photo"))  # fmt: skip


def _library(root: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff\xd8\xff" + bytes([i % 256]) * (100 + i))  # distinct sizes and contents
        out[name] = p
    return out


def _plan(db, library: Path, gallery_of=lambda _n: GALLERY, decided=frozenset(), **kw):
    passed = Passed()
    plan = plan_run(db, 1, list_library(library, passed, threads=3), gallery_of, set(decided),
                    lambda: passed.unreadable_folders, library=str(library), **kw)  # fmt: skip
    todo = {name: kind for _seq, kind, name in todo_pages(db, ("new", "check", "recheck"))}
    return plan, todo


@pytest.fixture
def db(tmp_path):
    conn = connect(tmp_path / "state" / "audit.sqlite")
    yield conn
    conn.close()


def test_every_branch_of_the_plan(tmp_path, db):
    lib = tmp_path / "lib"
    f = _library(lib, ["a/same.jpg", "a/edited.jpg", "a/faces.jpg", "a/nofaces.jpg", "b/error.jpg",
                       "b/decided.jpg", "b/unknown-verdict.jpg", "c/new.jpg", "notes.txt"])  # fmt: skip
    f["notes.txt"].write_text("minutes")
    face = '[{"box": [1, 2, 3, 4], "landmarks": []}]'
    _store(db, f["a/same.jpg"], faces=face)
    _store(db, f["a/edited.jpg"])
    _store(db, f["a/faces.jpg"], faces=face, gallery="g0")  # the list changed since
    _store(db, f["a/nofaces.jpg"], gallery="g0")
    _store(db, f["b/error.jpg"], verdict="review", retry=1)
    _store(db, f["b/decided.jpg"], faces=face)
    _store(db, f["b/unknown-verdict.jpg"])
    db.execute("UPDATE files SET verdict=NULL WHERE path=?", (os.fsencode(str(f["b/unknown-verdict.jpg"])),))
    f["a/edited.jpg"].write_bytes(b"\xff\xd8\xff edited, longer than before......................................")
    decided_sha = sha256_with_identity(str(f["b/decided.jpg"]))[0]

    plan, todo = _plan(db, lib, decided={decided_sha})

    assert todo == {
        str(f["a/edited.jpg"]): "check",
        str(f["a/faces.jpg"]): "recheck",
        str(f["b/error.jpg"]): "check",
        str(f["b/decided.jpg"]): "recheck",
        str(f["b/unknown-verdict.jpg"]): "check",
        str(f["c/new.jpg"]): "new",
    }
    assert (plan.seen, plan.not_images, plan.unchanged, plan.todo) == (8, 1, 2, 6)
    rows = {os.fsdecode(bytes(p)): (g, r) for p, g, r in db.execute("SELECT path, gallery, last_run FROM files")}
    assert rows[str(f["a/same.jpg"])] == (GALLERY, 1)
    assert rows[str(f["a/nofaces.jpg"])] == (GALLERY, 1)  # no faces: nothing to decide, takes the new gallery key
    assert rows[str(f["a/faces.jpg"])] == ("g0", 0)  # untouched until its re-decision is recorded


def test_recheck_all_checks_everything_again(tmp_path, db):
    lib = tmp_path / "lib"
    f = _library(lib, ["x/1.jpg", "x/2.jpg"])
    for p in f.values():
        _store(db, p)
    plan, todo = _plan(db, lib, recheck_all=True)
    assert set(todo.values()) == {"check"} and len(todo) == 2 and plan.unchanged == 0


def test_a_moved_photo_keeps_its_result_and_only_same_size_files_are_hashed(tmp_path, db, monkeypatch):
    lib = tmp_path / "lib"
    f = _library(lib, ["old/moved.jpg", "old/stays.jpg"] + [f"new/other{i}.jpg" for i in range(5)])
    for name in ("old/moved.jpg", "old/stays.jpg"):
        _store(db, f[name], verdict="block")
    target = lib / "renamed" / "moved.jpg"
    target.parent.mkdir()
    os.rename(f["old/moved.jpg"], target)
    hashed: list[str] = []
    real = plan_module.sha256_with_identity
    monkeypatch.setattr(plan_module, "sha256_with_identity", lambda p: hashed.append(p) or real(p))

    plan, todo = _plan(db, lib)

    assert plan.moved == 1 and plan.deleted_count == 0
    assert hashed == [str(target)]  # the five new files of other sizes: their sha256 comes from their check
    verdict = db.execute("SELECT verdict FROM files WHERE path=?", (os.fsencode(str(target)),)).fetchone()
    assert verdict == ("block",)
    assert set(todo) == {str(f[f"new/other{i}.jpg"]) for i in range(5)}


def test_deleted_photos_are_counted_listed_and_forgotten(tmp_path, db):
    lib = tmp_path / "lib"
    f = _library(lib, [f"y/{i}.jpg" for i in range(12)])
    for p in f.values():
        _store(db, p)
    f["y/3.jpg"].unlink()
    plan, _todo = _plan(db, lib)
    assert (plan.deleted_count, plan.deleted) == (1, [str(f["y/3.jpg"])])
    assert db.execute("SELECT COUNT(*) FROM files").fetchone() == (11,)


def test_an_unmounted_library_raises_before_anything_is_written(tmp_path, db):
    lib = tmp_path / "lib"
    f = _library(lib, [f"z/{i}.jpg" for i in range(20)])
    for p in f.values():
        _store(db, p)
    for i in range(15):
        f[f"z/{i}.jpg"].unlink()
    with pytest.raises(LibraryLooksUnmounted, match="15 of the 20"):
        _plan(db, lib)
    assert db.execute("SELECT COUNT(*), MAX(last_run) FROM files").fetchone() == (20, 0)


def test_a_folder_that_cannot_be_read_keeps_what_was_known(tmp_path, db, monkeypatch):
    lib = tmp_path / "lib"
    f = _library(lib, ["open/1.jpg", "locked/2.jpg", "locked/deeper/3.jpg", "lockedtoo.jpg"])
    for p in f.values():
        _store(db, p, verdict="block")
    real_scandir = os.scandir
    locked = os.fsencode(str(lib / "locked"))

    def scandir(path):
        if os.fsencode(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(listing_module.os, "scandir", scandir)
    passed = Passed()
    plan = plan_run(db, 1, list_library(lib, passed, threads=2), lambda _n: GALLERY, set(),
                    lambda: passed.unreadable_folders, library=str(lib))  # fmt: skip
    assert passed.unreadable_folders == [locked]
    assert plan.deleted_count == 0 and plan.kept_unreadable == 2 and plan.todo == 0
    assert db.execute("SELECT COUNT(*) FROM files WHERE verdict='block'").fetchone() == (4,)


def test_listing_in_threads_finds_what_one_thread_finds(tmp_path):
    lib = tmp_path / "lib"
    names = [f"{school}/{year}/{i}.jpg" for school in "abcdefghij" for year in (2024, 2025) for i in range(30)]
    _library(lib, [*names, "top.jpg", ".hidden/x.jpg", "a/.thumb.jpg", "@eaDir/y.jpg", "a/$RECYCLE.BIN/z.jpg"])
    (lib / "a" / "link.jpg").symlink_to(lib / "top.jpg")
    (lib / "linkdir").symlink_to(lib / "b")
    one, many = Passed(), Passed()
    single = sorted((x.path, x.size, x.mtime_ns, x.kind) for x in list_library(lib, one, threads=1))
    threaded = sorted((x.path, x.size, x.mtime_ns, x.kind) for x in list_library(lib, many, threads=6))
    assert single == threaded and len(single) == len(names) + 1
    assert sorted(one.links) == sorted(many.links) == [str(lib / "a" / "link.jpg"), str(lib / "linkdir")]
    assert all(kind is MediaKind.PHOTO for *_, kind in single)


def test_listing_threads_stop_when_the_audit_stops_early(tmp_path):
    lib = tmp_path / "lib"
    _library(lib, [f"f{d}/{i}.jpg" for d in range(12) for i in range(400)])
    before = threading.active_count()
    stream = list_library(lib, Passed(), threads=4)
    first = [next(stream) for _ in range(3)]
    assert all(isinstance(x, Listed) for x in first)
    stream.close()  # the audit was interrupted
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_the_listing_is_not_held_in_memory(tmp_path, db):
    """plan_run stores the listing as it streams in: while it is being read, what was read so far
    is in the database but for at most one insert batch (a list() of it first would fail this)."""
    behind: list[int] = []

    def listing():
        for i in range(30_000):
            if i % 1000 == 0:
                stored = db.execute("SELECT COUNT(*) FROM walk").fetchone()[0]
                behind.append(i - stored)
            yield Listed(f"/nowhere/{i:06d}.jpg".encode(), 10, 1, MediaKind.PHOTO)

    plan = plan_run(db, 1, listing(), lambda _n: GALLERY, set())
    assert plan.seen == plan.todo == 30_000
    assert len(behind) == 30 and max(behind) <= plan_module._INSERT_BATCH


def test_a_file_nobody_could_look_into_is_checked_and_other_files_are_not(db):
    """sniff says "unreadable" when a file could not even be opened: nobody knows what it is, so it
    is checked (which makes it review), never skipped as "not a photo"."""
    listed = [Listed(b"/lib/locked.dat", 10, 1, "unreadable"), Listed(b"/lib/minutes.txt", 10, 1, "other"),
              Listed(b"/lib/clip.mov", 10, 1, "clip")]  # fmt: skip
    plan = plan_run(db, 1, iter(listed), lambda _n: GALLERY, set())
    todo = {name: kind for _seq, kind, name in todo_pages(db, ("new",))}
    assert todo == {"/lib/locked.dat": "new", "/lib/clip.mov": "new"}
    assert (plan.seen, plan.not_images, plan.clips) == (2, 1, 1)


def test_stored_faces_come_back_as_they_were_checked():
    """A re-check after the list changes decides the stored faces again: everything a check reads
    from a face (box, landmarks, page, upright, tilt) must survive the state. The tilt did not, and
    a turned face that a full check judges came back as "turned" (review) on re-check."""
    import numpy as np

    from optout_guard.stored_faces import decode, encode
    from optout_guard.types import Box, Decision, Face, FaceMatch, ReasonCode, ScanResult, Verdict

    turned = Face(Box(10.5, 20.25, 64.0, 60.0), 0.93, np.array([[1.234, 2.345]] * 5, np.float32), 1, False, -87.3)
    result = ScanResult("p.jpg", Verdict.ALLOW, (), (FaceMatch(turned, Decision.CLEAR, (), "", ReasonCode.CLEAR),))
    (stored,) = decode(encode(result))
    back = stored.face
    assert (back.box, back.page, back.upright, back.tilt) == (turned.box, 1, False, -87.3)
    assert np.abs(back.landmarks - turned.landmarks).max() <= 0.005


def test_a_library_folder_that_cannot_be_read_stops_the_audit(tmp_path, monkeypatch):
    from optout_guard.audit import run as run_module
    from optout_guard.config import load_settings
    from optout_guard.errors import OptoutGuardError

    library = tmp_path / "lib"
    library.mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if str(path) == str(library):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(run_module.os, "scandir", scandir)
    with pytest.raises(OptoutGuardError, match="cannot read the library folder"):
        run_module.run_audit(library, load_settings(tmp_path / "ws", environ={}), guard=object())  # type: ignore[arg-type]
