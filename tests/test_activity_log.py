"""The hash-chained activity log: written by every command, tamper-evident, no biometrics or paths."""

from __future__ import annotations

import json
import multiprocessing
import shutil

from typer.testing import CliRunner

from optout_guard.activity_log import ActivityLog, log_path, verify
from optout_guard.cli import app
from optout_guard.config import load_settings

runner = CliRunner()


def test_commands_are_logged_and_the_chain_verifies(tmp_path, samples):
    (tmp_path / "enrollments" / "S001").mkdir(parents=True)
    shutil.copy(samples["grace_hopper"], tmp_path / "enrollments" / "S001" / "2025.jpg")
    base = ["--workspace", str(tmp_path)]
    assert runner.invoke(app, [*base, "enroll"]).exit_code == 0
    photo = tmp_path / "Emma_Example_recital.jpg"  # a file name can name a child: never logged
    shutil.copy(samples["grace_hopper"], photo)
    assert runner.invoke(app, [*base, "check", str(photo), str(samples["astronaut"])]).exit_code == 1
    assert runner.invoke(app, [*base, "remove", "S001"]).exit_code == 0

    settings = load_settings(tmp_path, environ={})
    text = log_path(settings).read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["action"] for e in entries] == ["enroll", "check", "remove"]
    assert entries[1]["details"]["photos"][0]["verdict"] == "block" and entries[1]["details"]["photos"][0]["students"] == ["S001"]
    assert entries[2]["details"] == {"student_id": "S001", "templates_deleted": 1, "photos_deleted": False}
    assert "Emma" not in text and str(tmp_path) not in text  # no names, no paths
    assert not any(isinstance(v, list) and len(v) == 128 for e in entries for v in e["details"].values())
    assert verify(settings).problem is None and verify(settings).entries == 3
    assert runner.invoke(app, [*base, "log", "verify"]).exit_code == 0


def test_an_edited_or_deleted_line_is_detected(tmp_path):
    settings = load_settings(tmp_path, environ={})
    log = ActivityLog(settings)
    for i in range(5):
        log.record("check", photos=[{"sha256": f"{i:064x}", "verdict": "block", "students": ["S1"]}])
    path = log_path(settings)
    original = path.read_text().splitlines()

    edited = list(original)
    edited[2] = edited[2].replace('"block"', '"allow"')  # someone hides a blocked photo
    path.write_text("\n".join(edited) + "\n")
    assert verify(settings).problem.startswith("line 3 was changed")
    assert runner.invoke(app, ["--workspace", str(tmp_path), "log", "verify"]).exit_code == 5

    path.write_text("\n".join(original[:1] + original[2:]) + "\n")  # a line removed
    assert "line 2 does not follow" in verify(settings).problem

    path.write_text("\n".join(original) + "\n")
    assert verify(settings).problem is None


def _write_many(workspace: str, tag: str) -> None:
    log = ActivityLog(load_settings(workspace, environ={}))
    for i in range(40):
        log.record("watch", sha256=f"{tag}{i}", verdict="allow", students=[])


def test_two_processes_writing_at_once_keep_the_chain(tmp_path):
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_write_many, args=(str(tmp_path), tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    result = verify(load_settings(tmp_path, environ={}))
    assert result.problem is None and result.entries == 80


def test_log_show_is_a_table_and_json_for_scripts(demo_ws, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from optout_guard.activity_log import ActivityLog
    from optout_guard.cli import app
    from optout_guard.config import load_settings

    root = tmp_path / "ws"
    shutil.copytree(demo_ws.workspace, root)
    ws = load_settings(root, environ={})
    ActivityLog(ws).record("check", photos=[{"sha256": "ab" * 32, "verdict": "allow", "students": []}])
    table = CliRunner().invoke(app, ["--workspace", str(root), "log", "show"], catch_exceptions=False)
    assert table.exit_code == 0 and "check" in table.stdout and "photos: 1" in table.stdout
    assert '"details"' not in table.stdout  # not raw JSON
    lines = CliRunner().invoke(app, ["--workspace", str(root), "log", "show", "--json"]).stdout.splitlines()
    assert json.loads(lines[-1])["action"] == "check"
