"""The district's opt-out list: an export from the student information system (SIS).

Read everything, check everything, and only then hand back a list: a file with any bad row
(missing or duplicate id, a flag value we do not understand, an id we cannot use as a folder
name) is refused as a whole, with every problem and its line number, so an import never
half-applies. Exports come as CSV or tab-separated text, in UTF-8 (with or without a byte-order
mark), UTF-16 (Excel's "Unicode text") or Windows-1252; the delimiter is detected.

Column names differ by SIS; ``FORMATS`` holds the usual names for each (matched ignoring case,
spaces and punctuation). The opt-out flag is usually a district-defined field, so its column can
also be named explicitly. Some districts export a *release* flag instead (release = no means the
family opted out): ``flag_means="release"``.

The list is kept in the workspace (``optout-list.json``, private) with names and grades: names are
needed to match picture-day photos and to show a reviewer who may see them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optout_guard.errors import ListRejected, OptoutGuardError
from optout_guard.fsutil import atomic_write

# The one student-id rule (folder names, list rows, the desk, `remove`): no path separators, no markup.
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def is_valid_student_id(student_id: str) -> bool:
    return bool(STUDENT_ID.match(student_id))


LIST_FILE = "optout-list.json"
# Students added with `add` before any list was imported: kept here (0600, it names children) until
# the first sync takes them into the list as local additions.
PENDING_FILE = "optout-additions.json"

_ID = ("student_id", "studentid", "student_number", "student_no", "id", "sis_id", "local_id", "perm_id", "permanent_id")
_FIRST = ("first_name", "firstname", "first", "legal_first_name", "given_name", "student_first_name")
_LAST = ("last_name", "lastname", "last", "legal_last_name", "surname", "family_name", "student_last_name")
_GRADE = ("grade", "grade_level", "gradelevel", "grd", "current_grade")
_SCHOOL = ("school", "school_name", "schoolname", "school_id", "schoolid", "building", "school_number", "sch")
_SECTION = ("homeroom", "home_room", "homeroom_teacher", "section", "advisory")
_FLAG = (
    "opt_out",
    "optout",
    "opted_out",
    "directory_opt_out",
    "directory_info_opt_out",
    "directory_information_opt_out",
    "ferpa_opt_out",
    "ferpa_directory_opt_out",
    "dir_info_opt_out",
)
# Usual column names per SIS (first match wins). The opt-out flag is a district-defined field in
# most systems: check your export's header and pass --flag-column if it is not found.
FORMATS: dict[str, dict[str, tuple[str, ...]]] = {
    "generic": {
        "id": _ID,
        "first": _FIRST,
        "last": _LAST,
        "grade": _GRADE,
        "school": _SCHOOL,
        "section": _SECTION,
        "flag": _FLAG,
    },
    "powerschool": {
        "id": ("student_number", *_ID),
        "first": ("first_name", *_FIRST),
        "last": ("last_name", *_LAST),
        "grade": ("grade_level", *_GRADE),
        "school": ("schoolid", "school_name", *_SCHOOL),
        "section": _SECTION,
        "flag": ("directoryinfooptout", "ferpa_optout", *_FLAG),
    },
    "infinite-campus": {
        "id": ("student_number", "studentnumber", *_ID),
        "first": ("first_name", "firstname", *_FIRST),
        "last": ("last_name", "lastname", *_LAST),
        "grade": ("grade", *_GRADE),
        "school": ("school_name", "calendar_name", *_SCHOOL),
        "section": _SECTION,
        "flag": ("directory_opt_out", "release_directory_info", *_FLAG),
    },
    "skyward": {
        "id": ("other_id", "student_id", "name_id", *_ID),
        "first": ("first_name", "stu_first_name", *_FIRST),
        "last": ("last_name", "stu_last_name", *_LAST),
        "grade": ("grade", "grd_lvl", *_GRADE),
        "school": ("entity", "school", *_SCHOOL),
        "section": _SECTION,
        "flag": ("directory_opt_out", "restrict_directory", *_FLAG),
    },
    "synergy": {
        "id": ("perm_id", "permid", "sis_number", *_ID),
        "first": ("first_name", *_FIRST),
        "last": ("last_name", *_LAST),
        "grade": ("grade", *_GRADE),
        "school": ("school_name", "school_code", *_SCHOOL),
        "section": _SECTION,
        "flag": ("directory_info_opt_out", "release_directory_info", *_FLAG),
    },
}
YES = {"y", "yes", "true", "t", "1", "x", "optout", "optedout", "opt out", "opted out", "on", "checked"}
NO = {"", "n", "no", "false", "f", "0", "off", "release", "released", "unchecked"}


@dataclass(frozen=True)
class Student:
    student_id: str
    first: str = ""
    last: str = ""
    grade: str = ""
    school: str = ""
    section: str = ""  # homeroom / section, when the export has one (a scope may name it)
    # Where the opt-out comes from: "" = the SIS export; "local" = added with `optout-guard add`
    # (a form handed in mid-year), kept by every sync until the export lists the student.
    source: str = ""
    added_at: str = ""  # local additions: when (ISO UTC) …
    added_by: str = ""  # … and by whom


@dataclass(frozen=True)
class ConsentRow:
    """A student whose family consented to recognition, as the export says (read only when the
    district turned consent matching on; names are used to find their delivery photo and never kept)."""

    student_id: str
    first: str = ""
    last: str = ""
    grade: str = ""
    date: str = ""  # the consent date column, YYYY-MM-DD when it can be read


@dataclass
class OptOutList:
    students: dict[str, Student] = field(default_factory=dict)
    source: str = ""
    rows_read: int = 0  # data rows in the export (opted out or not)
    export_sha256: str = ""  # the export file's hash (recorded with every removal it causes)
    # Reference photos `sync` copied, per student (file names in enrollments/<id>/): only these are
    # ever deleted by a sync; photos put there by hand stay.
    copied: dict[str, list[str]] = field(default_factory=dict)
    # Read from the export's consent column (consent.py), never saved with the list. None: not read.
    consenting: dict[str, ConsentRow] | None = None
    everyone: set[str] = field(default_factory=set)  # every student id in the export, opted out or not
    consent_conflicts: list[str] = field(default_factory=list)  # opted out *and* consenting: opted out wins

    def ids(self) -> set[str]:
        return set(self.students)

    def local_additions(self) -> dict[str, Student]:
        return {sid: s for sid, s in self.students.items() if s.source == "local"}


def normalise_id(student_id: str) -> str:
    """A student id as it compares across files: trimmed, case folded, leading zeros dropped
    (Excel drops them: "0101" in the SIS export is "101" in a photographer's spreadsheet)."""
    text = student_id.strip().casefold()
    return text.lstrip("0") or text


def id_lookalike(student_id: str, existing: set[str] | list[str]) -> str | None:
    """An existing id that ``student_id`` is probably a mistyping of: the same once case and
    leading zeros are set aside ("101" for "0101"), or once a letter prefix is ("s0102" for "0102").
    None when there is none (or when ``student_id`` itself exists)."""
    if student_id in existing:
        return None

    def keys(sid: str) -> set[str]:
        plain = normalise_id(sid)
        bare = re.sub(r"^[a-z]+", "", plain)
        return {plain} | ({normalise_id(bare)} if bare.isdigit() else set())

    mine = keys(student_id)
    return next((other for other in sorted(existing) if keys(other) & mine), None)


def normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def normalise_name(name: str) -> str:
    """For matching names across systems: no accents, case, spaces, hyphens or apostrophes."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isalnum()).lower()


_GRADE_WORDS = re.compile(r"^(GRADES?|GRD|GR|YEAR|YR)\.?")
_ORDINAL = re.compile(r"^(\d+)(ST|ND|RD|TH)(GRADE|GR)?$")


def normalise_grade(grade: str) -> str:
    """A grade as it compares across files: "5", "05", "Grade 5", "Gr. 5", "5th", "5th grade" are
    all "5"; "K", "KG", "Kindergarten" are "K"; "Pre-K", "PK", "TK" are "PK". Anything else is
    compared as written (upper case, no spaces): a grade that cannot be read is never equal to
    another by accident (and a student whose grade cannot be read is in every grade's scope)."""
    g = grade.strip().upper().replace("-", "").replace(" ", "")
    g = _GRADE_WORDS.sub("", g).lstrip(".")
    if ordinal := _ORDINAL.match(g):
        g = ordinal.group(1)
    if g in {"K", "KG", "KN", "KDG", "KINDER", "KINDERGARTEN", "KINDERGARTNER", "00", "0"}:
        return "K"
    if g in {"PK", "PREK", "PREKINDERGARTEN", "P", "PS", "TK", "PRESCHOOL"}:
        return "PK"
    return g.lstrip("0") or g


def school_key(name: str) -> str:
    """A school's name as it compares across files: "Lincoln Elementary School", "Lincoln
    Elementary" and "lincoln elementary sch." are one school (a trailing "school" is dropped)."""
    key = normalise_name(name)
    for suffix in ("school", "sch"):
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return key


def read_text(path: Path) -> str:
    """Decode an export: UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _rows(text: str) -> list[list[str]]:
    sample = text[:8192]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",\t;|")
    except csv.Error:
        dialect = csv.excel_tab if "\t" in sample else csv.excel
    return list(csv.reader(io.StringIO(text, newline=""), dialect))


def _column(header: list[str], wanted: tuple[str, ...], explicit: str | None) -> int | None:
    names = [normalise_header(h) for h in header]
    for name in (normalise_header(explicit),) if explicit else wanted:
        if name in names:
            return names.index(name)
    return None


@dataclass(frozen=True)
class SisMap:
    """How a district's export says things, from config.toml (docs/sync.md)::

        [sis]
        opt_out_values = ["Opt Out"]      # flag values meaning "opted out" (any case)
        not_opt_out_values = ["Allow"]    # flag values meaning "not opted out"
        [schools]
        101 = "Lincoln Elementary"        # a numeric school id (PowerSchool SchoolID) -> its name
    """

    opt_out_values: frozenset[str] = frozenset()
    not_opt_out_values: frozenset[str] = frozenset()
    schools: dict[str, str] = field(default_factory=dict)
    # Consent to recognition (only read when consent_matching is on): the column, its values, its date.
    consent_column: str = ""
    consent_values: frozenset[str] = frozenset()
    no_consent_values: frozenset[str] = frozenset()
    consent_date_column: str = ""


def sis_map(workspace: Path) -> SisMap:
    """The ``[sis]`` and ``[schools]`` tables of the workspace's config.toml (empty when none)."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(workspace) / "config.toml"
    if not path.is_file():
        return SisMap()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptoutGuardError(f"{path}: not valid TOML ({exc}); fix or delete the file") from None
    sis, schools = dict(data.get("sis", {})), dict(data.get("schools", {}))
    known = ("opt_out_values", "not_opt_out_values", "consent_column", "consent_values", "no_consent_values",
             "consent_date_column")  # fmt: skip
    unknown = set(sis) - set(known)
    if unknown:
        raise OptoutGuardError(f"{path}: [sis] has unknown keys {sorted(unknown)}; use {', '.join(known)}")

    def values(key: str) -> frozenset[str]:
        raw = sis.get(key, [])
        raw = [raw] if isinstance(raw, str) else raw
        return frozenset(str(v).strip().casefold() for v in raw)

    both = values("opt_out_values") & values("not_opt_out_values")
    if both:
        raise OptoutGuardError(f"{path}: [sis] lists {sorted(both)} both as opted out and as not opted out")
    both = values("consent_values") & values("no_consent_values")
    if both:
        raise OptoutGuardError(f"{path}: [sis] lists {sorted(both)} both as consent and as no consent")
    return SisMap(
        values("opt_out_values"),
        values("not_opt_out_values"),
        {str(k).strip(): str(v) for k, v in schools.items()},
        str(sis.get("consent_column", "")).strip(),
        values("consent_values"),
        values("no_consent_values"),
        str(sis.get("consent_date_column", "")).strip(),
    )


CONSENT_YES = {"y", "yes", "true", "t", "1", "x", "consent", "consented", "consents", "on", "checked", "signed", "granted"}
CONSENT_NO = {"", "n", "no", "false", "f", "0", "off", "unchecked", "declined", "withdrawn", "refused", "none"}


def _consent_date(text: str) -> str:
    """A consent date as YYYY-MM-DD (ISO, or US M/D/YYYY as SIS exports write it); "" when unreadable."""
    import datetime as dt

    text = text.strip()
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y", "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(text[:10] if fmt == "%Y-%m-%d" else text, fmt).date().isoformat()
        except ValueError:
            continue
    return ""


def parse_list(
    path: Path,
    fmt: str = "generic",
    id_column: str | None = None,
    flag_column: str | None = None,
    flag_means: str = "optout",
    district: SisMap | None = None,
    consent_column: str | None = None,
) -> OptOutList:
    """Read and check an SIS export (or a plain list of ids, ``fmt="ids"``). Raises ListRejected.
    ``district``: the district's flag values and school ids (config.toml ``[sis]``, ``[schools]``).
    ``consent_column``: read the families' consent to recognition from this column too (only when
    the district turned consent matching on; else pass None and it is never read)."""
    sis = district or SisMap()
    path = Path(path)
    if fmt != "ids" and fmt not in FORMATS:
        raise OptoutGuardError(f"unknown list format {fmt!r}; use one of: ids, {', '.join(FORMATS)}")
    if flag_means not in ("optout", "release"):
        raise OptoutGuardError("flag_means must be 'optout' or 'release'")
    try:
        text = read_text(path)
    except OSError as exc:
        raise OptoutGuardError(f"cannot read the opt-out list {path} ({exc.strerror or exc})") from None
    problems: list[tuple[int, str]] = []
    unknown_flags: dict[str, list[int]] = {}
    unknown_consent: dict[str, list[int]] = {}
    result = OptOutList(source=str(path), export_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
    first_line: dict[str, int] = {}

    def add(line: int, student: Student) -> None:
        sid = student.student_id
        if not sid:
            problems.append((line, "no student id"))
        elif not is_valid_student_id(sid):  # it becomes a folder name in enrollments/
            problems.append((line, f"student id {sid!r} has characters other than letters, digits, . _ - (or is too long)"))
        elif sid in first_line:
            problems.append((line, f"student id {sid} appears twice (first on line {first_line[sid]})"))
        else:
            first_line[sid] = line
            result.students[sid] = student

    if fmt == "ids":
        for line_no, line in enumerate(text.splitlines(), start=1):
            value = line.split(",")[0].split("\t")[0].strip().strip('"')
            if not value or value.startswith("#") or (line_no == 1 and normalise_header(value) in _ID):
                continue
            result.rows_read += 1
            add(line_no, Student(value))
    else:
        rows = _rows(text)
        if not rows:
            raise ListRejected(path, [(0, "the file is empty")])
        header, mapping = rows[0], FORMATS[fmt]
        cols = {key: _column(header, names, None) for key, names in mapping.items()}
        if id_column:
            cols["id"] = _column(header, (), id_column)
        if flag_column:
            cols["flag"] = _column(header, (), flag_column)
        if consent_column:
            result.consenting = {}
            cols["consent"] = _column(header, (), consent_column)
            if cols["consent"] is None:
                problems.append((1, f"no consent column {consent_column!r} (the header has: {', '.join(header)})"))
            if sis.consent_date_column:
                cols["consent_date"] = _column(header, (), sis.consent_date_column)
                if cols["consent_date"] is None:
                    problems.append((1, f"no consent date column {sis.consent_date_column!r} ([sis] consent_date_column)"))
            else:  # "Face Match Consent Date" beside "Face Match Consent", or a plain "Consent Date"
                cols["consent_date"] = _column(header, (normalise_header(consent_column) + "_date", "consent_date"), None)
        if cols["id"] is None:
            problems.append(
                (1, f"no student id column (looked for {id_column or ', '.join(mapping['id'][:4])}…); use --id-column")
            )
        if cols["flag"] is None:
            problems.append(
                (1, f"no opt-out flag column (looked for {flag_column or ', '.join(mapping['flag'][:4])}…); use --flag-column")
            )
        if problems:
            raise ListRejected(path, problems)
        for line_no, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank line
            result.rows_read += 1

            def cell(key: str, row: list[str] = row) -> str:
                i = cols.get(key)
                return row[i].strip() if i is not None and i < len(row) else ""

            if len(row) != len(header):
                problems.append((line_no, f"{len(row)} columns where the header has {len(header)}"))
                continue
            flag = cell("flag").casefold()
            if flag in sis.opt_out_values:
                opted_out = True
            elif flag in sis.not_opt_out_values:
                opted_out = False
            elif flag in YES:
                opted_out = flag_means == "optout"
            elif flag in NO:
                opted_out = flag_means == "release" and flag != ""
            else:
                unknown_flags.setdefault(cell("flag"), []).append(line_no)  # said once per value, below
                continue
            if cell("id"):
                result.everyone.add(cell("id"))
            if result.consenting is not None:
                said = cell("consent").casefold()
                if said in sis.consent_values or (said in CONSENT_YES and said not in sis.no_consent_values):
                    if opted_out:
                        result.consent_conflicts.append(cell("id"))  # the opt-out wins: never recognised
                    elif cell("id"):
                        date = _consent_date(cell("consent_date"))
                        result.consenting[cell("id")] = ConsentRow(cell("id"), cell("first"), cell("last"), cell("grade"), date)
                elif not (said in sis.no_consent_values or said in CONSENT_NO):
                    unknown_consent.setdefault(cell("consent"), []).append(line_no)
            if opted_out:
                school = cell("school")
                school = sis.schools.get(school, school)  # a numeric SchoolID -> its name, when mapped
                add(line_no, Student(cell("id"), cell("first"), cell("last"), cell("grade"), school, cell("section")))
            elif not cell("id"):
                problems.append((line_no, "no student id"))
    if unknown_flags:
        how = '[sis] opt_out_values = ["Opt Out"] and not_opt_out_values = ["Allow"] (docs/sync.md)'
        problems.insert(0, _neither_yes_nor_no(unknown_flags, "the opt-out flag column", how))
    if unknown_consent:
        how = '[sis] consent_values = ["Signed"] and no_consent_values = ["Pending"] (docs/privacy.md)'
        problems.insert(0, _neither_yes_nor_no(unknown_consent, "the consent column", how))
    if problems:
        raise ListRejected(path, problems)
    return result


def _neither_yes_nor_no(unknown: dict[str, list[int]], column: str, example: str) -> tuple[int, str]:
    """One problem for every value of a yes/no column nobody said the meaning of: each value, how
    many rows, its first line, and how to map it in config.toml (nothing is guessed)."""
    found = ", ".join(f"{v!r} ({len(lines)} row{'s' if len(lines) > 1 else ''}, first on line {lines[0]})"
                      for v, lines in sorted(unknown.items(), key=lambda kv: kv[1][0]))  # fmt: skip
    first = min(lines[0] for lines in unknown.values())
    return first, (f"{column} has values that are neither yes nor no: {found}. Say what each means in config.toml, "
                   f"e.g. {example}; nothing is guessed")  # fmt: skip


# ---- kept in the workspace ---------------------------------------------------------------------
def save_list(optouts: OptOutList, workspace: Path) -> Path:
    """Write atomically, private (it names children)."""
    path = Path(workspace) / LIST_FILE
    doc = {
        "schema_version": 1,
        "source": optouts.source,
        "export_sha256": optouts.export_sha256,
        "students": [asdict(s) for s in optouts.students.values()],
        "copied": optouts.copied,
    }
    atomic_write(path, json.dumps(doc, indent=1), prefix=".optout-list-")
    return path


def load_list(workspace: Path) -> OptOutList | None:
    """The list last imported into this workspace, or None if none was."""
    path = Path(workspace) / LIST_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        students = [Student(**s) for s in doc["students"]]
        copied = {str(k): [str(n) for n in v] for k, v in dict(doc.get("copied", {})).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OptoutGuardError(
            f"the saved opt-out list {path} is unreadable ({exc}); import the list again with: optout-guard sync"
        ) from None
    return OptOutList(
        {s.student_id: s for s in students}, doc.get("source", ""), len(students), doc.get("export_sha256", ""), copied
    )


def save_pending(student: Student, workspace: Path) -> None:
    """Record a student added before any list was imported (``load_pending`` reads them back)."""
    pending = {s.student_id: s for s in load_pending(workspace)}
    pending[student.student_id] = student
    doc = {"schema_version": 1, "students": [asdict(s) for s in pending.values()]}
    atomic_write(Path(workspace) / PENDING_FILE, json.dumps(doc, indent=1), prefix=".optout-additions-")


def load_pending(workspace: Path) -> list[Student]:
    path = Path(workspace) / PENDING_FILE
    if not path.is_file():
        return []
    try:
        return [Student(**s) for s in json.loads(path.read_text(encoding="utf-8"))["students"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OptoutGuardError(f"{path} is unreadable ({exc}); delete it and add those students again") from None


def drop_pending(student_id: str, workspace: Path) -> None:
    kept = [s for s in load_pending(workspace) if s.student_id != student_id]
    path = Path(workspace) / PENDING_FILE
    if not kept:
        path.unlink(missing_ok=True)
    elif len(kept) != len(load_pending(workspace)):
        doc = {"schema_version": 1, "students": [asdict(s) for s in kept]}
        atomic_write(path, json.dumps(doc, indent=1), prefix=".optout-additions-")

