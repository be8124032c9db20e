"""The audit report's page is a Jinja2 template with autoescape: whatever a file name, a reason, a
scope or a reviewer's name holds, it is shown as text, never run as HTML (made-up rows, no models)."""

from __future__ import annotations

from optout_guard.report import write_audit_report

HOSTILE = "<script>alert(1)</script>"


def test_every_value_in_the_report_is_text_not_html(tmp_path):
    library = str(tmp_path / "lib")
    path = f"{library}/2025/{HOSTILE}.jpg"
    face = {"decision": "block", "student_id": "<b>S1</b>", "box": [1, 2, 3, 4], "page": 0, "distance": 0.3, "reason": ""}
    rows = [
        {"path": path, "fs_path": path, "verdict": "block", "reasons": [f"matches {HOSTILE}"], "faces": [face],
         "checked_at": "2026-11-29T01:00:00+00:00", "changed_run": 1, "sha256": "ab" * 32, "scope": "<i>Lincoln</i>",
         "kind": "photo"},
    ]  # fmt: skip
    changes = {"changed": [{"path": path, "verdict": "block", "before": None}], "changed_count": 1, "deleted": [path]}
    summary = {"run_id": 1, "totals": {"block": 1}, "links_not_followed": [path], "unreadable_folders": [library + "/<u>x</u>"]}
    decisions = [{"action": "student", "student_id": "S1", "sha256": "ab" * 32, "face": 0, "user": HOSTILE,
                  "at": "2026-11-29T02:00:00+00:00"}]  # fmt: skip
    clips = [{"path": path, "verdict": "review", "reasons": [HOSTILE]}]
    page = write_audit_report(tmp_path / "report", library, summary, rows, changes, lambda _r, _p: False,
                              decisions=decisions, clips=clips).read_text(encoding="utf-8")  # fmt: skip
    assert HOSTILE not in page and "<b>S1</b>" not in page and "<i>Lincoln</i>" not in page and "<u>x</u>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6  # card, change, deleted, link, clip, decision
    assert "&lt;b&gt;S1&lt;/b&gt;" in page and "&lt;i&gt;Lincoln&lt;/i&gt;" in page
    assert f'title="{library}/2025/&lt;script&gt;' in page  # the full path on hover, escaped too


def test_the_report_says_where_reviews_are_settled_and_counts_faces_cleared_near_the_line(tmp_path):
    """Issue 27: "42 to review by a person" did not say where; issue 26: the cleared-but-close count."""
    library = str(tmp_path / "lib")
    summary = {"run_id": 1, "totals": {"review": 42}, "cleared_but_close": 7}
    page = write_audit_report(tmp_path / "report", library, summary, [], {"changed": [], "changed_count": 0, "deleted": []},
                              lambda _r, _p: False).read_text(encoding="utf-8")  # fmt: skip
    flat = " ".join(page.split())
    assert f"optout-guard serve --audit {library}" in flat
    assert "7 faces checked in this run were cleared although they came close" in flat


def test_photos_to_review_are_grouped_by_cause_and_folder_with_a_thumbnail_budget(tmp_path):
    """Issue 27, item 11: 1,601 photos to review drew 1,698 thumbnails on one page. Blocked photos
    first, each pictured; photos to review grouped by cause and folder with counts, a few pictured
    per group, the rest counted (audit.csv lists every one)."""
    library = str(tmp_path / "lib")

    def row(path: str, verdict: str, reason: str) -> dict:
        return {"path": f"{library}/{path}", "fs_path": f"{library}/{path}", "verdict": verdict, "reasons": [reason],
                "faces": [], "checked_at": "2026-12-03T01:00:00+00:00", "changed_run": 1, "sha256": "ab" * 32,
                "scope": "", "kind": "photo"}  # fmt: skip

    rows = [row(f"2026/blocked{i}.jpg", "block", "matches student S1 (distance 0.3)") for i in range(3)]
    rows += [row(f"2026/field-day/p{i}.jpg", "review", f"{i % 5 + 2} faces too small to check") for i in range(60)]
    rows += [row(f"2025/concert/c{i}.jpg", "review", "resembles student S2 (distance 0.45); a person should look")
             for i in range(12)]  # fmt: skip
    drawn: list[str] = []

    def thumbnail(r, out) -> bool:
        drawn.append(r["path"])
        out.write_bytes(b"\xff\xd8")
        return True

    summary = {"run_id": 1, "totals": {"block": 3, "review": 72}}
    page = write_audit_report(tmp_path / "report", library, summary, rows, {"changed": [], "changed_count": 0, "deleted": []},
                              thumbnail).read_text(encoding="utf-8")  # fmt: skip
    flat = " ".join(page.split())
    assert sum("blocked" in p for p in drawn) == 3  # every blocked photo pictured
    assert len(drawn) == 3 + 8 + 8  # 8 per review group
    assert "<b>60</b> · faces too small to check · in 2026/field-day" in flat
    assert "<b>12</b> · resembles student S2; a person should look · in 2025/concert" in flat
    assert "… and 20 more in this group" in flat
