"""The nightly audit of the district's photo library (see ``run`` for one run top to bottom).

``listing`` lists the library, ``plan`` works out what a run has to do against the stored state,
``run`` checks and records, ``state`` is the SQLite state and the opt-in embedding cache.
"""

from optout_guard.audit.listing import Listed, Passed, display_path, list_library
from optout_guard.audit.run import AuditSummary, large_of, report_thumbnail, run_audit
from optout_guard.audit.state import (
    EmbeddingCache,
    cache_path,
    changes_since_last_audit,
    delete_cache,
    faces_from_json,
    library_rows,
    review_paths,
    state_path,
)
from optout_guard.errors import AuditBusy, LibraryLooksUnmounted

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
    "faces_from_json",
    "large_of",
    "library_rows",
    "list_library",
    "report_thumbnail",
    "review_paths",
    "run_audit",
    "state_path",
]
