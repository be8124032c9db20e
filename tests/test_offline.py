"""Nothing leaves the machine: enroll, check, watch --once and audit run with every network call
refused in-process."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optout_guard.cli import app

_NETWORK_EVENTS = ("socket.__new__", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request")
_state = {"armed": False, "attempts": []}


def _hook(event: str, args: tuple) -> None:
    if _state["armed"] and event in _NETWORK_EVENTS:
        _state["attempts"].append(event)
        raise OSError(f"network access blocked by test: {event}")


sys.addaudithook(_hook)  # audit hooks cannot be removed; the flag keeps it idle outside these tests


@pytest.fixture
def no_network():
    _state["attempts"].clear()
    _state["armed"] = True
    try:
        yield _state["attempts"]
    finally:
        _state["armed"] = False


def test_the_guard_itself_catches_a_network_attempt(no_network):
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    assert no_network  # so the test below could fail


def test_enroll_and_check_make_no_network_calls(tmp_path, samples, no_network):
    (tmp_path / "enrollments" / "s1").mkdir(parents=True)
    shutil.copy(samples["grace_hopper"], tmp_path / "enrollments" / "s1" / "ref.jpg")
    runner = CliRunner()
    enrolled = runner.invoke(app, ["--workspace", str(tmp_path), "enroll"], catch_exceptions=False)
    assert enrolled.exit_code == 0, enrolled.output
    checked = runner.invoke(
        app,
        [
            "--workspace",
            str(tmp_path),
            "check",
            "--annotate",
            str(tmp_path / "out"),
            str(samples["grace_hopper"]),
            str(samples["astronaut"]),
        ],
        catch_exceptions=False,
    )
    assert checked.exit_code == 1, checked.output  # Grace Hopper blocked against her own reference

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(samples["astronaut"], inbox / "visitor.png")
    watched = runner.invoke(app, ["--workspace", str(tmp_path), "watch", str(inbox), "--once", "--settle", "0.1"])
    assert watched.exit_code == 0, watched.output
    assert (inbox / "allowed" / "visitor.png").exists()

    library = tmp_path / "library"
    library.mkdir()
    shutil.copy(samples["grace_hopper"], library / "a.jpg")
    audited = runner.invoke(
        app, ["--workspace", str(tmp_path), "audit", str(library), "--workers", "1", "--report", str(tmp_path / "r")]
    )
    assert audited.exit_code == 1, audited.output
    assert no_network == []


def test_onnxruntime_telemetry_is_off_before_anything_loads_it(tmp_path, samples):
    """onnxruntime 1.29+ starts Microsoft's telemetry on import (a device id, an event queue under
    ~/.cache/Microsoft/DeveloperTools/, an uploader; issue 28). A whole check, in a process whose
    environment does not say anything about it, must leave no trace of it in the home folder."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env |= {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache")}
    (tmp_path / "home").mkdir()
    ws = tmp_path / "ws"
    (ws / "enrollments" / "grace").mkdir(parents=True)
    shutil.copy(samples["grace_hopper"], ws / "enrollments" / "grace" / "a.jpg")
    cli = [str(Path(sys.executable).with_name("optout-guard")), "--workspace", str(ws)]
    subprocess.run([*cli, "enroll"], env=env, check=True, capture_output=True)
    done = subprocess.run([*cli, "check", str(samples["astronaut"])], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "1 photos: 0 blocked, 0 to review, 1 allowed" in done.stdout, done.stdout + done.stderr
    written = [str(p.relative_to(tmp_path / "home")) for p in (tmp_path / "home").rglob("*")]
    assert not any("Microsoft" in p or "onnxruntime" in p for p in written), written
