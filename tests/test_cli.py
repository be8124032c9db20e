"""The command line: exact exit codes and JSON fields, on the demo workspace (any fresh machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optout_guard.cli import app

runner = CliRunner()


def run(ws, *args: str):
    return runner.invoke(app, ["--workspace", str(ws.workspace), *args], catch_exceptions=False)


def photos(ws) -> Path:
    return ws.workspace / "photos"


def test_check_json_fields_and_block_exit_code(demo_ws, demo_student, tmp_path):
    result = run(demo_ws, "check", "--json", "--annotate", str(tmp_path / "marked"), str(photos(demo_ws)))
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 3
    assert doc["summary"] == {"photos": 3, "allow": 2, "review": 0, "block": 1, "skipped": 0, "cleared_but_close": 0,
                             "cleared_by_consenting": 0}  # fmt: skip
    by_name = {Path(p["path"]).name: p for p in doc["photos"]}
    assembly = by_name["assembly.jpg"]
    assert assembly["verdict"] == "block" and assembly["students"] == [demo_student]
    assert len(assembly["faces"]) == 2
    blocked = [f for f in assembly["faces"] if f["decision"] == "block"]
    assert len(blocked) == 1 and blocked[0]["student_id"] == demo_student and blocked[0]["distance"] <= 0.42
    keys = {"box", "page", "detection_score", "decision", "student_id", "distance", "candidates", "reason", "code", "thresholds"}
    assert set(blocked[0]) == keys
    assert blocked[0]["code"] == "match"
    assert blocked[0]["thresholds"] == {"source": "settings"}  # no cohort in the demo
    assert assembly["scope"] == "district"
    assert len(blocked[0]["box"]) == 4 and all(isinstance(v, int) for v in blocked[0]["box"])
    assert blocked[0]["box"][0] < 800  # Grace Hopper is on the left half of the 1600 px wide photo
    assert by_name["coffee.jpg"]["verdict"] == "allow" and by_name["coffee.jpg"]["faces"] == []
    assert Path(assembly["annotated"]).is_file()
    # No embeddings anywhere in the output: no long lists of floats.
    assert all(len(f["candidates"]) <= 3 for p in doc["photos"] for f in p["faces"])
    assert "embedding" not in result.stdout


def test_allow_exit_code_zero(demo_ws):
    result = run(demo_ws, "check", str(photos(demo_ws) / "visitor.jpg"), str(photos(demo_ws) / "coffee.jpg"))
    assert result.exit_code == 0, result.output
    assert "2 allowed" in result.stdout


def test_review_exit_code_three_for_unreadable_file(demo_ws, tmp_path):
    bad = tmp_path / "half.jpg"
    bad.write_bytes((photos(demo_ws) / "visitor.jpg").read_bytes()[:2000])
    result = run(demo_ws, "check", "--json", str(bad), str(photos(demo_ws) / "coffee.jpg"))
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["photos"][0]["verdict"] == "review" and "truncated" in doc["photos"][0]["reasons"][0]


def test_block_wins_over_review_in_exit_code(demo_ws, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = run(demo_ws, "check", str(tmp_path / "empty.jpg"), str(photos(demo_ws) / "assembly.jpg"))
    assert result.exit_code == 1


def test_missing_file_is_a_usage_error_and_a_broken_link_is_review(demo_ws, tmp_path):
    # Issue 20: a path that does not exist is a typo (exit 2), not a photo to review.
    result = run(demo_ws, "check", str(tmp_path / "nope.jpg"))
    assert result.exit_code == 2 and "no such file or folder" in result.output
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")  # exists as a name, cannot be read
    result = run(demo_ws, "check", str(tmp_path / "link.jpg"))
    assert result.exit_code == 3 and "cannot read the file" in result.stdout


def test_non_images_in_folders_are_listed_as_not_checked(demo_ws, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(photos(demo_ws) / "coffee.jpg", folder / "coffee.jpg")
    (folder / "notes.txt").write_text("not a photo")
    result = run(demo_ws, "check", "--json", str(folder))
    assert result.exit_code == 3  # never "all allowed" while a file was not looked at (issue 25)
    doc = json.loads(result.stdout)
    assert doc["summary"]["skipped"] == 1 and doc["skipped"][0]["path"].endswith("notes.txt")


def test_setup_errors_exit_two(tmp_path, demo_ws):
    # No index in this workspace: nothing can be checked.
    result = runner.invoke(app, ["--workspace", str(tmp_path), "check", str(photos(demo_ws))])
    assert result.exit_code == 2 and "no face index" in result.output
    # Bad option values.
    assert run(demo_ws, "check", "--block-distance", "0.9", str(photos(demo_ws))).exit_code == 2
    assert run(demo_ws, "check", "--detector", "magic", str(photos(demo_ws))).exit_code == 2
    assert runner.invoke(app, ["check"]).exit_code == 2  # no paths


def test_people_enroll_remove_cycle(tmp_path, samples):
    ws = tmp_path
    (ws / "enrollments" / "s-1").mkdir(parents=True)
    (ws / "enrollments" / "s-2").mkdir()
    shutil.copy(samples["grace_hopper"], ws / "enrollments" / "s-1" / "2025.jpg")
    shutil.copy(samples["coffee"], ws / "enrollments" / "s-2" / "coffee.png")
    base = ["--workspace", str(ws)]

    enrolled = runner.invoke(app, [*base, "enroll", "--json"])
    assert enrolled.exit_code == 3  # s-2 is not protected: needs attention
    doc = json.loads(enrolled.stdout)
    assert doc["not_protected"] == ["s-2"] and doc["rejected"][0]["reason"] == "no face found"

    listed = json.loads(runner.invoke(app, [*base, "people", "--json"]).stdout)
    assert [(s["student_id"], s["reference_photos"], s["protected"]) for s in listed["students"]] == [
        ("s-1", 1, True),
        ("s-2", 0, False),
    ]

    removed = runner.invoke(app, [*base, "remove", "s-1", "--delete-photos"])
    assert removed.exit_code == 0 and "1 face template(s) deleted" in removed.stdout
    assert not (ws / "enrollments" / "s-1").exists()
    listed = json.loads(runner.invoke(app, [*base, "people", "--json"]).stdout)
    assert [s["student_id"] for s in listed["students"]] == ["s-2"]
    assert runner.invoke(app, [*base, "remove", "nobody"]).exit_code == 4  # not found: not a "review"


def test_console_script_is_installed(demo_ws):
    exe = Path(sys.executable).with_name("optout-guard")
    if not exe.exists():
        pytest.fail(f"console script missing at {exe}: install the package (pip install -e .)")
    done = subprocess.run(
        [str(exe), "--workspace", str(demo_ws.workspace), "check", "--json", str(photos(demo_ws) / "assembly.jpg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["photos"][0]["verdict"] == "block"


def test_a_whole_command_check_ends_without_teardown_yet_loses_nothing(demo_ws, tmp_path):
    """Issue 30: `check` leaves with os._exit once its work is done (skipping ~0.09 s of freeing
    modules). Everything must still be there: the exit code, the whole JSON (several photos), the
    marked-up copies, the activity log's entry (hash chain intact) — and an atexit handler still runs."""
    exe = str(Path(sys.executable).with_name("optout-guard"))
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "from optout_guard.start import run\n"
        f"sys.argv = ['optout-guard', '--workspace', {str(demo_ws.workspace)!r}, 'check', '--json', '--annotate', "
        f"{str(tmp_path / 'marked')!r}, {str(photos(demo_ws))!r}]\n"
        "run()\n"
        "print('run() returned: not the way a check ends')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr[-500:]
    document = json.loads(done.stdout)  # the whole document, nothing after it
    assert len(document["photos"]) == len(list(photos(demo_ws).iterdir())) >= 3
    assert len(list((tmp_path / "marked").iterdir())) == len(document["photos"])
    assert marker.read_text() == "yes"
    shown = subprocess.run([exe, "--workspace", str(demo_ws.workspace), "log", "show", "--json"], capture_output=True,
                           text=True, check=True)  # fmt: skip
    last = json.loads(shown.stdout.strip().splitlines()[-1])
    assert last["action"] == "check" and len(last["details"]["photos"]) == len(document["photos"])
    assert subprocess.run([exe, "--workspace", str(demo_ws.workspace), "log", "verify"], capture_output=True).returncode == 0


def test_folders_are_checked_in_parallel_with_identical_results(demo_ws, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        for name in ("assembly.jpg", "visitor.jpg", "coffee.jpg"):
            shutil.copy(photos(demo_ws) / name, folder / f"{i}-{name}")
    (folder / "9-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 half a photo")
    serial = run(demo_ws, "check", "--json", "--workers", "1", str(folder))
    parallel = run(demo_ws, "check", "--json", "--workers", "2", str(folder))
    assert serial.exit_code == parallel.exit_code == 1

    def verdicts(result):
        doc = json.loads(result.stdout)
        return [(Path(p["path"]).name, p["verdict"], p["reasons"], [f["box"] for f in p["faces"]]) for p in doc["photos"]]

    assert verdicts(serial) == verdicts(parallel)
    assert len(verdicts(parallel)) == 10 and verdicts(parallel)[-1][1] == "review"


def test_check_names_the_copies_it_wrote(demo_ws, tmp_path):
    result = run(demo_ws, "check", str(photos(demo_ws) / "assembly.jpg"), "--annotate", str(tmp_path / "a"),
                 "--redact", str(tmp_path / "r"))  # fmt: skip
    text = "".join(result.stdout.split())
    written = [p for p in (tmp_path / "a").iterdir()] + [p for p in (tmp_path / "r").iterdir()]
    assert len(written) == 2 and all("".join(str(p).split()) in text for p in written)


def test_workspace_option_may_follow_the_command():
    from optout_guard.cli import hoist_workspace

    assert hoist_workspace(["check", "-w", "/ws", "a.jpg"]) == ["-w", "/ws", "check", "a.jpg"]
    assert hoist_workspace(["people", "--workspace=/ws", "--json"]) == ["--workspace=/ws", "people", "--json"]
    assert hoist_workspace(["-w", "/ws", "check", "a.jpg"]) == ["-w", "/ws", "check", "a.jpg"]
    assert hoist_workspace(["check", "--", "-w"]) == ["check", "--", "-w"]  # a file named -w stays a file


def test_check_starts_loading_its_models_while_the_command_line_is_parsed(monkeypatch):
    """Issue 30: only `check` warms up, with the models its command line asks for."""
    from optout_guard import models, start

    asked: list[list[str]] = []
    monkeypatch.setattr(models.Models, "load_in_background", lambda self, names: asked.append(names))
    for args in (["-w", "ws", "check", "a.jpg"], ["check", "--no-recognition", "a.jpg"], ["check", "--detector", "hog", "a"],
                 ["people"], ["check", "--help"], ["--workspace", "check", "people"],
                 ["check", "-w", "ws", "a.jpg"]):  # fmt: skip
        start.warm_up(args)
    assert asked == [["centerface", "landmarks", "resnet"], ["centerface", "landmarks"], ["hog", "landmarks", "resnet"],
                     ["centerface", "landmarks", "resnet"]]  # fmt: skip


def test_the_program_starts_loading_models_before_it_imports_the_command_line(demo_ws, tmp_path):
    """Issue 30: the installed ``optout-guard`` runs ``start.run``, whose model-loading threads start
    before Typer and the commands are imported (~0.09 s that now overlaps the loading)."""
    script = Path(sys.executable).with_name("optout-guard").read_text()
    assert "from optout_guard.start import run" in script
    code = (
        "import sys, threading\n"
        "started = []\n"
        "real_start = threading.Thread.start\n"
        "def start(self):\n"
        "    if self.name.startswith('load-'):\n"
        "        started.append((self.name, 'typer' in sys.modules, 'optout_guard.cli' in sys.modules))\n"
        "    real_start(self)\n"
        "threading.Thread.start = start\n"
        "import atexit\n"
        "atexit.register(lambda: sys.stderr.write('STARTED=%r' % sorted(started)))\n"
        "from optout_guard.start import run\n"
        f"sys.argv = ['optout-guard', 'check', '-w', {str(demo_ws.workspace)!r}, '--json', {str(photos(demo_ws))!r}]\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and json.loads(done.stdout)["photos"], done.stderr[-500:]
    started = done.stderr.rsplit("STARTED=", 1)[1]
    assert started == repr([(f"load-{m}", False, False) for m in ("centerface", "landmarks", "resnet")])


@pytest.mark.models  # the real models load in the command's own process
def test_a_check_that_ends_early_exits_with_its_own_code_not_an_abort(tmp_path):
    """The models start loading as `check` starts (issue 30); a check that ends at once (a mistyped
    path, no index) must still exit 2 — not be aborted (134) by tearing the interpreter down under a
    model still loading, which it was 3 times in 5 when the loader threads were daemons."""
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("optout-guard"))
    for _ in range(4):
        missing = subprocess.run([cli, "--workspace", str(tmp_path), "check", str(tmp_path / "nope.jpg")], capture_output=True)
        assert missing.returncode == 2, missing.stderr[-300:]
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    no_index = subprocess.run([cli, "--workspace", str(tmp_path), "check", str(tmp_path / "a.jpg")], capture_output=True)
    assert no_index.returncode == 2 and b"no face index" in no_index.stderr
