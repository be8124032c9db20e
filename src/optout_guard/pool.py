"""Checking in several processes: one Guard per worker process, its models loaded once.

A worker that dies takes only the photo it was checking with it: that photo becomes *review*
("the checking process stopped"), never *allow*; results come back in the order of the jobs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from optout_guard.config import Settings
from optout_guard.types import ScanResult

log = logging.getLogger(__name__)
R = TypeVar("R")  # what the job function returns (a ScanResult; the audit's adds embeddings)

if TYPE_CHECKING:
    from optout_guard.pipeline import Guard

_worker_guard: Guard | None = None


def _init_worker(settings: Settings, make_guard: Callable[[Settings], Guard]) -> None:
    global _worker_guard
    import cv2

    cv2.setNumThreads(1)  # one process per core: no thread pools fighting inside each
    _worker_guard = make_guard(settings)


def _call_in_worker(fn: Callable[..., R], args: tuple) -> R:
    assert _worker_guard is not None
    return fn(_worker_guard, *args)


def run_in_workers(
    settings: Settings,
    workers: int,
    jobs: Iterable[tuple[Any, tuple | None]],
    fn: Callable[..., R],
    make_guard: Callable[[Settings], Guard],
) -> Iterator[tuple[Any, R | ScanResult | None]]:
    """Run ``fn(guard, *args)`` for each ``(key, args)`` job in ``workers`` processes, each holding
    its own Guard made by ``make_guard(settings)`` (models loaded once per worker; the caller passes
    ``pipeline.Guard``, so this module never imports the pipeline that imports it). Yields ``(key,
    result)`` in job order; a job with ``args`` None is passed through with result None. ``args[0]``
    is the photo's path: if the worker dies on it, that photo becomes *review*, never *allow*."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # Workers inherit the environment when they start: one BLAS thread each, since the processes
    # already use every core (and 2 × N BLAS threads would only contend).
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    context = multiprocessing.get_context("spawn")  # fork after BLAS threads started can deadlock
    pending: deque[tuple[Any, tuple | None, Any]] = deque()
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings, make_guard)) as pool:

            def drain(limit: int) -> Iterator[tuple[Any, R | ScanResult | None]]:
                while len(pending) > limit:
                    key, args, future = pending.popleft()
                    if future is None:
                        yield key, None
                        continue
                    try:
                        yield key, future.result()
                    except Exception as exc:
                        log.exception("a checking process failed on %s", args[0] if args else key)
                        why = f"could not be checked (the checking process stopped: {type(exc).__name__}); check it again"
                        yield key, ScanResult.fail_closed(str(args[0]) if args else "?", why, retry=True)

            for key, args in jobs:
                pending.append((key, args, None if args is None else pool.submit(_call_in_worker, fn, args)))
                yield from drain(4 * workers)  # bounded look-ahead keeps memory flat on big folders
            yield from drain(0)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
