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

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optout_guard import __version__
from optout_guard.config import Settings, load_settings
from optout_guard.errors import OptoutGuardError
from optout_guard.types import ScanResult, Verdict

EXIT_ALLOW, EXIT_BLOCK, EXIT_USAGE, EXIT_REVIEW = 0, 1, 2, 3
# Not verdicts: each has its own code, so that a script never reads one as "needs review".
EXIT_NOT_FOUND, EXIT_TAMPERED, EXIT_DEMO_FAILED = 4, 5, 6
VERDICT_STYLE = {Verdict.BLOCK: "bold red", Verdict.REVIEW: "bold yellow", Verdict.ALLOW: "green"}


def _conventional_help() -> None:
    """Help in the conventions of well-made Click/Unix tools: ``PATHS...`` (not Typer's
    ``{PATHS}...``), ``--annotate PATH`` (not ``<path>``). Typer has no public hook for this;
    ``tests/test_help.py`` fails if a Typer upgrade changes what is patched here. Typer is kept at
    0.27–0.28 (pyproject.toml): 0.29 imports pydantic on every command line, ~0.05 s of each start
    (issue 30)."""
    import typer.core as tc

    option_metavar = tc.TyperOption.make_metavar

    def plain_label(self, ctx):  # noqa: ANN001, ANN202
        label = option_metavar(self, ctx)
        dots = "..." if label.endswith("...") else ""
        label = label.removesuffix("...")
        if label.startswith("<") and label.endswith(">"):
            label = label[1:-1]
            label = label[5:-1] if label.startswith("list[") else label
            return label.upper() + dots
        return label + dots

    def argument_metavar(self, ctx, *, usage: bool = False):  # noqa: ANN001, ANN202
        name = (self.metavar or self.name or "").upper()
        if not usage:  # the label in the "Arguments:" list
            return name
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

    tc.TyperOption.make_metavar = plain_label  # type: ignore[method-assign]
    tc.TyperArgument.make_metavar = argument_metavar  # type: ignore[method-assign]


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
class _NoProgress:
    """A progress bar nobody sees (output to a script or a file): rich.progress is not even imported
    (~0.01 s of a scripted one-photo check, issue 30)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass


def _progress(total_hint: str) -> Any:
    if not err.is_terminal:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
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
    from optout_guard.batch import check_paths
    from optout_guard.pipeline import Guard

    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:  # a mistyped path is a usage error, not a photo to review
        err.print(f"[bold red]error:[/] no such file or folder: {escape(', '.join(missing))}")
        raise typer.Exit(EXIT_USAGE)
    if settings.recognition:
        _warn_interrupted_enrollment(settings)
    with _progress("photos") as bar:
        task = bar.add_task("Checking", total=None)
        run = check_paths(Guard(settings), paths, annotate, redact, scope, grade,
                          lambda n: bar.update(task, total=n) if n >= 0 else bar.advance(task))  # fmt: skip
    _print_check(run, settings, annotate, redact, as_json)
    code = exit_code(run.results)
    raise typer.Exit(EXIT_REVIEW if run.skipped and code == EXIT_ALLOW else code)  # a file not checked is never "allow"


def _print_check(run: Any, settings: Settings, annotate: Path | None, redact: Path | None, as_json: bool) -> None:
    from optout_guard.report import batch_document  # run: batch.CheckRun

    if as_json:
        sys.stdout.write(json.dumps(batch_document(run.results, run.skipped, settings), indent=2) + "\n")
    else:
        _print_table(run.results, run.skipped, annotate)
        if not run.scope.is_district:
            out.print(f"Checked against {escape(run.scope.describe())}, not the whole district.")
        if redact is not None:
            out.print("Copies fit to post blur every face that is not clearly fine (blocked and under review).")
    if not run.results and not run.skipped:
        err.print("[yellow]No photos found in the given paths.[/]")


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


# ---- gallery -------------------------------------------------------------------------------
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
    from optout_guard.enroll import enroll_workspace

    settings = _settings(ctx)
    with _progress("photos") as bar:
        task = bar.add_task("Enrolling", total=None)
        report, cohort_report = enroll_workspace(settings, directory, rebuild, cohort, progress=lambda _p: bar.advance(task))
    if as_json:
        doc = report.as_json(settings.index_file) | ({"cohort": cohort_report.as_json()} if cohort_report is not None else {})
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print_enrollment(report, cohort_report, settings)
    if report.removed_by_list:
        # Only after an interrupted sync or a hand-edited list: never quietly (exit 3 below).
        err.print(
            f"[bold red]REMOVED from the index[/] because the saved opt-out list no longer names them: "
            f"{escape(', '.join(report.removed_by_list))}. If that is wrong, run optout-guard sync with the current export."
        )
    raise typer.Exit(EXIT_REVIEW if report.weak else EXIT_ALLOW)


def _print_enrollment(report: Any, cohort_report: Any, settings: Settings) -> None:  # enroll.EnrollReport
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
    if report.uncovered:
        err.print(
            f"[bold red]NOT PROTECTED: {len(report.uncovered)} folder(s) in enrollments/ are not on the opt-out list[/] "
            f"({escape(', '.join(report.uncovered))}): if the family opted out, run optout-guard add ID PHOTO…; "
            "otherwise delete the folder."
        )


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

    from optout_guard.errors import NeedsConfirmation
    from optout_guard.face_models import get_face_models
    from optout_guard.optout_list import Student
    from optout_guard.sync import protect_student

    student = Student(student_id, first or "", last or "", grade or "", school or "")
    try:
        done = protect_student(_settings(ctx), student, list(photos), get_face_models(), getpass.getuser(), force)
    except NeedsConfirmation as exc:
        raise OptoutGuardError(f"{exc}. If it is right, add again with --force.") from None
    for photo, why in done.rejected:
        out.print(f"  [yellow]photo not usable[/] {escape(photo)}: {escape(why)}")
    if not done.templates:
        err.print(f"[bold red]{escape(student_id)} is NOT PROTECTED:[/] none of the photos could be used; "
                  "add a clear, recent portrait.")  # fmt: skip
        raise typer.Exit(EXIT_REVIEW)
    out.print(f"[green]{escape(student_id)} is protected now[/] ({done.templates} reference photo(s)); recorded as a local "
              "addition to the opt-out list, kept until the SIS export lists them"
              + ("." if done.list_imported else " (no list imported yet: the first sync takes them in)."))  # fmt: skip
    raise typer.Exit(EXIT_ALLOW)


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
    from optout_guard.roster import roster

    settings = _settings(ctx)
    _warn_interrupted_enrollment(settings)
    found = roster(settings)
    if as_json:
        sys.stdout.write(json.dumps(found.as_json(), indent=2) + "\n")
    else:
        _print_roster(found, settings)


def _print_roster(found: Any, settings: Settings) -> None:  # found: roster.Roster
    table = Table()
    columns = ("Student", "School, grade, section", "Reference photos", "Rejected", "Newest photo", "Status")
    for col in (*columns, "On the list through", "Cohort"):
        table.add_column(col)
    for r in found.rows:
        if not r["protected"]:
            state = "[bold red]NOT PROTECTED[/]"
        elif r["stale"]:
            state = "[yellow]protected, photo over a year old[/]"
        elif r["reference_photos"] == 1:
            state = "[yellow]protected by one photo only[/]"
        else:
            state = "[green]protected[/]"
        if found.cohort is None:
            cohort = "-"
        elif r["hub_penalty"] is None:
            cohort = "[yellow]not in the last cohort (penalty 0)[/]"
        else:
            cohort = f"penalty {r['hub_penalty']:.3f}" if r["hub_penalty"] else "no penalty"
        grade = f"grade {r['grade']}" if r["grade"] else ""
        where = ", ".join(x for x in (r["school"], grade, r["section"]) if x)
        refused = "; ".join(f"{x['photo']}: {x['reason']}" for x in r["rejected"])
        table.add_row(escape(str(r["student_id"])), escape(where or "-"), str(r["reference_photos"]), escape(refused or "0"),
                      str(r["newest_photo"] or "-"), state, escape(str(r["protection_from"])), cohort)  # fmt: skip
    out.print(table)
    if found.weak:
        out.print(f"[yellow]{len(found.weak)} student(s) with weak protection:[/]")
        for r in found.weak[:30]:
            out.print(f"  {escape(str(r['student_id']))}: {escape(str(r['advice']))}")
    if found.consenting["students"]:
        dates = found.consent_dates
        span = f", consent dated {dates[0]} to {dates[-1]}" if dates else ""
        state = "" if settings.consent_matching else " [yellow](consent_matching is off: not used; optout-guard include purge)[/]"
        out.print(f"Consenting students (Include list): {found.consenting['students']}, {found.consenting['templates']} "
                  f"template(s){span}{state}. optout-guard include list shows them.")  # fmt: skip
    if found.cohort is not None:
        c = found.cohort
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
    from optout_guard.roster import remove_student

    settings = _settings(ctx)
    done = remove_student(settings, student_id, delete_photos)
    if not done.known:
        err.print(f"[yellow]{escape(student_id)} was not in the index; nothing removed.[/]")
    else:
        out.print(f"Removed {student_id}: {done.templates_deleted} face template(s) deleted from {settings.index_file}.")
    if done.photos_deleted:
        out.print(f"Deleted reference photos in {settings.enrollments / student_id}.")
    elif done.photos_left is not None:
        out.print(f"Their reference photos are still in {done.photos_left}: delete that folder (or use --delete-photos), "
                  "or the next enroll will add them again.")  # fmt: skip
    raise typer.Exit(EXIT_ALLOW if done.known else EXIT_NOT_FOUND)


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

    from optout_guard.optout_list import parse_list, sis_map
    from optout_guard.picture_day import read_confirmed
    from optout_guard.sync import consent_column_for, previous_delivery, run_sync

    settings = _settings(ctx)
    if picture_day is not None:
        try:
            picture_day = dt.date.fromisoformat(picture_day).isoformat()
        except ValueError:
            err.print(f"[bold red]error:[/] --picture-day must be a date like 2026-09-15, not {picture_day!r}")
            raise typer.Exit(EXIT_USAGE) from None
    optouts = parse_list(optout_list, list_format, id_column, flag_column, "release" if release_flag else "optout",
                         sis_map(settings.workspace), consent_column_for(settings, consent_column))  # fmt: skip
    with _progress("photos") as bar:
        task = bar.add_task("Enrolling", total=None)
        report = run_sync(
            settings, optouts, list(photos or []), read_confirmed(confirm, optouts) if confirm is not None else None,
            picture_day, previous_delivery(settings, previous_photos, remember=not dry_run), dry_run, confirm_removals,
            progress=lambda _p: bar.advance(task),
        )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        _print_sync(report)
    needs_a_person = report.not_protected or report.plan.held or report.no_usable_new_photo
    raise typer.Exit(EXIT_REVIEW if needs_a_person else EXIT_ALLOW)


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

    from optout_guard.watch import SettingsChanged, watch_folder

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # systemd's stop: finish the photo in hand, then exit
    try:
        stats = watch_folder(_settings(ctx, recognition=False if no_recognition else None), folder, once=once, polling=polling,
                             rescan_every=rescan, settle=settle, recursive=recursive, redact=redact, stop=stop)  # fmt: skip
    except SettingsChanged as exc:  # exit 2: systemd (Restart=on-failure) starts it with the new ones
        err.print(f"[yellow]{escape(str(exc))}[/]")
        raise typer.Exit(EXIT_USAGE) from None
    counts = stats.processed
    out.print(f"Filed {sum(counts.values())} photos: {counts['block']} blocked, {counts['review']} to review, "
              f"{counts['allow']} allowed.")  # fmt: skip
    raise typer.Exit(EXIT_REVIEW if stats.errors else EXIT_ALLOW)


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
    from optout_guard.audit import record_run, run_audit, write_report

    settings = _settings(ctx, workers=workers)
    if not settings.recognition:
        err.print("[bold red]error:[/] the audit searches for enrolled students; it does not run in detection-only mode")
        raise typer.Exit(EXIT_USAGE)
    with _audit_progress() as progress:
        summary = run_audit(
            library, settings, workers=settings.processes, progress=progress, embedding_cache=embedding_cache,
            accept_deletions=accept_deletions, recheck_all=recheck_all, cluster=cluster,
        )  # fmt: skip
    record_run(settings, summary, embedding_cache, cluster)
    _print_audit(summary)
    if report is not None:
        out.print(f"Report: {write_report(settings, summary, report)}")
    totals = summary.totals
    if totals.get("block"):
        raise typer.Exit(EXIT_BLOCK)
    # A file that could not be looked at is never "all allowed" (a document may hold photos).
    raise typer.Exit(EXIT_REVIEW if totals.get("review") or summary.not_images else EXIT_ALLOW)


@contextlib.contextmanager
def _audit_progress() -> Iterator[Callable[[int, int], None]]:
    """The audit's progress: a bar on a terminal; otherwise a log line every 10 s (a service's log)."""
    import time

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("Auditing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("audit", total=None, rate="")
            started = time.monotonic()

            def on_bar(done: int, total: int) -> None:
                rate = done / max(1e-6, time.monotonic() - started)
                bar.update(task, completed=done, total=total, rate=f"{rate:.1f} photos/s")

            yield on_bar
        return
    log = logging.getLogger("optout_guard.audit")
    state = {"last": time.monotonic(), "first": 0.0}

    def in_log(done: int, total: int) -> None:
        now = time.monotonic()
        if done == 1:
            state["first"] = now  # the rate counts from the first result, not from start-up
        if now - state["last"] >= 10 or done == total:
            if done < 2 or now - state["first"] < 1.0:
                log.info("audit: %d of %d photos checked (starting)", done, total)
            else:
                log.info("audit: %d of %d photos checked (%.1f photos/s)", done, total, (done - 1) / (now - state["first"]))
            state["last"] = now

    yield in_log


def _print_audit(summary: Any) -> None:  # audit.AuditSummary
    totals = summary.totals
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


# ---- status ---------------------------------------------------------------------------------------
@app.command("status")
@_user_errors
def status_command(
    ctx: typer.Context,
    check_folder: Annotated[
        Optional[list[Path]],
        typer.Option("--check-folder", help="A check folder to look at (repeatable) [default: those watched from here]."),
    ] = None,
    audit: Annotated[
        Optional[list[Path]],
        typer.Option("--audit", help="A photo library to look at (repeatable) [default: those audited from here]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (for monitoring scripts).")] = False,
) -> None:
    """Is everything running? The index, the opt-out list, the check folders' watchers, the audits
    and the last run of every job, as the review desk's Status tab shows them. Exit code 0 when all
    is well, 3 when something needs a look."""
    from optout_guard.status import places_from_jobs, status, status_lines

    settings = _settings(ctx)
    folders, libraries = places_from_jobs(settings)
    doc = status(settings, check_folder or folders, audit or libraries)
    lines = status_lines(doc)
    if as_json:
        sys.stdout.write(json.dumps(doc | {"needs_a_look": [text for ok, text in lines if not ok]}, indent=2) + "\n")
    else:
        for ok, text in lines:
            out.print(("[green]✓[/] " if ok else "[bold red]✗[/] ") + escape(text))
    raise typer.Exit(EXIT_ALLOW if all(ok for ok, _ in lines) else EXIT_REVIEW)


# ---- calibration ---------------------------------------------------------------------------------
@app.command()
@_user_errors
def calibrate(
    ctx: typer.Context,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write calibration.json and det.png here.")] = None,
) -> None:
    """Measure the thresholds on your own gallery (students with several reference photos)."""
    from optout_guard.calibration import calibrate_workspace

    result, summary, cohort, written = calibrate_workspace(_settings(ctx), out_dir)
    _print_calibration(result, summary, cohort)
    if out_dir is not None:
        plot = "" if len(written) > 1 else " (no plot: matplotlib missing)"
        out.print("Written: " + ", ".join(str(w) for w in written) + plot)


def _print_calibration(result: Any, summary: dict[str, Any], cohort: Any) -> None:  # calibration.Calibration
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
    if cohort is not None:
        limits = "; ".join(f"{g} reference photo(s): block {b}, review {r}" for g, (b, r) in cohort.thresholds.items())
        out.print(
            f"Thresholds in use from the cohort ({escape(cohort.source)}, {cohort.faces} faces, {cohort.made_at[:10]}): "
            f"{limits}. {cohort.held_share:.0%} of the cohort came within review of somebody before "
            f"(target {cohort.review_share:.0%})."
        )
        if cohort.in_plain_words():  # what those thresholds catch, and hold (issue 26 §2)
            out.print(escape(cohort.in_plain_words()))
    else:
        out.print("No cohort calibration in the index: every face is judged with the settings' thresholds.")
    if result.suggested:
        out.print(
            "Suggested by the rule (" + summary["rule"] + "): " + ", ".join(f"{k} = {v}" for k, v in result.suggested.items())
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
    from optout_guard.users import UserStore, listed_schools

    settings = _settings(ctx)
    limited = listed_schools(settings.workspace, schools or [])
    password = os.environ.get("OPTOUT_GUARD_PASSWORD") or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    UserStore(settings.state_dir).add(name, password, names, limited)
    where = f" (only {', '.join(limited)})" if limited else ""
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
    from optout_guard.face_models import get_face_models
    from optout_guard.index import edit_index
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
        refused = record_by_hand(index, student_id, when, user, list(photos or []), settings, get_face_models())
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
    from optout_guard.demo import run_demo

    err.print("Building the demo workspace and loading the face models…")
    _print_demo(run_demo(directory))


def _print_demo(run: Any) -> None:  # demo.DemoRun
    import shutil

    from optout_guard.demo import DEMO_STUDENT

    out.print(f"Workspace: {run.workspace}")
    out.print(f"Enrolled student {DEMO_STUDENT} (Grace Hopper) from {len(run.enroll.added)} reference photo(s).")
    _print_table(run.results, [], run.annotated)  # names each marked-up copy once
    problems = run.unexpected()
    if problems:
        err.print("[bold red]The demo did not give the expected verdicts:[/] " + "; ".join(problems))
        raise typer.Exit(EXIT_DEMO_FAILED)
    out.print("[green]Demo OK:[/] the enrolled person was blocked, the other photos were allowed.")
    # The command as it can be typed here: ./run-demo's optout-guard is in .venv/bin, not on the PATH
    # (beside this Python; sys.argv[0] is not always the program: `python -c`, a test runner).
    beside = Path(sys.executable).with_name("optout-guard")
    command = str(beside) if beside.is_file() else str(Path(sys.argv[0]).resolve())
    command = "optout-guard" if shutil.which("optout-guard") else command
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


def _exit_without_teardown(code: int) -> None:
    """End a finished `check` the way Python would, minus freeing every module and model one by one
    (~0.09 s of a one-photo check, issue 30; mypy ends the same way): wait for threads still running
    (a model load), run the atexit handlers, flush the output, then leave. When the output cannot be
    flushed (a closed pipe), return and let Python end as it always does."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def run(fast_exit: bool = False) -> None:
    """The command line (the ``optout-guard`` program is ``start.run``, which starts a check's models
    loading first). ``fast_exit``: a finished command leaves without teardown (a `check`)."""
    sys.argv[1:] = hoist_workspace(sys.argv[1:])
    try:
        app()
    except SystemExit as exc:
        if fast_exit and (exc.code is None or isinstance(exc.code, int)):
            _exit_without_teardown(exc.code or 0)
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever escapes (even while printing) is exit 2, never 0 or 1
        sys.stderr.write(f"optout-guard: unexpected error: {type(exc).__name__}: {exc}. Nothing was fully checked.\n")
        sys.exit(EXIT_USAGE)
