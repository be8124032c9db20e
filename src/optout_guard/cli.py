"""The command line: a thin layer over the library. The only module that prints or exits.

Exit codes (also in docs/command-line.md):
  0  every photo was checked and allowed
  1  at least one photo is blocked
  2  usage, configuration or setup error (bad option, no index, missing models): nothing reliable was checked
  3  nothing blocked, but at least one photo needs review or could not be checked (enroll, sync:
     a student is not protected)
  4  not found: `remove` of a student not in the index, `users remove` of an unknown account
  5  the activity log was tampered with (`log verify`)
  6  the demo did not give the expected verdicts
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optout_guard import __version__
from optout_guard.config import Settings, load_settings
from optout_guard.errors import OptoutGuardError
from optout_guard.scope import WHOLE_DISTRICT, Scope
from optout_guard.types import ScanResult, Verdict

EXIT_ALLOW, EXIT_BLOCK, EXIT_USAGE, EXIT_REVIEW = 0, 1, 2, 3
# Not verdicts: each has its own code, so that a script never reads one as "needs review".
EXIT_NOT_FOUND, EXIT_TAMPERED, EXIT_DEMO_FAILED = 4, 5, 6
VERDICT_STYLE = {Verdict.BLOCK: "bold red", Verdict.REVIEW: "bold yellow", Verdict.ALLOW: "green"}


def _conventional_help() -> None:
    """Help in the conventions of well-made Click/Unix tools: ``PATHS...`` (not Typer 0.29's
    ``{PATHS}...`` and ``<list[Path]>``), ``--annotate PATH`` (not ``<path>``). Typer has no public
    hook for this; ``tests/test_help.py`` fails if a Typer upgrade changes what is patched here."""
    import typer.core as tc

    plain_type = tc._TyperParameter.display_type

    def display_type(self, ctx):  # noqa: ANN001, ANN202
        label = plain_type(self, ctx)
        if isinstance(label, str) and label.startswith("<") and label.endswith(">"):
            label = label[1:-1]
            label = label[5:-1] if label.startswith("list[") else label
            return label.upper()
        return label

    def usage_name(self) -> str:  # noqa: ANN001
        name = self.display_name_raw.upper()
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

    tc._TyperParameter.display_type = display_type  # type: ignore[method-assign]
    tc.TyperArgument._usage_display_name = usage_name  # type: ignore[method-assign]
    tc.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]


_conventional_help()

app = typer.Typer(
    name="optout-guard",
    help="Check photos for students on the FERPA directory-information opt-out list. Runs fully offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help is plain text: "[default: …]" in a help string is shown as written, not eaten as markup.
    rich_markup_mode=None,
)
# Piped output (a log file, a script) gets a wide table instead of Rich's 80-column default.
out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Turn library errors into one clear line and exit code 2 (never 0 or 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OptoutGuardError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_USAGE) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            logging.getLogger("optout_guard").exception("unexpected error in %s", func.__name__)
            err.print(
                f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(str(exc))}. "
                "Nothing was fully checked; please report this."
            )
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def _warn_interrupted_enrollment(settings: Settings) -> None:
    from optout_guard.index import interrupted_enrollment

    warning = interrupted_enrollment(settings)
    if warning:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}")


def _settings(ctx: Any, **overrides: Any) -> Settings:
    """Settings from the workspace the top command was given (``ctx``: a command's context, or its parent's)."""
    return load_settings(ctx.obj.get("workspace"), overrides)


def _version(value: bool) -> None:
    if value:
        out.print(f"optout-guard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    workspace: Annotated[
        Optional[Path],
        typer.Option(
            "--workspace",
            "-w",
            help="Folder with config.toml, enrollments/ and the index [default: current folder; env OPTOUT_GUARD_WORKSPACE].",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = {"workspace": workspace}


# ---- check ---------------------------------------------------------------------------------
def _progress(total_hint: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _faces_cell(result: ScanResult) -> str:
    if not result.faces:
        return "0"
    counts: dict[str, int] = {}
    for m in result.faces:
        counts[m.decision.value] = counts.get(m.decision.value, 0) + 1
    return f"{len(result.faces)} (" + ", ".join(f"{n} {d}" for d, n in counts.items()) + ")"


def exit_code(results: list[ScanResult]) -> int:
    if any(r.verdict is Verdict.BLOCK for r in results):
        return EXIT_BLOCK
    if any(r.verdict is Verdict.REVIEW for r in results):
        return EXIT_REVIEW
    return EXIT_ALLOW


@app.command()
@_user_errors
def check(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(metavar="PATHS", help="Photos or folders (folders are searched recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
    annotate: Annotated[
        Optional[Path], typer.Option("--annotate", help="Write a marked-up copy of each photo into this folder.")
    ] = None,
    block_distance: Annotated[
        Optional[float], typer.Option(help="Block a face this close to a student (overrides config).")
    ] = None,
    review_distance: Annotated[
        Optional[float], typer.Option(help="Review a face this close to a student (overrides config).")
    ] = None,
    detector: Annotated[Optional[str], typer.Option(help="Face detector: centerface or hog (overrides config).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes for folders [default: one per CPU core].")] = None,
    redact: Annotated[
        Optional[Path],
        typer.Option("--redact", help="Write a copy fit to post: blocked faces and faces under review blurred, no metadata."),
    ] = None,
    redact_review: Annotated[
        bool, typer.Option("--redact-review", hidden=True, help="Kept for old scripts: faces under review are always blurred.")
    ] = False,
    no_recognition: Annotated[
        bool,
        typer.Option("--no-recognition", help="Detection only: no face templates used; every face is flagged (and blurred)."),
    ] = False,
    scope: Annotated[
        Optional[str],
        typer.Option(
            "--scope",
            metavar="NAME",
            help="Check against one school's opted-out students (as the list names the school) or a [scopes] entry "
            "of config.toml [default: the whole district].",
        ),
    ] = None,
    grade: Annotated[Optional[str], typer.Option("--grade", metavar="GRADE", help="Only students of this grade.")] = None,
) -> None:
    """Check photos: block, review or allow each one. Exit code 0 allow, 1 block, 3 review, 2 error."""
    from optout_guard.models import get_models, models_needed

    settings = _settings(
        ctx,
        block_distance=block_distance,
        review_distance=review_distance,
        detector=detector,
        workers=workers,
        recognition=False if no_recognition else None,
    )
    # The models load while the rest starts (imports, the index, the photos); require_models waits.
    get_models().load_in_background(models_needed(settings.detector, settings.recognition))
    from optout_guard.activity_log import ActivityLog, photo_details
    from optout_guard.folders import Skipped, collect_photos
    from optout_guard.pipeline import Guard, Redaction
    from optout_guard.report import batch_document

    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:  # a mistyped path is a usage error, not a photo to review
        err.print(f"[bold red]error:[/] no such file or folder: {escape(', '.join(missing))}")
        raise typer.Exit(EXIT_USAGE)
    guard = Guard(settings)
    chosen = WHOLE_DISTRICT
    if settings.recognition:
        guard.require_index()  # a missing or foreign index: say so before any photo
        _warn_interrupted_enrollment(settings)
        chosen = _scope(settings, guard.index, scope, grade)
    results: list[ScanResult] = []
    skipped: list[tuple[str, str]] = []
    items = list(collect_photos(paths, exclude=[p for p in (annotate, redact) if p is not None]))
    guard.require_models()  # a broken install is exit 2 before any photo
    redaction = Redaction(redact) if redact is not None else None
    photos = sum(isinstance(i, Path) for i in items)
    with _progress("photos") as progress:
        task = progress.add_task("Checking", total=len(items))
        for item in guard.check_items(items, annotate, workers=settings.worker_count(photos), redact=redaction, scope=chosen):
            if isinstance(item, Skipped):
                skipped.append((item.path, item.reason))
            else:
                results.append(item)
            progress.advance(task)

    if settings.recognition and len(results) > 1:
        from optout_guard.events import decide_across

        # The photos of one check are one event: a child held in several of them is decided once.
        results = decide_across(guard, results, chosen)
    ActivityLog(settings).record("check", photos=[photo_details(r) for r in results])
    if as_json:
        sys.stdout.write(json.dumps(batch_document(results, skipped, settings), indent=2) + "\n")
    else:
        _print_table(results, skipped, annotate)
        if not chosen.is_district:
            out.print(f"Checked against {escape(chosen.describe())}, not the whole district.")
        if redact is not None:
            out.print("Copies fit to post blur every face that is not clearly fine (blocked and under review).")
    if not results and not skipped:
        err.print("[yellow]No photos found in the given paths.[/]")
    code = exit_code(results)
    raise typer.Exit(EXIT_REVIEW if skipped and code == EXIT_ALLOW else code)  # a file not checked is never "allow"


def _print_table(results: list[ScanResult], skipped: list[tuple[str, str]], annotate: Path | None) -> None:
    table = Table(show_lines=False)
    table.add_column("Verdict")
    table.add_column("Photo", overflow="fold")
    table.add_column("Faces")
    table.add_column("Why", overflow="fold")
    for r in results:
        table.add_row(
            f"[{VERDICT_STYLE[r.verdict]}]{r.verdict.value.upper()}[/]",
            escape(r.path),
            _faces_cell(r),
            escape("; ".join(r.reasons)),
        )
    out.print(table)
    counts = {v: sum(r.verdict is v for r in results) for v in Verdict}
    clips = sum(r.clip is not None for r in results)
    what = f"{len(results)} photos"
    if clips:
        what = f"{len(results) - clips} photos and {clips} video clip{'s' if clips > 1 else ''}"
    out.print(
        f"{what}: [red]{counts[Verdict.BLOCK]} blocked[/], [yellow]{counts[Verdict.REVIEW]} to review[/], "
        f"[green]{counts[Verdict.ALLOW]} allowed[/]"
        + (f"; [yellow]{len(skipped)} file{'s' if len(skipped) > 1 else ''} not checked[/]" if skipped else "")
    )
    for path, why in skipped:
        out.print(f"  {escape(path)}: {escape(why)}")
    # The copies written, by name (a person looks for the file, not for the folder).
    for r in results:
        for label, copy in (("marked-up", r.annotated_path), ("fit to post", r.redacted_path)):
            if copy:
                out.print(f"  {label} copy of {escape(Path(r.path).name)}: {escape(copy)}")


def _scope(settings: Settings, index, name: str | None, grade: str | None) -> Scope:  # noqa: ANN001 - FaceIndex
    """The scope named on the command line (exit 2 when unknown or naming nobody enrolled)."""
    from optout_guard.optout_list import load_list
    from optout_guard.scope import named_scopes, resolve_scope

    return resolve_scope(
        name, grade, set(index.protected_students()), load_list(settings.workspace), named_scopes(settings.workspace)
    )


# ---- gallery -------------------------------------------------------------------------------
def _open_index(settings: Settings, rebuild: bool = False):  # noqa: ANN202 - FaceIndex
    from optout_guard.index import FaceIndex, open_index
    from optout_guard.models import embedding_fingerprint

    fingerprint = embedding_fingerprint()
    if rebuild or not settings.index_file.exists():
        return FaceIndex(fingerprint)
    return open_index(settings)


@app.command()
@_user_errors
def enroll(
    ctx: typer.Context,
    directory: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="DIRECTORY", help="Enrollment folder: one sub-folder per student id [default: <workspace>/enrollments]."
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Start a new index (e.g. after a model change) instead of updating.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the enrollment report as JSON.")] = False,
    cohort: Annotated[
        Optional[Path],
        typer.Option(
            "--cohort",
            metavar="DIR",
            help="Photos of children who did NOT opt out (one face each, e.g. a picture-day delivery): embedded in "
            "memory to set hub penalties and thresholds, then discarded (docs/accuracy.md, 'The cohort').",
        ),
    ] = None,
) -> None:
    """Build or update the face index from reference photos. Exit 3 if any student is not protected."""
    from optout_guard.activity_log import ActivityLog
    from optout_guard.enroll import calibrate_with_cohort, enroll_folder
    from optout_guard.index import edit_index, enrollment_in_progress
    from optout_guard.models import get_models
    from optout_guard.optout_list import load_list

    settings = _settings(ctx)
    root = directory or settings.enrollments
    optouts = load_list(settings.workspace)
    cohort_photos: list[Path] = []
    if cohort is not None:
        from optout_guard.picture_day import PHOTO_SUFFIXES

        if not cohort.is_dir():
            err.print(f"[bold red]error:[/] the cohort folder {escape(str(cohort))} does not exist; give a folder of photos")
            raise typer.Exit(EXIT_USAGE)
        cohort_photos = sorted(
            p for p in cohort.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")
        )
    cohort_report = None
    # The marker outlives the save: a kill before the index is saved leaves it, and check/people warn.
    with enrollment_in_progress(settings), edit_index(settings, rebuild) as index:
        with _progress("photos") as progress:
            task = progress.add_task("Enrolling", total=None)
            report = enroll_folder(
                root,
                index,
                settings,
                get_models(),
                progress=lambda _p: progress.advance(task),
                optouts=optouts.ids() if optouts is not None else None,
            )
            if cohort is not None:
                cohort_report = calibrate_with_cohort(
                    cohort_photos,
                    index,
                    settings,
                    get_models(),
                    f"{cohort.name} ({len(cohort_photos)} photos)",
                    progress=lambda _p: progress.advance(task),
                )
    ActivityLog(settings).record(
        "enroll",
        students=report.students,
        added={s: sum(1 for sid, _ in report.added if sid == s) for s in sorted({sid for sid, _ in report.added})},
        rejected=len(report.rejected),
        removed=len(report.removed),
        removed_by_list=report.removed_by_list,
        not_protected=report.not_protected,
    )
    if as_json:
        doc = {
            "schema_version": 1,
            "index": str(settings.index_file),
            "students": report.students,
            "added": [{"student_id": s, "photo": p} for s, p in report.added],
            "unchanged": report.unchanged,
            "removed": [{"student_id": s, "photo": p} for s, p in report.removed],
            "rejected": [{"student_id": s, "photo": p, "reason": r} for s, p, r in report.rejected],
            "notes": [{"student_id": s, "photo": p, "note": n} for s, p, n in report.notes],
            "skipped_folders": [{"folder": f, "reason": r} for f, r in report.skipped_folders],
            "not_protected": report.not_protected,
            "removed_by_list": report.removed_by_list,
        }
        if cohort_report is not None:
            doc["cohort"] = cohort_report.as_json()
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.print(
            f"Index {settings.index_file}: {report.students} students; {len(report.added)} photos added, "
            f"{report.unchanged} unchanged, {len(report.removed)} removed, {len(report.rejected)} rejected."
        )
        for s, p, r in report.rejected:
            out.print(f"  [yellow]rejected[/] {escape(s)}: {escape(p)}: {escape(r)}")
        for s, p, n in report.notes:
            out.print(f"  note {escape(s)}: {escape(p)}: {escape(n)}")
        for f, r in report.skipped_folders:
            out.print(f"  [yellow]skipped folder[/] {escape(f)}: {escape(r)}")
        if report.not_protected:
            out.print(
                "[bold red]NOT PROTECTED[/] (no usable reference photo, photos of them will not be blocked): "
                + ", ".join(report.not_protected)
            )
        if cohort_report is not None:
            _print_cohort(cohort_report)
    if report.removed_by_list:
        # Only after an interrupted sync or a hand-edited list: never quietly (exit 3 below).
        err.print(
            f"[bold red]REMOVED from the index[/] because the saved opt-out list no longer names them: "
            f"{escape(', '.join(report.removed_by_list))}. If that is wrong, run optout-guard sync with the current export."
        )
    if report.uncovered and not as_json:
        err.print(
            f"[bold red]NOT PROTECTED: {len(report.uncovered)} folder(s) in enrollments/ are not on the opt-out list[/] "
            f"({escape(', '.join(report.uncovered))}): if the family opted out, run optout-guard add ID PHOTO…; "
            "otherwise delete the folder."
        )
    raise typer.Exit(EXIT_REVIEW if report.not_protected or report.removed_by_list or report.uncovered else EXIT_ALLOW)


@app.command()
@_user_errors
def add(
    ctx: typer.Context,
    student_id: Annotated[
        str, typer.Argument(metavar="STUDENT_ID", help="The student's id (as in the student information system).")
    ],
    photos: Annotated[list[Path], typer.Argument(metavar="PHOTOS", help="One or more reference photos of the student.")],
    first: Annotated[Optional[str], typer.Option("--first", help="First name (kept in the private opt-out list).")] = None,
    last: Annotated[Optional[str], typer.Option("--last", help="Last name.")] = None,
    school: Annotated[Optional[str], typer.Option("--school", help="School.")] = None,
    grade: Annotated[Optional[str], typer.Option("--grade", help="Grade.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Add even when the id looks like another student's, or the photo unlike theirs.")
    ] = False,
) -> None:
    """Protect one student now (an opt-out form handed in mid-year). Kept by every later sync until the
    SIS export lists the student, or until optout-guard remove. Exit 3 if no photo was usable."""
    import getpass

    from optout_guard.activity_log import ActivityLog
    from optout_guard.index import edit_index, enrollment_in_progress
    from optout_guard.models import get_models
    from optout_guard.optout_list import Student, is_valid_student_id, load_list
    from optout_guard.sync import add_student, addition_problem

    settings = _settings(ctx)
    if not is_valid_student_id(student_id):
        err.print(f"[bold red]error:[/] {escape(repr(student_id))} is not a valid student id (letters, digits, . _ -)")
        raise typer.Exit(EXIT_USAGE)
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        err.print(f"[bold red]error:[/] no such photo: {escape(', '.join(missing))}")
        raise typer.Exit(EXIT_USAGE)
    student = Student(student_id, first or "", last or "", grade or "", school or "")
    if not force and (problem := addition_problem(settings, student_id, list(photos), get_models())):
        err.print(f"[bold red]error:[/] {escape(problem)}; nothing was changed. If it is right, add again with --force.")
        raise typer.Exit(EXIT_USAGE)
    with enrollment_in_progress(settings), edit_index(settings) as index:
        report = add_student(student, list(photos), index, settings, get_models(), getpass.getuser())
        templates = sum(1 for t in index.templates if t.student_id == student_id)
    ActivityLog(settings).record("add", student_id=student_id, photos=len(photos), templates=templates)
    for s_id, photo, why in report.rejected:
        if s_id == student_id:
            out.print(f"  [yellow]photo not usable[/] {escape(photo)}: {escape(why)}")
    if templates:
        out.print(f"[green]{escape(student_id)} is protected now[/] ({templates} reference photo(s)); recorded as a local "
                  "addition to the opt-out list, kept until the SIS export lists them"
                  + (" (no list imported yet: the first sync takes them in)." if load_list(settings.workspace) is None
                     else "."))  # fmt: skip
        raise typer.Exit(EXIT_ALLOW)
    err.print(
        f"[bold red]{escape(student_id)} is NOT PROTECTED:[/] none of the photos could be used; add a clear, recent portrait."
    )
    raise typer.Exit(EXIT_REVIEW)


@app.command()
@_user_errors
def people(
    ctx: typer.Context,
    student_id: Annotated[
        Optional[str], typer.Argument(metavar="[STUDENT_ID]", help="With --photos: the student whose photos to list.")
    ] = None,
    photos: Annotated[
        bool, typer.Option("--photos", help="Every photo and clip where STUDENT_ID was blocked, held or confirmed.")
    ] = False,
    check_folder: Annotated[
        Optional[list[Path]], typer.Option("--check-folder", help="With --photos: also a check folder's filed photos.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List enrolled students: reference photos, the newest photo's date, who is not protected or stale.
    With STUDENT_ID --photos: every photo of that student the audits, the desk and check folders know."""
    if photos or student_id:
        _student_photos(_settings(ctx), student_id, list(check_folder or []), as_json)
        return
    from optout_guard.index import open_index
    from optout_guard.optout_list import load_list
    from optout_guard.sync import STALE_DAYS, gallery_status, protection_source

    settings = _settings(ctx)
    index = open_index(settings)
    optouts = load_list(settings.workspace)
    _warn_interrupted_enrollment(settings)
    rows = []
    for status in gallery_status(index, index.student_ids()):
        listed = optouts.students.get(status.student_id) if optouts is not None else None
        penalty = index.penalty_for(status.student_id, settings)
        limits = index.limits_for(status.student_id, settings)
        rows.append(
            {
                "student_id": status.student_id,
                "school": listed.school if listed else None,
                "grade": listed.grade if listed else None,
                "section": listed.section if listed else None,
                "reference_photos": status.reference_photos,
                "rejected_photos": sum(1 for r in index.rejections if r.student_id == status.student_id),
                # Which photos the quality gate refused, and why (a person can then give a better one).
                "rejected": [
                    {"photo": Path(r.photo).name, "reason": r.reason}
                    for r in index.rejections
                    if r.student_id == status.student_id
                ],
                "newest_photo": status.newest_photo or None,
                "protected": status.protected,
                "stale": status.stale,
                "advice": status.advice,  # the one thing that helps most when protection is weak
                "protection_from": protection_source(status.student_id, optouts),
                # None: no cohort covered this student (enrolled after it, or none): penalty 0
                "hub_penalty": None if penalty is None else round(penalty, 4),
                "thresholds": {"block": limits.block, "review": limits.review, "source": limits.source},
            }
        )
    if as_json:
        consenting = {"students": len(index.consent), "templates": len(index.consenting_templates),
                      "in_use": settings.consent_matching}  # fmt: skip
        doc = {"schema_version": 2, "stale_after_days": STALE_DAYS, "students": rows, "consenting": consenting}
        c = index.cohort if settings.cohort else None
        if c is not None and c.catch_source:  # what the thresholds in use catch, and hold (issue 26 §2)
            doc["estimate"] = {"source": c.catch_source, "caught": c.catch, "blocked": c.blocked,
                               "other_children_held": c.held_after, "in_words": c.in_plain_words()}  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    table = Table()
    columns = ("Student", "School, grade, section", "Reference photos", "Rejected", "Newest photo", "Status")
    for col in (*columns, "On the list through", "Cohort"):
        table.add_column(col)
    for row in rows:
        r: dict[str, Any] = row  # one student's row (the JSON above), for the table
        if not r["protected"]:
            state = "[bold red]NOT PROTECTED[/]"
        elif r["stale"]:
            state = "[yellow]protected, photo over a year old[/]"
        elif r["reference_photos"] == 1:
            state = "[yellow]protected by one photo only[/]"
        else:
            state = "[green]protected[/]"
        if index.cohort is None or not settings.cohort:
            cohort = "-"
        elif r["hub_penalty"] is None:
            cohort = "[yellow]not in the last cohort (penalty 0)[/]"
        else:
            cohort = f"penalty {r['hub_penalty']:.3f}" if r["hub_penalty"] else "no penalty"
        grade = f"grade {r['grade']}" if r["grade"] else ""
        where = ", ".join(x for x in (r["school"], grade, r["section"]) if x)
        refused = "; ".join(f"{x['photo']}: {x['reason']}" for x in r["rejected"])
        table.add_row(
            escape(str(r["student_id"])),
            escape(where or "-"),
            str(r["reference_photos"]),
            escape(refused or "0"),
            str(r["newest_photo"] or "-"),
            state,
            escape(str(r["protection_from"])),
            cohort,
        )
    out.print(table)
    weak = [r for r in rows if r["advice"]]
    if weak:
        out.print(f"[yellow]{len(weak)} student(s) with weak protection:[/]")
        for r in weak[:30]:
            out.print(f"  {escape(str(r['student_id']))}: {escape(str(r['advice']))}")
    if index.consent:
        templates = len(index.consenting_templates)
        dates = sorted(c.consent_date for c in index.consent.values() if c.consent_date)
        span = f", consent dated {dates[0]} to {dates[-1]}" if dates else ""
        state = "" if settings.consent_matching else " [yellow](consent_matching is off: not used; optout-guard include purge)[/]"
        out.print(f"Consenting students (Include list): {len(index.consent)}, {templates} template(s){span}{state}. "
                  "optout-guard include list shows them.")  # fmt: skip
    if index.cohort is not None and settings.cohort:
        c = index.cohort
        out.print(
            f"Cohort: {escape(c.source)}, {c.faces} faces, {c.made_at[:10]}; thresholds per number of reference photos: "
            + "; ".join(f"{g}: block {b}, review {r}" for g, (b, r) in c.thresholds.items())
        )
        if c.in_plain_words():
            out.print(escape(c.in_plain_words()))


def _student_photos(settings: Settings, student_id: str | None, check_folders: list[Path], as_json: bool) -> None:
    from optout_guard.appearances import appearances

    if not student_id:
        err.print("[bold red]error:[/] --photos needs a student id: optout-guard people STUDENT_ID --photos")
        raise typer.Exit(EXIT_USAGE)
    found = appearances(settings, student_id, check_folders)
    if as_json:
        doc = {"schema_version": 1, "student_id": student_id, "photos": [a.as_json() for a in found]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    if not found:
        where = "audits, the review desk" + (", the check folders" if check_folders else "")
        out.print(f"No photo of {escape(student_id)} is known to have been blocked, held or confirmed ({where}).")
        return
    table = Table()
    for col in ("When", "Where", "Photo", "Verdict", "How"):
        table.add_column(col, overflow="fold")
    for a in found:
        table.add_row(a.when[:16].replace("T", " "), a.source, escape(a.path), a.verdict.upper(), escape(a.how))
    out.print(table)
    out.print(f"{len(found)} photo(s) and clip(s) of {escape(student_id)}.")


@app.command()
@_user_errors
def remove(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(metavar="STUDENT_ID", help="The student id to remove from the index.")],
    delete_photos: Annotated[
        bool, typer.Option("--delete-photos", help="Also delete the student's reference photo folder.")
    ] = False,
) -> None:
    """Remove a student's face templates from the index (and, if asked, their reference photos)."""
    import shutil

    from optout_guard.activity_log import ActivityLog
    from optout_guard.index import edit_index
    from optout_guard.optout_list import drop_pending, is_valid_student_id, load_list, save_list

    settings = _settings(ctx)
    if not is_valid_student_id(student_id):
        err.print(f"[bold red]error:[/] {escape(repr(student_id))} is not a valid student id")
        raise typer.Exit(EXIT_USAGE)
    folder = settings.enrollments / student_id
    photos_deleted = False
    with edit_index(settings) as index:
        known = student_id in index.students
        # Photos first, then the index, then the log: a kill at any point leaves no template that an
        # enroll would bring back from photos still on disk, and the log never claims what did not happen.
        if delete_photos and folder.is_dir():
            shutil.rmtree(folder)
            photos_deleted = True
        optouts = load_list(settings.workspace)
        if optouts is not None and optouts.students.pop(student_id, None) is not None:
            optouts.copied.pop(student_id, None)
            save_list(optouts, settings.workspace)  # the list before the index, as in a sync
        drop_pending(student_id, settings.workspace)  # an `add` before any list: forgotten too
        removed = index.remove_student(student_id)
    ActivityLog(settings).record("remove", student_id=student_id, templates_deleted=removed, photos_deleted=photos_deleted)
    if not known:
        err.print(f"[yellow]{escape(student_id)} was not in the index; nothing removed.[/]")
    else:
        out.print(f"Removed {student_id}: {removed} face template(s) deleted from {settings.index_file}.")
    if photos_deleted:
        out.print(f"Deleted reference photos in {folder}.")
    elif folder.is_dir():
        out.print(
            f"Their reference photos are still in {folder}: delete that folder (or use --delete-photos), "
            "or the next enroll will add them again."
        )
    raise typer.Exit(EXIT_ALLOW if known else EXIT_NOT_FOUND)


# ---- district sync -------------------------------------------------------------------------------
@app.command()
@_user_errors
def sync(
    ctx: typer.Context,
    optout_list: Annotated[
        Path, typer.Argument(metavar="LIST", help="The opt-out list exported from your student information system.")
    ],
    photos: Annotated[
        Optional[list[Path]],
        typer.Option("--photos", help="A picture-day folder (PSPA INDEX.TXT, or <student_id>.jpg files). Repeatable."),
    ] = None,
    list_format: Annotated[
        str, typer.Option("--format", help="generic, powerschool, infinite-campus, skyward, synergy, or ids (one id per line).")
    ] = "generic",
    id_column: Annotated[Optional[str], typer.Option("--id-column", help="Name of the student id column.")] = None,
    flag_column: Annotated[Optional[str], typer.Option("--flag-column", help="Name of the opt-out flag column.")] = None,
    release_flag: Annotated[
        bool, typer.Option("--release-flag", help="The flag column says 'release directory information' (No = opted out).")
    ] = False,
    picture_day: Annotated[
        Optional[str], typer.Option("--picture-day", help="Date the photos were taken, YYYY-MM-DD [default: from each photo].")
    ] = None,
    confirm: Annotated[
        Optional[Path], typer.Option("--confirm", help="The filled-in photos-to-confirm.csv from an earlier sync.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
    confirm_removals: Annotated[
        Optional[int],
        typer.Option(
            "--confirm-removals",
            help="The exact number of students this export removes, when it removes more than 5 or 10% of the list.",
        ),
    ] = None,
    previous_photos: Annotated[
        Optional[Path],
        typer.Option(
            "--previous-photos",
            help="Last year's picture-day folder: the same children a year apart say what the thresholds catch "
            "(read only, nothing copied; remembered for later syncs).",
        ),
    ] = None,
    consent_column: Annotated[
        Optional[str],
        typer.Option(
            "--consent-column",
            help="The column saying a family consented to recognition (consent_matching on; or [sis] consent_column).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Bring the gallery in line with the opt-out list and this year's picture-day photos.

    Exit 0 when every student on the list is protected and nothing is held; 3 when some student is
    not protected or a photo is held for confirmation; 2 when the list is unusable (nothing changed)."""
    import datetime as dt

    from optout_guard.activity_log import ActivityLog
    from optout_guard.index import edit_index, enrollment_in_progress
    from optout_guard.models import get_models
    from optout_guard.optout_list import parse_list
    from optout_guard.picture_day import read_confirmed
    from optout_guard.sync import apply_sync, plan_sync
    from optout_guard.sync import dry_run as plan_report

    settings = _settings(ctx)
    if picture_day is not None:
        try:
            picture_day = dt.date.fromisoformat(picture_day).isoformat()
        except ValueError:
            err.print(f"[bold red]error:[/] --picture-day must be a date like 2026-09-15, not {picture_day!r}")
            raise typer.Exit(EXIT_USAGE) from None
    from optout_guard.optout_list import sis_map

    district = sis_map(settings.workspace)
    consent_column = consent_column or district.consent_column or None
    if consent_column and not settings.consent_matching:
        err.print(
            "[bold red]error:[/] a consent column was given but consent matching is off, so nothing about consenting "
            "students is read or kept. Turn it on in config.toml (consent_matching = true; read docs/privacy.md first), "
            "or leave out --consent-column / [sis] consent_column."
        )
        raise typer.Exit(EXIT_USAGE)
    optouts = parse_list(optout_list, list_format, id_column, flag_column, "release" if release_flag else "optout",
                         district, consent_column)  # fmt: skip
    confirmed = read_confirmed(confirm, optouts) if confirm is not None else None
    previous = _previous_delivery(settings, previous_photos, remember=not dry_run)
    if dry_run:
        index = _open_index(settings)
        plan = plan_sync(optouts, list(photos or []), index, settings, confirmed, picture_day, previous)
        report = plan_report(plan, index)
    else:
        plan = plan_sync(optouts, list(photos or []), _open_index(settings), settings, confirmed, picture_day, previous)
        if plan.removals_need_confirmation and confirm_removals != len(plan.removed_students):
            # A partial or filtered export looks exactly like this: nothing is changed without a person.
            err.print(
                f"[bold red]This export would remove {len(plan.removed_students)} students[/] from the opt-out list "
                f"(templates deleted, their photos no longer blocked): {escape(', '.join(plan.removed_students))}."
            )
            err.print(
                "Nothing was changed. An export of one school or grade, or a cut-off file, looks like this. If these "
                f"families really withdrew their opt-out, run the same command with --confirm-removals "
                f"{len(plan.removed_students)}."
            )
            raise typer.Exit(EXIT_USAGE)
        with enrollment_in_progress(settings), edit_index(settings) as index:
            plan = plan_sync(optouts, list(photos or []), index, settings, confirmed, picture_day, previous)  # under the lock
            with _progress("photos") as progress:
                task = progress.add_task("Enrolling", total=None)
                report = apply_sync(plan, index, settings, get_models(), progress=lambda _p: progress.advance(task))
        ActivityLog(settings).record(
            "sync",
            students_on_list=len(optouts.students),
            students_added=len(plan.added_students),
            students_removed=plan.removed_students,
            export_sha256=optouts.export_sha256,
            photos_copied=len(plan.new_photos),
            held=len(plan.held),
            not_protected=report.not_protected,
        )
        if report.consent is not None and (report.consent.plan.new or report.consent.plan.removed):
            c = report.consent
            ActivityLog(settings).record(
                "consent sync", recorded=c.plan.new, deleted=c.plan.removed, templates_deleted=c.templates_deleted,
                templates_added=c.templates_added, export_sha256=optouts.export_sha256,
            )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        _print_sync(report)
    needs_a_person = report.not_protected or plan.held or report.no_usable_new_photo
    raise typer.Exit(EXIT_REVIEW if needs_a_person else EXIT_ALLOW)


PREVIOUS_DELIVERY = "previous-delivery.txt"


def _previous_delivery(settings: Settings, given: Path | None, remember: bool) -> Path | None:
    """Last year's picture-day folder: as given (and remembered: a path, nothing copied), else the
    one remembered from an earlier sync while it is still there."""
    from optout_guard.fsutil import atomic_write, private_dir

    note = settings.state_dir / PREVIOUS_DELIVERY
    if given is not None:
        if not given.is_dir():
            err.print(f"[bold red]error:[/] --previous-photos {escape(str(given))} is not a folder")
            raise typer.Exit(EXIT_USAGE)
        if remember:
            private_dir(settings.state_dir)
            atomic_write(note, str(given.resolve()) + "\n")
        return given
    try:
        remembered = Path(note.read_text(encoding="utf-8").strip())
    except OSError:
        return None
    return remembered if remembered.is_dir() else None


def _print_sync(report) -> None:  # noqa: ANN001 - SyncReport
    p = report.plan
    head = "Dry run: nothing was changed." if not report.applied else "Sync done."
    out.print(f"[bold]{head}[/] {len(p.optouts.students)} students on the opt-out list ({p.optouts.rows_read} rows read).")
    verb = " will be" if not report.applied else ""  # "Students added: 3" / "Students added will be: 3"
    if p.removed_students:  # first: the change that unprotects students
        out.print(
            f"[bold yellow]Students removed{verb} ({len(p.removed_students)}):[/] "
            + escape(", ".join(p.removed_students))
            + " — their templates are deleted and the reference photos sync copied; photos put there by hand stay."
        )
    if p.kept_local:
        out.print(f"Added locally and not in this export, kept: {escape(', '.join(p.kept_local))}")
    if report.not_protected:
        label = "NOT PROTECTED now" if not report.applied else "NOT PROTECTED"
        out.print(
            f"[bold red]{label} ({len(report.not_protected)}):[/] no usable reference photo, photos of them will not be "
            "blocked: " + ", ".join(report.not_protected)
        )
    else:
        out.print("[green]Every student on the list has a usable reference photo.[/]")
    if report.stale:
        out.print(f"[yellow]Newest photo over a year old ({len(report.stale)}):[/] " + ", ".join(report.stale))
    if report.one_photo:
        out.print(
            f"[yellow]Protected by one reference photo only ({len(report.one_photo)}):[/] " + ", ".join(report.one_photo[:30])
            + ". Children change fast: back-fill last year's delivery (sync --photos LAST_YEAR --picture-day DATE)."
        )
    out.print(
        f"Students added{verb}: {len(p.added_students)}" + (f" ({', '.join(p.added_students[:20])})" if p.added_students else "")
    )
    copied = "to copy" if not report.applied else "copied"
    if report.enroll is not None:
        bad = len(report.new_photos_rejected)
        out.print(
            f"Picture-day photos {copied}: {len(p.new_photos)}, of which {len(p.new_photos) - bad} usable as references"
            + (f" and {bad} not usable (kept in enrollments/, listed below)" if bad else "")
            + f"; already enrolled: {p.already_enrolled_photos}"
        )
    else:
        out.print(f"Picture-day photos {copied}: {len(p.new_photos)}; already enrolled: {p.already_enrolled_photos}")
    if report.enroll is not None:
        for s, ph, r in report.enroll.rejected:
            out.print(f"  [yellow]photo not usable[/] {escape(s)}: {escape(str(ph))}: {escape(r)}")
        if report.no_usable_new_photo:
            out.print(
                f"[yellow]No usable new photo for {len(report.no_usable_new_photo)} student(s)[/] (their older photos, if "
                f"any, still protect them; give a better portrait with optout-guard add): "
                + escape(", ".join(report.no_usable_new_photo))
            )
    if p.held:
        out.print(f"[yellow]Held for a person to confirm ({len(p.held)}):[/]")
        for h in p.held:
            who = f"{h.photo.first} {h.photo.last}, grade {h.photo.grade or '?'}"
            out.print(escape(f"  {h.photo.path.name} ({who}): {h.reason}; could be {', '.join(h.candidates)}"))
        if report.held_file:
            out.print(
                f"  Fill in the student_id column (or 'none') in {report.held_file}, "
                f"then run sync again with --confirm {report.held_file}"
            )
    if p.missing_files:
        out.print(
            f"[yellow]Listed in INDEX.TXT but not found ({len(p.missing_files)}):[/] "
            + ", ".join(str(m.path) for m in p.missing_files[:10])
        )
    if p.no_new_photo:
        out.print(f"No new photo in this delivery for {len(p.no_new_photo)} student(s): " + ", ".join(p.no_new_photo[:30]))
    out.print(f"Photos of students not on the list, left alone: {p.other_students}")
    from optout_guard.sync import numeric_schools

    if unnamed := numeric_schools(p.optouts):
        out.print(
            f"[yellow]Schools are numbers in this export ({', '.join(escape(n) for n in unnamed[:10])}):[/] a scope "
            '"Lincoln Elementary" or a school sub-folder of the check folder cannot find them. Name them in config.toml: '
            '[schools] then one line each, e.g. 101 = "Lincoln Elementary" (docs/sync.md).'
        )
    for names in p.similar_schools:
        out.print(
            "[yellow]These school names look like one school:[/] " + "; ".join(escape(n) for n in names)
            + ". Scopes treat them as one; fix the spelling in the SIS export."
        )
    if report.cohort is not None:
        _print_cohort(report.cohort)
    _print_consent(report)


def _print_consent(report) -> None:  # noqa: ANN001 - SyncReport
    """What the sync did to the Include list (consent matching on)."""
    plan = report.plan.consent
    if plan is None:
        return
    done = report.consent
    verb = "" if report.applied else " (would be)"
    if not plan.column_read:
        out.print("[yellow]Consenting students: no consent column read[/] (--consent-column or [sis] consent_column); "
                  "the Include list is unchanged except for students who left or opted out.")  # fmt: skip
    if plan.new:
        out.print(f"Consent recorded{verb} from the export: {len(plan.new)} student(s).")
    if plan.removed:
        out.print(
            f"Consent removed{verb}, templates deleted: {len(plan.removed)} student(s)"
            + (f"; withdrawn {len(plan.withdrawn)}" if plan.withdrawn else "")
            + (f"; not in the export {len(plan.left)}" if plan.left else "")
            + (f"; on the opt-out list {len(plan.opted_out)}" if plan.opted_out else "")
            + "."
        )
    if plan.kept_by_hand:
        out.print(f"Consent recorded by hand, not in the export's column, kept: {', '.join(plan.kept_by_hand[:20])}")
    conflicts = report.plan.optouts.consent_conflicts
    if conflicts:
        out.print(f"[yellow]Opted out and marked as consenting ({len(conflicts)}): treated as opted out:[/] "
                  + escape(", ".join(conflicts[:20])))  # fmt: skip
    if done is not None:
        out.print(
            f"Consenting students: {done.students}, with {done.templates} template(s) "
            f"({done.templates_added} added, {done.templates_deleted} deleted)"
            + (f"; {len(done.without_template)} without a usable photo yet" if done.without_template else "")
            + (f"; {len(done.not_usable)} photo(s) not usable" if done.not_usable else "")
            + "."
        )
    else:
        out.print(f"Consenting students' photos to embed: {len(plan.photos)}.")


def _print_cohort(report) -> None:  # noqa: ANN001 - CohortReport
    """One paragraph on what the cohort did: its photos were used in memory only."""
    c = report.calibration
    if c is None:
        style = "bold yellow" if report.refused else "yellow"
        out.print(f"[{style}]Cohort not used ({escape(report.skipped_because)}): thresholds unchanged.[/]")
        return
    hubs = sum(1 for v in c.penalties.values() if v > 0)
    moved = [(g, b, r) for g, (b, r) in c.thresholds.items() if (b, r) != report.bounds]
    limits = "; ".join(f"{g} reference photo(s): block {b:.3f}, review {r:.3f}" for g, b, r in moved)
    out.print(
        f"Cohort: {report.used} faces of children not on the list (embedded in memory, nothing kept but the numbers below). "
        f"{c.held_share:.0%} of them came within the review distance of some enrolled student (target {c.review_share:.0%})"
        + (f"; {c.dropped} left out as too close to an enrolled student (never used to set a threshold)" if c.dropped else "")
        + f". Hub penalties: {hubs} students. "
        + (f"Thresholds now, where they differ from the settings': {limits}." if moved else "Thresholds unchanged.")
    )
    if c.in_plain_words():
        out.print(c.in_plain_words() + ("" if report.pairs else " (Give last year's delivery with --previous-photos DIR "
                                        "to measure it on your own children.)"))  # fmt: skip


# ---- check folder ------------------------------------------------------------------------------
@app.command()
@_user_errors
def watch(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="The check folder staff drop photos into.")],
    once: Annotated[bool, typer.Option("--once", help="Process what is there now, then exit (for cron and tests).")] = False,
    polling: Annotated[bool, typer.Option("--polling", help="Poll instead of OS events (network shares).")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", help="Also watch sub-folders.")] = False,
    settle: Annotated[float, typer.Option(help="Seconds a file must stay unchanged before it is read.")] = 2.0,
    rescan: Annotated[float, typer.Option(help="Seconds between full rescans (the safety net for missed events).")] = 60.0,
    no_recognition: Annotated[bool, typer.Option("--no-recognition", help="Detection only: every face is flagged.")] = False,
    redact: Annotated[
        bool, typer.Option("--redact", help="Also write <photo>.postable.jpg: blocked faces and faces under review blurred.")
    ] = False,
) -> None:
    """Watch a folder: each photo dropped in is moved to allowed/, blocked/ or review/ with a note and a marked-up copy."""
    import signal
    import threading

    from optout_guard.activity_log import ActivityLog
    from optout_guard.pipeline import Guard
    from optout_guard.watch import CheckFolder, SettingsChanged, folder_lock

    if not folder.is_dir():
        err.print(f"[bold red]error:[/] {escape(str(folder))} is not a folder; create it or give the right path")
        raise typer.Exit(EXIT_USAGE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = _settings(ctx, recognition=False if no_recognition else None)
    guard = Guard(settings)
    try:
        guard.require_models()  # a broken install: refuse to start (never file everything into review/)
        if settings.recognition:
            guard.require_index()  # refuse to start without a usable index (nothing would ever be blocked)
    except OptoutGuardError as exc:  # said in the folder too: staff see why nothing is filed
        CheckFolder(folder, guard).stopped(str(exc))
        raise
    lock = folder_lock(folder)
    try:
        checker = CheckFolder(folder, guard, settle=settle, recursive=recursive, activity=ActivityLog(settings), redact=redact)
        if once:
            checker.run_once()
        else:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                checker.run_forever(polling=polling, rescan_every=rescan, stop=stop)
            except KeyboardInterrupt:
                pass
            except SettingsChanged as exc:  # exit 2: systemd (Restart=on-failure) starts it with the new ones
                err.print(f"[yellow]{escape(str(exc))}[/]")
                raise typer.Exit(EXIT_USAGE) from None
    finally:
        lock.release()
    counts = checker.stats.processed
    filed = sum(counts.values())
    out.print(f"Filed {filed} photos: {counts['block']} blocked, {counts['review']} to review, {counts['allow']} allowed.")
    raise typer.Exit(EXIT_REVIEW if checker.stats.errors else EXIT_ALLOW)


# ---- library audit -------------------------------------------------------------------------------
@app.command()
@_user_errors
def audit(
    ctx: typer.Context,
    library: Annotated[Path, typer.Argument(metavar="LIBRARY", help="Top folder of the photo library.")],
    report: Annotated[Optional[Path], typer.Option("--report", help="Write index.html, audit.csv and audit.json here.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes [default: one per CPU core].")] = None,
    embedding_cache: Annotated[
        bool,
        typer.Option(
            "--embedding-cache",
            help="Keep every face's embedding so that a changed opt-out list is re-checked in seconds. "
            "Biometric data about every pictured student: off by default, deleted by a run without this flag.",
        ),
    ] = False,
    accept_deletions: Annotated[
        bool,
        typer.Option(
            "--accept-deletions",
            help="Record photos as deleted even when so many are gone that the library looks unmounted.",
        ),
    ] = False,
    recheck_all: Annotated[
        bool, typer.Option("--recheck-all", help="Check every photo again, whatever was stored (e.g. after fixing the install).")
    ] = False,
    cluster: Annotated[
        Optional[str],
        typer.Option(
            "--cluster",
            metavar="ADDRESS",
            help="Run the checks on a Dask cluster: local:N (N processes here) or tls://HOST:8786 (your optout-guard "
            "scheduler); needs optout-guard[cluster] and an encrypted index.",
        ),
    ] = None,
) -> None:
    """Audit a photo library incrementally (only new, changed or affected photos are checked).
    Exit 1 if any photo in the library is blocked, 3 if any needs review, 0 otherwise."""
    import time

    from optout_guard.activity_log import ActivityLog
    from optout_guard.audit import changes_since_last_audit, library_rows, report_thumbnail, run_audit

    settings = _settings(ctx, workers=workers)
    if not settings.recognition:
        err.print("[bold red]error:[/] the audit searches for enrolled students; it does not run in detection-only mode")
        raise typer.Exit(EXIT_USAGE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("optout_guard.audit")
    count = settings.processes
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("Auditing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("audit", total=None, rate="")
            started = time.monotonic()

            def progress(done: int, total: int) -> None:
                rate = done / max(1e-6, time.monotonic() - started)
                bar.update(task, completed=done, total=total, rate=f"{rate:.1f} photos/s")

            summary = run_audit(
                library, settings, workers=count, progress=progress, embedding_cache=embedding_cache,
                accept_deletions=accept_deletions, recheck_all=recheck_all, cluster=cluster,
            )  # fmt: skip
    else:
        state = {"last": time.monotonic(), "first": 0.0}

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == 1:
                state["first"] = now  # the rate counts from the first result, not from start-up
            if now - state["last"] >= 10 or done == total:
                if done < 2 or now - state["first"] < 1.0:
                    log.info("audit: %d of %d photos checked (starting)", done, total)
                else:
                    log.info("audit: %d of %d photos checked (%.1f photos/s)", done, total, (done - 1) / (now - state["first"]))
                state["last"] = now

        summary = run_audit(
            library, settings, workers=count, progress=progress, embedding_cache=embedding_cache,
            accept_deletions=accept_deletions, recheck_all=recheck_all, cluster=cluster,
        )  # fmt: skip
    totals = summary.totals
    ActivityLog(settings).record(
        "audit",
        checked=summary.checked,
        rechecked=summary.rechecked,
        unchanged=summary.unchanged,
        moved=summary.moved,
        deleted=summary.deleted_count,
        verdicts_changed=summary.changed_count,
        totals=totals,
        embedding_cache=embedding_cache,
        cluster=cluster or "",
    )
    out.print(
        f"Audit of {summary.library}: {summary.seen} photos — {summary.checked} checked, {summary.rechecked} re-checked "
        f"against the changed opt-out list, {summary.unchanged} unchanged, {summary.moved} moved, "
        f"{summary.deleted_count} deleted, {summary.not_images} not checked (neither photos nor video clips); "
        f"{summary.clips} of the photos are video "
        f"clips; {summary.seconds:.1f} s" + (_on_cluster(summary) if summary.cluster_workers else ".")
    )
    if summary.links_not_followed:
        err.print(
            f"[yellow]{len(summary.links_not_followed)} links were not followed (not checked); "
            "audit their targets on their own:[/] " + escape(", ".join(summary.links_not_followed[:10]))
        )
    if summary.unreadable_folders:
        err.print(
            f"[yellow]{len(summary.unreadable_folders)} folders could not be read (permissions?); what the last audits "
            "found in them is kept as it was until they can be read:[/] " + escape(", ".join(summary.unreadable_folders[:10]))
        )
    out.print(f"Library now: [red]{totals.get('block', 0)} blocked[/], [yellow]{totals.get('review', 0)} to review[/], "
              f"[green]{totals.get('allow', 0)} allowed[/].")  # fmt: skip
    if summary.cleared_but_close:
        out.print(f"{summary.cleared_but_close} faces checked in this run were cleared although they came close to an "
                  "enrolled student (within 0.08 past the review distance): the report counts them.")  # fmt: skip
    if summary.event_blocks:
        out.print(f"{summary.event_blocks} faces held alone were blocked: the same child, in other photos of their "
                  "folder taken the same day, matches an opted-out student (one decision per child per event).")  # fmt: skip
    if summary.cleared_by_consenting:
        out.print(f"{summary.cleared_by_consenting} faces checked in this run were cleared by recognising a consenting "
                  "student (the review desk lists them; a reviewer may hold one).")  # fmt: skip
    if report is not None:
        from optout_guard.report import write_audit_report

        rows = library_rows(settings, library)
        changes = changes_since_last_audit(settings, library)
        record = {k: v for k, v in summary.__dict__.items() if k != "changed"}
        decisions = []
        from optout_guard.review import ReviewBook, book_path

        if book_path(settings).exists():  # what reviewers decided lately, per reviewer, in the report
            book = ReviewBook.open(settings)
            try:
                decisions = book.decisions(500)
            finally:
                book.close()
        clips = library_rows(settings, library, ("block", "review", "allow"), kind="clip")
        page = write_audit_report(
            report, str(summary.library), record, rows, changes, report_thumbnail(settings), decisions=decisions, clips=clips,
            desk_address=settings.desk_address,
        )
        out.print(f"Report: {page}")
    if totals.get("block"):
        raise typer.Exit(EXIT_BLOCK)
    # A file that could not be looked at is never "all allowed" (a document may hold photos).
    raise typer.Exit(EXIT_REVIEW if totals.get("review") or summary.not_images else EXIT_ALLOW)


def _on_cluster(summary) -> str:  # noqa: ANN001 - AuditSummary
    rate = summary.checked / max(summary.seconds, 1e-6)
    return f" on a Dask cluster of {summary.cluster_workers} workers ({rate:.1f} photos/s)."


# ---- activity log ------------------------------------------------------------------------------
log_app = typer.Typer(
    help="The activity log: who ran what, when, with what result (hash-chained).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(log_app, name="log")


@log_app.command("verify")
@_user_errors
def log_verify(ctx: typer.Context) -> None:
    """Check that no line of the activity log was changed, removed or inserted. Exit 5 if one was."""
    from optout_guard.activity_log import log_path, verify

    settings = _settings(ctx.parent)
    result = verify(settings)
    if result.problem:
        err.print(f"[bold red]The activity log {escape(str(log_path(settings)))} was tampered with:[/] {escape(result.problem)}.")
        raise typer.Exit(EXIT_TAMPERED)
    out.print(f"The activity log {log_path(settings)} is intact ({result.entries} entries).")


@log_app.command("show")
@_user_errors
def log_show(
    ctx: typer.Context,
    tail: Annotated[int, typer.Option(help="Show only the last N entries.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON lines (for scripts).")] = False,
) -> None:
    """Show the latest entries of the activity log (a table; --json for scripts)."""
    from collections import deque

    from optout_guard.activity_log import log_path

    path = log_path(_settings(ctx.parent))
    if not path.exists():
        out.print("The activity log is empty.")
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = list(deque(fh, maxlen=tail))
    if as_json:
        for line in lines:
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
        return
    table = Table()
    for column in ("#", "When", "Who", "What", "Details"):
        table.add_column(column, overflow="fold")
    for line in lines:
        try:
            entry = json.loads(line)
            details = entry["details"]
            summary = (
                ", ".join(f"{k}: {_short(v)}" for k, v in details.items() if k not in ("hmac", "prev"))
                if isinstance(details, dict)
                else str(details)
            )
            when = str(entry["time"])[:19].replace("T", " ")
            who = escape(f"{entry['user']}@{entry['host']}")
            table.add_row(str(entry["seq"]), when, who, escape(str(entry["action"])), escape(summary[:300]))
        except (ValueError, KeyError, TypeError):
            table.add_row("", "", "", "[red]damaged[/]", "an incomplete or damaged line: run optout-guard log verify")
    out.print(table)


def _short(value: Any) -> str:
    """A log detail in a table cell: lists and long values shortened."""
    if isinstance(value, list):
        return f"{len(value)} ({', '.join(map(str, value[:3]))}{', …' if len(value) > 3 else ''})" if value else "none"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in list(value.items())[:4]) + ("…" if len(value) > 4 else "") + "}"
    text = str(value)
    return text[:16] + "…" if len(text) > 24 and all(c in "0123456789abcdef" for c in text) else text


# ---- calibration ---------------------------------------------------------------------------------
@app.command()
@_user_errors
def calibrate(
    ctx: typer.Context,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write calibration.json and det.png here.")] = None,
) -> None:
    """Measure the thresholds on your own gallery (students with several reference photos)."""
    from optout_guard.calibration import calibrate as run_calibration
    from optout_guard.calibration import det_plot
    from optout_guard.index import open_index

    settings = _settings(ctx)
    result = run_calibration(open_index(settings), settings)
    summary = result.summary()
    out.print(
        f"{result.students} students, {result.multi_photo_students} with 2 or more reference photos: "
        f"{result.probes} photos used as probes."
    )
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    for name, row in result.current.items():
        share, alerted = f"{row['fnir']:.1%}", f"{row['fpir']:.1%}"
        if name == "block_distance":  # beyond block is not a miss: it is review, or a miss beyond review
            out.print(
                f"  at {name} = {row['threshold']}: {share} of enrolled photos not blocked outright (held for review, or "
                f"missed), {alerted} of other students' photos would be blocked"
            )
        else:
            out.print(
                f"  at {name} = {row['threshold']}: {share} of enrolled photos missed (neither blocked nor held), "
                f"{alerted} of other students' photos held for review or blocked"
            )
    index = open_index(settings)
    if index.cohort is not None and settings.cohort:
        c = index.cohort
        limits = "; ".join(f"{g} reference photo(s): block {b}, review {r}" for g, (b, r) in c.thresholds.items())
        out.print(
            f"Thresholds in use from the cohort ({escape(c.source)}, {c.faces} faces, {c.made_at[:10]}): {limits}. "
            f"{c.held_share:.0%} of the cohort came within review of somebody before (target {c.review_share:.0%})."
        )
        summary["cohort"] = {k: v for k, v in c.as_json().items() if k != "penalties"}
    else:
        out.print("No cohort calibration in the index: every face is judged with the settings' thresholds.")
    if result.suggested:
        out.print(
            "Suggested by the rule (" + summary["rule"] + "): " + ", ".join(f"{k} = {v}" for k, v in result.suggested.items())
        )
    if out_dir is not None:
        from optout_guard.fsutil import atomic_write

        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "calibration.json", json.dumps(summary, indent=2), mode=0o644)
        plotted = det_plot(result, out_dir / "det.png", settings)
        out.print(
            f"Written: {out_dir / 'calibration.json'}"
            + (f", {out_dir / 'det.png'}" if plotted else " (no plot: matplotlib missing)")
        )


# ---- the audit on a cluster -----------------------------------------------------------------------
@app.command()
@_user_errors
def scheduler(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (the cluster's network only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8786,
) -> None:
    """Run the Dask scheduler for `audit --cluster` (hardened: no dashboard; TLS with OPTOUT_GUARD_TLS_*)."""
    _cluster_serve()("scheduler", host, port)


@app.command()
@_user_errors
def worker(
    scheduler_address: Annotated[
        str, typer.Option("--scheduler", metavar="ADDRESS", help="The scheduler, e.g. tls://audit-server:8786.")
    ],
) -> None:
    """Run a Dask worker for `audit --cluster` (install the same optout-guard here; the index key too)."""
    _cluster_serve()("worker", scheduler_address)


def _cluster_serve():  # noqa: ANN202 - optout_guard.cluster.serve
    try:
        from optout_guard.cluster import serve
    except ImportError as exc:
        why = f"Dask distributed is not installed ({exc}): pip install 'optout-guard[cluster]'"
        err.print(f"[bold red]error:[/] {escape(why)}")
        raise typer.Exit(EXIT_USAGE) from None
    return serve


# ---- review desk ---------------------------------------------------------------------------------
@app.command()
@_user_errors
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 8765,
    lan: Annotated[
        bool, typer.Option("--lan", help="Serve other computers too (all addresses); needs accounts: optout-guard users add.")
    ] = False,
    check_folder: Annotated[
        Optional[list[Path]], typer.Option("--check-folder", help="A check folder whose review/ photos join the queue.")
    ] = None,
    audit_library: Annotated[
        Optional[list[Path]], typer.Option("--audit", help="An audited library whose review photos join the queue.")
    ] = None,
    show_names: Annotated[
        bool, typer.Option("--show-names", help="Show imported student names (local use; on --lan, per account).")
    ] = False,
    allowed_host: Annotated[
        Optional[list[str]],
        typer.Option("--allowed-host", help="With --lan: a host name the desk answers to (e.g. your HTTPS proxy's). Repeatable."),
    ] = None,
    trusted_proxy: Annotated[
        Optional[list[str]],
        typer.Option("--trusted-proxy", help="With --lan: your reverse proxy's address; its X-Forwarded-For names the client."),
    ] = None,
) -> None:
    """Start the review desk: a local web page to check photos and settle reviews with the keyboard."""
    from optout_guard.desk import Desk, DeskOptions, require_accounts
    from optout_guard.desk import serve as run_desk

    settings = _settings(ctx)
    options = DeskOptions(
        host="0.0.0.0" if lan else "127.0.0.1",
        port=port,
        lan=lan,
        show_names=show_names and not lan,
        check_folders=list(check_folder or []),
        audit_libraries=list(audit_library or []),
        allowed_hosts=tuple(allowed_host or ()),
        trusted_proxies=tuple(trusted_proxy or ()),
    )
    if lan:
        require_accounts(settings.state_dir)
    err.print("Loading the face models and the index…")
    desk = Desk(settings, options)
    desk.guard.require_models()  # now, not on the first photo dropped on the page (a broken install: exit 2)
    _ = desk.guard.index  # a missing or unusable index is reported now, not on the first photo
    if options.check_folders or options.audit_libraries:
        desk.start_import()  # in the background: the page shows its progress and refreshes itself

    def ready(url: str) -> None:
        # Called once the port is bound and listening: the address is printed when it answers.
        local = url.replace("0.0.0.0", "127.0.0.1")
        out.print(f"Review desk running: open [bold]{local}[/] in your browser. Stop it with Ctrl+C.")
        if lan:
            import socket

            port_part = url.rsplit(":", 1)[-1].rstrip("/")
            # The machine's own name (no lookup: nothing is sent anywhere to learn an address).
            out.print(f"Serving the network too (sign-in required): other computers open "
                      f"[bold]http://{socket.gethostname()}:{port_part}/[/] (or this computer's address).")  # fmt: skip

    try:
        run_desk(desk, on_ready=ready)
    except KeyboardInterrupt:
        out.print("Review desk stopped.")


users_app = typer.Typer(
    help="Accounts for the review desk on the network (optout-guard serve --lan).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(users_app, name="users")


@users_app.command("add")
@_user_errors
def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")],
    names: Annotated[bool, typer.Option("--can-see-names", help="This account may see students' names.")] = False,
    schools: Annotated[
        Optional[list[str]],
        typer.Option("--school", help="Limit the account to one school's cards and checks (repeatable) [default: district]."),
    ] = None,
) -> None:
    """Add an account (or set a new password). The password is asked for, or read from OPTOUT_GUARD_PASSWORD."""
    import os

    from optout_guard.optout_list import load_list, school_key
    from optout_guard.users import UserStore

    settings = _settings(ctx)
    listed = load_list(settings.workspace)
    known = {school_key(s.school): s.school for s in (listed.students.values() if listed else []) if s.school}
    unknown = [s for s in schools or [] if school_key(s) not in known]
    if unknown:
        err.print(f"[bold red]error:[/] no student on the opt-out list is at {escape(', '.join(unknown))}. Known schools: "
                  f"{escape(', '.join(sorted(known.values())) or 'none (import a list with sync first)')}")  # fmt: skip
        raise typer.Exit(EXIT_USAGE)
    password = os.environ.get("OPTOUT_GUARD_PASSWORD") or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    UserStore(settings.state_dir).add(name, password, names, tuple(schools or ()))
    where = f" (only {', '.join(schools)})" if schools else ""
    out.print(f"Account {name} saved{' (may see names)' if names else ''}{escape(where)}.")


@users_app.command("remove")
@_user_errors
def users_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME", help="Account name.")]) -> None:
    """Remove an account."""
    from optout_guard.users import UserStore

    settings = _settings(ctx)
    if not UserStore(settings.state_dir).remove(name):
        err.print(f"[yellow]no account {name}[/]")
        raise typer.Exit(EXIT_NOT_FOUND)
    out.print(f"Account {name} removed.")


@users_app.command("list")
@_user_errors
def users_list(ctx: typer.Context) -> None:
    """List accounts."""
    from optout_guard.users import UserStore

    settings = _settings(ctx)
    store = UserStore(settings.state_dir)
    for name in store.names():
        where = f"  (only {', '.join(store.schools_of(name))})" if store.schools_of(name) else ""
        out.print(f"{name}{'  (may see names)' if store.can_see_names(name) else ''}{escape(where)}")


# ---- consenting students (the Include list) ---------------------------------------------------
include_app = typer.Typer(
    help="Students whose families consented in writing to recognition (consent_matching on; docs/privacy.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(include_app, name="include")


def _consent_on(settings: Settings) -> None:
    if not settings.consent_matching:
        err.print(
            "[bold red]error:[/] consent matching is off: nothing about consenting students is kept. Turn it on in "
            "config.toml (consent_matching = true) after reading docs/privacy.md \"Consenting students\"."
        )
        raise typer.Exit(EXIT_USAGE)


@include_app.command("add")
@_user_errors
def include_add(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(metavar="STUDENT_ID", help="The student's id (as in the SIS).")],
    photos: Annotated[
        Optional[list[Path]], typer.Option("--photo", help="A portrait of the child (repeatable); else from later syncs.")
    ] = None,
    consent_date: Annotated[
        Optional[str], typer.Option("--date", help="The date on the signed form, YYYY-MM-DD [default: today].")
    ] = None,
) -> None:
    """Record a family's written consent handed in by hand. Logged with who and when."""
    import datetime as dt
    import getpass

    from optout_guard.activity_log import ActivityLog
    from optout_guard.consent import record_by_hand
    from optout_guard.index import edit_index
    from optout_guard.models import get_models
    from optout_guard.optout_list import is_valid_student_id

    settings = _settings(ctx)
    _consent_on(settings)
    if not is_valid_student_id(student_id):
        err.print(f"[bold red]error:[/] {escape(repr(student_id))} is not a valid student id (letters, digits, . _ -)")
        raise typer.Exit(EXIT_USAGE)
    try:
        when = dt.date.fromisoformat(consent_date).isoformat() if consent_date else dt.date.today().isoformat()
    except ValueError:
        err.print(f"[bold red]error:[/] --date must be a date like 2026-09-15, not {consent_date!r}")
        raise typer.Exit(EXIT_USAGE) from None
    missing = [str(p) for p in photos or [] if not p.is_file()]
    if missing:
        err.print(f"[bold red]error:[/] no such photo: {escape(', '.join(missing))}")
        raise typer.Exit(EXIT_USAGE)
    user = getpass.getuser()
    with edit_index(settings) as index:
        refused = record_by_hand(index, student_id, when, user, list(photos or []), settings, get_models())
        templates = index.consenting_references(student_id)
    ActivityLog(settings).record("include add", student_id=student_id, consent_date=when, by=user, templates=templates)
    for photo, why in refused:
        out.print(f"  [yellow]photo not usable[/] {escape(photo)}: {escape(why)}")
    out.print(
        f"Consent of {escape(student_id)} recorded ({when}, by {escape(user)}); {templates} template(s)"
        + ("." if templates else ": none yet, the next sync takes one from the picture-day delivery (or give --photo).")
    )


@include_app.command("remove")
@_user_errors
def include_remove(
    ctx: typer.Context,
    student_id: Annotated[str, typer.Argument(metavar="STUDENT_ID", help="The student whose consent was withdrawn.")],
) -> None:
    """Consent withdrawn: take the student off the Include list and delete their templates now."""
    import getpass

    from optout_guard.activity_log import ActivityLog
    from optout_guard.index import edit_index

    settings = _settings(ctx)
    with edit_index(settings) as index:
        known = student_id in index.consent
        deleted = index.withdraw_consent(student_id)
    if not known:
        err.print(f"[yellow]{escape(student_id)} is not on the Include list; nothing removed.[/]")
        raise typer.Exit(EXIT_NOT_FOUND)
    ActivityLog(settings).record("include remove", student_id=student_id, templates_deleted=deleted, by=getpass.getuser())
    out.print(f"Consent of {escape(student_id)} removed; {deleted} template(s) deleted from {settings.index_file}.")


@include_app.command("purge")
@_user_errors
def include_purge(ctx: typer.Context) -> None:
    """Delete every consenting student's record and template (e.g. when turning the feature off)."""
    import getpass

    from optout_guard.activity_log import ActivityLog
    from optout_guard.index import edit_index

    settings = _settings(ctx)
    with edit_index(settings) as index:
        students = len(index.consent)
        deleted = index.purge_consenting()
    ActivityLog(settings).record("include purge", students=students, templates_deleted=deleted, by=getpass.getuser())
    out.print(f"Include list purged: {students} student(s), {deleted} template(s) deleted from {settings.index_file}.")


@include_app.command("list")
@_user_errors
def include_list(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False
) -> None:
    """Consenting students: where each consent comes from, its date, how many templates."""
    from optout_guard.index import open_index

    settings = _settings(ctx)
    index = open_index(settings)
    rows: list[dict[str, Any]] = [
        {
            "student_id": c.student_id,
            "source": c.source,
            "consent_date": c.consent_date or None,
            "recorded_at": c.recorded_at,
            "recorded_by": c.recorded_by or None,
            "templates": index.consenting_references(c.student_id),
        }
        for c in sorted(index.consent.values(), key=lambda c: c.student_id)
    ]
    if as_json:
        doc = {"schema_version": 1, "consent_matching": settings.consent_matching, "students": rows}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    if not settings.consent_matching:
        out.print("Consent matching is off" + (f" ({len(rows)} record(s) left in the index: optout-guard include purge)."
                                               if rows else "."))  # fmt: skip
    table = Table()
    for col in ("Student", "Consent from", "Consent date", "Recorded", "Templates"):
        table.add_column(col)
    for r in rows:
        by = f" by {r['recorded_by']}" if r["recorded_by"] else ""
        table.add_row(escape(r["student_id"]), r["source"], r["consent_date"] or "-", f"{r['recorded_at'][:10]}{by}",
                      str(r["templates"]) if r["templates"] else "[yellow]0 (no photo yet)[/]")  # fmt: skip
    out.print(table)
    out.print(f"{len(rows)} consenting student(s), {len(index.consenting_templates)} template(s).")


# ---- index key -----------------------------------------------------------------------------------
key_app = typer.Typer(help="Encryption of the face index at rest.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(key_app, name="key")


@key_app.command("new")
@_user_errors
def key_new(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Where to write the new key (not beside the index).")],
) -> None:
    """Write a new random 256-bit key (mode 0600). Then set index_key_file and run: enroll --rebuild."""
    import os

    from optout_guard.index import new_key

    if path.exists():
        err.print(f"[bold red]error:[/] {path} exists; a key is never overwritten (the index it opens would be lost)")
        raise typer.Exit(EXIT_USAGE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key() + "\n")
    out.print(f'New key in {path}. Set index_key_file = "{path}" in config.toml, then run: optout-guard enroll --rebuild')


# ---- demo ----------------------------------------------------------------------------------
@app.command()
@_user_errors
def demo(
    directory: Annotated[
        Optional[Path], typer.Option("--dir", help="Where to build the demo workspace [default: a new temporary folder].")
    ] = None,
) -> None:
    """Enroll one person from a sample portrait and check three photos, end to end, offline."""
    from optout_guard.demo import DEMO_STUDENT, run_demo

    err.print("Building the demo workspace and loading the face models…")
    run = run_demo(directory)
    out.print(f"Workspace: {run.workspace}")
    out.print(f"Enrolled student {DEMO_STUDENT} (Grace Hopper) from {len(run.enroll.added)} reference photo(s).")
    _print_table(run.results, [], run.annotated)  # names each marked-up copy once
    problems = run.unexpected()
    if problems:
        err.print("[bold red]The demo did not give the expected verdicts:[/] " + "; ".join(problems))
        raise typer.Exit(EXIT_DEMO_FAILED)
    out.print("[green]Demo OK:[/] the enrolled person was blocked, the other photos were allowed.")
    # The command as it can be typed here: ./run-demo's optout-guard is in .venv/bin, not on the PATH.
    import shutil

    command = "optout-guard" if shutil.which("optout-guard") else str(Path(sys.argv[0]).resolve())
    out.print(f"Try it yourself: {command} --workspace {run.workspace} check {run.workspace / 'photos'}")


def hoist_workspace(args: list[str]) -> list[str]:
    """``optout-guard check -w WS photo.jpg`` works like ``optout-guard -w WS check photo.jpg``: the
    workspace option is the whole program's, but people type it after the command too."""
    head: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in ("-w", "--workspace") and i + 1 < len(args) and rest:
            head += [arg, args[i + 1]]
            i += 2
            continue
        if arg.startswith("--workspace=") and rest:
            head.append(arg)
        else:
            rest.append(arg)
        i += 1
    return head + rest


def _warm_up(args: list[str]) -> None:
    """`check` spends its first ~0.1 s parsing the command line (Typer imports pydantic): its models
    start loading meanwhile, in threads (issue 30). Only the command line is read here; a model that
    config.toml turns out not to need is loaded for nothing, never used (check asks for the ones it needs)."""
    rest = list(args)
    while rest[:1] and rest[0].startswith("-"):  # the program's own options: -w WS, --workspace WS
        rest = rest[2:] if rest[0] in ("-w", "--workspace") else rest[1:]
    if not rest or rest[0] != "check" or "--help" in args:
        return
    from optout_guard.models import get_models, models_needed

    detector = args[args.index("--detector") + 1] if "--detector" in args[:-1] else "centerface"
    get_models().load_in_background(models_needed(detector, "--no-recognition" not in args))


def run() -> None:
    sys.argv[1:] = hoist_workspace(sys.argv[1:])
    _warm_up(sys.argv[1:])
    try:
        app()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever escapes (even while printing) is exit 2, never 0 or 1
        sys.stderr.write(f"optout-guard: unexpected error: {type(exc).__name__}: {exc}. Nothing was fully checked.\n")
        sys.exit(EXIT_USAGE)
