"""District import: the opt-out list (messy SIS exports), picture-day deliveries, the yearly sync."""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import LFW
from optout_guard.cli import app
from optout_guard.config import Settings
from optout_guard.enroll import reference_embedding
from optout_guard.errors import OptoutGuardError
from optout_guard.index import FaceIndex
from optout_guard.media.photos import photo_date
from optout_guard.models import embedding_fingerprint
from optout_guard.optout_list import ListRejected, OptOutList, Student, load_list, parse_list
from optout_guard.picture_day import match_delivery, read_confirmed

FIRST = ["Ava", "Liam", "Zoë", "Noah", "José", "Mia", "Amélie", "Ethan", "Chloé", "Mateo", "Siobhán", "Øyvind"]
LAST = ["García", "O'Brien", "Nguyen", "Smith-Jones", "Müller", "Kowalski", "Núñez", "Lefèvre", "Ahmed", "Kim"]


def roster_rows(n: int = 300, seed: int = 7) -> list[dict[str, str]]:
    """n students, every 7th opted out; names with accents and apostrophes (what real SIS data has)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "Student_Number": f"{100000 + i}",
                "First_Name": rng.choice(FIRST),
                "Last_Name": rng.choice(LAST),
                "Grade_Level": str(rng.choice(["K", "1", "2", "3", "4", "5"])),
                "SchoolID": "12",
                "DirectoryInfoOptOut": "Y" if i % 7 == 0 else rng.choice(["N", ""]),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ","), ("cp1252", ","), ("utf-16", "\t"), ("utf-8", ";")],
    ids=["utf8", "utf8-bom", "windows-1252", "excel-unicode-text", "semicolons"],
)
def test_sis_export_in_any_usual_encoding(tmp_path, encoding, delimiter):
    rows = roster_rows()
    exported = write_csv(tmp_path / "optouts.csv", rows, encoding, delimiter)
    parsed = parse_list(exported, "powerschool")
    expected = {r["Student_Number"]: r for r in rows if r["DirectoryInfoOptOut"] == "Y"}
    assert parsed.rows_read == 300
    assert set(parsed.students) == set(expected)
    for sid, row in expected.items():  # accents survive every encoding
        assert (parsed.students[sid].first, parsed.students[sid].last) == (row["First_Name"], row["Last_Name"])
        assert parsed.students[sid].grade == row["Grade_Level"]


def test_broken_list_is_refused_whole_with_line_numbers(tmp_path):
    rows = roster_rows(40)
    rows[5]["Student_Number"] = ""  # line 7 (header is line 1)
    rows[10]["Student_Number"] = rows[1]["Student_Number"]  # line 12 duplicates line 3
    rows[10]["DirectoryInfoOptOut"] = rows[1]["DirectoryInfoOptOut"] = "Y"
    rows[18]["DirectoryInfoOptOut"] = "maybe"  # line 20
    rows[25]["Student_Number"] = "../etc"  # line 27: not usable as a folder name
    rows[25]["DirectoryInfoOptOut"] = "Y"
    rows[5]["DirectoryInfoOptOut"] = "Y"
    with pytest.raises(ListRejected) as caught:
        parse_list(write_csv(tmp_path / "bad.csv", rows), "powerschool")
    lines = sorted(line for line, _ in caught.value.problems)
    assert lines == [7, 12, 20, 27], caught.value.problems
    assert "first on line 3" in str(caught.value)


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("Name,Grade\nA,1\n")
    with pytest.raises(ListRejected, match="no student id column"):
        parse_list(path)
    path.write_text("Pupil,Dir Release\n1,No\n2,Yes\n3,\n")
    parsed = parse_list(path, id_column="Pupil", flag_column="dir release", flag_means="release")
    assert set(parsed.students) == {"1"}  # release = No means the family opted out


def test_plain_list_of_ids(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("student_id\n1001\n\n# a comment\n1002\n1001\n")
    with pytest.raises(ListRejected) as caught:
        parse_list(path, "ids")
    assert caught.value.problems == [(6, "student id 1001 appears twice (first on line 2)")]
    path.write_text("1001\n1002\n")
    assert set(parse_list(path, "ids").students) == {"1001", "1002"}


def pspa_index(folder: Path, rows: list[tuple[str, str, str, str]], header: bool = False) -> None:
    """INDEX.TXT in the PSPA layout: (file, grade, last, first) per photo, tab-delimited, CRLF."""
    lines = []
    if header:
        lines.append("Volume\tFolder\tFile\tGrade\tLast\tFirst\tHomeroom\tPeriod\tTeacher\tTrack\tDepartment\tTitle\tImage Size")
    for file, grade, last, first in rows:
        lines.append(f"SCHOOL2026\tPhotos\t{file}\t{grade}\t{last}\t{first}\t101\t\tSmith\t\t\t\t640x800")
    (folder / "INDEX.TXT").write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))


def test_name_matching_holds_what_is_not_certain(tmp_path):
    optouts = OptOutList(
        {
            "1": Student("1", "José", "Núñez", "3"),
            "2": Student("2", "Ava", "Kim", "2"),
            "3": Student("3", "Ava", "Kim", "4"),  # two opted-out Ava Kims
            "4": Student("4", "Liam", "Smith", "5"),
            "5": Student("5", "Mia", "Ahmed", "1"),
        }
    )
    photos = tmp_path / "Photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        (photos / name).write_bytes(b"jpeg")
    pspa_index(
        tmp_path,
        [
            ("A.JPG", "03", "NUNEZ", "Jose"),  # case, accents and leading zero differ: still a sure match
            ("b.jpg", "2", "Kim", "Ava"),  # which Ava Kim? held
            ("c.jpg", "4", "Smith", "Liam"),  # grade differs from the list: held
            ("d.jpg", "1", "Ahmed", "Mia"),  # two photos of a Mia Ahmed in the delivery: held
            ("e.jpg", "1", "Ahmed", "Mia"),
            ("f.jpg", "2", "Doe", "Jane"),  # not opted out: left alone
            ("missing.jpg", "2", "Doe", "John"),
        ],
        header=True,
    )
    found = match_delivery(tmp_path, optouts)
    assert [(sid, p.path.name) for sid, p in found.matched] == [("1", "a.jpg")]
    held = {h.photo.path.name: h for h in found.held}
    assert set(held) == {"b.jpg", "c.jpg", "d.jpg", "e.jpg"}
    assert held["b.jpg"].candidates == ("2",) and "2 opted-out students" in held["b.jpg"].reason
    assert "grade 4" in held["c.jpg"].reason
    assert found.other_students == 1 and [m.path.name for m in found.missing_files] == ["missing.jpg"]
    # A person's answers: b is student 3 (not the grade-2 one), c is "none", d/e undecided.
    answers = tmp_path / "answers.csv"
    answers.write_text(
        f"student_id,photo\n3,{photos / 'b.jpg'}\nnone,{photos / 'c.jpg'}\n,{photos / 'd.jpg'}\n", encoding="utf-8"
    )
    confirmed = read_confirmed(answers, optouts)
    found = match_delivery(tmp_path, optouts, confirmed)
    assert sorted((sid, p.path.name) for sid, p in found.matched) == [("1", "a.jpg"), ("3", "b.jpg")]
    assert sorted(h.photo.path.name for h in found.held) == ["d.jpg", "e.jpg"]
    answers.write_text(f"student_id,photo\n99,{photos / 'b.jpg'}\n", encoding="utf-8")
    with pytest.raises(OptoutGuardError, match="99 is not on the opt-out list"):
        read_confirmed(answers, optouts)


def test_last_years_delivery_is_matched_with_grades_shifted(tmp_path):
    """Back-filling: the photographer's index says the grades of 2024-25; the list says today's."""
    from optout_guard.picture_day import shift_grade

    assert [shift_grade(g, 1) for g in ("PK", "K", "KG", "00", "4", "12")] == ["K", "1", "1", "1", "5", "13"]
    assert shift_grade("K", 2) == "2" and shift_grade("Adult", 1) == "ADULT"
    optouts = OptOutList(
        {
            "1": Student("1", "Ana", "Ruiz", "1"),  # kindergarten in the photo
            "2": Student("2", "Ben", "Ode", "5"),
            "3": Student("3", "Cal", "Ito", "5"),  # the photo says 3: two years back, not one -> held
        }
    )
    (tmp_path / "Photos").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / "Photos" / name).write_bytes(b"jpeg")
    rows = [("a.jpg", "K", "Ruiz", "Ana"), ("b.jpg", "4", "Ode", "Ben"), ("c.jpg", "3", "Ito", "Cal"), ("d.jpg", "2", "Roe", "D")]
    pspa_index(tmp_path, rows, header=True)
    assert len(match_delivery(tmp_path, optouts).held) == 3  # without the shift every student is held
    found = match_delivery(tmp_path, optouts, years_before=1)
    assert sorted((sid, p.path.name) for sid, p in found.matched) == [("1", "a.jpg"), ("2", "b.jpg")]
    assert [h.photo.path.name for h in found.held] == ["c.jpg"] and "1 school year later" in found.held[0].reason
    assert [p.name for p in found.others] == ["d.jpg"]  # not opted out: the cohort (in memory only)


def test_photo_date_from_name_then_file(tmp_path):
    (tmp_path / "2025-09-12_x.jpg").write_bytes(b"x")
    (tmp_path / "2024 picture day.jpg").write_bytes(b"x")
    (tmp_path / "plain.jpg").write_bytes(b"x")
    assert photo_date(tmp_path / "2025-09-12_x.jpg") == "2025-09-12"
    assert photo_date(tmp_path / "2024 picture day.jpg") == "2024-01-01"
    assert photo_date(tmp_path / "plain.jpg") == dt.date.today().isoformat()


# ---- the yearly workflow on real photos ----------------------------------------------------------
def lfw_people(count: int, usable: int, face_models) -> list[str]:
    """``count`` LFW people with 3+ photos, spread over the alphabet; the first ``usable`` of them
    have photos 1–3 that pass the reference quality gate (LFW photos often show other people too)."""
    people = sorted(p.name for p in LFW.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 3)
    spread = people[:: max(1, len(people) // (count * 3))]
    chosen: list[str] = []
    for p in spread:  # in order, until enough are found (each photo embedded at most once)
        photos = [LFW / p / f"{p}_{n:04d}.jpg" for n in (1, 2, 3)]
        if all(not isinstance(reference_embedding(photo, Settings(), face_models), str) for photo in photos):
            chosen.append(p)
            if len(chosen) == usable:
                break
    assert len(chosen) == usable
    return chosen + [p for p in spread if p not in chosen][: count - usable]


def build_delivery(root: Path, entries: list[tuple[str, int, str]], header: bool) -> Path:
    """A PSPA delivery of LFW photos: (LFW person, photo number, grade) each."""
    (root / "Photos").mkdir(parents=True)
    rows = []
    for i, (person, number, grade) in enumerate(entries):
        name = f"IMG_{i:04d}.JPG"
        (root / "Photos" / name).write_bytes((LFW / person / f"{person}_{number:04d}.jpg").read_bytes())
        first, _, last = person.partition("_")
        rows.append((name, grade, last.replace("_", " "), first))
    pspa_index(root, rows, header)
    return root


def run(ws: Path, *args: str):
    return CliRunner().invoke(app, ["--workspace", str(ws), *args], catch_exceptions=False)


@pytest.mark.data
def test_yearly_sync_end_to_end(tmp_path, data_dir, memo_models):
    face_models = memo_models  # the real models; each photo embedded once per process
    people = lfw_people(24, 16, face_models)
    opted, _others = people[:16], people[16:]
    no_photo_ids = ["900001", "900002"]
    rows = [
        {
            "Student ID": f"S{i:03d}",
            "Last Name": p.partition("_")[2].replace("_", " "),
            "First Name": p.partition("_")[0],
            "Grade": "3",
            "Opt Out": "Yes",
        }
        for i, p in enumerate(opted)
    ]
    rows += [
        {"Student ID": sid, "Last Name": "Nobody", "First Name": f"N{sid}", "Grade": "2", "Opt Out": "Yes"}
        for sid in no_photo_ids
    ]
    rows += [
        {"Student ID": f"X{i:03d}", "Last Name": "Other", "First Name": str(i), "Grade": "1", "Opt Out": "No"} for i in range(250)
    ]
    listing = write_csv(tmp_path / "export.csv", rows, "cp1252")
    ws = tmp_path / "ws"
    ws.mkdir()
    today = dt.date.today()
    last_year = (today - dt.timedelta(days=420)).isoformat()
    this_year = (today - dt.timedelta(days=60)).isoformat()
    # Last year: photo 1 of everybody (opted out or not); this year: photo 2.
    d1 = build_delivery(tmp_path / "pd-last", [(p, 1, "1") for p in people], header=False)  # grades mistyped
    d1_right = build_delivery(tmp_path / "pd-last-ok", [(p, 1, "2") for p in people], header=False)
    d2 = build_delivery(tmp_path / "pd-this", [(p, 2, "3") for p in people], header=True)

    # A dry run changes nothing.
    result = run(ws, "sync", str(listing), "--photos", str(d2), "--picture-day", this_year, "--dry-run", "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 3 and doc["applied"] is False
    assert len(doc["photos_to_add"]) == 16 and doc["photos_of_other_students_ignored"] == 8
    assert not (ws / "enrollments").exists() and not (ws / ".optout-guard").exists() and not (ws / "optout-list.json").exists()

    # Last year's delivery says last year's grades (2 then, 3 now): matched, grades shifted by a year.
    dry = json.loads(
        run(ws, "sync", str(listing), "--photos", str(d1_right), "--picture-day", last_year, "--dry-run", "--json").stdout
    )
    assert len(dry["photos_to_add"]) == 16 and dry["held_for_confirmation"] == []
    # A delivery whose grades do not fit even shifted (1 on the photo, 2 expected) -> held, not guessed.
    result = run(ws, "sync", str(listing), "--photos", str(d1), "--picture-day", last_year, "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 3, result.stdout
    assert len(doc["held_for_confirmation"]) == 16 and doc["photos_copied"] == []
    assert sorted(doc["not_protected"]) == sorted([f"S{i:03d}" for i in range(16)] + no_photo_ids)
    held_file = Path(doc["held_file"])
    assert held_file.stat().st_mode & 0o777 == 0o600
    # The person confirms all but one (left blank: still held) and says "none" for another.
    with open(held_file, newline="", encoding="utf-8") as fh:
        held = list(csv.DictReader(fh))
    for row in held:
        person = next(
            p for p in opted if p.partition("_")[0] == row["first"] and p.partition("_")[2].replace("_", " ") == row["last"]
        )
        row["student_id"] = {0: "", 1: "none"}.get(opted.index(person), row["could_be"])
    with open(held_file, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(held[0]))
        writer.writeheader()
        writer.writerows(held)
    result = run(ws, "sync", str(listing), "--photos", str(d1), "--picture-day", last_year, "--confirm", str(held_file), "--json")
    doc = json.loads(result.stdout)
    assert len(doc["photos_copied"]) == 14 and len(doc["held_for_confirmation"]) == 1
    assert sorted(doc["not_protected"]) == sorted(["S000", "S001", *no_photo_ids])
    assert sorted(doc["stale"]) == [f"S{i:03d}" for i in range(2, 16)]  # last year's photo only
    # Photos of students not on the list were never copied.
    assert sorted(p.name for p in (ws / "enrollments").iterdir()) == sorted([f"S{i:03d}" for i in range(2, 16)])

    # This year's delivery (grades agree now): a second, dated reference for everyone.
    result = run(ws, "sync", str(listing), "--photos", str(d2), "--picture-day", this_year, "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 3  # the two students with no photo at all
    assert len(doc["photos_copied"]) == 16 and doc["held_for_confirmation"] == []
    assert doc["not_protected"] == no_photo_ids and doc["stale"] == []
    students = {s["student_id"]: s for s in doc["students"]}
    assert students["S005"]["reference_photos"] == 2 and students["S005"]["newest_photo"] == this_year
    assert students["S000"]["reference_photos"] == 1
    assert (ws / "optout-list.json").stat().st_mode & 0o777 == 0o600
    assert set(load_list(ws).students) == {f"S{i:03d}" for i in range(16)} | set(no_photo_ids)

    # Running the same sync again changes nothing.
    doc = json.loads(run(ws, "sync", str(listing), "--photos", str(d2), "--picture-day", this_year, "--json").stdout)
    assert doc["photos_copied"] == [] and doc["photos_already_enrolled"] == 16

    # A photo of an opted-out student (a third photo) is blocked for that student.
    check = run(ws, "check", "--json", str(LFW / opted[5] / f"{opted[5]}_0003.jpg"))
    assert check.exit_code == 1 and json.loads(check.stdout)["photos"][0]["students"] == ["S005"]

    # Two families withdraw their opt-out: their templates and reference photos are deleted.
    kept = [r for r in rows if r["Student ID"] not in ("S005", "S006")]
    listing2 = write_csv(tmp_path / "export2.csv", kept, "utf-8-sig")
    dry = json.loads(run(ws, "sync", str(listing2), "--dry-run", "--json").stdout)
    assert dry["students_removed"] == ["S005", "S006"] and (ws / "enrollments" / "S005").is_dir()
    # 2 of 18 is more than 10% of the list: a person confirms the exact number first.
    refused = run(ws, "sync", str(listing2), "--json")
    assert refused.exit_code == 2 and "--confirm-removals 2" in refused.stderr and load_list(ws).students.get("S005")
    doc = json.loads(run(ws, "sync", str(listing2), "--confirm-removals", "2", "--json").stdout)
    assert doc["students_removed"] == ["S005", "S006"] and doc["templates_deleted"] == 4
    index = FaceIndex.load(ws / ".optout-guard" / "index.npz", embedding_fingerprint())
    assert not {"S005", "S006"} & {t.student_id for t in index.templates}
    assert not {"S005", "S006"} & index.students
    assert not (ws / "enrollments" / "S005").exists()
    check = run(ws, "check", "--json", str(LFW / opted[5] / f"{opted[5]}_0003.jpg"))
    assert json.loads(check.stdout)["photos"][0]["students"] == []

    # A broken export changes nothing at all.
    before = {p: p.read_bytes() for p in [ws / ".optout-guard" / "index.npz", ws / "optout-list.json"]}
    broken = [*kept[:50], {**kept[50], "Opt Out": "perhaps"}, *kept[51:]]
    result = run(ws, "sync", str(write_csv(tmp_path / "broken.csv", broken)), "--photos", str(d2))
    assert result.exit_code == 2 and "line 52" in result.stderr and "nothing was changed" in result.stderr
    assert all(p.read_bytes() == data for p, data in before.items())
    assert (ws / "enrollments" / "S007").is_dir()

    # enroll respects the list: a folder of a student not on it is skipped, not enrolled.
    (ws / "enrollments" / "S005").mkdir()
    (ws / "enrollments" / "S005" / "x.jpg").write_bytes((LFW / opted[5] / f"{opted[5]}_0001.jpg").read_bytes())
    doc = json.loads(run(ws, "enroll", "--json").stdout)
    assert any("not on the opt-out list" in f["reason"] for f in doc["skipped_folders"])
    assert "S005" not in {a["student_id"] for a in doc["added"]}


def test_plain_folder_of_id_named_photos(tmp_path):
    optouts = OptOutList({"1001": Student("1001"), "1002": Student("1002")})
    for name in ("1001.jpg", "1002.JPEG", "2000.jpg", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = match_delivery(tmp_path, optouts)
    assert sorted((sid, p.path.name) for sid, p in found.matched) == [("1001", "1001.jpg"), ("1002", "1002.JPEG")]
    assert found.other_students == 1 and not found.held  # 2000 is not on the list: left alone


def test_a_new_photo_nobody_can_use_is_said_and_exits_3(tmp_path, samples):
    """Issue 18: 'copied: 1' next to 'photo not usable' and exit 0 hid that a student's only new
    photo was refused; the summary now counts usable photos and the exit code asks for a person."""
    from PIL import Image

    (tmp_path / "list.txt").write_text("S1\n")
    first, second = tmp_path / "pd2025", tmp_path / "pd2026"
    first.mkdir()
    second.mkdir()
    Image.open(samples["grace_hopper"]).convert("RGB").save(first / "S1.jpg")
    Image.open(samples["coffee"]).convert("RGB").save(second / "S1.jpg")  # no face at all
    ws = tmp_path / "ws"
    ws.mkdir()
    ok = run(ws, "sync", str(tmp_path / "list.txt"), "--format", "ids", "--photos", str(first), "--picture-day", "2025-09-10")
    assert ok.exit_code == 0, ok.output
    result = run(ws, "sync", str(tmp_path / "list.txt"), "--format", "ids", "--photos", str(second), "--picture-day",
                 "2026-09-10", "--json")  # fmt: skip
    doc = json.loads(result.stdout)
    assert result.exit_code == 3 and doc["not_protected"] == []  # still protected by last year's photo …
    assert doc["photos_usable"] == 0 and doc["students_whose_new_photos_were_all_rejected"] == ["S1"]
    text = run(ws, "sync", str(tmp_path / "list.txt"), "--format", "ids", "--photos", str(second), "--picture-day", "2026-09-10")
    assert text.exit_code == 0  # nothing new this time: the refused photo is known, not new
    people = json.loads(run(ws, "people", "--json").stdout)["students"][0]
    assert people["rejected"] == [{"photo": "2026-09-10_S1.jpg", "reason": "no face found"}]  # which file, and why
    assert "2026-09-10_S1.jpg: no face found" in run(ws, "people").stdout


def test_people_flags_students_protected_by_one_photo(tmp_path, samples):
    """Issue 26: one picture-day photo missed 3 of 13 later appearances in a walk, and nothing told
    the IT person; `people` says so, with the one action that helps."""
    ws = tmp_path / "ws"
    for sid, photos in (("one", [samples["grace_hopper"]]), ("two", [samples["grace_hopper"], samples["astronaut"]])):
        (ws / "enrollments" / sid).mkdir(parents=True)
        for i, p in enumerate(photos):
            (ws / "enrollments" / sid / f"2026-09-0{i + 1}_{i}.jpg").write_bytes(p.read_bytes())
    run = CliRunner().invoke
    assert run(app, ["--workspace", str(ws), "enroll"]).exit_code == 0
    doc = json.loads(run(app, ["--workspace", str(ws), "people", "--json"]).stdout)
    advice = {s["student_id"]: s["advice"] for s in doc["students"]}
    assert advice["one"].startswith("one reference photo only") and "--picture-day" in advice["one"]
    assert advice["two"] == ""
    table = run(app, ["--workspace", str(ws), "people"]).stdout
    assert "protected by one photo only" in table and "weak protection" in table


def _powerschool_export(path: Path) -> Path:
    """A PowerSchool-shaped export as districts have it: flag values "Opt Out" / "Allow", numeric SchoolID."""
    rows = [{"Student_Number": f"{200 + i}", "First_Name": "Ann", "Last_Name": f"Lee{i}", "Grade_Level": "5",
             "SchoolID": "101" if i % 2 else "205", "DirectoryInfoOptOut": "Opt Out" if i % 4 == 0 else "Allow"}
            for i in range(20)]  # fmt: skip
    return write_csv(path, rows)


def test_flag_values_other_than_yes_no_are_said_once_and_mapped_in_config(tmp_path):
    """Issue 28: "Allow" was refused with 20 identical lines, and nothing could map it."""
    from optout_guard.optout_list import sis_map

    export = _powerschool_export(tmp_path / "export.csv")
    with pytest.raises(ListRejected) as refused:
        parse_list(export, "powerschool")
    text = str(refused.value)
    assert text.count("'Allow'") == 1 and "15 rows" in text and "opt_out_values" in text
    (tmp_path / "config.toml").write_text(
        '[sis]\nopt_out_values = ["Opt Out"]\nnot_opt_out_values = ["Allow"]\n'
        '[schools]\n101 = "Lincoln Elementary"\n205 = "Washington Middle"\n'
    )
    parsed = parse_list(export, "powerschool", district=sis_map(tmp_path))
    assert sorted(parsed.students) == ["200", "204", "208", "212", "216"]
    assert {s.school for s in parsed.students.values()} == {"Washington Middle"}
    from optout_guard.config import load_settings

    load_settings(tmp_path, environ={})  # [sis] and [schools] are not settings: no error


def test_a_powerschool_export_syncs_with_its_map_and_scopes_find_the_school(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    export = _powerschool_export(tmp_path / "export.csv")
    run = CliRunner().invoke
    refused = run(app, ["--workspace", str(ws), "sync", str(export), "--format", "powerschool", "--dry-run"])
    assert refused.exit_code == 2 and "opt_out_values" in refused.output
    (ws / "config.toml").write_text('[sis]\nopt_out_values = ["Opt Out"]\nnot_opt_out_values = ["Allow"]\n')
    unnamed = run(app, ["--workspace", str(ws), "sync", str(export), "--format", "powerschool", "--dry-run"])
    assert "Schools are numbers in this export (205)" in unnamed.stdout
    (ws / "config.toml").write_text('[sis]\nopt_out_values = ["Opt Out"]\nnot_opt_out_values = ["Allow"]\n'
                                    '[schools]\n101 = "Lincoln Elementary"\n205 = "Washington Middle"\n')  # fmt: skip
    named = run(app, ["--workspace", str(ws), "sync", str(export), "--format", "powerschool", "--dry-run", "--json"])
    doc = json.loads(named.stdout)
    assert doc["students_on_list"] == 5 and doc["school_ids_without_a_name"] == []


def test_a_student_added_before_any_list_is_kept_by_the_first_sync(tmp_path, samples):
    """Issue 28: `add S5` before any list said "recorded as a local addition" and recorded nothing;
    the first sync then proposed removing S5."""
    ws = tmp_path / "ws"
    ws.mkdir()
    run = CliRunner().invoke
    added = run(app, ["--workspace", str(ws), "add", "S5", str(samples["grace_hopper"])])
    assert added.exit_code == 0, added.output
    assert "the first sync takes them in" in added.stdout and (ws / "optout-additions.json").stat().st_mode & 0o077 == 0
    (tmp_path / "list.txt").write_text("S1\n")
    synced = run(app, ["--workspace", str(ws), "sync", str(tmp_path / "list.txt"), "--format", "ids", "--json"])
    assert synced.exit_code in (0, 3), synced.output
    doc = json.loads(synced.stdout)
    assert "S5" not in doc["students_removed"]
    listed = load_list(ws)
    assert listed is not None and listed.students["S5"].source == "local"
    assert not (ws / "optout-additions.json").exists()
    index = FaceIndex.load(ws / ".optout-guard" / "index.npz", embedding_fingerprint())
    assert index.references("S5") == 1


def test_add_refuses_an_id_like_another_and_a_photo_unlike_the_student(tmp_path, samples, data_dir):
    """Issue 28: `add 101` beside 0101 (or `add s0102` beside 0102) made new students, and another
    person's face under an existing id was taken without a word."""
    from optout_guard.optout_list import id_lookalike

    assert id_lookalike("101", {"0101"}) == "0101" and id_lookalike("s0102", {"0102"}) == "0102"
    assert id_lookalike("S0102", {"s0102"}) == "s0102" and id_lookalike("0103", {"0101", "0102"}) is None
    assert id_lookalike("0101", {"0101"}) is None
    ws = tmp_path / "ws"
    ws.mkdir()
    run = CliRunner().invoke
    colin = [str(LFW / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg") for i in (1, 2)]
    assert run(app, ["--workspace", str(ws), "add", "0101", *colin]).exit_code == 0
    lookalike = run(app, ["--workspace", str(ws), "add", "101", str(samples["grace_hopper"])])
    assert lookalike.exit_code == 2 and "looks like the student 0101" in lookalike.output
    other_face = run(app, ["--workspace", str(ws), "add", "0101", str(samples["grace_hopper"])])
    assert other_face.exit_code == 2 and "does not look like 0101" in other_face.output
    same = run(app, ["--workspace", str(ws), "add", "0101", str(LFW / "Colin_Powell" / "Colin_Powell_0003.jpg")])
    assert same.exit_code == 0, same.output
    forced = run(app, ["--workspace", str(ws), "add", "101", str(samples["grace_hopper"]), "--force"])
    assert forced.exit_code == 0
    index = FaceIndex.load(ws / ".optout-guard" / "index.npz", embedding_fingerprint())
    assert index.references("0101") == 3 and index.references("101") == 1


def test_last_years_delivery_pairs_the_same_children_not_on_the_list_and_is_remembered(tmp_path, samples):
    """Issue 26 §2: sync --previous-photos pairs the children *not* on the list who are in both
    deliveries (by id, or by name where no id), never an opted-out child; the path is remembered
    for the next sync, and nothing is copied."""
    from optout_guard.picture_day import same_children

    photo = samples["grace_hopper"].read_bytes()
    last, this = tmp_path / "pd-2025", tmp_path / "pd-2026"
    for folder, ids in ((last, ["100", "101", "102", "0103"]), (this, ["100", "101", "103", "104"])):
        folder.mkdir()
        for sid in ids:
            (folder / f"{sid}.jpg").write_bytes(photo)
    listing = tmp_path / "export.csv"
    listing.write_text("Student ID,Opt Out\n100,Yes\n101,No\n102,No\n103,No\n104,No\n")
    optouts = parse_list(listing, "generic")
    assert same_children(last, [this], optouts) == [(last / "101.jpg", this / "101.jpg"), (last / "0103.jpg", this / "103.jpg")]
    ws = tmp_path / "ws"
    ws.mkdir()
    doc = json.loads(run(ws, "sync", str(listing), "--photos", str(this), "--previous-photos", str(last), "--json").stdout)
    assert doc["same_children_in_last_years_delivery"] == 2
    remembered = json.loads(run(ws, "sync", str(listing), "--photos", str(this), "--dry-run", "--json").stdout)
    assert remembered["same_children_in_last_years_delivery"] == 2  # the path was remembered …
    assert not list((ws / "enrollments").glob("*/*101*")) and not list((ws / "enrollments").glob("*/*103*"))  # … nothing copied
