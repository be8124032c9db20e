"""The audit on a Dask cluster (issue 17): the same verdicts as a local audit, every photo exactly
once after a killed worker, no index on a worker's disk, nothing listening beyond 127.0.0.1, and
no Dask at all without --cluster."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import LFW, ROOT, make_workspace
from optout_guard.audit import library_rows, run_audit
from optout_guard.cli import app
from optout_guard.config import load_settings
from optout_guard.enroll import enroll_folder
from optout_guard.face_models import get_face_models
from optout_guard.index import FaceIndex, new_key, save_index
from optout_guard.models import embedding_fingerprint
from optout_guard.pipeline import Guard

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def key() -> str:
    return new_key()


@pytest.fixture
def encrypted_ws(tmp_path, data_dir, key, monkeypatch):
    """Hugo Chávez and Colin Powell enrolled, the index encrypted (the key in the environment, as a
    worker node would have it provisioned)."""
    monkeypatch.setenv("OPTOUT_GUARD_INDEX_KEY", key)
    return make_workspace(
        tmp_path / "ws",
        {
            "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)],
            "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)],
        },
        environ=dict(os.environ),
    )


def bytes_key(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def library(root: Path, photos: int = 24) -> Path:
    root.mkdir(parents=True)
    people = ["Hugo_Chavez", "Colin_Powell", "Tony_Blair", "Gerhard_Schroeder"]
    for n in range(photos):
        person = people[n % len(people)]
        src = LFW / person / f"{person}_{6 + n // len(people):04d}.jpg"
        shutil.copy(src, root / f"{n:03d}_{src.name}")
    return root


def rows(settings, lib: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        Path(r["path"]).name: (r["verdict"], tuple(r["reasons"]))
        for r in library_rows(settings, lib, ("block", "review", "allow"))
    }


def twin(settings, tmp_path: Path, name: str):
    """A second workspace with the same index (the audit state is per workspace)."""
    root = tmp_path / name
    shutil.copytree(settings.workspace, root)
    return load_settings(root, environ=os.environ)


def test_a_local_cluster_gives_the_local_verdicts_and_keeps_no_index_on_disk(encrypted_ws, tmp_path, key, monkeypatch):
    lib = library(tmp_path / "lib")
    here = twin(encrypted_ws, tmp_path, "local")
    run_audit(lib, here, workers=1)
    summary = run_audit(lib, encrypted_ws, cluster="local:2")
    assert summary.checked == 24 and summary.cluster_workers == 2
    assert rows(encrypted_ws, lib) == rows(here, lib)
    assert {v for v, _ in rows(here, lib).values()} >= {"block", "allow"}
    # No worker wrote the index (or any part of it) to disk.
    index_bytes = encrypted_ws.index_file.read_bytes()
    work = encrypted_ws.index_file.parent / "dask-workers"
    for path in (p for p in work.rglob("*") if p.is_file()) if work.exists() else []:
        data = path.read_bytes()
        assert index_bytes[64:128] not in data and b"embeddings.npy" not in data, path
    # An unchanged library: nothing goes to the cluster at all, and no local worker is even started
    # (each would load the models for nothing).
    import distributed

    started: list[int] = []
    real_local_cluster = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster", lambda *a, **kw: started.append(1) or real_local_cluster(*a, **kw))
    unchanged = run_audit(lib, encrypted_ws, cluster="local:1")  # (one worker is enough from here)
    assert unchanged.unchanged == 24 and unchanged.cluster_workers == 0 and not started
    # The opt-out list changes (Tony Blair opts out): the photos with faces are re-decided from their
    # stored faces, on the cluster and locally alike.
    for ws in (encrypted_ws, here):
        shutil.copytree(LFW / "Tony_Blair", ws.enrollments / "tony", ignore=lambda _d, names: sorted(names)[3:])
        index = FaceIndex.load(ws.index_file, embedding_fingerprint(), bytes_key(key))
        enroll_folder(ws.enrollments, index, ws, get_face_models())
        save_index(index, ws)
    again = run_audit(lib, encrypted_ws, cluster="local:1")
    assert again.rechecked > 0 and again.checked == 0 and again.cluster_workers == 1 and started == [1]
    assert run_audit(lib, here, workers=1).rechecked == again.rechecked
    assert rows(encrypted_ws, lib) == rows(here, lib)
    assert any("tony" in " ".join(r) for _, r in rows(here, lib).values())


def test_cluster_mode_refuses_an_unencrypted_index(tmp_path, data_dir):
    ws = make_workspace(tmp_path / "ws", {"hugo": [LFW / "Hugo_Chavez" / "Hugo_Chavez_0002.jpg"]})
    lib = library(tmp_path / "lib", 4)
    result = CliRunner().invoke(
        app, ["--workspace", str(ws.workspace), "audit", str(lib), "--cluster", "local:1"], env={"OPTOUT_GUARD_INDEX_KEY": ""}
    )
    assert result.exit_code == 2 and "encrypted index" in result.output


def test_every_photo_exactly_once_after_a_worker_is_killed(encrypted_ws, tmp_path, monkeypatch):
    """The fault drill: a worker SIGKILLed early, halfway and late in an audit (a fresh audit each
    time): every photo ends up in the state exactly once, with the local audit's verdict. The three
    audits run on one cluster of two worker processes (its address, as for a cluster an IT person
    starts): a killed worker is started again by its nanny, as on a real cluster, and starting a
    cluster for each audit cost ~10 CPU-seconds more. `local:N` is tested above."""
    import dask
    from distributed import LocalCluster

    import optout_guard.cluster as cluster

    monkeypatch.setattr(cluster, "BATCH", 2)  # many small tasks, so that a kill lands mid-audit
    lib = library(tmp_path / "lib", 40)
    here = twin(encrypted_ws, tmp_path, "local")
    run_audit(lib, here, workers=1)
    expected = rows(here, lib)
    real_results = cluster.Cluster.results
    moments = (3, 16, 29)  # results seen when the kill lands (of 40; batches of 2)
    with dask.config.set(cluster.HARDENED), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
        local_directory=str(tmp_path / "dask-workers"), silence_logs=40,
    ) as shared:  # fmt: skip
        for n, moment in enumerate(moments):
            _audit_with_a_kill(cluster, real_results, monkeypatch, lib, twin(encrypted_ws, tmp_path, f"drill{n}"),
                               shared.scheduler_address, moment, expected)  # fmt: skip


def _audit_with_a_kill(cluster, real_results, monkeypatch, lib, ws, address, moment, expected) -> None:
    """One audit on the cluster at ``address``, a worker SIGKILLed after ``moment`` results."""
    killed: list[int] = []

    def results_with_a_kill(self, tasks, keep, scope_of, batch=None, faces_of=None):
        pids = self.client.run(os.getpid)
        for seen, item in enumerate(real_results(self, tasks, keep, scope_of, batch, faces_of), start=1):
            if seen == moment and not killed:  # a worker dies with batches in flight
                victim = list(pids.values())[seen % len(pids)]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            yield item

    monkeypatch.setattr(cluster.Cluster, "results", results_with_a_kill)
    summary = run_audit(lib, ws, cluster=address)
    assert killed and summary.checked == 40, (moment, summary)
    assert rows(ws, lib) == expected, moment


def test_nothing_listens_beyond_localhost_and_audit_without_cluster_never_imports_dask(encrypted_ws, tmp_path, key):
    lib = library(tmp_path / "lib", 4)
    # A real scheduler and worker, as an IT person starts them (here without TLS, on 127.0.0.1).
    env = {**os.environ, "OPTOUT_GUARD_INDEX_KEY": key, "PYTHONUNBUFFERED": "1"}
    with real_cluster(env, "tcp") as (address, scheduler, worker):
        result = CliRunner().invoke(app, ["--workspace", str(encrypted_ws.workspace), "audit", str(lib), "--cluster", address])
        assert result.exit_code in (1, 3), result.output
        listening = _listening(scheduler.pid) + _listening(worker.pid)
        assert listening and all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening
    code = (
        "import sys, json; from pathlib import Path; from optout_guard.audit import run_audit; "
        "from optout_guard.config import load_settings; "
        f"run_audit(Path({str(lib)!r}), load_settings({str(encrypted_ws.workspace)!r})); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@contextlib.contextmanager
def real_cluster(env: dict[str, str], scheme: str):
    """A real `optout-guard scheduler` and one `worker` as subprocesses on 127.0.0.1, as an IT person
    starts them: yields (address, scheduler process, worker process); both stopped afterwards."""
    exe = [sys.executable, "-c", "from optout_guard.cli import run; run()"]
    scheduler = subprocess.Popen([*exe, "scheduler", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(scheduler.stderr), daemon=True).start()  # type: ignore[arg-type]
    worker = None
    try:
        address = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            address = next((ln.split("at:")[-1].strip() for ln in list(lines) if "Scheduler at:" in ln), None)
            time.sleep(0.2)
        assert address and address.startswith(f"{scheme}://127.0.0.1:"), lines
        worker = subprocess.Popen([*exe, "worker", "--scheduler", address], env=env, stderr=subprocess.DEVNULL)
        time.sleep(3)
        yield address, scheduler, worker
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of a process and its children (Linux /proc)."""
    pids = {pid}
    for _ in range(3):
        for child in Path("/proc").glob("[0-9]*"):
            try:
                ppid = int((child / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in pids:
                pids.add(int(child.name))
    inodes = set()
    for p in pids:
        try:
            for fd in Path(f"/proc/{p}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            if width == 8:
                ip = ".".join(str(int(hex_ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                ip = "::1" if hex_ip == "00000000000000000000000001000000" else ("::" if set(hex_ip) == {"0"} else hex_ip)
            found.append((ip, int(hex_port, 16)))
    return found


def _pki(folder: Path) -> dict[str, Path]:
    """A throw-away district CA and one certificate for 127.0.0.1 (scheduler, worker and
    coordinator share it here), and a certificate from *another* CA."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def write(name: str, data: bytes) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    def ca(label: str):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2)).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return key, cert

    def leaf(ca_key, ca_cert, label: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        return key, cert

    pem = serialization.Encoding.PEM
    raw = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    ca_key, ca_cert = ca("district CA")
    key, cert = leaf(ca_key, ca_cert, "audit")
    other_ca_key, other_ca_cert = ca("another CA")
    other_key, other_cert = leaf(other_ca_key, other_ca_cert, "intruder")
    return {
        "ca": write("ca.pem", ca_cert.public_bytes(pem)),
        "cert": write("cert.pem", cert.public_bytes(pem)),
        "key": write("key.pem", key.private_bytes(pem, raw, none)),
        "other_cert": write("other.pem", other_cert.public_bytes(pem)),
        "other_key": write("other-key.pem", other_key.private_bytes(pem, raw, none)),
    }


def test_over_tls_only_holders_of_a_district_certificate_get_in(encrypted_ws, tmp_path, key):
    from distributed import Client
    from distributed.security import Security

    pki = _pki(tmp_path / "pki")
    tls = {
        "OPTOUT_GUARD_TLS_CA": str(pki["ca"]),
        "OPTOUT_GUARD_TLS_CERT": str(pki["cert"]),
        "OPTOUT_GUARD_TLS_KEY": str(pki["key"]),
    }
    env = {**os.environ, "OPTOUT_GUARD_INDEX_KEY": key, "PYTHONUNBUFFERED": "1", **tls}
    with real_cluster(env, "tls") as (address, _scheduler, _worker):
        lib = library(tmp_path / "lib", 6)
        for name, value in tls.items():
            os.environ[name] = value
        try:
            summary = run_audit(lib, encrypted_ws, cluster=address)
        finally:
            for name in tls:
                os.environ.pop(name, None)
        assert summary.checked == 6
        # No certificate, a certificate from another CA, or plain tcp: refused.
        plain = address.replace("tls://", "tcp://")
        intruder = Security(
            tls_ca_file=str(pki["ca"]), tls_client_cert=str(pki["other_cert"]), tls_client_key=str(pki["other_key"])
        )
        no_certificate = Security(tls_ca_file=str(pki["ca"]))  # trusts the CA, but shows no certificate of its own
        for attempt, security in ((address, no_certificate), (address, intruder), (plain, None)):
            # (Without a certificate Dask will not even start a TLS connection: TypeError.)
            with pytest.raises((OSError, TimeoutError, ValueError, TypeError)):
                Client(attempt, security=security, timeout=5).close()
            # The refused Client is collected here: collected inside the next Client's start-up, its
            # __del__ closes a loop that start-up holds, and distributed deadlocks (seen once in CI).
            gc.collect()


@pytest.mark.parametrize(
    "argv",
    [["scheduler", "--host", "192.0.2.10"], ["scheduler", "--host", "0.0.0.0"], ["scheduler", "--host", "audit-server"],
     ["worker", "--scheduler", "tcp://192.0.2.10:8786"], ["worker", "--scheduler", "tls://192.0.2.10:8786"]],
)
def test_the_cluster_refuses_plain_tcp_off_this_machine(argv, monkeypatch):
    """Issue 28: Dask's protocol runs pickled code; off loopback it is TLS with the district's
    certificates or the command refuses to start (exit 2, saying what to set). Nothing is bound."""
    for name in ("CA", "CERT", "KEY"):
        monkeypatch.delenv(f"OPTOUT_GUARD_TLS_{name}", raising=False)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "OPTOUT_GUARD_TLS_CA" in result.output


def test_loopback_is_this_machine_only():
    from optout_guard.cluster import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "10.0.0.5", "audit-server", "192.168.1.2", "::"))


def test_a_whole_file_answer_counts_in_a_local_and_a_cluster_audit_alike(encrypted_ws, tmp_path):
    """Issue 29, B1: a reviewer's answer for a file with no faces (here one that cannot be decoded:
    "an opted-out student is in it", said by a person who opened it elsewhere) never reached the
    audit: the plan re-decided only photos with faces, and the cluster dropped answers for results
    without faces. Both audits now give the person's answer."""
    from optout_guard.review import UNNAMED, ReviewBook, book_path

    lib = library(tmp_path / "lib", photos=4)
    (lib / "cut.jpg").write_bytes((LFW / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()[:3000])
    here = twin(encrypted_ws, tmp_path, "local")
    for ws, cluster in ((here, None), (encrypted_ws, "local:1")):  # one worker: its path is the same as N's
        run_audit(lib, ws, workers=1, cluster=cluster)
        assert rows(ws, lib)["cut.jpg"][0] == "review"
        book = ReviewBook(book_path(ws))
        result = Guard(ws).check(lib / "cut.jpg")
        book.add_result(result, "audit")
        card = next(c for c in book.queue(50) if c.sha256 == result.sha256)
        book.settle(card.id, UNNAMED, "officer")
        again = run_audit(lib, ws, workers=1, cluster=cluster)
        assert again.rechecked == 1, (cluster, again)
        verdict, reasons = rows(ws, lib)["cut.jpg"]
        assert verdict == "block" and any("said officer" in r for r in reasons), (cluster, reasons)


def test_a_local_cluster_writes_nothing_outside_the_workspace_and_stays_quiet(encrypted_ws, tmp_path, monkeypatch, caplog):
    """Issue 28: `audit --cluster local:2` left $TMPDIR/dask-scratch-space/ outside the workspace, and
    ~40 lines of Dask INFO (a dashboard address among them) buried the summary."""
    import logging
    import tempfile

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    lib = library(tmp_path / "lib", photos=4)
    with caplog.at_level(logging.INFO):
        run_audit(lib, encrypted_ws, cluster="local:1")  # a worker process of its own, as with N
    assert not (scratch / "dask-scratch-space").exists(), sorted(p.name for p in scratch.iterdir())
    noisy = [r.getMessage() for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    assert not noisy, noisy[:5]
    assert not any("dashboard at" in r.getMessage() for r in caplog.records)
