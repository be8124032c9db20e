"""The exception hierarchy, all in one place. Library code raises these; only ``cli.py`` turns
them into messages (and exit code 2). A photo's own problems never raise out of a check: they
become *review* verdicts."""

from __future__ import annotations

from pathlib import Path

from optout_guard.types import ReasonCode


class OptoutGuardError(Exception):
    """Base class: every error the library raises on purpose."""


class ImageRejected(OptoutGuardError):
    """An input file could not be turned into pixels we trust (empty, truncated, not an image, bomb…).

    A rejected photo is never allowed: the pipeline turns this into a *review* verdict.
    """

    def __init__(self, path: str, reason: str, transient: bool = False, code: ReasonCode = ReasonCode.UNREADABLE) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.transient = transient  # a passing problem (could not read, changing, memory): check it again
        self.code = code  # EMPTY_FILE, TRUNCATED or UNREADABLE


class ModelUnavailable(OptoutGuardError):
    """A model file is missing or unreadable (the model packages are not installed)."""


class IndexUnusable(OptoutGuardError):
    """The face index is missing, corrupt, or was made by another model / format version."""


class ConfigError(OptoutGuardError):
    """A setting has a bad value, or the config file cannot be parsed."""


class EnrollmentError(OptoutGuardError):
    """The enrollment folder is missing or not laid out as ``enrollments/<student_id>/photos``."""


class Busy(OptoutGuardError):
    """Another optout-guard process holds the lock on this resource."""


class AuditBusy(Busy):
    """Another audit of this library is running."""


class AlreadyWatched(Busy):
    """Another optout-guard watch holds this folder's lock."""


class LibraryLooksUnmounted(OptoutGuardError):
    """Most (or all) photos the library had are gone at once: an unmounted share, not deletions."""


class ListRejected(OptoutGuardError):
    """The opt-out list has problems; nothing was changed. ``problems``: (line, message)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        shown = "\n".join(f"  line {line}: {msg}" if line else f"  {msg}" for line, msg in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(
            f"the opt-out list {path} was not imported: {len(problems)} problem(s); fix them and run again "
            f"(nothing was changed):\n{shown}{more}"
        )
        self.problems = problems


class NeedsConfirmation(OptoutGuardError):
    """A decision that needs the reviewer to say yes once more (clearing a face that would block)."""


class AlreadySettled(OptoutGuardError):
    """A card that is no longer open was answered again (another browser, a page loaded earlier): the
    first answer stands until somebody undoes it."""


class NotFound(OptoutGuardError, KeyError):
    """A card, decision or photo that does not exist (the desk answers 404; a KeyError for old callers)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class Refused(OptoutGuardError, ValueError):
    """An answer refused as given (not a candidate, not a face, already undone…): the desk answers 409."""


class ClipUnreadable(Exception):
    """A clip cannot be decoded (damaged, truncated, unsupported): the reason for a person. Not an
    OptoutGuardError: ``video`` turns it into the clip's *review*, it never reaches the CLI."""
