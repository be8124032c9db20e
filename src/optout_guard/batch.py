"""One check of several photos and folders, as ``optout-guard check`` and scripts run it: collect
the files → check each (in worker processes for a large batch) → decide each child once across the
check (its photos are one event) → record it in the activity log."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from optout_guard.folders import Skipped, UnreadableFolder, collect_photos, unreadable_folder
from optout_guard.pipeline import Guard, Redaction
from optout_guard.pool import run_in_workers
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.types import ScanResult


@dataclass
class CheckRun:
    results: list[ScanResult]
    skipped: list[tuple[str, str]]  # (path, why): files that are neither photos nor clips, not checked
    scope: Scope


def check_paths(
    guard: Guard,
    paths: list[Path],
    annotate: Path | None = None,
    redact: Path | None = None,
    scope: str | None = None,
    grade: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckRun:
    """Check ``paths`` against the students of the scope named (``scope``/``grade``; None = the
    district). ``progress(total)`` is called once with the number of items, then ``progress(-1)``
    after each. A missing index or an unknown scope raise before any photo; a broken install before
    any result is returned."""
    from optout_guard.activity_log import ActivityLog, photo_details
    from optout_guard.scope import workspace_scope

    settings = guard.settings
    chosen = WHOLE_DISTRICT
    if settings.recognition:
        guard.require_index()  # a missing or foreign index: said before any photo
        chosen = workspace_scope(settings.workspace, scope, grade, set(guard.index.protected_students()))
    items = list(collect_photos(paths, exclude=[p for p in (annotate, redact) if p is not None]))
    photos = sum(isinstance(i, Path) for i in items)
    workers = settings.worker_count(photos)
    if workers > 1:
        guard.require_models()  # a broken install is exit 2 before any worker starts
    if progress:
        progress(len(items))
    results: list[ScanResult] = []
    skipped: list[tuple[str, str]] = []
    redaction = Redaction(redact) if redact is not None else None
    for item in check_items(guard, items, annotate, workers=workers, redact=redaction, scope=chosen):
        if isinstance(item, Skipped):
            skipped.append((item.path, item.reason))
        else:
            results.append(item)
        if progress:
            progress(-1)
    # In one process, the first photo is decoded and searched for faces while the embedder still
    # loads (issue 30). A broken install is exit 2 all the same, before anything is printed or
    # logged: a model that failed to load (a photo it was needed for became a review) raises here.
    guard.require_models()
    if settings.recognition and len(results) > 1:
        from optout_guard.events import decide_across

        results = decide_across(guard, results, chosen)  # a child held in several photos is decided once
    ActivityLog(settings).record("check", photos=[photo_details(r) for r in results])
    return CheckRun(results, skipped, chosen)


def check_many(
    guard: Guard,
    paths: Iterable[Path | str],
    annotate_dir: Path | None = None,
    workers: int = 1,
    redact: Redaction | None = None,
    scope: Scope = WHOLE_DISTRICT,
) -> Iterator[ScanResult | Skipped]:
    """Check everything under ``paths``, in order. With ``workers`` > 1 photos are checked in
    that many processes (each loads the models once); results still come back in order."""
    exclude = [p for p in (annotate_dir, redact.folder if redact else None) if p is not None]
    yield from check_items(guard, collect_photos(paths, exclude=exclude), annotate_dir, workers, redact, scope)


def check_items(
    guard: Guard,
    items: Iterable[Path | Skipped | UnreadableFolder],
    annotate_dir: Path | None = None,
    workers: int = 1,
    redact: Redaction | None = None,
    scope: Scope = WHOLE_DISTRICT,
) -> Iterator[ScanResult | Skipped]:
    """Check what :func:`folders.collect_photos` found (see :func:`check_many`): a folder that could
    not be read is a *review*, a file that is neither photo nor clip is passed on as skipped."""
    if workers > 1:
        jobs = ((item, (item, annotate_dir, redact, scope) if isinstance(item, Path) else None) for item in items)
        for item, result in run_in_workers(guard.settings, workers, jobs, _check_one, Guard):
            if result is not None:
                yield result
            elif isinstance(item, UnreadableFolder):
                yield unreadable_folder(item)
            else:
                yield item
        return
    for item in items:
        if isinstance(item, Skipped):
            yield item
        elif isinstance(item, UnreadableFolder):
            yield unreadable_folder(item)
        else:
            yield guard.check(item, annotate_dir, redact=redact, scope=scope)


def _check_one(guard: Guard, path: Path, annotate_dir: Path | None, redact: Redaction | None, scope: Scope) -> ScanResult:
    return guard.check(path, annotate_dir, redact=redact, scope=scope)  # in a worker process (pool)
