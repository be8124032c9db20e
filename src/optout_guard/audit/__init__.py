"""The nightly audit of the district's photo library (see ``run`` for one run top to bottom).

``listing`` lists the library, ``plan`` works out what a run has to do against the stored state,
``run`` checks and records, ``state`` is the SQLite state and the opt-in embedding cache.
"""

from typing import TYPE_CHECKING, Any

from optout_guard.audit.listing import Listed, Passed, display_path, list_library
from optout_guard.audit.state import (
    EmbeddingCache,
    cache_path,
    changes_since_last_audit,
    delete_cache,
    library_rows,
    review_paths,
    state_path,
)
from optout_guard.errors import AuditBusy, LibraryLooksUnmounted

if TYPE_CHECKING:
    from optout_guard.audit.run import AuditSummary, large_of, record_run, report_thumbnail, run_audit, write_report

_RUN = {"AuditSummary", "large_of", "record_run", "report_thumbnail", "run_audit", "write_report"}


def __getattr__(name: str) -> Any:
    """The run's names load the pipeline (and its models' libraries) only when asked for: the
    listing, the plan and the state stay light (the desk and the report read the state)."""
    if name in _RUN:
        from optout_guard.audit import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AuditBusy",
    "AuditSummary",
    "EmbeddingCache",
    "LibraryLooksUnmounted",
    "Listed",
    "Passed",
    "cache_path",
    "changes_since_last_audit",
    "delete_cache",
    "display_path",
    "large_of",
    "library_rows",
    "list_library",
    "record_run",
    "report_thumbnail",
    "review_paths",
    "run_audit",
    "state_path",
    "write_report",
]
