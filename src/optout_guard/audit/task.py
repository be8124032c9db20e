"""One photo's check for the audit, wherever it runs: in the audit's process, a pool worker or a
Dask worker (``cluster`` imports this module, not the run that may start a cluster)."""

from __future__ import annotations

import os

from optout_guard import stored_faces
from optout_guard.pipeline import FaceVectors, Guard
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.types import ScanResult


def stat_now(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(name)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


# ---- the work done in (worker) processes ---------------------------------------------------------
# A result, and its faces' embeddings when the opt-in cache wants them (kept apart: results never
# carry vectors).
Checked = tuple[ScanResult, FaceVectors | None]


def audit_task(
    guard: Guard, path: str, kind: str, faces: str | None, keep: bool, scope: Scope = WHOLE_DISTRICT
) -> Checked:
    """One photo, where it is checked (this process, a pool worker or a cluster worker). A file that
    changed while it was read is checked once more here, so the coordinator never stats the share."""

    def first_check() -> Checked:
        return guard.check_keeping_embeddings(path, None, scope) if keep else (guard.check(path, scope=scope), None)

    # A re-check: the stored kind's handler decides again from what was stored (media.handlers).
    checked = guard.recheck_stored(path, stored_faces.decode(faces), scope, keep) if kind == "recheck" else first_check()
    identity = checked[0].identity
    if identity is not None and stat_now(path) not in (identity, None):
        # Recorded with the stat of the bytes read the second time; if it changed again, the next
        # run sees a new size or time and checks it again.
        checked = first_check()
    return checked


def as_checked(outcome: Checked | ScanResult | None, path: str) -> Checked:
    """What a worker returned; a worker that died returned a ScanResult (review) of its own."""
    if isinstance(outcome, tuple):
        return outcome
    if outcome is None:  # never expected: said, and fail closed
        why = "no result came back from the checking process; check it again"
        return ScanResult.fail_closed(path, why, retry=True), None
    return outcome, None
