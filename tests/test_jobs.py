"""The job record (issue 29 §6): every run of an audit, a watcher, a sync and the desk's imports is
recorded — started, how far, finished or failed — and a run whose process died reads as stopped.
Counts only: no photo path, student or face."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from optout_guard import jobs
from optout_guard.config import load_settings


def test_a_run_is_recorded_from_start_to_finish_with_its_counts(tmp_path):
    settings = load_settings(tmp_path, environ={})
    assert jobs.latest(settings) == []  # nothing ran yet: no file, no error
    with jobs.track(settings, "audit", "/library") as job:
        running = jobs.latest(settings)[0]
        assert (running.kind, running.target, running.state(), running.finished) == ("audit", "/library", "running", None)
        job.progress(10, 400)
        assert (jobs.latest(settings)[0].done, jobs.latest(settings)[0].total) == (10, 400)
        job.progress(11, 400)  # within a second of the last write: not written (a busy audit is not slowed)
        assert jobs.latest(settings)[0].done == 10
        job.finish(True, {"checked": 400, "block": 3}, done=400)
    last = jobs.latest(settings)[0]
    assert (last.state(), last.done, last.summary) == ("finished", 400, {"block": 3, "checked": 400})
    assert stat.S_IMODE(os.stat(jobs.jobs_path(settings)).st_mode) == 0o600  # private, like every state file
    with jobs.track(settings, "sync", "the opt-out list"):
        pass  # finished (ok) on leaving the block
    assert [(r.kind, r.state()) for r in jobs.latest(settings)] == [("sync", "finished"), ("audit", "finished")]


def test_a_run_that_raises_is_failed_with_the_errors_first_line_and_the_error_goes_on(tmp_path):
    settings = load_settings(tmp_path, environ={})
    with pytest.raises(RuntimeError), jobs.track(settings, "audit", "/library"):
        raise RuntimeError("the library is not mounted\nsecond line, not kept")
    last = jobs.latest(settings)[0]
    assert last.state() == "failed" and last.summary == {"error": "RuntimeError: the library is not mounted"}


def test_a_run_whose_process_was_killed_reads_as_stopped(tmp_path):
    settings = load_settings(tmp_path, environ={})
    code = (
        "import os, sys\n"
        "from optout_guard import jobs\n"
        "from optout_guard.config import load_settings\n"
        f"job = jobs.start(load_settings({str(tmp_path)!r}, environ={{}}), 'audit', '/library')\n"
        "job.progress(5, 50)\n"
        "os._exit(9)  # killed: no finish, no clean-up\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    last = jobs.latest(settings)[0]
    assert (last.finished, last.done, last.state()) == (None, 5, "stopped")


def test_only_the_last_run_of_each_job_is_shown_and_old_runs_are_pruned(tmp_path, monkeypatch):
    settings = load_settings(tmp_path, environ={})
    monkeypatch.setattr(jobs, "KEEP_RUNS", 3)
    for n in range(5):
        with jobs.track(settings, "watch", "/inbox") as job:
            job.finish(True, {"allow": n})
    with jobs.track(settings, "watch", "/other inbox"):
        pass
    shown = jobs.latest(settings)
    assert [(r.target, r.summary) for r in shown] == [("/other inbox", {}), ("/inbox", {"allow": 4})]
    import sqlite3

    db = sqlite3.connect(jobs.jobs_path(settings))
    assert db.execute("SELECT COUNT(*) FROM runs WHERE target='/inbox'").fetchone()[0] == 3
    db.close()


def test_a_silent_run_on_another_machine_reads_as_stopped_after_a_while(tmp_path):
    settings = load_settings(tmp_path, environ={})
    with jobs.track(settings, "audit", "/library"):
        import dataclasses

        run = dataclasses.replace(jobs.latest(settings)[0], host="another-machine")
        assert run.state() == "running"
        assert run.state(now=time.time() + jobs.SILENT_AFTER + 60) == "stopped"


def test_a_record_that_cannot_be_written_never_stops_the_job(tmp_path):
    settings = load_settings(tmp_path, environ={})
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    jobs.jobs_path(settings).mkdir()  # a folder where the database file should be
    with jobs.track(settings, "sync", "the opt-out list") as job:
        job.progress(1, 2)
    assert jobs.latest(settings) == []


def test_the_status_command_lists_what_needs_a_look_and_says_so_in_its_exit_code(tmp_path):
    """`optout-guard status` (the desk's Status tab on the command line, for monitoring): the check
    folders and libraries come from the job record when none is given; exit 3 when anything needs a
    look, and --json lists those lines."""
    import json

    from typer.testing import CliRunner

    from optout_guard.cli import app

    killed = (
        "import os\n"
        "from optout_guard import jobs\n"
        "from optout_guard.config import load_settings\n"
        f"jobs.start(load_settings({str(tmp_path)!r}, environ={{}}), 'audit', '/srv/library')\n"
        "os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", killed]).returncode == 9
    settings = load_settings(tmp_path, environ={})
    with jobs.track(settings, "sync", "the opt-out list") as job:
        job.finish(True, {"added": 2})
    shown = CliRunner().invoke(app, ["--workspace", str(tmp_path), "status"], terminal_width=200)
    text = " ".join(shown.output.split())
    assert shown.exit_code == 3, shown.output
    assert "✗ Face index cannot be read" in text and "✓ Sync of the opt-out list: last run finished" in text
    assert "✗ Audit of /srv/library: last finished never" in text  # the library, found in the job record
    assert "✗ Audit of /srv/library: last run STOPPED without finishing" in text
    doc = json.loads(CliRunner().invoke(app, ["--workspace", str(tmp_path), "status", "--json"]).stdout)
    assert [j["state"] for j in doc["jobs"]] == ["finished", "stopped"]
    assert any(line.startswith("Audit of /srv/library: last run STOPPED") for line in doc["needs_a_look"])
