"""What one audit run has to do, worked out in SQL against the stored state, never in memory.

The listing goes into a temporary table (on disk) and is compared with the stored rows by joins:
at 50 million photos the state does not fit in memory, and SQLite's joins on the primary key need
none of it. Out come the numbers for the summary and a ``todo`` table, in path order, that the run
reads a page at a time:

- unchanged photo, same gallery            → skipped (only ``last_run`` is written)
- unchanged photo, gallery or scope changed → ``recheck``: its stored faces decided again, no
                                             detection; a photo without faces needs nothing (its gallery
                                             is updated)
- unchanged photo a reviewer decided about since the last run (a face, the whole photo, a file that
  could not be decoded)                    → ``recheck``, with or without faces: the answer counts
- new or changed photo, or last verdict from an error → ``check`` (full check)
- new photo with the bytes of a photo gone → moved: keeps its result. Only a new file whose *size*
                                             equals that of a photo gone is hashed here; every other
                                             file's sha256 comes back with its check, from the worker
- photo gone                               → deleted (reported once), unless the library looks unmounted
- photo in a folder that could not be read → kept as it was (the report names the folder)

No model is needed here: ``tests/test_audit_plan.py`` runs it on made-up listings.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from optout_guard.audit.listing import Listed, display_path
from optout_guard.errors import LibraryLooksUnmounted
from optout_guard.fsutil import sha256_with_identity
from optout_guard.types import MediaKind

# A run that finds more than this share of the library's photos gone (and at least MIN_GONE of
# them), or all of them, stops without recording anything: a share that did not mount looks
# exactly like a library whose photos were all deleted, and forgetting every result would hide
# blocked photos until the next full audit.
MAX_GONE_SHARE = 0.2
MIN_GONE = 10
LISTED_DELETIONS = 10_000  # deleted paths kept by name for the report (all are counted)
_INSERT_BATCH = 5000


def looks_unmounted(known: int, gone: int) -> bool:
    return gone == known > 0 or (gone >= MIN_GONE and gone > MAX_GONE_SHARE * known)


@dataclass
class Plan:
    seen: int = 0  # photos and clips listed
    clips: int = 0
    not_images: int = 0
    unchanged: int = 0
    moved: int = 0
    kept_unreadable: int = 0  # rows kept because their folder could not be read
    deleted: list[str] = field(default_factory=list)  # the first LISTED_DELETIONS
    deleted_count: int = 0
    todo: int = 0  # rows in the todo table


def _chunks(items: Iterable[Listed], size: int) -> Iterator[list[Listed]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def plan_run(
    db: sqlite3.Connection,
    run: int,
    listing: Iterable[Listed],
    gallery_of: Callable[[str], str],
    decided: set[str],
    unreadable_folders: Callable[[], list[bytes]] = list,
    recheck_all: bool = False,
    accept_deletions: bool = False,
    library: str = "the library",
) -> Plan:
    """Compare ``listing`` with the state, record what needs no check (unchanged, moved, deleted)
    in one transaction, and leave the rest in the temporary table ``todo(seq, kind, path)``.
    Raises :class:`LibraryLooksUnmounted` before writing anything when too much is gone."""
    plan = Plan()
    db.execute("PRAGMA temp_store=FILE")  # the listing of a huge library stays on disk
    db.executescript(
        """
        DROP TABLE IF EXISTS temp.walk; DROP TABLE IF EXISTS temp.todo;
        DROP TABLE IF EXISTS temp.gone; DROP TABLE IF EXISTS temp.decided;
        CREATE TEMP TABLE walk (path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, kind TEXT, gallery TEXT);
        CREATE TEMP TABLE decided (sha256 TEXT PRIMARY KEY);
        CREATE TEMP TABLE todo (seq INTEGER PRIMARY KEY, kind TEXT, path BLOB UNIQUE);
        """
    )
    # 1. The listing, as it streams in (the listing threads run ahead of these inserts).
    db.execute("BEGIN")
    for chunk in _chunks(listing, _INSERT_BATCH):
        rows = []
        for item in chunk:
            media = MediaKind(item.kind)
            if not media.checked:  # an unreadable file is checked, so it is review
                plan.not_images += 1
                continue
            plan.clips += media is MediaKind.CLIP
            rows.append((item.path, item.size, item.mtime_ns, "clip" if media is MediaKind.CLIP else "photo",
                         gallery_of(os.fsdecode(item.path))))  # fmt: skip
        db.executemany("INSERT OR IGNORE INTO walk VALUES (?, ?, ?, ?, ?)", rows)
    plan.seen = db.execute("SELECT COUNT(*) FROM walk").fetchone()[0]
    for folder in unreadable_folders():
        # What is known under a folder that could not be read is kept as it is, not taken for deleted.
        prefix = folder.rstrip(b"/\\") + os.sep.encode()
        plan.kept_unreadable += db.execute(
            "INSERT OR IGNORE INTO walk SELECT path, size, mtime_ns, 'kept', gallery FROM files "
            "WHERE substr(path, 1, ?) = ?",
            (len(prefix), prefix),
        ).rowcount
    db.executemany("INSERT OR IGNORE INTO decided VALUES (?)", [(s,) for s in decided])
    db.execute("COMMIT")

    # 2. Gone since the last run; too many gone at once is a share that did not mount.
    db.execute(
        "CREATE TEMP TABLE gone AS SELECT path, size, sha256, gallery, retry FROM files f "
        "WHERE NOT EXISTS (SELECT 1 FROM walk w WHERE w.path = f.path)"
    )
    known = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    gone = db.execute("SELECT COUNT(*) FROM gone").fetchone()[0]
    if gone and not accept_deletions and looks_unmounted(known, gone):
        raise LibraryLooksUnmounted(
            f"{gone} of the {known} photos last seen in {library} are gone: the library looks unmounted or "
            "emptied, so nothing was recorded (the saved results are kept). Check that the share is mounted; if the "
            "photos really were deleted, run the audit again with --accept-deletions"
        )
    db.execute("CREATE INDEX temp.gone_sha ON gone (sha256)")

    # 3. What must be checked (in path order), then everything else listed is unchanged.
    db.execute("BEGIN")
    db.execute(
        """
        INSERT INTO todo (kind, path)
        SELECT CASE WHEN f.path IS NULL THEN 'new'
                    WHEN :all OR f.size IS NOT w.size OR f.mtime_ns IS NOT w.mtime_ns OR f.verdict IS NULL
                         OR f.retry THEN 'check'
                    ELSE 'recheck' END,
               w.path
        FROM walk w LEFT JOIN files f ON f.path = w.path
        WHERE w.kind != 'kept' AND (
            f.path IS NULL OR :all OR f.size IS NOT w.size OR f.mtime_ns IS NOT w.mtime_ns OR f.verdict IS NULL
            OR f.retry
            OR f.sha256 IN (SELECT sha256 FROM decided)
            OR (f.gallery IS NOT w.gallery AND COALESCE(f.faces NOT IN ('', '[]'), 0)))
        ORDER BY w.path
        """,
        {"all": int(recheck_all)},
    )
    # No faces (or an unreadable file): a changed gallery cannot change its verdict; it takes the new key.
    plan.unchanged = db.execute(
        "UPDATE files SET last_run = ?, gallery = (SELECT gallery FROM walk w WHERE w.path = files.path) "
        "WHERE path IN (SELECT path FROM walk) AND path NOT IN (SELECT path FROM todo)",
        (run,),
    ).rowcount - plan.kept_unreadable

    # 4. Moved: a new file with the bytes of a photo gone keeps that photo's result (same gallery).
    last = 0
    while page := db.execute(
        "SELECT t.seq, t.path, w.gallery FROM todo t JOIN walk w ON w.path = t.path WHERE t.kind = 'new' AND t.seq > ? "
        "AND w.size IN (SELECT size FROM gone WHERE sha256 IS NOT NULL AND NOT retry) ORDER BY t.seq LIMIT 500",
        (last,),
    ).fetchall():
        for seq, path, gallery in page:
            last = seq
            try:
                digest, identity = sha256_with_identity(os.fsdecode(path))
            except OSError:
                continue  # checked instead (and that will say what is wrong with it)
            was = db.execute(
                "SELECT path FROM gone WHERE sha256 = ? AND gallery IS ? AND NOT retry LIMIT 1", (digest, gallery)
            ).fetchone()
            if was is None:
                continue
            # The stat stored is that of the bytes just hashed, not a later one.
            db.execute(
                "UPDATE files SET path = ?, size = ?, mtime_ns = ?, last_run = ? WHERE path = ?",
                (path, identity.size, identity.mtime_ns, run, was[0]),
            )
            db.execute("DELETE FROM gone WHERE path = ?", was)
            db.execute("DELETE FROM todo WHERE seq = ?", (seq,))
            plan.moved += 1

    # 5. Deleted: reported in this run (recorded with the deletion, so a run killed later still
    # reports them), then forgotten.
    plan.deleted_count = db.execute("SELECT COUNT(*) FROM gone").fetchone()[0]
    plan.deleted = [
        display_path(bytes(p)) for (p,) in db.execute("SELECT path FROM gone ORDER BY path LIMIT ?", (LISTED_DELETIONS,))
    ]
    db.execute("DELETE FROM files WHERE path IN (SELECT path FROM gone)")
    plan.todo = db.execute("SELECT COUNT(*) FROM todo").fetchone()[0]
    db.execute("COMMIT")
    return plan


def todo_pages(db: sqlite3.Connection, kinds: tuple[str, ...], page: int = 500) -> Iterator[tuple[int, str, str]]:
    """(seq, kind, path) of the ``todo`` rows of these kinds, in order, read a page at a time (the
    run writes results between pages on the same connection)."""
    marks = ",".join("?" for _ in kinds)
    last = 0
    while rows := db.execute(
        f"SELECT seq, kind, path FROM todo WHERE seq > ? AND kind IN ({marks}) ORDER BY seq LIMIT ?",
        (last, *kinds, page),
    ).fetchall():
        for seq, kind, path in rows:
            last = seq
            yield seq, kind, os.fsdecode(bytes(path))
