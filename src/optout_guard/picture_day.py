"""Picture-day deliveries: which photo shows which opted-out student.

School photographers deliver a folder of JPEGs with a PSPA ``INDEX.TXT`` (tab-separated: Volume,
Folder, File, Grade, Last, First, Homeroom, Period, Teacher, Track, Department, Title, Image
Size; sometimes a header row, sometimes a student id column). Or a district has a plain folder of
``<student_id>.jpg`` files. Only photos of students on the opt-out list are ever taken: the rest
of the school's photos are counted and left alone.

Matching: by student id when the index has one; otherwise by name and grade. A name is matched
only when exactly one opted-out student and exactly one photo in the delivery share it (and the
grade agrees); anything else — two students of that name, a grade that differs, a name found
twice in the delivery — is *held* for a person to confirm, never guessed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

from optout_guard.errors import OptoutGuardError
from optout_guard.fsutil import atomic_write
from optout_guard.optout_list import (
    ConsentRow,
    OptOutList,
    normalise_grade,
    normalise_header,
    normalise_id,
    normalise_name,
    read_text,
)

INDEX_NAME = "INDEX.TXT"
PSPA_COLUMNS = (
    "volume",
    "folder",
    "file",
    "grade",
    "last",
    "first",
    "homeroom",
    "period",
    "teacher",
    "track",
    "department",
    "title",
    "image_size",
)
_HEADER_ALIASES = {
    "volume": ("volume", "volume_name"),
    "folder": ("folder", "image_folder"),
    "file": ("file", "image_file_name", "image_name", "filename", "file_name"),
    "grade": ("grade", "grade_level"),
    "last": ("last", "last_name", "lastname"),
    "first": ("first", "first_name", "firstname"),
    "id": ("student_id", "studentid", "id", "student_number", "sis_id", "perm_id"),
}
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".heic", ".heif", ".tif", ".tiff"}


@dataclass(frozen=True)
class DeliveryPhoto:
    """One photo of the delivery, as the photographer described it."""

    path: Path
    line: int  # in INDEX.TXT (0 for a plain folder)
    last: str = ""
    first: str = ""
    grade: str = ""
    student_id: str = ""


@dataclass(frozen=True)
class Held:
    """A photo that may show an opted-out student but could not be matched for sure."""

    photo: DeliveryPhoto
    candidates: tuple[str, ...]  # student ids it could be
    reason: str


@dataclass
class DeliveryMatch:
    matched: list[tuple[str, DeliveryPhoto]] = field(default_factory=list)  # (student id, photo)
    held: list[Held] = field(default_factory=list)
    missing_files: list[DeliveryPhoto] = field(default_factory=list)  # listed, but no such file
    other_students: int = 0  # photos of students not on the list: left alone (never copied) …
    # … but usable, in memory only, as the district's cohort (docs/accuracy.md "The cohort"): certain matches only
    others: list[Path] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def _find_file(root: Path, folder: str, name: str) -> Path | None:
    """The photo INDEX.TXT names; deliveries made on Windows may differ in letter case."""
    for candidate in (root / folder / name, root / name):
        if candidate.is_file():
            return candidate
    wanted = name.lower()
    for base in (root / folder, root):
        if base.is_dir():
            for entry in base.iterdir():
                if entry.name.lower() == wanted and entry.is_file():
                    return entry
    return None


def read_delivery(root: Path) -> tuple[list[DeliveryPhoto], list[DeliveryPhoto], list[tuple[int, str]]]:
    """(photos, listed-but-missing photos, problems) of a delivery folder."""
    root = Path(root)
    if not root.is_dir():
        raise OptoutGuardError(f"picture-day folder {root} does not exist")
    index = next((p for p in root.iterdir() if p.name.upper() == INDEX_NAME and p.is_file()), None)
    if index is None:  # a plain folder of <student_id>.jpg
        plain = [
            DeliveryPhoto(p, 0, student_id=p.stem)
            for p in sorted(root.iterdir())
            if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")
        ]
        return plain, [], []
    rows = list(csv.reader(io.StringIO(read_text(index), newline=""), delimiter="\t"))
    positions = {name: i for i, name in enumerate(PSPA_COLUMNS)}
    start = 0
    if rows and any(normalise_header(c) in ("file", "image_file_name", "last_name", "last", "volume") for c in rows[0]):
        header = [normalise_header(c) for c in rows[0]]
        positions = {}
        for key, aliases in _HEADER_ALIASES.items():
            found = next((header.index(a) for a in aliases if a in header), None)
            if found is not None:
                positions[key] = found
        start = 1
    problems: list[tuple[int, str]] = []
    if "file" not in positions:
        return [], [], [(1, f"{index}: no File column")]
    photos: list[DeliveryPhoto] = []
    missing: list[DeliveryPhoto] = []
    for line_no, row in enumerate(rows[start:], start=start + 1):
        if not any(c.strip() for c in row):
            continue

        def cell(key: str, row: list[str] = row) -> str:
            i = positions.get(key)
            return row[i].strip() if i is not None and i < len(row) else ""

        if not cell("file"):
            problems.append((line_no, f"{index}: no file name"))
            continue
        located = _find_file(root, cell("folder"), cell("file"))
        photo = DeliveryPhoto(
            located or root / cell("folder") / cell("file"), line_no, cell("last"), cell("first"), cell("grade"), cell("id")
        )
        (photos if located else missing).append(photo)
    return photos, missing, problems


def school_year(date: dt.date) -> int:
    """The calendar year a school year starts in (a school year starts in July or later)."""
    return date.year if date.month >= 7 else date.year - 1


def shift_grade(grade: str, years: int) -> str:
    """The grade a student in ``grade`` will be in ``years`` school years later (PK -> K -> 1 …);
    unchanged when it is not a plain grade."""
    g = normalise_grade(grade)
    order = {"PK": -1, "K": 0}
    if g in order:
        value = order[g]
    elif g.isdigit():
        value = int(g)
    else:
        return g
    value += years
    return {-1: "PK", 0: "K"}.get(value, str(value)) if value >= -1 else g


def match_delivery(
    root: Path,
    optouts: OptOutList,
    confirmed: dict[str, str] | None = None,
    years_before: int = 0,
) -> DeliveryMatch:
    """Which delivery photos show which opted-out students. ``confirmed``: photo path -> student id
    (a person's answers for photos held earlier; an empty id means "none of them").
    ``years_before``: school years between the delivery and the list (an earlier year's delivery
    says the grade students were in *then*: compared shifted by that many years)."""
    photos, missing, problems = read_delivery(root)
    result = DeliveryMatch(missing_files=missing, problems=problems)
    confirmed = confirmed or {}
    by_name: dict[str, list[str]] = {}
    by_id: dict[str, list[str]] = {}
    for s in optouts.students.values():
        by_id.setdefault(normalise_id(s.student_id), []).append(s.student_id)
        by_name.setdefault(normalise_name(s.last) + "|" + normalise_name(s.first), []).append(s.student_id)
    photos_by_name: dict[str, int] = {}
    for p in photos:
        if not p.student_id:
            key = normalise_name(p.last) + "|" + normalise_name(p.first)
            photos_by_name[key] = photos_by_name.get(key, 0) + 1

    for photo in photos:
        answer = confirmed.get(str(photo.path.resolve()))
        if answer is not None:
            if answer:
                result.matched.append((answer, photo))
            else:
                result.other_students += 1  # a person said "none": not a cohort photo (it was doubtful)
            continue
        if photo.student_id:
            # The list's own id rule: "101" here is "0101" on the list. An opted-out student's photo
            # must never land among "children not on the list" (the cohort) for a lost leading zero.
            same = by_id.get(normalise_id(photo.student_id), [])
            if photo.student_id in optouts.students:
                result.matched.append((photo.student_id, photo))
            elif len(same) == 1:
                result.matched.append((same[0], photo))
            elif same:
                reason = f"the id {photo.student_id} matches {len(same)} ids on the list once leading zeros are dropped"
                result.held.append(Held(photo, tuple(same), reason))
            else:
                result.other_students += 1
                result.others.append(photo.path)
            continue
        key = normalise_name(photo.last) + "|" + normalise_name(photo.first)
        ids = by_name.get(key, []) if photo.last or photo.first else []
        if not ids:
            result.other_students += 1
            result.others.append(photo.path)
            continue
        grade = shift_grade(photo.grade, years_before)
        same_grade = [i for i in ids if normalise_grade(optouts.students[i].grade) == grade or not optouts.students[i].grade]
        if len(ids) > 1:
            reason = f"{len(ids)} opted-out students are called {photo.first} {photo.last}"
            result.held.append(Held(photo, tuple(same_grade or ids), reason))
        elif photos_by_name[key] > 1:
            reason = f"{photos_by_name[key]} photos in this delivery are of a {photo.first} {photo.last}"
            result.held.append(Held(photo, tuple(ids), reason))
        elif not same_grade:
            years = f"{years_before} school year{'s' if years_before != 1 else ''}"
            then = f" (grade {grade} now, {years} later)" if years_before else ""
            reason = (
                f"name matches, but the photo says grade {photo.grade or '?'}{then} and the list grade "
                f"{optouts.students[ids[0]].grade}"
            )
            result.held.append(Held(photo, tuple(ids), reason))
        else:
            result.matched.append((ids[0], photo))
    return result


# ---- the person's answers ----------------------------------------------------------------------
NONE_ANSWERS = {"none", "-", "no", "nobody"}
CONFIRM_COLUMNS = ("student_id", "photo", "last", "first", "grade", "could_be", "reason")


def write_held(held: list[Held], path: Path) -> None:
    """A CSV a person fills in: the right student id per photo, or ``none`` (blank: still undecided)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CONFIRM_COLUMNS)
    for h in held:
        p = h.photo
        writer.writerow(["", str(p.path.resolve()), p.last, p.first, p.grade, " ".join(h.candidates), h.reason])
    atomic_write(path, buffer.getvalue())  # private from the start: it names children


def read_confirmed(path: Path, optouts: OptOutList) -> dict[str, str]:
    """Photo path -> student id from a filled-in confirmation file. Every id must be on the list."""
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(Path(path)), newline="")))
    except OSError as exc:
        raise OptoutGuardError(f"cannot read the confirmation file {path} ({exc.strerror or exc})") from None
    answers: dict[str, str] = {}
    bad = []
    for line_no, row in enumerate(rows, start=2):
        sid = (row.get("student_id") or "").strip()
        photo = (row.get("photo") or "").strip()
        if not sid:
            continue  # not decided yet: held again
        if sid.lower() in NONE_ANSWERS:
            sid = ""
        if not photo:
            bad.append(f"line {line_no}: no photo")
        elif sid and sid not in optouts.students:
            bad.append(f"line {line_no}: {sid} is not on the opt-out list")
        else:
            answers[str(Path(photo).resolve())] = sid
    if bad:
        raise OptoutGuardError(f"the confirmation file {path} was not used (nothing was changed): " + "; ".join(bad))
    return answers


def match_consenting(
    root: Path, consenting: dict[str, ConsentRow], taken: set[Path], years_before: int = 0
) -> list[tuple[str, Path]]:
    """Which delivery photos show consenting students: (student id, photo). Only certain matches:
    the photo's id (the list's id rule, one student only), or else a name that one consenting
    student and one photo of the delivery have, with the grade agreeing. ``taken``: photos matched
    to or held for opted-out students, never used for anyone else."""
    photos, _missing, _problems = read_delivery(root)
    by_id: dict[str, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for c in consenting.values():
        by_id.setdefault(normalise_id(c.student_id), []).append(c.student_id)
        by_name.setdefault(normalise_name(c.last) + "|" + normalise_name(c.first), []).append(c.student_id)
    names: dict[str, int] = {}
    for p in photos:
        key = normalise_name(p.last) + "|" + normalise_name(p.first)
        names[key] = names.get(key, 0) + 1
    found: list[tuple[str, Path]] = []
    for photo in photos:
        if photo.path.resolve() in taken:
            continue
        if photo.student_id:
            same = by_id.get(normalise_id(photo.student_id), [])
            if len(same) == 1:
                found.append((same[0], photo.path))
            continue
        key = normalise_name(photo.last) + "|" + normalise_name(photo.first)
        ids = by_name.get(key, []) if photo.last and photo.first else []
        if len(ids) == 1 and names[key] == 1:
            grade = shift_grade(photo.grade, years_before)
            listed = normalise_grade(consenting[ids[0]].grade)
            if not listed or not grade or listed == grade:
                found.append((ids[0], photo.path))
    return found


def same_children(previous: Path, current: list[Path], optouts: OptOutList) -> list[tuple[Path, Path]]:
    """Photos of the same children in last year's delivery and this year's: (last year's, this
    year's), for children **not** on the opt-out list, matched by the photo's id (the list's id
    rule) or else by name, only where the id or name is on exactly one photo of each delivery. For
    the catch estimate (``cohort.CatchCurve``): embedded transiently, kept as one number."""
    opted_ids = {normalise_id(s.student_id) for s in optouts.students.values()}
    opted_names = {normalise_name(s.last) + "|" + normalise_name(s.first) for s in optouts.students.values() if s.last or s.first}

    def keyed(photos: list[DeliveryPhoto]) -> dict[str, Path]:
        counts: dict[str, int] = {}
        found: dict[str, Path] = {}
        for p in photos:
            name = normalise_name(p.last) + "|" + normalise_name(p.first)
            if p.student_id:
                key = "id:" + normalise_id(p.student_id)
                if normalise_id(p.student_id) in opted_ids:
                    continue
            elif p.last and p.first:
                key = "name:" + name
            else:
                continue
            if (p.last or p.first) and name in opted_names:
                continue  # an opted-out student's photo is never "another child"
            counts[key] = counts.get(key, 0) + 1
            found[key] = p.path
        return {k: v for k, v in found.items() if counts[k] == 1}

    before = keyed(read_delivery(previous)[0])
    now: dict[str, Path] = {}
    for root in current:
        now.update(keyed(read_delivery(root)[0]))
    return [(before[k], now[k]) for k in sorted(before.keys() & now.keys())]
