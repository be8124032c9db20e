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
from optout_guard.types import FaceMatch, ScanResult, Verdict

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
    }


def _thresholds(match: FaceMatch) -> dict[str, Any] | None:
    if not match.candidates:
        return None
    limits = match.candidates[0].limits
    if limits is None:
        return {"source": "settings"}
    return {"block": limits.block, "review": limits.review, "source": limits.source}


def result_to_dict(result: ScanResult) -> dict[str, Any]:
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
        "summary": summary(results, len(skipped)),
        "photos": [result_to_dict(r) for r in results],
        "skipped": [{"path": p, "reason": why} for p, why in skipped],
    }


# ---- the audit report: HTML for people, CSV for spreadsheets, JSON for scripts ---------------------
def _short_path(path: str, library: str) -> str:
    """A path as a reader wants it: relative to the library, the full path on hover (HTML)."""
    import html
    import os

    try:
        short = os.path.relpath(path, library) if library else path
    except ValueError:
        short = path
    if short.startswith(".."):
        short = path
    return f"<code title='{html.escape(path, quote=True)}'>{html.escape(short)}</code>"


def _clips_html(clips: list[dict[str, Any]], library: str = "") -> str:
    """Every video clip in the library, whatever its verdict (blocked and review ones are also among
    the cards above): a clip is the most-posted kind of media, and none may pass unseen."""
    import html

    if not clips:
        return ""
    rows = "".join(
        f"<tr><td><span class='tag {html.escape(c['verdict'])}'>{html.escape(c['verdict'].upper())}</span></td>"
        f"<td>{_short_path(c['path'], library)}</td><td>{html.escape('; '.join(c['reasons']))}</td></tr>"
        for c in clips
    )
    return (
        f"<h2>Video clips ({len(clips)})</h2><p class='muted'>Each clip was checked frame by frame; a clip "
        "under review is watched by a person (optout-guard check CLIP --annotate DIR draws its contact sheet).</p>"
        f"<table><tr><th>Verdict</th><th>Clip</th><th>Why</th></tr>{rows}</table>"
    )



_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}.muted{color:#666;font-size:13px}
.counts{display:flex;gap:12px;margin:16px 0}.count{padding:10px 16px;border-radius:8px;background:#fff;border:1px solid #ddd}
.count b{font-size:22px;display:block}.block b{color:#c62828}.review b{color:#b26a00}.allow b{color:#2e7d32}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;overflow:hidden}
.card img{width:100%;display:block;background:#eee}.card div{padding:8px 10px;font-size:13px;word-break:break-all}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.tag.block{background:#c62828}.tag.review{background:#b26a00}.tag.allow{background:#2e7d32}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:4px 8px;font-size:13px;text-align:left}
tr.folder td{background:#f0f0f0;font-weight:600}.filter{margin:6px 0 10px;padding:4px 8px;font-size:14px;width:min(420px,100%)}
@media (max-width:600px){body{margin:10px}.cards{grid-template-columns:1fr}.counts{flex-wrap:wrap}}
@media print{body{background:#fff;margin:0}.filter{display:none}details>*{display:block}.card{break-inside:avoid}
.cards{grid-template-columns:repeat(2,1fr)}}
"""


# Inline (the report is one file, opened without a network): hides the rows of the changes table
# that do not contain the text typed.
_FILTER_SCRIPT = """<script>
document.getElementById('filter').addEventListener('input', function () {
  var q = this.value.toLowerCase();
  document.querySelectorAll('#changes tr:not(:first-child)').forEach(function (row) {
    row.style.display = !q || row.classList.contains('folder') || row.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
  });
});
</script>"""


def _local(timestamp: str | None) -> str:
    """A stored UTC time stamp in the district's local time, to the minute."""
    if not timestamp:
        return ""
    try:
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return timestamp


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
) -> Path:
    """Write index.html (self-contained but for thumbnails in ./thumbs), audit.csv and audit.json.
    ``thumbnail(row, path)`` draws a marked-up thumbnail of a row's photo; returns False if it cannot."""
    import csv
    import html
    import io

    # Children's photos and names: private by default (0600 files in 0700 folders); docs/privacy.md says how
    # to share a report. Every file is written to a temp name and renamed, so a full disk leaves the
    # previous good report, never an empty one.
    out_dir = private_dir(Path(out_dir))
    private_dir(out_dir / "thumbs")
    for i, row in enumerate(rows):
        name = f"thumbs/{hashlib.sha256(row['path'].encode()).hexdigest()[:16]}.jpg"
        row["thumbnail"] = name if i < max_thumbnails and thumbnail(row, out_dir / name) else None

    def cards(verdict: str) -> str:
        items = [r for r in rows if r["verdict"] == verdict]
        if not items:
            return "<p class='muted'>None.</p>"
        parts = []
        for r in items:
            students = sorted({f["student_id"] for f in r["faces"] if f.get("decision") == "block" and f.get("student_id")})
            img = ""
            if r["thumbnail"]:
                img = f"<img src='{html.escape(r['thumbnail'])}' alt='marked-up photo' loading='lazy'>"
                large = r["thumbnail"][: -len(".jpg")] + ".large.jpg"
                if (out_dir / large).exists():  # the labelled marked-up copy, full size
                    img = f"<a href='{html.escape(large)}' title='open the marked-up copy'>{img}</a>"
            who = f"<br>Students: <b>{html.escape(', '.join(students))}</b>" if students else ""
            if r.get("scope"):
                who += f"<br><span class='muted'>checked against the students of {html.escape(r['scope'])}</span>"
            why = "<br>".join(html.escape(x) for x in r["reasons"])
            path = _short_path(r["path"], library)
            parts.append(
                f"<article class='card'>{img}<div><span class='tag {verdict}'>{verdict.upper()}</span> "
                f"{path}{who}<br>{why}<br><span class='muted'>checked {html.escape(_local(r['checked_at']))}</span>"
                "</div></article>"
            )
        return "<div class='cards'>" + "".join(parts) + "</div>"

    totals = summary.get("totals", {})
    # Only the changes that matter to a reader: a photo newly blocked or held, or cleared (a new photo
    # that is simply allowed is not news); long lists are folded.
    mattering = [c for c in changes["changed"] if c["verdict"] in ("block", "review") or c["before"] in ("block", "review")]
    mattering_count = changes.get("changed_count", len(mattering))  # the list is the first LISTED_CHANGES
    # Grouped by folder (a folder header row each), in path order; a filter box narrows it in place.
    parts_rows: list[str] = []
    folder = None
    for c in sorted(mattering[:500], key=lambda c: c["path"]):
        here = os.path.dirname(os.path.relpath(c["path"], library)) if library else os.path.dirname(c["path"])
        if here != folder:
            folder = here
            parts_rows.append(f"<tr class='folder'><td colspan='3'>{html.escape(here or '(top folder)')}</td></tr>")
        parts_rows.append(
            f"<tr><td>{_short_path(c['path'], library)}</td><td>{html.escape(str(c['before'] or 'new'))}</td>"
            f"<td><span class='tag {html.escape(c['verdict'])}'>{html.escape(c['verdict'].upper())}</span></td></tr>"
        )
    changed_rows = "".join(parts_rows)
    deleted = "".join(f"<li>{_short_path(p, library)}</li>" for p in changes["deleted"][:500])
    links = summary.get("links_not_followed") or []
    links_html = ""
    if links:
        items = "".join(f"<li>{_short_path(p, library)}</li>" for p in links[:500])
        links_html = (
            "<h3>Links not followed (not checked)</h3><p class='muted'>The audit never follows links (they can lead "
            "outside the library or loop). Audit their targets as libraries of their own.</p><ul>" + items + "</ul>"
        )
    unreadable = summary.get("unreadable_folders") or []
    if unreadable:
        items = "".join(f"<li>{_short_path(p, library)}</li>" for p in unreadable[:500])
        links_html += (
            "<h3>Folders that could not be read</h3><p class='muted'>Their photos were not checked in this run; "
            "what earlier audits found in them is kept. Give the audit's account read access.</p><ul>" + items + "</ul>"
        )
    decisions_html = _decisions_html(decisions or [], {r.get("sha256"): r["path"] for r in rows})
    changes_html = "<p class='muted'>No verdict changed.</p>"
    if changed_rows:
        changes_html = (
            "<input class='filter' id='filter' type='search' placeholder='Filter: a folder, a file name, block…' "
            "aria-label='Filter the changes'><table id='changes'><tr><th>Photo</th><th>Was</th><th>Now</th></tr>"
            + changed_rows + "</table>" + _FILTER_SCRIPT
        )
        if mattering_count > len(mattering[:500]):
            listed = len(mattering[:500])
            changes_html += f"<p class='muted'>The first {listed} of {mattering_count} are listed, in path order.</p>"
        if mattering_count > 20:
            changes_html = f"<details><summary>{mattering_count} photos changed verdict</summary>{changes_html}</details>"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>Photo library audit</title>
<style>{_CSS}</style></head><body>
<h1>Photo library audit: students on the opt-out list</h1>
<div class="muted">Library <code>{html.escape(library)}</code> · run {summary.get("run_id")} ·
{html.escape(dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M"))} · optout-guard {__version__}</div>
<div class="counts">
<div class="count block"><b>{totals.get("block", 0)}</b>blocked: must not be published</div>
<div class="count review"><b>{totals.get("review", 0)}</b>to review by a person</div>
<div class="count allow"><b>{totals.get("allow", 0)}</b>allowed</div>
</div>
<p class="muted">This run: {summary.get("checked", 0)} photos checked, {summary.get("rechecked", 0)} re-checked against
changed opt-out list, {summary.get("unchanged", 0)} unchanged, {summary.get("moved", 0)} moved,
{summary.get("deleted_count", len(changes["deleted"]))} deleted; {summary.get("seconds", 0):.0f} s.</p>
<h2>Blocked photos</h2>
<p class="muted">These show a student whose family opted out of directory information. Take them down
from any public place, or replace them.</p>
{cards("block")}
<h2>Photos to review</h2>
<p class="muted">A face resembles an opted-out student, or could not be judged (too small, blurred, unreadable file).</p>
{cards("review")}
{_clips_html(clips or [], library)}
<h2>What changed since the last audit</h2>
{changes_html}
{"<h3>Deleted from the library</h3><ul>" + deleted + "</ul>" if deleted else ""}
{links_html}
{decisions_html}
</body></html>"""
    atomic_write(out_dir / "index.html", page)

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


def _decisions_html(decisions: list[dict[str, Any]], paths: dict[Any, str]) -> str:
    """Reviewers' decisions (newest first), grouped by reviewer and day: who cleared or confirmed what."""
    import html

    if not decisions:
        return ""
    groups: dict[tuple[str, str], list[str]] = {}
    for d in decisions:
        what = _ANSWER.get(d["action"], d["action"]).format(sid=d.get("student_id") or "")
        if d.get("undone_at"):
            what += f" — undone by {d.get('undone_by') or '?'}"
        photo = paths.get(d["sha256"]) or f"photo {str(d['sha256'])[:12]}…"
        when = html.escape(str(d["at"])[11:16])
        item = f"<li>{when} <code>{html.escape(photo)}</code> face {d['face'] + 1}: {html.escape(what)}</li>"
        groups.setdefault((str(d["at"])[:10], d["user"]), []).append(item)
    parts = [
        f"<h3>{html.escape(day)} · {html.escape(user)} ({len(items)})</h3><ul>{''.join(items)}</ul>"
        for (day, user), items in groups.items()
    ]
    return "<h2>Decisions by reviewers</h2>" + "".join(parts)


def _face_public(face: dict[str, Any]) -> dict[str, Any]:
    """What the report says about a face: where, what, who — not the landmark geometry."""
    return {k: face.get(k) for k in ("box", "page", "decision", "student_id", "distance", "reason")}
