"""Scoped galleries (docs/scopes.md): a school's photos against that school's opted-out students."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import LFW, make_workspace
from optout_guard.cli import app
from optout_guard.errors import ConfigError
from optout_guard.index import FaceIndex, Template
from optout_guard.optout_list import OptOutList, Student, save_list
from optout_guard.scope import WHOLE_DISTRICT, named_scopes, resolve_scope, scope_for_library_path

runner = CliRunner()

LIST = OptOutList(
    {
        "a1": Student("a1", "Ann", "Lee", "5", "Lincoln Elementary"),
        "a2": Student("a2", "Bo", "Kim", "4", "Lincoln Elementary"),
        "w1": Student("w1", "Cy", "Ray", "5", "Washington Middle"),
        "x1": Student("x1", "Di", "Fox", "", ""),  # no school, no grade in the export
    }
)
ENROLLED = {"a1", "a2", "w1", "x1"}


def test_a_school_scope_holds_its_students_and_those_without_a_school():
    scope = resolve_scope("lincoln elementary", None, ENROLLED, LIST)
    assert scope.students == {"a1", "a2", "x1"}
    assert resolve_scope("Washington Middle", None, ENROLLED, LIST).students == {"w1", "x1"}
    assert resolve_scope("Lincoln Elementary", "5", ENROLLED, LIST).students == {"a1", "x1"}
    assert resolve_scope(None, "05", ENROLLED, LIST).students == {"a1", "w1", "x1"}
    assert resolve_scope(None, None, ENROLLED, LIST) is WHOLE_DISTRICT
    assert resolve_scope("district", None, ENROLLED, LIST) is WHOLE_DISTRICT


def test_unknown_or_empty_scopes_are_errors_never_an_empty_gallery():
    with pytest.raises(ConfigError, match=r"unknown scope 'Jefferson High'.*Lincoln Elementary"):
        resolve_scope("Jefferson High", None, ENROLLED, LIST)
    with pytest.raises(ConfigError, match="names no enrolled student"):
        resolve_scope("Washington Middle", None, {"a1"}, LIST)  # w1 is on the list but not enrolled
    with pytest.raises(ConfigError, match="unknown scope"):
        resolve_scope("Lincoln Elementary", None, ENROLLED, None)  # no list imported: no schools known


def test_named_scopes_from_config_roster_and_library_paths(tmp_path):
    (tmp_path / "rosters").mkdir()
    (tmp_path / "rosters" / "soccer.csv").write_text("student_id,name\nw1,Cy\na2,Bo\nzz9,not enrolled\n")
    (tmp_path / "config.toml").write_text(
        'block_distance = 0.40\n[scopes."Varsity soccer"]\nroster = "rosters/soccer.csv"\n'
        'library_paths = ["Athletics/Soccer/**"]\n[scopes.Lincoln5]\nschool = "Lincoln Elementary"\ngrade = "5"\n'
    )
    named = named_scopes(tmp_path)
    assert resolve_scope("varsity SOCCER", None, ENROLLED, LIST, named).students == {"w1", "a2"}
    assert resolve_scope("Lincoln5", None, ENROLLED, LIST, named).students == {"a1", "x1"}
    assert scope_for_library_path("Athletics/Soccer/2026/game.jpg", named) == "Varsity soccer"
    assert scope_for_library_path("Athletics/Tennis/x.jpg", named) is None
    from optout_guard.config import load_settings

    assert load_settings(tmp_path, environ={}).block_distance == 0.40  # [scopes] is not a setting


def test_a_named_scope_may_name_a_homeroom_and_the_export_keeps_it(tmp_path):
    from optout_guard.optout_list import parse_list

    export = tmp_path / "export.csv"
    export.write_text("Student ID,Grade,School,Homeroom,Opt Out\na1,5,Lincoln,Room 12,Y\na2,5,Lincoln,Room 14,Y\n")
    optouts = parse_list(export)
    assert optouts.students["a1"].section == "Room 12"
    (tmp_path / "config.toml").write_text('[scopes.Room12]\nschool = "Lincoln"\nsection = "room 12"\n')
    assert resolve_scope("Room12", None, {"a1", "a2"}, optouts, named_scopes(tmp_path)).students == {"a1"}


def test_search_leaves_out_students_outside_the_scope():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) * 1.6
    index = FaceIndex("test")
    for sid, v in zip(("a1", "w1", "x1"), vectors, strict=True):
        index.add(Template(sid, f"{sid}.jpg", sid, ""), v)
    assert index.search(vectors[1:2])[0][0].student_id == "w1"
    scoped = index.search(vectors[1:2], only=frozenset({"a1", "x1"}))[0]
    assert scoped and all(c.student_id != "w1" for c in scoped)


@pytest.fixture(scope="module")
def school_ws(tmp_path_factory, data_dir):
    """Colin Powell at Lincoln, Hugo Chávez at Washington, both enrolled; the list saved."""
    root = tmp_path_factory.mktemp("school_ws")
    settings = make_workspace(
        root,
        {
            "colin": [LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 4)],
            "hugo": [LFW / "Hugo_Chavez" / f"Hugo_Chavez_{i:04d}.jpg" for i in range(2, 6)],
        },
    )
    save_list(
        OptOutList(
            {
                "colin": Student("colin", "Colin", "Powell", "5", "Lincoln"),
                "hugo": Student("hugo", "Hugo", "Chavez", "5", "Washington"),
            }
        ),
        root,
    )
    return settings


COLIN_LATER = LFW / "Colin_Powell" / "Colin_Powell_0004.jpg"  # not enrolled: a later photo of him


def _check(ws, *args: str):
    return runner.invoke(app, ["--workspace", str(ws.workspace), "check", "--json", *args], catch_exceptions=False)


def test_a_student_of_another_school_is_not_matched_in_a_school_scope(school_ws):
    district = _check(school_ws, str(COLIN_LATER))
    assert district.exit_code == 1, district.output
    doc = json.loads(district.stdout)["photos"][0]
    assert doc["verdict"] == "block" and doc["students"] == ["colin"] and doc["scope"] == "district"
    other = _check(school_ws, "--scope", "Washington", str(COLIN_LATER))
    doc = json.loads(other.stdout)["photos"][0]
    assert doc["scope"] == "Washington" and doc["verdict"] != "block"
    assert all(c["student_id"] != "colin" for f in doc["faces"] for c in f["candidates"])
    own = _check(school_ws, "--scope", "lincoln", str(COLIN_LATER))
    assert own.exit_code == 1 and json.loads(own.stdout)["photos"][0]["students"] == ["colin"]


def test_unknown_scope_is_exit_2_naming_the_known_ones(school_ws):
    result = runner.invoke(app, ["--workspace", str(school_ws.workspace), "check", "--scope", "Jefferson", str(COLIN_LATER)])
    assert result.exit_code == 2
    assert "unknown scope 'Jefferson'" in result.output and "Lincoln" in result.output


def test_a_check_folder_sub_folder_checks_with_its_school_and_says_so(school_ws, tmp_path):
    from optout_guard.pipeline import Guard
    from optout_guard.watch import CheckFolder

    folder = tmp_path / "Photo check"
    for sub in ("Washington", "Lincoln", "Field trip"):
        (folder / sub).mkdir(parents=True)
        shutil.copy(COLIN_LATER, folder / sub / "team.jpg")
    checker = CheckFolder(folder, Guard(school_ws), settle=0, recursive=True)
    checker.run_once()
    assert (folder / "blocked" / "Lincoln" / "team.jpg").is_file()
    assert (folder / "blocked" / "Field trip" / "team.jpg").is_file()  # not a scope: district-wide
    assert not (folder / "blocked" / "Washington").exists()
    washington = next(p for p in folder.rglob("Washington/team.jpg.txt"))
    assert "Checked against: the opted-out students of Washington" in washington.read_text()
    lincoln = (folder / "blocked" / "Lincoln" / "team.jpg.txt").read_text()
    assert "Checked against: the opted-out students of Lincoln" in lincoln
    trip = (folder / "blocked" / "Field trip" / "team.jpg.txt").read_text()
    assert "every opted-out student in the district" in trip


def test_audit_maps_library_paths_to_scopes(school_ws, tmp_path):
    from optout_guard.audit import library_rows, run_audit

    workspace = tmp_path / "ws"
    shutil.copytree(school_ws.workspace, workspace)
    library = tmp_path / "library"
    for sub in ("Washington/2026", "Lincoln/2026"):
        (library / sub).mkdir(parents=True)
        shutil.copy(COLIN_LATER, library / sub / "team.jpg")
    (workspace / "config.toml").write_text('[scopes.Washington]\nschool = "Washington"\nlibrary_paths = ["Washington/**"]\n')
    from optout_guard.config import load_settings

    settings = load_settings(workspace, environ={})
    run_audit(library, settings)
    rows = {
        Path(r["path"]).parent.parent.name: r["verdict"] for r in library_rows(settings, library, ("block", "review", "allow"))
    }
    assert rows["Lincoln"] == "block" and rows["Washington"] != "block"
    scopes = {
        Path(r["path"]).parent.parent.name: r["scope"] for r in library_rows(settings, library, ("block", "review", "allow"))
    }
    assert scopes == {"Lincoln": "", "Washington": "Washington"}  # the report says which scope checked it
    # The scope's mapping changes: the photo is decided again (like a gallery change).
    (workspace / "config.toml").write_text("")
    run_audit(library, load_settings(workspace, environ={}))
    rows = {
        Path(r["path"]).parent.parent.name: r["verdict"] for r in library_rows(settings, library, ("block", "review", "allow"))
    }
    assert rows == {"Lincoln": "block", "Washington": "block"}


@pytest.mark.parametrize("spelling", ["5", "05", "Grade 5", "grade 05", "Gr. 5", "GR5", "5th", "5th grade", "Year 5"])
def test_grades_in_every_usual_spelling_are_one_grade(spelling):
    """Issue 28: "Grade 5" and "5th" were not grade 5 (only "05" was): a scope narrowed silently."""
    from optout_guard.optout_list import normalise_grade

    assert normalise_grade(spelling) == "5"
    listed = OptOutList({"g": Student("g", "Al", "Bo", spelling, "Lincoln Elementary"), "h": Student("h", "Cy", "Do", "4", "")})
    assert resolve_scope("Lincoln Elementary", "5", {"g", "h"}, listed).students == {"g"}


@pytest.mark.parametrize(("spelling", "grade"), [("K", "K"), ("KG", "K"), ("Kindergarten", "K"), ("Pre-K", "PK"), ("TK", "PK")])
def test_kindergarten_and_pre_k(spelling, grade):
    from optout_guard.optout_list import normalise_grade

    assert normalise_grade(spelling) == grade


def test_spellings_of_one_school_are_one_school():
    listed = OptOutList(
        {
            "a": Student("a", "Ann", "Lee", "5", "Lincoln Elementary School"),
            "b": Student("b", "Bo", "Kim", "4", "Lincoln Elementary"),
            "c": Student("c", "Cy", "Ray", "5", "Washington Middle School"),
        }
    )
    assert resolve_scope("Lincoln Elementary", None, {"a", "b", "c"}, listed).students == {"a", "b"}
    assert resolve_scope("lincoln elementary school", None, {"a", "b", "c"}, listed).students == {"a", "b"}
    from optout_guard.sync import similar_school_names

    assert similar_school_names(listed) == [["Lincoln Elementary", "Lincoln Elementary School"]]


def test_a_roster_whose_ids_lost_their_leading_zeros_is_an_error_naming_them(tmp_path):
    (tmp_path / "config.toml").write_text('[scopes.Chess]\nroster = "chess.csv"\n')
    (tmp_path / "chess.csv").write_text("student_id\n101\n0102\n")
    enrolled = {"0101", "0102", "0103"}
    with pytest.raises(ConfigError, match=r"101 \(enrolled as 0101\)"):
        resolve_scope("Chess", None, enrolled, None, named_scopes(tmp_path))
    (tmp_path / "chess.csv").write_text("student_id\n0101\n0102\n")
    assert resolve_scope("Chess", None, enrolled, None, named_scopes(tmp_path)).students == {"0101", "0102"}


def test_a_utf16_roster_from_excel_is_read(tmp_path):
    """Excel's "Unicode text" is UTF-16 with tabs: it crashed `check --scope` and the watcher."""
    (tmp_path / "config.toml").write_text('[scopes.Band]\nroster = "band.txt"\n')
    (tmp_path / "band.txt").write_bytes("Student ID\tName\r\na1\tAnn\r\nw1\tCy\r\n".encode("utf-16"))
    assert resolve_scope("Band", None, ENROLLED, LIST, named_scopes(tmp_path)).students == {"a1", "w1"}
