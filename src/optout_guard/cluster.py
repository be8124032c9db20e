"""The audit on several machines: Dask distributed runs the checks, the coordinator keeps the state.

Only imported with ``audit --cluster`` (or ``optout-guard scheduler`` / ``worker``): without it Dask
is never loaded. What stays on the coordinator (the machine running ``audit``): the listing, the
SQLite state, the report, the activity log, the review book and the lock. What goes to a worker:
batches of paths (a few dozen photos per task: Dask costs milliseconds of coordinator time per
task) and, once per worker, the index **as stored** — AES-GCM ciphertext, decrypted only in the
worker's memory with a key provisioned on that worker. Each batch carries the coordinator's gallery
fingerprint; a worker holding another gallery answers *review*, never a decision against the wrong
list. Reviewers' decisions are applied on the coordinator, so a cluster audit and a local audit give
the same verdicts.

The hardened Dask settings (``HARDENED``) are applied to every client, scheduler and worker this
module starts: no ``MALLOC_TRIM_THRESHOLD_`` in worker processes (measured: it made this workload
page-fault constantly, ~2× slower), HTTP routes of scheduler and workers emptied (Dask's dashboard
and info pages would serve logs and call stacks with photo paths, unauthenticated).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from optout_guard.config import Settings
from optout_guard.errors import ConfigError
from optout_guard.scope import Scope
from optout_guard.types import ScanResult

if TYPE_CHECKING:
    from optout_guard.audit.task import Checked

log = logging.getLogger(__name__)

BATCH = 32  # photos per task
PLUGIN = "optout-guard"
HARDENED: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
    "distributed.scheduler.http.routes": [],
    "distributed.worker.http.routes": [],
    "distributed.admin.system-monitor.gil.enabled": False,
}

Task = tuple[str, str, str | None]  # (kind, path, stored faces JSON)


def require_key(settings: Settings) -> bytes:
    """Cluster mode ships the index only encrypted: without a key it refuses to start."""
    from optout_guard.index import index_key

    key = index_key(settings)
    if key is None:
        raise ConfigError(
            "audit --cluster needs an encrypted index (the index travels to the workers as stored, and a decrypted "
            "copy could be spilled to a worker's disk): make a key with optout-guard key new FILE, set index_key_file "
            "(or OPTOUT_GUARD_INDEX_KEY), run optout-guard enroll --rebuild, and provision the same key on every worker"
        )
    return key


class GuardPlugin(WorkerPlugin):
    """Loads the models and the (encrypted) index once per worker process."""

    name = PLUGIN

    def __init__(self, settings: Settings, index_blob: bytes, fingerprint: str) -> None:
        self.settings = settings
        self.index_blob = index_blob
        self.fingerprint = fingerprint
        self.guard: Any = None

    def setup(self, worker: Any) -> None:
        import cv2

        from optout_guard.index import FaceIndex, index_key
        from optout_guard.pipeline import Guard, NoDecisions

        cv2.setNumThreads(1)
        # The key comes from the worker's own environment or key file, never from the coordinator.
        index = FaceIndex.from_bytes(self.index_blob, self.fingerprint, index_key(self.settings), "<from the coordinator>")
        self.index_blob = b""
        # Reviewers' decisions are applied on the coordinator (the review book lives there).
        self.guard = Guard(replace(self.settings, workers=1), index=index, settler=NoDecisions())
        self.guard.require_models()

    def teardown(self, worker: Any) -> None:
        self.guard = None


def check_batch(tasks: list[tuple[Task, bool, Scope]], gallery: str) -> list[tuple[Task, Checked]]:
    """Runs on a worker: check a batch with the worker's Guard (loaded once by GuardPlugin)."""
    from distributed import get_worker

    from optout_guard.audit.task import audit_task

    plugin = get_worker().plugins[PLUGIN]
    guard = getattr(plugin, "guard", None)  # a GuardPlugin (set up when the worker started)
    out: list[tuple[Task, Checked]] = []
    for task, keep, scope in tasks:
        kind, path, faces = task
        if guard is None or guard.index.gallery_fingerprint() != gallery:
            why = "checked by a worker holding another opt-out list; check it again"
            out.append((task, (ScanResult.fail_closed(path, why, retry=True), None)))
            continue
        out.append((task, audit_task(guard, path, kind, faces, keep, scope)))
    return out


class Cluster:
    """A connection to a Dask cluster (or a local one) ready to check batches of photos."""

    def __init__(self, spec: str, settings: Settings, guard: Any) -> None:
        import dask
        from distributed import Client

        # Every file Dask writes stays in the workspace's private folder (it defaulted to
        # $TMPDIR/dask-scratch-space), and its INFO lines (and a dashboard address that serves an
        # empty page) do not bury the audit's summary.
        self._config = dask.config.set({**HARDENED, "temporary-directory": str(settings.state_dir / "dask-scratch")})
        self._config.__enter__()
        for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                     "distributed.core", "distributed.http.proxy"):  # fmt: skip
            logging.getLogger(name).setLevel(logging.WARNING)
        self.spec = spec
        self.local: Any = None
        self.client: Any = None
        self._local_workers = 0
        key = require_key(settings)
        del key  # only checked: workers decrypt with their own copy
        blob = settings.index_file.read_bytes()  # ciphertext, exactly as stored
        from optout_guard.models import embedding_fingerprint

        self._plugin = GuardPlugin(settings, blob, embedding_fingerprint())
        self._settings = settings
        if spec.startswith("local:"):
            try:
                self._local_workers = int(spec.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"--cluster {spec!r}: use local:N with N workers, or tls://HOST:PORT") from None
            # Started by the first photo that needs checking: an audit of an unchanged library (most
            # nights) starts no worker processes, each of which would load the models for nothing.
        elif spec.startswith(("tls://", "tcp://")):
            security = _security(settings) if spec.startswith("tls://") else None
            host = spec.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
            if spec.startswith("tcp://") and not is_loopback(host):
                raise ConfigError(
                    "--cluster over plain tcp:// is for this machine only; across machines use tls:// (docs/cluster.md)"
                )
            # A cluster someone runs is reached at once: a wrong address or certificate is said
            # before the library is listed, not after.
            self.client = Client(spec, security=security, timeout=30)
            self._ready()
        else:
            raise ConfigError(f"--cluster {spec!r}: use local:N, or tls://HOST:PORT of your optout-guard scheduler")
        self.gallery = guard.index.gallery_fingerprint()
        self.coordinator = guard

    def _start(self) -> None:
        """Start the local cluster (local:N), once."""
        if self.client is not None:
            return
        from distributed import Client, LocalCluster

        self.local = LocalCluster(
            n_workers=self._local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
            local_directory=str(self._settings.state_dir / "dask-workers"), silence_logs=40,
        )  # fmt: skip
        self.client = Client(self.local)
        self._ready()

    def _ready(self) -> None:
        self.client.register_plugin(self._plugin, name=PLUGIN)
        log.info("audit on the Dask cluster %s: %d workers", self.spec, self.workers)

    @property
    def workers(self) -> int:
        """Workers of the cluster (0: a local cluster not started, nothing having needed it)."""
        if self.client is None:
            return 0
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def results(
        self,
        tasks: Iterable[Task],
        keep: bool,
        scope_of: Callable[[str], Scope],
        batch: int | None = None,
        faces_of: Callable[[str], str | None] | None = None,
    ) -> Iterator[tuple[Task, Checked]]:
        """Every task checked on the cluster, in the order they finish (a bounded number of batches
        in flight), with reviewers' decisions applied here. A batch whose worker died is redone by
        Dask; if it fails for good, its photos are *review* (retried next run), never allow."""
        from distributed import as_completed

        batch = batch or BATCH
        faces_of = faces_of or (lambda _name: None)

        def batches() -> Iterator[list[tuple[Task, bool, Scope]]]:
            # Made as they are sent: a re-check's stored faces are read from the state only then.
            it = iter(tasks)
            while chunk := list(itertools.islice(it, batch)):
                yield [((k, p, f if f is not None or k != "recheck" else faces_of(p)), keep, scope_of(p))
                       for k, p, f in chunk]  # fmt: skip

        pending = batches()
        first = next(pending, None)
        if first is None:
            return  # nothing to check: a local cluster is not even started
        pending = itertools.chain([first], pending)
        self._start()
        in_flight = max(2, 4 * max(1, self.workers))
        futures = {}
        for items in (b for _, b in zip(range(in_flight), pending, strict=False)):
            futures[self.client.submit(check_batch, items, self.gallery, pure=False, retries=3)] = items
        done = as_completed(list(futures))
        for future in done:
            items = futures.pop(future)
            try:
                results = future.result()
            except Exception as exc:
                log.exception("a batch of %d photos could not be run on the cluster", len(items))
                why = f"could not be checked on the cluster ({type(exc).__name__}); check it again"
                results = [(t, (ScanResult.fail_closed(t[1], why, retry=True), None)) for t, _, _ in items]
            for task, (result, vectors) in results:
                yield task, (self._with_reviews(result), vectors)
            nxt = next(pending, None)
            if nxt is not None:
                f = self.client.submit(check_batch, nxt, self.gallery, pure=False, retries=3)
                futures[f] = nxt
                done.add(f)

    def _with_reviews(self, result: ScanResult) -> ScanResult:
        from optout_guard.review import apply_decisions

        # Workers decide without the review book; its answers count here, as in a local audit
        # (a whole-file answer too: a face-less result used to be passed over).
        return apply_decisions(self.coordinator.settler, result)

    def close(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
            if self.local is not None:
                self.local.close()
        finally:
            self._config.__exit__(None, None, None)


_TLS_NEEDED = (
    "a tls:// cluster needs OPTOUT_GUARD_TLS_CA, OPTOUT_GUARD_TLS_CERT and OPTOUT_GUARD_TLS_KEY (the district CA, "
    "this machine's certificate and its key): see docs/cluster.md"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost). A name that is not an
    address counts as the network (it may resolve anywhere), as does an empty host (every address)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _security(settings: Settings) -> Any:
    """Mutual TLS from the district CA: OPTOUT_GUARD_TLS_CA, _TLS_CERT, _TLS_KEY (files)."""
    from distributed.security import Security

    ca, cert, key = (os.environ.get(f"OPTOUT_GUARD_TLS_{n}") for n in ("CA", "CERT", "KEY"))
    if not (ca and cert and key):
        raise ConfigError(_TLS_NEEDED)
    for f in (ca, cert, key):
        if not Path(f).is_file():
            raise ConfigError(f"TLS file {f} does not exist")
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def serve(role: str, address: str, port: int = 8786) -> None:
    """``optout-guard scheduler`` / ``worker``: Dask's own, with the hardened settings, TLS when the
    OPTOUT_GUARD_TLS_* files are set, and no dashboard."""
    import dask

    tls = all(os.environ.get(f"OPTOUT_GUARD_TLS_{n}") for n in ("CA", "CERT", "KEY"))
    # Dask's protocol runs pickled code by design: off this machine it is TLS with the district's
    # certificates or nothing (issue 28: a scheduler on a LAN address served plain tcp://).
    if role == "scheduler":
        where = address or "0.0.0.0"
    else:
        where = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        if address.startswith("tls://") and not tls:
            raise ConfigError(_TLS_NEEDED)
    if not tls and not is_loopback(where):
        raise ConfigError(
            f"refusing to serve the cluster's protocol unencrypted on {where}: set OPTOUT_GUARD_TLS_CA, "
            "OPTOUT_GUARD_TLS_CERT and OPTOUT_GUARD_TLS_KEY (docs/cluster.md), or use 127.0.0.1 for this machine only"
        )
    with dask.config.set(HARDENED):
        # --no-dashboard alone still serves plain HTTP on 0.0.0.0 (measured): bind it to loopback too.
        args: list[str] = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        if tls:
            args += [
                "--tls-ca-file", os.environ["OPTOUT_GUARD_TLS_CA"], "--tls-cert", os.environ["OPTOUT_GUARD_TLS_CERT"],
                "--tls-key", os.environ["OPTOUT_GUARD_TLS_KEY"],
            ]  # fmt: skip
        if role == "scheduler":
            from distributed.cli.dask_scheduler import main

            scheme = "tls" if tls else "tcp"
            main([*args, "--host", address or "127.0.0.1", "--port", str(port), "--protocol", scheme], standalone_mode=False)
        else:
            from distributed.cli.dask_worker import main

            local = address.split("://", 1)[-1].startswith(("127.", "localhost"))
            main([*args, "--nthreads", "1", *(["--host", "127.0.0.1"] if local else []), address], standalone_mode=False)
