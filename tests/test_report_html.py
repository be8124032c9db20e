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
    # The budget counts thumbnails (each has its large copy beside it): 10 means 10 photos pictured.
    drawn.clear()
    write_audit_report(tmp_path / "budget", library, summary, rows, {"changed": [], "changed_count": 0, "deleted": []},
                       thumbnail, max_thumbnails=10)  # fmt: skip
    assert len(drawn) == 10
    assert "<b>60</b> · faces too small to check · in 2026/field-day" in flat
    assert "<b>12</b> · resembles student S2; a person should look · in 2025/concert" in flat
    assert "… and 20 more in this group" in flat


def test_a_large_audit_is_paged_each_group_links_to_the_desk_and_old_pictures_are_removed(tmp_path, monkeypatch):
    """Issue 27, item 11 at a district's scale: blocked photos first and paged; every group of photos
    to review in a table with its own pages (every photo of it listed) and a link to the review desk's
    queue filtered to its folder; a thumbnail no longer shown (the photo since allowed) is deleted."""
    import re
    from urllib.parse import parse_qs, urlparse

    from optout_guard import report

    monkeypatch.setattr(report, "PER_PAGE", 5)
    library = str(tmp_path / "lib")

    def row(path: str, verdict: str, reason: str) -> dict:
        return {"path": f"{library}/{path}", "fs_path": f"{library}/{path}", "verdict": verdict, "reasons": [reason],
                "faces": [], "checked_at": "2026-12-03T01:00:00+00:00", "changed_run": 1, "sha256": "ab" * 32,
                "scope": "", "kind": "photo"}  # fmt: skip

    def thumbnail(r, out) -> bool:
        out.write_bytes(b"\xff\xd8")
        return True

    blocked = [row(f"2026/game/b{i:02}.jpg", "block", "matches student S1") for i in range(12)]
    held = [row(f"2026/f{g}/p{i:02}.jpg", "review", "faces too small to check") for g in range(7) for i in range(g + 1)]
    out = tmp_path / "report"
    empty = {"changed": [], "changed_count": 0, "deleted": []}
    summary = {"run_id": 1, "totals": {"block": 12, "review": len(held)}}
    index = report.write_audit_report(out, library, summary, blocked + held, empty, thumbnail,
                                      desk_address="http://desk.school.lan:8765/").read_text(encoding="utf-8")  # fmt: skip
    flat = " ".join(index.split())
    # 5 blocked cards on the first page, and the cards of the groups in the first page of the table (7+6+5+4+3).
    assert "The first 5 of 12" in flat and index.count('<article class="card">') == 5 + 25
    assert re.findall(r'href="pages/(blocked-\d\.html)"', index) == ["blocked-1.html", "blocked-2.html", "blocked-3.html"]
    listed = "".join((out / "pages" / f"blocked-{n}.html").read_text(encoding="utf-8") for n in (1, 2, 3))
    assert all(f"b{i:02}.jpg" in listed for i in range(12)) and listed.count('<article class="card">') == 12
    # Seven groups: five rows in the first table page, the rest on pages/groups-2.html; each row links
    # to its pages and to the desk, filtered to the group's folder.
    desk_links = re.findall(r'href="(http://desk\.school\.lan:8765/\?[^"]+)"', index)
    folders = {parse_qs(urlparse(link.replace("&amp;", "&")).query)["folder"][0] for link in desk_links}
    assert {f"{library}/2026/f{g}" for g in range(2, 7)} <= folders
    assert all(parse_qs(urlparse(link.replace("&amp;", "&")).query)["source"] == ["audit"] for link in desk_links)
    assert (out / "pages" / "groups-2.html").exists() and "2026/f0" in (out / "pages" / "groups-2.html").read_text()
    biggest = re.search(r'<b>7</b></td><td>faces too small to check</td><td><code>2026/f6</code></td>\s*<td><a href="pages/'
                        r'(review-1\.html)#(g-[0-9a-f]+)"', index)  # fmt: skip
    assert biggest, "the largest group is the table's first row, with a link to its photos"
    # Every photo to review is on the review pages, 5 (PER_PAGE) cards a page: the 7 of 2026/f6 on
    # pages 1 and 2 (its heading is the anchor linked to), the small groups sharing pages after it.
    review = sorted((out / "pages").glob("review-*.html"))
    cards_per_page = [p.read_text(encoding="utf-8").count('<article class="card">') for p in review]
    assert max(cards_per_page) <= 5 and sum(cards_per_page) == len(held)
    assert any(p.read_text(encoding="utf-8").count('<h2 id="g-') >= 2 for p in review)  # small groups share a page
    first = (out / "pages" / "review-1.html").read_text(encoding="utf-8")
    assert f'id="{biggest.group(2)}"' in first and first.count('<article class="card">') == 5
    group_text = "".join(p.read_text(encoding="utf-8") for p in review)
    assert all(f"f{g}/p{i:02}.jpg" in group_text for g in range(7) for i in range(g + 1)) and 'src="../thumbs/' in group_text
    assert group_text.count('<article class="card">') == len(held)
    assert "(part 2 of 2)" in group_text
    assert 'href="../index.html"' in group_text
    # A second run: the blocked photos were taken down (deleted), one group settled. Their thumbnails
    # and pages go; nothing of them is left in the report's folder.
    before = {p.name for p in (out / "thumbs").iterdir()}
    report.write_audit_report(out, library, {"run_id": 2, "totals": {"review": 1}}, held[:1], empty, thumbnail)
    after = {p.name for p in (out / "thumbs").iterdir()}
    assert len(before) == 12 + sum(min(g + 1, report.GROUP_THUMBNAILS) for g in range(7)) and len(after) == 1
    assert len(list((out / "pages").iterdir())) == 1  # the one group's one page
    assert not (out / "pages" / "blocked-1.html").exists()
