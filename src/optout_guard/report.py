"""Results as plain data (the ``--json`` document). Never contains embeddings."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from optout_guard import __version__
from optout_guard.config import Settings
from optout_guard.fsutil import atomic_write, private_dir
from optout_guard.matching import cleared_but_close
from optout_guard.types import FaceMatch, ReasonCode, ScanResult, Verdict

# 2: "scope" per photo; per face "thresholds" and each candidate's "hub_penalty". 3: "kind" (photo or
# clip); clips add "clip" (duration, frames examined…) and "tracks" (per track: first/last time + the face's fields).
SCHEMA_VERSION = 3


def face_to_dict(match: FaceMatch) -> dict[str, Any]:
    face = match.face
    return {
        "box": list(face.box.as_ints()),  # [left, top, width, height] in original pixels
        "page": face.page,
        "detection_score": round(face.score, 3),
        "decision": match.decision.value,
        "student_id": match.student_id if match.decision.value != "clear" else None,
        "distance": None if match.distance is None else round(match.distance, 4),
        "candidates": [
            {"student_id": c.student_id, "distance": round(c.distance, 4), "hub_penalty": round(c.penalty, 4)}
            for c in match.candidates
        ],
        "reason": match.reason or None,
        "code": match.code.value,  # the reason as a stable code (types.ReasonCode): match, too_small, cut_by_edge, …
        # The thresholds that judged this face (the nearest student's): the settings', or the
        # district cohort's for that student's number of reference photos.
        "thresholds": _thresholds(match),
    } | ({"cleared_by": "include", "recognised_as": match.consenting} if match.code is ReasonCode.CONSENTING else {})


def _thresholds(match: FaceMatch) -> dict[str, Any] | None:
    if not match.candidates:
        return None
    limits = match.candidates[0].limits
    if limits is None:
        return {"source": "settings"}
    return {"block": limits.block, "review": limits.review, "source": limits.source}


def result_to_dict(result: ScanResult, review_distance: float | None = None) -> dict[str, Any]:
    """One result as JSON; with ``review_distance``, also how many of its faces were cleared but
    close (within matching.CLOSE_MARGIN past the review distance that judged them)."""
    doc: dict[str, Any] = {
        "path": result.path,
        "kind": result.kind,  # "photo" or "clip"
        "verdict": result.verdict.value,
        "reasons": list(result.reasons),
        "students": list(result.blocked_students),
        "sha256": result.sha256,
        "width": result.size[0] if result.size else None,
        "height": result.size[1] if result.size else None,
        "pages": result.pages,
        "faces": [face_to_dict(m) for m in result.faces],
        "annotated": result.annotated_path,
        "redacted": result.redacted_path,
        "seconds": round(result.seconds, 3),
        "scope": result.scope or "district",  # the students it was checked against (docs/scopes.md)
    }
    if review_distance is not None:
        doc["cleared_but_close"] = sum(cleared_but_close(m, review_distance) for m in result.faces)
        doc["cleared_by_consenting"] = sum(m.code is ReasonCode.CONSENTING for m in result.faces)
    if result.clip is not None:
        c = result.clip
        doc["clip"] = {
            "duration": round(c.duration, 2),
            "checked_seconds": round(c.checked_seconds, 2),
            "frames_examined": c.frames_examined,
            "sample_every": round(c.sample_every, 3),
            "rotation": c.rotation,
            "has_audio": c.has_audio,
        }
        # One entry per track (``faces`` holds the same decisions, each in its track's best frame).
        doc["tracks"] = [
            face_to_dict(m) | {"first": round(t.first, 2), "last": round(t.last, 2), "best_frame_time": round(t.best_time, 2),
                               "frames_seen": t.seen}
            for m, t in zip(result.faces, c.tracks, strict=True)
        ]  # fmt: skip
    return doc


def summary(results: list[ScanResult], skipped: int = 0) -> dict[str, int]:
    counts = {v.value: 0 for v in Verdict}
    for r in results:
        counts[r.verdict.value] += 1
    return {"photos": len(results), **counts, "skipped": skipped}


def batch_document(results: list[ScanResult], skipped: list[tuple[str, str]], settings: Settings) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": f"optout-guard {__version__}",
        "settings": {
            "block_distance": settings.block_distance,
            "review_distance": settings.review_distance,
            "lookalike_margin": settings.lookalike_margin,
            "cohort": settings.cohort,
            "min_face_px": settings.min_face_px,
            "detector": settings.detector,
        },
        "summary": summary(results, len(skipped))
        | {"cleared_but_close": sum(cleared_but_close(m, settings.review_distance) for r in results for m in r.faces),
           "cleared_by_consenting": sum(m.code is ReasonCode.CONSENTING for r in results for m in r.faces)},
        "photos": [result_to_dict(r, settings.review_distance) for r in results],
        "skipped": [{"path": p, "reason": why} for p, why in skipped],
    }


# ---- the audit report: HTML for people, CSV for spreadsheets, JSON for scripts ---------------------
def _place(path: str, library: str) -> dict[str, str]:
    """A path as a reader wants it: relative to the library (``short``), the full path on hover."""
    try:
        short = os.path.relpath(path, library) if library else path
    except ValueError:
        short = path
    return {"path": path, "short": path if short.startswith("..") else short}


def _local(timestamp: str | None) -> str:
    """A stored UTC time stamp in the district's local time, to the minute."""
    if not timestamp:
        return ""
    try:
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return timestamp


GROUP_THUMBNAILS = 8  # thumbnails drawn per group of photos to review (cause × folder)
GROUP_CARDS = 40  # cards shown per group on the first page; the group's own pages list every one
GROUPS_OPEN = 20  # groups shown with their cards on the first page; every group is in the table of groups
PER_PAGE = 100  # cards (or groups) per page: a library of a million photos is many small pages, not one huge one


def _cause(reasons: list[str]) -> str:
    """A review's cause, for grouping: its first reason without the numbers ("3 faces too small")."""
    import re

    first = reasons[0] if reasons else "needs a person"
    plain = re.sub(r"\s*\((distance|pooled distance) [^)]*\)", "", first)  # "(distance 0.45)"
    return re.sub(r"\s+", " ", re.sub(r"\b\d+(\.\d+)?\b", "", plain)).strip(" ;,") or first


def _folder(path: str, library: str) -> str:
    return (os.path.dirname(os.path.relpath(path, library)) if library else os.path.dirname(path)) or "."


def _review_groups(rows: list[dict[str, Any]], library: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_cause(r["reasons"]), _folder(r["path"], library)), []).append(r)
    return groups


def _pages(items: list[Any], stem: str) -> list[tuple[str, list[Any]]]:
    """``items`` cut into pages of PER_PAGE: (file name under pages/, items). The first page of a
    list lives on index.html when ``stem`` is empty."""
    chunks = [items[i : i + PER_PAGE] for i in range(0, len(items), PER_PAGE)] or [[]]
    return [(f"{stem}-{n}.html", chunk) for n, chunk in enumerate(chunks, 1)]


def desk_link(desk_address: str, folder: str) -> str:
    """The review desk's queue filtered to one audited folder's photos (docs/review-desk.md)."""
    from urllib.parse import urlencode

    return desk_address.rstrip("/") + "/?" + urlencode({"source": "audit", "folder": folder})


def write_audit_report(
    out_dir: Path,
    library: str,
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    changes: dict[str, Any],
    thumbnail: Any,
    max_thumbnails: int = 2000,
    decisions: list[dict[str, Any]] | None = None,
    clips: list[dict[str, Any]] | None = None,
    desk_address: str = "http://127.0.0.1:8765/",
) -> Path:
    """Write index.html (self-contained but for thumbnails in ./thumbs and further pages in ./pages),
    audit.csv and audit.json. ``thumbnail(row, path)`` draws a marked-up thumbnail of a row's photo;
    returns False if it cannot. ``desk_address``: where the review desk answers, for links to its queue."""
    import csv
    import io

    # Children's photos and names: private by default (0600 files in 0700 folders); docs/privacy.md says how
    # to share a report. Every file is written to a temp name and renamed, so a full disk leaves the
    # previous good report, never an empty one.
    out_dir = private_dir(Path(out_dir))
    private_dir(out_dir / "thumbs")
    private_dir(out_dir / "pages")
    # At a district's scale (issue 27: 1,601 photos to review drew 1,698 thumbnails on one page):
    # every blocked photo gets its thumbnail (up to the budget); photos to review are grouped by
    # cause and folder, with counts, and only the first GROUP_THUMBNAILS of each group get one.
    groups = _review_groups([r for r in rows if r["verdict"] == "review"], library)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    pictured = {id(r) for _, rs in ordered for r in rs[:GROUP_THUMBNAILS]}
    drawn: list[str] = []  # the thumbnails (each with its .large.jpg beside it)
    for row in rows:
        row["thumbnail"] = None
        if row["verdict"] == "review" and id(row) not in pictured:
            continue
        name = f"thumbs/{hashlib.sha256(row['path'].encode()).hexdigest()[:16]}.jpg"
        if len(drawn) < max_thumbnails and thumbnail(row, out_dir / name):
            row["thumbnail"] = name
            drawn.append(name)

    def card(r: dict[str, Any]) -> dict[str, Any]:
        large = r["thumbnail"][: -len(".jpg")] + ".large.jpg" if r["thumbnail"] else None
        return _place(r["path"], library) | {
            "thumbnail": r["thumbnail"],
            "large": large if large and (out_dir / large).exists() else None,  # the labelled copy, full size
            "students": sorted({f["student_id"] for f in r["faces"] if f.get("decision") == "block" and f.get("student_id")}),
            "scope": r.get("scope") or "",
            "reasons": r["reasons"],
            "checked": _local(r["checked_at"]),
        }

    templates = _templates()
    written: set[str] = set()

    def list_pages(title: str, what: str, items: list[Any], stem: str, verdict: str, note: str = "") -> list[str]:
        """Write ``items`` on pages/<stem>-N.html; returns the pages' names (for the links)."""
        pages = _pages(items, stem)
        names = [name for name, _ in pages]
        for n, (name, chunk) in enumerate(pages):
            atomic_write(out_dir / "pages" / name, templates.get_template("audit_list.html").render(
                title=title, what=what, items=chunk, sections=[], verdict=verdict, note=note, library=library,
                run_id=summary.get("run_id"), number=n + 1, names=names, first=n * PER_PAGE + 1, total=len(items),
            ))  # fmt: skip
            written.add(name)
        return names

    blocked = [card(r) for r in rows if r["verdict"] == "block"]
    blocked_pages = list_pages("Blocked photos", "photos", blocked, "blocked", "block") if len(blocked) > PER_PAGE else []
    # Every photo to review is listed on pages of about PER_PAGE cards: a large group has pages of
    # its own, small groups share a page, each under its heading (the anchor the table links to).
    # 130,000 photos to review in 20,000 groups make ~1,300 pages, not 20,000 files.
    sections: list[list[dict[str, Any]]] = [[]]
    held_groups = []
    for i, ((cause, folder), rs) in enumerate(ordered):
        absolute = os.path.join(library, folder) if library and folder != "." else (library or folder)
        anchor = f"g-{hashlib.sha256(f'{cause}|{folder}'.encode()).hexdigest()[:12]}"
        cards = [card(r) for r in rs]
        parts = [cards[k : k + PER_PAGE] for k in range(0, len(cards), PER_PAGE)]
        link = ""
        for k, part in enumerate(parts):
            if sections[-1] and sum(len(x["cards"]) for x in sections[-1]) + len(part) > PER_PAGE:
                sections.append([])
            here = anchor if k == 0 else f"{anchor}-{k + 1}"
            sections[-1].append({"anchor": here, "cause": cause, "folder": folder, "count": len(rs), "part": k + 1,
                                 "parts": len(parts), "cards": part, "desk": desk_link(desk_address, absolute)})  # fmt: skip
            link = link or f"review-{len(sections)}.html#{here}"
        held_groups.append({
            "cause": cause, "folder": folder, "count": len(rs), "link": link, "desk": desk_link(desk_address, absolute),
            "cards": cards[:GROUP_CARDS] if i < GROUPS_OPEN else [], "more": max(0, len(rs) - GROUP_CARDS),
        })  # fmt: skip
    review_names = [f"review-{n}.html" for n in range(1, len(sections) + 1)] if held_groups else []
    for n, (name, on_page) in enumerate(zip(review_names, sections, strict=False)):
        atomic_write(out_dir / "pages" / name, templates.get_template("audit_list.html").render(
            title="Photos to review", what="sections", items=[], sections=on_page, verdict="review", note="",
            library=library, run_id=summary.get("run_id"), number=n + 1, names=review_names, first=0, total=0,
        ))  # fmt: skip
        written.add(name)
    group_pages = (
        list_pages("Photos to review, by cause and folder", "groups", held_groups, "groups", "review")
        if len(held_groups) > PER_PAGE else []
    )  # fmt: skip

    # Only the changes that matter to a reader: a photo newly blocked or held, or cleared (a new photo
    # that is simply allowed is not news); grouped by folder, in path order; long lists are folded.
    mattering = [c for c in changes["changed"] if c["verdict"] in ("block", "review") or c["before"] in ("block", "review")]
    listed = sorted(mattering[:500], key=lambda c: c["path"])
    folders: list[tuple[str, list[dict[str, Any]]]] = []
    for c in listed:
        here = os.path.dirname(os.path.relpath(c["path"], library)) if library else os.path.dirname(c["path"])
        if not folders or folders[-1][0] != here:
            folders.append((here, []))
        folders[-1][1].append(_place(c["path"], library) | {"before": c["before"], "verdict": c["verdict"]})
    totals = summary.get("totals", {})
    page = templates.get_template("audit_report.html").render(
        library=library,
        run_id=summary.get("run_id"),
        now=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        desk=desk_address,
        totals={v: totals.get(v, 0) for v in ("block", "review", "allow")},
        run={
            "checked": summary.get("checked", 0),
            "rechecked": summary.get("rechecked", 0),
            "unchanged": summary.get("unchanged", 0),
            "moved": summary.get("moved", 0),
            "deleted": summary.get("deleted_count", len(changes["deleted"])),
            "seconds": f"{summary.get('seconds', 0):.0f}",
            "cleared_but_close": summary.get("cleared_but_close", 0),
            "cleared_by_consenting": summary.get("cleared_by_consenting", 0),
            "event_blocks": summary.get("event_blocks", 0),
        },
        blocked=blocked[:PER_PAGE],
        blocked_count=len(blocked),
        blocked_pages=blocked_pages,
        held_groups=held_groups[:PER_PAGE],
        group_count=len(held_groups),
        group_pages=group_pages,
        clips=[_place(c["path"], library) | {"verdict": c["verdict"], "reasons": c["reasons"]} for c in clips or []],
        changes={"folders": folders, "count": changes.get("changed_count", len(mattering)), "listed": len(listed)},
        deleted=[_place(p, library) for p in changes["deleted"][:500]],
        links=[_place(p, library) for p in (summary.get("links_not_followed") or [])[:500]],
        unreadable=[_place(p, library) for p in (summary.get("unreadable_folders") or [])[:500]],
        decisions=_decision_groups(decisions or [], {r.get("sha256"): r["path"] for r in rows}),
    )
    atomic_write(out_dir / "index.html", page)
    # Thumbnails and pages kept for what this report shows: a photo since allowed, moved or deleted
    # leaves no picture of a child behind in the report's folder.
    shown = {n.removeprefix("thumbs/") for name in drawn for n in (name, name[: -len(".jpg")] + ".large.jpg")}
    for folder, keep in (("thumbs", shown), ("pages", written)):
        for old in (out_dir / folder).iterdir():
            if old.is_file() and old.name not in keep:
                old.unlink(missing_ok=True)

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["verdict", "path", "students", "reasons", "checked_at"])
    for r in rows:
        # Blocked students, and for review rows the students the held faces resemble.
        held = [f for f in r["faces"] if f.get("decision") in ("block", "review") and f.get("student_id")]
        students = sorted({f["student_id"] for f in held})
        writer.writerow([r["verdict"], r["path"], " ".join(students), " | ".join(r["reasons"]), r["checked_at"]])
    # With a byte-order mark: Excel then opens it as UTF-8 (accented names and paths intact).
    atomic_write(out_dir / "audit.csv", "\ufeff" + buffer.getvalue())

    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool": f"optout-guard {__version__}",
        "library": library,
        "summary": summary,
        "changes": changes,
        "photos": [
            {k: v for k, v in r.items() if k not in ("faces", "fs_path")} | {"faces": [_face_public(f) for f in r["faces"]]}
            for r in rows
        ],
    }
    atomic_write(out_dir / "audit.json", json.dumps(doc, indent=1, ensure_ascii=False, default=str))
    return out_dir / "index.html"


_ANSWER = {"student": "confirmed as student {sid}", "none": "cleared (none of the students shown)",
           "unnamed student": "blocked: an opted-out student not shown"}  # fmt: skip


def _decision_groups(decisions: list[dict[str, Any]], paths: dict[Any, str]) -> list[dict[str, Any]]:
    """Reviewers' decisions (newest first), grouped by reviewer and day: who cleared or confirmed what."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in decisions:
        what = _ANSWER.get(d["action"], d["action"]).format(sid=d.get("student_id") or "")
        if d.get("undone_at"):
            what += f" — undone by {d.get('undone_by') or '?'}"
        photo = paths.get(d["sha256"]) or f"photo {str(d['sha256'])[:12]}…"
        item = {"when": str(d["at"])[11:16], "photo": photo, "face": d["face"] + 1, "what": what}
        groups.setdefault((str(d["at"])[:10], d["user"]), []).append(item)
    return [{"day": day, "user": user, "entries": items} for (day, user), items in groups.items()]


def _templates() -> Any:
    """The report's Jinja2 templates (``templates/``), autoescaped: every value is text."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("optout_guard", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )


def _face_public(face: dict[str, Any]) -> dict[str, Any]:
    """What the report says about a face: where, what, who — not the landmark geometry."""
    return {k: face.get(k) for k in ("box", "page", "decision", "student_id", "distance", "reason")}
