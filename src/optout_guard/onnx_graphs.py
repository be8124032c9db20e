"""The graphs onnxruntime runs, kept between processes (CenterFace's and dlib's ResNet's).

A model file's graph is built once (the ResNet from dlib's weights, CenterFace with a free input
size), optimised by onnxruntime, and kept in a private cache; every later process starts from it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optout_guard.fsutil import PRIVATE_FILE, atomic_write, private_dir, sha256_file

_hashes: dict[Path, str] = {}
_hash_locks: dict[Path, threading.Lock] = {}
_hash_locks_guard = threading.Lock()


def file_sha256(path: Path) -> str:
    """A model file's sha256, computed once per process: the ResNet's weights key its graph (loading
    thread) and the index's fingerprint (another thread); the second waits for the first's result
    instead of hashing the 21 MB again at the same time (issue 30)."""
    with _hash_locks_guard:
        lock = _hash_locks.setdefault(path, threading.Lock())
    with lock:
        if path not in _hashes:
            _hashes[path] = sha256_file(path)
        return _hashes[path]


# ---- the graphs onnxruntime runs, kept between processes ------------------------------------------
# Building the ResNet's graph from dlib's weights (and freeing CenterFace's fixed input size), then
# letting onnxruntime optimise it, took ~0.25 s of every command's start, `import onnx` included; the
# result is the same every time on one machine. So the optimised graph is kept in a private cache,
# under the sha256 of the model file it was built from, the builder's version, onnxruntime's
# version and the processor (an optimised graph may use this CPU's instructions), and beside it the
# sha256 of its bytes: a graph whose hash does not match (half-written, altered) is rebuilt, never
# run. Only public model weights are kept there; nothing about a student.
GRAPH_BUILDER_VERSION = 1


def graph_cache_dir() -> Path:
    """``$OPTOUT_GUARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/optout-guard``, else ``~/.cache/optout-guard``."""
    override = os.environ.get("OPTOUT_GUARD_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "optout-guard"


@functools.cache
def _processor() -> str:
    """This machine's processor and its instruction sets, as a short digest."""
    import platform

    flags = ""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return hashlib.sha256(f"{platform.machine()}|{platform.processor()}|{flags}".encode()).hexdigest()[:12]


def session_options() -> Any:
    """How both networks run. A pool worker gets OMP_NUM_THREADS=1 (one process per core); alone, a
    process uses every core (0). Worker threads sleep as soon as a run ends, not spin: spinning
    once paid for a clip's hundreds of back-to-back runs, but since a clip looks only at what
    changed, the runs are fewer and the spinning threads take the cores from decoding, landmarks
    and the copy's encoder (2 cores, alternating runs, 2026-12-03: a 60 s clip's check 6.8-7.3 ->
    6.0-6.4 s; one photo in one process 68-72 -> 43-44 ms, as a whole command median 0.58 ->
    0.52 s; a 26-face class photo and a hand-held clip the same within noise)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnx_session(name: str, source: Path, build: Callable[[], bytes], options: Any) -> Any:
    """An onnxruntime session of the graph ``build()`` makes from the model file ``source``: from the
    cache when an intact copy, made here from the same file by the same builder and runtime, is
    there; built (and kept, when the cache folder can be written) otherwise. A cache that cannot be
    read or written only costs the build."""
    import onnxruntime as ort

    key = f"{name}-v{GRAPH_BUILDER_VERSION}-{file_sha256(source)[:32]}-ort{ort.__version__}-{_processor()}"
    folder = graph_cache_dir()
    graph_file, hash_file = folder / f"{key}.onnx", folder / f"{key}.sha256"
    providers = ["CPUExecutionProvider"]
    with contextlib.suppress(OSError):
        graph = graph_file.read_bytes()
        if hashlib.sha256(graph).hexdigest() == hash_file.read_text().strip():
            with contextlib.suppress(Exception):  # one this runtime refuses is rebuilt below
                return ort.InferenceSession(graph, options, providers=providers)
    written = None
    with contextlib.suppress(OSError):
        private_dir(folder)
        written = folder / f".tmp-graph-{os.getpid()}-{threading.get_ident()}-{key}.onnx"
        options.optimized_model_filepath = str(written)  # onnxruntime writes the optimised graph there
        options.log_severity_level = 3  # its warning that the graph suits this machine only: the key says so
    session = ort.InferenceSession(build(), options, providers=providers)
    if written is not None:
        with contextlib.suppress(OSError):
            digest = hashlib.sha256(written.read_bytes()).hexdigest()
            os.chmod(written, PRIVATE_FILE)
            atomic_write(hash_file, digest + "\n", prefix=".tmp-graph-")
            os.replace(written, graph_file)
        with contextlib.suppress(OSError):
            written.unlink(missing_ok=True)
    return session
