"""Every photo of one student (issue 27): `people STUDENT_ID --photos` from the audit state, the
review desk and a check folder's notes; only stored candidates and decisions are read."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from typer.testing import CliRunner

from conftest import LFW, make_workspace
from optout_guard.appearances import appearances
from optout_guard.cli import app
from optout_guard.desk import Desk, DeskOptions
from optout_guard.pipeline import Guard
from optout_guard.watch import CheckFolder

pytestmark = pytest.mark.data

COLIN = LFW / "Colin_Powell" / "Colin_Powell_0004.jpg"  # blocks colin
HUGO = LFW / "Hugo_Chavez" / "Hugo_Chavez_0009.jpg"  # resembles hugo (review at block 0.35)


def test_every_photo_of_a_student_from_audits_the_desk_and_a_check_folder(tmp_path, data_dir):
    settings = make_workspace(tmp_path / "ws", {
        "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)],
        "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)],
    })  # fmt: skip
    (settings.workspace / "config.toml").write_text("block_distance = 0.35\nreview_distance = 0.65\n")
    from optout_guard.config import load_settings

    settings = load_settings(settings.workspace, environ={})
    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(COLIN, library / "game.jpg")
    shutil.copy(HUGO, library / "assembly.jpg")
    run = CliRunner().invoke
    assert run(app, ["--workspace", str(settings.workspace), "audit", str(library)]).exit_code == 1
    folder = tmp_path / "check"
    folder.mkdir()
    shutil.copy(COLIN, folder / "dropped.jpg")
    CheckFolder(folder, Guard(settings), settle=0.1, arrival_grace=0.0).run_once()
    desk = Desk(settings, DeskOptions())
    desk.check_upload("page.jpg", HUGO.read_bytes(), "officer")
    card = next(c for c in desk.book.queue() if c.candidates and c.candidates[0].student_id == "hugo")
    desk.decide(card.id, "hugo", "officer", add_reference=False)

    colin = json.loads(run(app, ["--workspace", str(settings.workspace), "people", "colin", "--photos", "--json",
                                 "--check-folder", str(folder)]).stdout)  # fmt: skip
    places = {(p["source"], p["path"].split("/")[-1], p["how"]) for p in colin["photos"]}
    assert ("audit", "game.jpg", "blocked") in places and ("check folder", "dropped.jpg", "blocked") in places
    assert not any(p["path"].endswith("assembly.jpg") for p in colin["photos"])
    hugo = json.loads(run(app, ["--workspace", str(settings.workspace), "people", "hugo", "--photos", "--json"]).stdout)
    hows = {p["how"] for p in hugo["photos"]}
    assert "confirmed as this student by officer" in hows and any(h.startswith("held for review") for h in hows)
    table = run(app, ["--workspace", str(settings.workspace), "people", "hugo", "--photos"])
    assert table.exit_code == 0 and "photo(s) and clip(s) of hugo" in table.stdout
    nobody = run(app, ["--workspace", str(settings.workspace), "people", "nobody", "--photos"])
    assert "No photo of nobody" in nobody.stdout


def test_the_desk_lists_every_photo_of_a_student_in_the_browser(tmp_path, data_dir, chromium):
    from test_desk import TEST_OUTPUT, Server, desk_page, sources

    settings, folder, _library = sources(tmp_path, in_review=[HUGO], in_library=[])
    server = Server(Desk(settings, DeskOptions(port=0, check_folders=[folder])))
    server.desk.import_sources()
    card = next(c for c in server.desk.book.queue() if c.candidates and c.candidates[0].student_id == "hugo")
    server.desk.decide(card.id, "hugo", "officer", add_reference=False)
    # The person's answer is the line shown for the photo, also when the check folder's note was
    # written after it (the refile on a busy machine): the list once kept whichever was newer.
    note = folder / "blocked" / f"{HUGO.name}.txt"
    later = time.time() + 120
    os.utime(note, (later, later))
    shown = [a.how for a in appearances(settings, "hugo", [folder]) if a.path.endswith(HUGO.name)]
    assert shown == ["confirmed as this student by officer"], shown
    try:
        context, page = desk_page(chromium, server)
        page.fill("#student-id", "hugo")
        page.press("#student-id", "Enter")
        page.wait_for_selector("#student-photos li")
        text = page.inner_text("#student-photos")
        TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(TEST_OUTPUT / "student-photos.png"))
        assert HUGO.name in text and "confirmed as this student by officer" in text, text
        # The student's own page: every photo, pictured (the marked-up copy), with where and how.
        page.click("text=Open the page of hugo")
        page.wait_for_selector("#student-title")
        assert page.inner_text("#student-count") == "1 photo(s)."
        body = page.inner_text("main")
        assert HUGO.name in body and "confirmed as this student by officer" in body and "check folder" in body
        page.wait_for_function("[...document.images].every((i) => i.complete && i.naturalWidth > 100)")
        assert page.eval_on_selector_all("img", "is => is.length") == 1
        page.screenshot(path=str(TEST_OUTPUT / "student-page.png"))
        page.goto(server.url + "/students/nobody")
        assert "No photo of nobody" in page.inner_text("#student-none")
        context.close()
    finally:
        server.close()
