"""Consenting students (the Include list, consent.py): the clearing rule, where their templates live
and how they go, consent from the SIS export and by hand. Off by default; nothing stored when off."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fakes import DIM, face, fake_models, gallery, photo
from optout_guard.cli import app
from optout_guard.config import load_settings
from optout_guard.consent import ConsentRecord, Recognised, clear_consenting
from optout_guard.errors import ConfigError
from optout_guard.index import FaceIndex, Template, edit_index, open_index, save_index
from optout_guard.models import embedding_fingerprint
from optout_guard.optout_list import ListRejected, parse_list
from optout_guard.pipeline import Guard, NoDecisions
from optout_guard.report import result_to_dict
from optout_guard.types import Box, Candidate, Decision, Face, FaceMatch, ReasonCode, Verdict

E1, E2 = np.eye(DIM, dtype=np.float32)[:2]
OPTED_OUT = np.zeros(DIM, np.float32)  # student "anna" sits at the origin …
CONSENTING_AT = 0.8  # … and the consenting student "carl" this far along E1


def between(to_opted_out: float, to_consenting: float) -> np.ndarray:
    """A face exactly ``to_opted_out`` from anna and ``to_consenting`` from carl."""
    d = CONSENTING_AT
    x = (to_opted_out**2 - to_consenting**2 + d**2) / (2 * d)
    return (x * E1 + np.sqrt(max(to_opted_out**2 - x**2, 0.0)) * E2).astype(np.float32)


def with_carl(index: FaceIndex) -> FaceIndex:
    index.record_consent(ConsentRecord("carl", "sis", "2026-09-01", "2026-09-02T00:00:00Z"))
    index.add_consenting_template(Template("carl", "/pd/carl.jpg", "c" * 64, ""), CONSENTING_AT * E1)
    return index


# ---- the rule --------------------------------------------------------------------------------
def _match(decision: Decision, code: ReasonCode) -> FaceMatch:
    one = Face(Box(0, 0, 100, 100), 1.0, np.zeros((5, 2), np.float32))
    return FaceMatch(one, decision, (Candidate("anna", 0.45),), "resembles anna", code)


@pytest.mark.parametrize(
    ("decision", "code", "recognised", "cleared"),
    [
        (Decision.REVIEW, ReasonCode.LOOKALIKE, Recognised("carl", 0.30, 0.45), True),
        (Decision.REVIEW, ReasonCode.SIBLINGS, Recognised("carl", 0.30, 0.45), True),
        (Decision.REVIEW, ReasonCode.LOOKALIKE, Recognised("carl", 0.30, 0.38), False),  # opted-out not margin further
        (Decision.REVIEW, ReasonCode.LOOKALIKE, Recognised("carl", 0.41, 0.60), False),  # carl beyond block distance
        (Decision.BLOCK, ReasonCode.MATCH, Recognised("carl", 0.10, 0.39), False),  # a block stays a block
        (Decision.REVIEW, ReasonCode.TOO_SMALL, Recognised("carl", 0.10, 0.90), False),  # never judged: stays review
        (Decision.REVIEW, ReasonCode.LOOKALIKE, None, False),
    ],
)
def test_only_a_lookalike_review_recognised_as_a_consenting_child_is_cleared(decision, code, recognised, cleared):
    before = _match(decision, code)
    after = clear_consenting(before, recognised, block=0.40, margin=0.09)
    assert (after.decision is Decision.CLEAR) is cleared
    if cleared:
        assert after.code is ReasonCode.CONSENTING and after.consenting == "carl"
        assert "recognised as consenting student carl" in after.reason
    else:
        assert after is before


def test_the_margin_is_inclusive_at_its_edge_and_exclusive_below():
    held = _match(Decision.REVIEW, ReasonCode.LOOKALIKE)
    assert clear_consenting(held, Recognised("carl", 0.30, 0.3901), 0.40, 0.09).decision is Decision.CLEAR
    assert clear_consenting(held, Recognised("carl", 0.30, 0.3899), 0.40, 0.09).decision is Decision.REVIEW


# ---- through the pipeline (fake models) ----------------------------------------------------------
@pytest.fixture
def world(tmp_path):
    settings = load_settings(tmp_path / "ws", environ={"OPTOUT_GUARD_CONSENT_MATCHING": "true"})
    detector, encoder, bundle = fake_models()
    index = with_carl(gallery({"anna": OPTED_OUT}))
    guard = Guard(settings, index=index, settler=NoDecisions(), face_models=bundle)
    return settings, guard, detector, encoder


def test_a_face_held_for_resembling_an_opted_out_child_is_cleared_when_recognised_as_a_consenting_one(world, tmp_path):
    settings, guard, detector, encoder = world
    assert settings.consent_matching and settings.consent_margin == 0.09
    path = photo(tmp_path / "class.png", (1, 2, 3))
    # 1: resembles anna (0.46, review) and is carl (0.30): cleared. 2: anna 0.46, carl 0.40: anna is not
    # 0.09 further, stays review. 3: anna 0.30 (blocks alone) although carl is closer still: stays blocked.
    detector.place(path, face(10.0), face(200.0), face(400.0))
    encoder.vectors.update({10.0: between(0.46, 0.30), 200.0: between(0.46, 0.40), 400.0: between(0.30, 0.55)})
    result = guard.check(path)
    assert [m.decision for m in result.faces] == [Decision.CLEAR, Decision.REVIEW, Decision.BLOCK]
    assert result.faces[0].code is ReasonCode.CONSENTING
    assert result.verdict is Verdict.BLOCK
    assert any("recognised as consenting student carl" in r for r in result.reasons)  # said, never silent
    doc = result_to_dict(result)
    assert doc["faces"][0]["cleared_by"] == "include" and doc["faces"][0]["recognised_as"] == "carl"
    assert "cleared_by" not in doc["faces"][1] and "cleared_by" not in doc["faces"][2]


def test_with_consent_matching_off_the_same_faces_are_decided_as_before(world, tmp_path):
    _settings, _guard, detector, encoder = world
    off = load_settings(tmp_path / "ws2", environ={})
    assert off.consent_matching is False  # off by default
    guard = Guard(off, index=with_carl(gallery({"anna": OPTED_OUT})), settler=NoDecisions(), face_models=_guard.face_models)
    path = photo(tmp_path / "one.png", (4, 5, 6))
    detector.place(path, face(10.0))
    encoder.vectors[10.0] = between(0.46, 0.30)
    result = guard.check(path)
    assert result.verdict is Verdict.REVIEW and result.faces[0].code is ReasonCode.LOOKALIKE


def test_consenting_templates_never_make_a_block_more_likely():
    """Carl's template is not searched with the opted-out students: anna's candidates and decisions
    are those of the index without him."""
    plain, with_him = gallery({"anna": OPTED_OUT}), with_carl(gallery({"anna": OPTED_OUT}))
    faces = np.stack([between(d, c) for d, c in [(0.3, 0.6), (0.45, 0.5), (0.6, 0.2), (0.9, 0.1)]])
    assert plain.search(faces) == with_him.search(faces)


# ---- the index: who can be on the list, and what is left when they go -------------------------
def test_an_opted_out_student_is_never_a_consenting_one():
    index = gallery({"anna": OPTED_OUT})
    with pytest.raises(ConfigError, match="on the opt-out list"):
        index.record_consent(ConsentRecord("anna", "by hand", "", ""))
    with_carl(index)
    index.add(Template("carl", "/refs/carl.jpg", "d" * 64, ""), E2)  # carl's family opts out: the opt-out wins
    assert "carl" not in index.consent and index.consenting_templates == []
    index.record_consent(ConsentRecord("dora", "sis", "", ""))
    index.add_student("dora")  # on the list without a usable photo: still never consenting
    assert "dora" not in index.consent


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _index_with_a_consenting_template(seed: int, consent_date: str) -> tuple[FaceIndex, np.ndarray]:
    """An index with opted-out anna and consenting carl (a random template): (index, carl's template)."""
    carl = (np.random.default_rng(seed).normal(size=DIM) / 11).astype(np.float32)
    index = FaceIndex(embedding_fingerprint())
    index.add(Template("anna", "/refs/anna.jpg", "a" * 64, ""), OPTED_OUT + 0.01)
    index.record_consent(ConsentRecord("carl", "sis", consent_date, ""))
    index.add_consenting_template(Template("carl", "/pd/IMG_0042.JPG", "c" * 64, ""), carl)
    return index, carl


def test_withdrawal_deletes_the_template_and_nothing_of_it_is_left_in_the_workspace(tmp_path):
    settings = load_settings(tmp_path / "ws", environ={"OPTOUT_GUARD_CONSENT_MATCHING": "true"})
    index, carl = _index_with_a_consenting_template(seed=3, consent_date="2026-09-01")
    save_index(index, settings)
    assert settings.index_file.stat().st_mode & 0o777 == 0o600
    again = open_index(settings)
    assert np.array_equal(again.consenting_embeddings[0], carl) and again.consent["carl"].consent_date == "2026-09-01"
    needle = carl.tobytes()
    assert any(needle in p.read_bytes() for p in _files(settings.workspace))  # the scan can find it …
    result = CliRunner().invoke(
        app, ["--workspace", str(settings.workspace), "include", "remove", "carl"], env={"OPTOUT_GUARD_CONSENT_MATCHING": "true"}
    )
    assert result.exit_code == 0, result.output
    for p in _files(settings.workspace):  # … and after the withdrawal it is nowhere
        data = p.read_bytes()
        assert needle not in data and b"IMG_0042" not in data, p
        assert b"carl" not in data or p.name.startswith("activity"), p  # the log says who was removed, by id
    assert open_index(settings).consent == {}


def test_turned_off_the_next_change_of_the_gallery_deletes_them_and_a_check_never_uses_them(tmp_path):
    ws = tmp_path / "ws"
    on = load_settings(ws, environ={"OPTOUT_GUARD_CONSENT_MATCHING": "true"})
    index = with_carl(FaceIndex(embedding_fingerprint()))
    index.add(Template("anna", "/refs/anna.jpg", "a" * 64, ""), OPTED_OUT)
    save_index(index, on)
    off = load_settings(ws, environ={})
    guard = Guard(off, settler=NoDecisions(), face_models=fake_models()[2])
    assert guard.index.consenting_templates == []  # never used from the moment it is off
    assert open_index(off).consenting_templates  # (still in the file until the gallery changes)
    with edit_index(off):
        pass
    stored = open_index(off)
    assert stored.consent == {} and stored.consenting_templates == [] and len(stored) == 1
    needle = (CONSENTING_AT * E1).astype(np.float32).tobytes()
    assert all(needle not in p.read_bytes() for p in _files(ws))


# ---- consent from the SIS export ---------------------------------------------------------------
def _export(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Student ID", "Last Name", "First Name", "Grade", "Opt Out", "Face Match Consent", "Consent Date"])
        for sid, opt_out, consent, date in rows:
            writer.writerow([sid, f"Last{sid}", f"First{sid}", "3", opt_out, consent, date])
    return path


def test_consent_is_read_from_its_column_and_an_opted_out_child_is_never_consenting(tmp_path):
    (tmp_path / "config.toml").write_text('[sis]\nconsent_date_column = "Consent Date"\n')
    from optout_guard.optout_list import sis_map

    listed = _export(tmp_path / "export.csv", [("1", "No", "Yes", "09/01/2026"), ("2", "No", "", ""),
                                               ("3", "Yes", "Yes", "2026-09-02"), ("4", "No", "No", "")])  # fmt: skip
    parsed = parse_list(listed, "generic", district=sis_map(tmp_path), consent_column="Face Match Consent")
    assert set(parsed.students) == {"3"}
    assert set(parsed.consenting or {}) == {"1"} and parsed.consenting["1"].date == "2026-09-01"  # type: ignore[index]
    assert parsed.consent_conflicts == ["3"] and parsed.everyone == {"1", "2", "3", "4"}
    assert parse_list(listed, "generic").consenting is None  # not asked: never read
    odd = _export(tmp_path / "odd.csv", [("1", "No", "Pending", "")])
    with pytest.raises(ListRejected, match="consent column has values that are neither yes nor no"):
        parse_list(odd, "generic", consent_column="Face Match Consent")


def test_sync_with_a_consent_column_is_refused_while_consent_matching_is_off(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    listed = _export(tmp_path / "export.csv", [("1", "No", "Yes", "")])
    result = CliRunner().invoke(app, ["--workspace", str(ws), "sync", str(listed), "--consent-column", "Face Match Consent"])
    assert result.exit_code == 2 and "consent matching is off" in result.output
    assert not any(_files(ws))  # nothing stored
    result = CliRunner().invoke(app, ["--workspace", str(ws), "include", "add", "1"])
    assert result.exit_code == 2 and "consent matching is off" in result.output


@pytest.mark.data
def test_sync_takes_consent_and_templates_from_the_export_and_delivery_and_withdrawal_deletes_them(tmp_path, data_dir, models):
    from test_sync import LFW

    people = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Al_Gore"]
    delivery = tmp_path / "pd"
    delivery.mkdir()
    for i, person in enumerate(people):  # a plain folder of <student id>.jpg
        (delivery / f"{i + 1}.jpg").write_bytes((LFW / person / f"{person}_0001.jpg").read_bytes())
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "config.toml").write_text('consent_matching = true\n[sis]\nconsent_column = "Face Match Consent"\n')
    rows = [("1", "Yes", "", ""), ("2", "No", "Yes", "2026-09-01"), ("3", "No", "Yes", "2026-09-03"), ("4", "No", "", "")]
    listed = _export(tmp_path / "export.csv", rows)
    run = lambda *a: CliRunner().invoke(app, ["--workspace", str(ws), *a], catch_exceptions=False)  # noqa: E731
    result = run("sync", str(listed), "--photos", str(delivery), "--json")
    doc = json.loads(result.stdout)["consenting_students"]
    assert doc["consent_recorded"] == ["2", "3"] and doc["templates_added"] == 2 and doc["consenting_students"] == 2
    index = open_index(load_settings(ws))
    assert sorted(t.student_id for t in index.consenting_templates) == ["2", "3"]
    assert [t.student_id for t in index.templates] == ["1"]  # the opted-out child's photo is theirs alone
    assert (ws / "enrollments" / "1").is_dir() and not (ws / "enrollments" / "2").exists()  # no photo of them copied
    listing = json.loads(run("include", "list", "--json").stdout)
    assert [(r["student_id"], r["source"], r["consent_date"], r["templates"]) for r in listing["students"]] == [
        ("2", "sis", "2026-09-01", 1), ("3", "sis", "2026-09-03", 1)]  # fmt: skip
    people_doc = json.loads(run("people", "--json").stdout)
    assert people_doc["consenting"] == {"students": 2, "templates": 2, "in_use": True}
    # Student 3's family withdraws (the column says No now); student 2 leaves the district.
    vector_3 = index.consenting_embeddings[[t.student_id for t in index.consenting_templates].index("3")].tobytes()
    listed = _export(tmp_path / "export2.csv", [("1", "Yes", "", ""), ("3", "No", "No", ""), ("4", "No", "", "")])
    doc = json.loads(run("sync", str(listed), "--photos", str(delivery), "--json").stdout)["consenting_students"]
    assert doc["consent_withdrawn"] == ["3"] and doc["left_the_export"] == ["2"] and doc["templates_deleted"] == 2
    assert all(vector_3 not in p.read_bytes() for p in _files(ws))
    assert open_index(load_settings(ws)).consent == {}
    # By hand: a paper form, logged with who; the opt-out list's student is refused.
    assert run("include", "add", "4", "--photo", str(delivery / "4.jpg"), "--date", "2026-10-01").exit_code == 0
    assert run("include", "add", "1").exit_code == 2
    log = run("log", "show", "--json").stdout
    assert '"include add"' in log and "2026-10-01" in log and vector_3.hex() not in log


# ---- the desk: a reviewer sees faces cleared by recognition and may hold one ----------------------
@pytest.mark.data
def test_the_desk_lists_faces_cleared_by_recognition_and_a_reviewer_can_hold_one(tmp_path, data_dir):
    from optout_guard.desk import Desk, DeskOptions, create_app
    from optout_guard.errors import AlreadySettled
    from test_desk import workspace
    from test_desk_answers import _token

    ws = workspace(tmp_path / "ws").workspace
    (ws / "config.toml").write_text((ws / "config.toml").read_text() + "consent_matching = true\n")
    settings = load_settings(ws, environ={})
    desk = Desk(settings, DeskOptions())
    detector, encoder, bundle = fake_models()  # the desk's own checks, on faces this test places
    desk.guard = Guard(settings, index=with_carl(gallery({"anna": OPTED_OUT})), face_models=bundle)
    team = photo(tmp_path / "team.png", (7, 8, 9))
    detector.place(team, face(10.0))
    encoder.vectors[10.0] = between(0.46, 0.30)  # resembles anna, recognised as carl
    assert desk.check_upload(team.name, team.read_bytes(), "officer")["verdict"] == "allow"
    assert desk.book.queue() == []  # not asked by itself …
    app = create_app(desk)
    with app.test_client() as client:
        headers = {"X-CSRFToken": _token(client)}
        listed = client.get("/api/recognised").get_json()["faces"]  # … but listed for a person
        assert len(listed) == 1 and "recognised as consenting student carl" in listed[0]["reason"]
        assert listed[0]["resembles"][0]["student_id"] == "anna"
        assert client.get(listed[0]["crop_url"]).status_code == 200
        held = client.post(f"/api/recognised/{listed[0]['id']}/hold", json={}, headers=headers)
        assert held.status_code == 200 and held.get_json()["verdict"] == "review"
        assert client.post(f"/api/recognised/{listed[0]['id']}/hold", json={}, headers=headers).status_code == 409
        assert [c["id"] for c in client.get("/api/queue").get_json()["cards"]] == [listed[0]["id"]]
        assert client.get("/api/recognised").get_json()["faces"] == []
    # Every later check of that photo sees the hold: review until a person answers.
    again = desk.guard.check(team)
    assert again.verdict is Verdict.REVIEW and "held for a person although recognised" in again.reasons[0]
    # Undoing the hold gives the face back to the recognition …
    desk.book.undo(held.get_json()["decision"], "officer")
    assert desk.guard.check(team).faces[0].code is ReasonCode.CONSENTING and desk.book.queue() == []
    # … and a person's answer beats it: held again and confirmed as anna, the photo blocks.
    desk.book.hold_recognised(listed[0]["id"], "officer")
    desk.decide(listed[0]["id"], "anna", "officer", add_reference=False)
    final = desk.guard.check(team)
    assert final.verdict is Verdict.BLOCK and final.faces[0].code is ReasonCode.REVIEWER_CONFIRMED
    with pytest.raises(AlreadySettled):
        desk.book.hold_recognised(listed[0]["id"], "officer")


@pytest.mark.models  # real models, on made-up or package-shipped photos
def test_the_audit_counts_faces_cleared_by_recognition_and_lists_their_photos_for_the_desk(tmp_path):
    from optout_guard.audit import review_paths
    from optout_guard.audit.run import run_audit

    ws = tmp_path / "ws"
    settings = load_settings(ws, environ={"OPTOUT_GUARD_CONSENT_MATCHING": "true"})
    index = with_carl(FaceIndex(embedding_fingerprint()))
    index.add(Template("anna", "/refs/anna.jpg", "a" * 64, ""), OPTED_OUT)
    save_index(index, settings)
    detector, encoder, bundle = fake_models()
    guard = Guard(settings, settler=NoDecisions(), face_models=bundle)
    library = tmp_path / "library"
    team, nobody = photo(library / "team.png", (1, 1, 1)), photo(library / "nobody.png", (2, 2, 2))
    detector.place(team, face(10.0))
    detector.place(nobody, face(20.0))
    encoder.vectors.update({10.0: between(0.46, 0.30), 20.0: between(0.9, 0.9)})
    summary = run_audit(library, settings, guard=guard)
    assert summary.cleared_by_consenting == 1 and summary.totals.get("allow") == 2
    assert review_paths(settings, library) == [team]  # the desk imports it to list the face; not the other


def test_the_check_folders_note_says_who_was_recognised_and_the_desk_finds_the_photo(tmp_path):
    import os
    import time

    from optout_guard.desk.service import recognised_in
    from optout_guard.watch import CheckFolder

    settings = load_settings(tmp_path / "ws", environ={"OPTOUT_GUARD_CONSENT_MATCHING": "true"})
    detector, encoder, bundle = fake_models()
    guard = Guard(settings, index=with_carl(gallery({"anna": OPTED_OUT})), settler=NoDecisions(), face_models=bundle)  # fmt: skip
    inbox = tmp_path / "Check photos"
    team = photo(inbox / "team.png", (3, 3, 3))
    old = time.time() - 60
    os.utime(team, (old, old))
    detector.place(team, face(10.0))
    encoder.vectors[10.0] = between(0.46, 0.30)
    assert CheckFolder(inbox, guard, settle=0.1, arrival_grace=0.0).run_once() == 1
    note = (inbox / "allowed" / "team.png.txt").read_text()
    assert "recognised as consenting student carl" in note
    assert recognised_in(inbox / "allowed") == [inbox / "allowed" / "team.png"]


def test_consenting_templates_are_encrypted_with_the_index(tmp_path):
    from optout_guard.index import new_key

    key = new_key()
    settings = load_settings(tmp_path / "ws", environ={"OPTOUT_GUARD_CONSENT_MATCHING": "true"})
    index, carl = _index_with_a_consenting_template(seed=5, consent_date="")
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {"OPTOUT_GUARD_INDEX_KEY": key}):
        save_index(index, settings)
        raw = settings.index_file.read_bytes()
        assert carl.tobytes() not in raw and b"carl" not in raw and b"IMG_0042" not in raw
        assert np.array_equal(open_index(settings).consenting_embeddings[0], carl)
