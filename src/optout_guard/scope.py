"""Scoped galleries: check a school's photos against that school's opted-out students.

False alerts grow with the number of students enrolled (each enrolled child is one more face that
somebody else's face can resemble), so a photo from Lincoln Elementary's account is best checked
against Lincoln's opted-out students, not the whole district's. A scope is

- a **school** named in the opt-out list (``--scope "Lincoln Elementary"``), optionally narrowed
  by ``--grade``; students the list gives no school (or no grade) are in every scope, so that an
  incomplete export never leaves a student unprotected;
- or a **named scope** in ``config.toml``::

      [scopes."Varsity soccer"]
      roster = "rosters/varsity-soccer.csv"   # student ids, first column (a team, a club)
      library_paths = ["Athletics/Soccer/**"]  # audit: library folders checked with this scope

      [scopes."Lincoln Elementary"]
      school = "Lincoln Elementary"            # the school as the list spells it (any case)
      grade = "5"                              # optional
      section = "Room 12"                      # optional: the homeroom / section column of the export
      library_paths = ["Lincoln/**"]

The default is the whole district. A scope that names nobody enrolled, or a school the list does
not know, is an error (exit 2): an empty gallery would allow everybody.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from optout_guard.errors import ConfigError
from optout_guard.optout_list import OptOutList, normalise_grade, normalise_name, school_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DISTRICT = "district"


@dataclass(frozen=True)
class Scope:
    """Which enrolled students a photo is checked against. ``students`` None: all of them."""

    name: str = DISTRICT
    students: frozenset[str] | None = None

    @property
    def is_district(self) -> bool:
        return self.students is None

    def describe(self) -> str:
        if self.students is None:
            return "the whole district"
        return f"{self.name} ({len(self.students)} student{'' if len(self.students) == 1 else 's'} on the list)"


WHOLE_DISTRICT = Scope()


@dataclass(frozen=True)
class NamedScope:
    name: str
    school: str = ""
    grade: str = ""
    section: str = ""
    roster: Path | None = None
    library_paths: tuple[str, ...] = ()


def named_scopes(workspace: Path) -> dict[str, NamedScope]:
    """The ``[scopes.NAME]`` tables of the workspace's config.toml (relative paths: the workspace's)."""
    path = Path(workspace) / "config.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix or delete the file") from None
    found: dict[str, NamedScope] = {}
    for name, table in dict(data.get("scopes", {})).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [scopes.{name!r}] must be a table (school = …, grade = …, roster = …)")
        unknown = set(table) - {"school", "grade", "section", "roster", "library_paths"}
        if unknown:
            raise ConfigError(
                f"{path}: scope {name!r} has unknown keys {sorted(unknown)}; use school, grade, section, roster, library_paths"
            )
        roster = table.get("roster")
        roster_path = None
        if roster:
            roster_path = Path(str(roster)).expanduser()
            roster_path = roster_path if roster_path.is_absolute() else Path(workspace) / roster_path
        if not (table.get("school") or table.get("grade") or table.get("section") or roster_path):
            raise ConfigError(f"{path}: scope {name!r} names no school, grade, section or roster")
        paths = table.get("library_paths", [])
        if isinstance(paths, str):
            paths = [paths]
        found[str(name)] = NamedScope(
            str(name),
            str(table.get("school", "")),
            str(table.get("grade", "")),
            str(table.get("section", "")),
            roster_path,
            tuple(map(str, paths)),
        )
    return found


def _roster_ids(path: Path, enrolled: set[str]) -> set[str]:
    """The student ids of a roster (first column), read as the opt-out list is read (UTF-8 or
    UTF-16 or Windows-1252; commas, tabs or semicolons). An id that matches nobody enrolled but
    would once case and leading zeros are set aside (Excel drops them) is an error naming it: the
    scope would otherwise silently leave that student out."""
    from optout_guard.optout_list import _rows, normalise_id, read_text

    try:
        text = read_text(path)
    except OSError as exc:
        raise ConfigError(f"cannot read the roster {path} ({exc.strerror or exc}); fix the scope in config.toml") from None
    ids = set()
    for row in _rows(text):
        value = (row[0] if row else "").strip().strip('"').lstrip("\ufeff")
        if value and not value.startswith("#") and value.lower() not in {"id", "student_id", "student id", "student number"}:
            ids.add(value)
    by_key: dict[str, list[str]] = {}
    for student in enrolled:
        by_key.setdefault(normalise_id(student), []).append(student)
    almost = {i: by_key[normalise_id(i)] for i in sorted(ids - enrolled) if normalise_id(i) in by_key}
    if almost:
        shown = "; ".join(f"{i} (enrolled as {', '.join(sorted(v))})" for i, v in list(almost.items())[:10])
        raise ConfigError(
            f"the roster {path} has ids that match enrolled students only once leading zeros or case are set aside: "
            f"{shown}. Fix the roster's ids (Excel drops leading zeros: format the column as text) so that nobody "
            "is left out of the scope"
        )
    return ids


def resolve_scope(
    name: str | None,
    grade: str | None,
    enrolled: set[str],
    optouts: OptOutList | None,
    named: dict[str, NamedScope] | None = None,
) -> Scope:
    """The scope a user named (``--scope``/``--grade``, a check-folder sub-folder, an audit path).
    ``enrolled``: the students with templates. Raises ConfigError (exit 2) for an unknown scope or
    one naming no enrolled student."""
    named = named or {}
    if not name and not grade:
        return WHOLE_DISTRICT
    if name and name.strip().lower() == DISTRICT and not grade:
        return WHOLE_DISTRICT
    students = dict(optouts.students) if optouts else {}
    label = name or ""
    school, section, roster = "", "", None
    if name and name.strip().lower() != DISTRICT:
        wanted = next((n for n in named if normalise_name(n) == normalise_name(name)), None)
        if wanted is not None:
            scope_def = named[wanted]
            label, school, section, roster = wanted, scope_def.school, scope_def.section, scope_def.roster
            grade = grade or scope_def.grade or None
        else:
            school = name
        if school:
            schools = {school_key(s.school): s.school for s in students.values() if s.school}
            if school_key(school) not in schools:
                known = sorted(set(schools.values()) | set(named))
                raise ConfigError(
                    f"unknown scope {name!r}: no student on the opt-out list is at a school of that name, and "
                    f"config.toml has no such [scopes] entry. Known: {', '.join(known) or 'none (import a list with sync)'}"
                )
    chosen = set(enrolled)
    if roster is not None:
        chosen &= _roster_ids(roster, chosen)
    if school:
        # Students without a school are in every scope: an incomplete export never unprotects anyone.
        # Spellings of one school ("Lincoln Elementary School", "Lincoln Elementary") are one school.
        key = school_key(school)
        chosen = {s for s in chosen if s not in students or not students[s].school or school_key(students[s].school) == key}
    if section:
        key = normalise_name(section)
        chosen = {s for s in chosen if s not in students or not students[s].section or normalise_name(students[s].section) == key}
    if grade:
        label = f"{label}, grade {grade}" if label else f"grade {grade}"
        g = normalise_grade(grade)
        chosen = {s for s in chosen if s not in students or not students[s].grade or normalise_grade(students[s].grade) == g}
    if not chosen:
        raise ConfigError(
            f"the scope {label!r} names no enrolled student: an empty gallery would allow everybody. "
            "Check the name (optout-guard people shows each student's school and grade) or check district-wide"
        )
    return Scope(label, frozenset(chosen))


def scope_for_library_path(relative: str, named: dict[str, NamedScope]) -> str | None:
    """The named scope whose ``library_paths`` match a path relative to the library (first wins)."""
    posix = PurePosixPath(relative.replace("\\", "/")).as_posix()
    for scope_def in named.values():
        for pattern in scope_def.library_paths:
            if fnmatch.fnmatch(posix, pattern) or fnmatch.fnmatch(posix, pattern.rstrip("*").rstrip("/") + "/*"):
                return scope_def.name
    return None


def scope_json(scope: Scope) -> dict[str, Any]:
    return {"name": scope.name, "students": None if scope.students is None else len(scope.students)}


def workspace_scope(workspace: Path, name: str | None, grade: str | None, enrolled: set[str]) -> Scope:
    """The scope a user named, against the workspace's saved list and config.toml's [scopes], read
    now (a sync or an edit counts at once). Raises ConfigError as :func:`resolve_scope` does."""
    from optout_guard.optout_list import load_list

    return resolve_scope(name, grade, enrolled, load_list(workspace), named_scopes(workspace))


def folder_scope(name: str, enrolled: set[str], workspace: Path) -> Scope:
    """The scope of a check-folder sub-folder (``Photo check/Lincoln Elementary/``): the school or
    named scope it is called after; any other folder name is checked district-wide (more students,
    never fewer). The list and config.toml are read each time: a sync or an edit counts at once."""
    try:
        return workspace_scope(workspace, name, None, enrolled)
    except ConfigError:
        return WHOLE_DISTRICT
