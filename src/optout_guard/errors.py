"""The exception hierarchy. Library code raises these; only ``cli.py`` turns them into messages."""

from __future__ import annotations


class OptoutGuardError(Exception):
    """Base class: every error the library raises on purpose."""


class ImageRejected(OptoutGuardError):
    """An input file could not be turned into pixels we trust (empty, truncated, not an image, bomb…).

    A rejected photo is never allowed: the pipeline turns this into a *review* verdict.
    """

    def __init__(self, path: str, reason: str, transient: bool = False, code: str = "unreadable") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.transient = transient  # a passing problem (could not read, changing, memory): check it again
        self.code = code  # a types.ReasonCode value: empty_file, truncated or unreadable


class ModelUnavailable(OptoutGuardError):
    """A model file is missing or unreadable (the model packages are not installed)."""


class IndexUnusable(OptoutGuardError):
    """The face index is missing, corrupt, or was made by another model / format version."""


class ConfigError(OptoutGuardError):
    """A setting has a bad value, or the config file cannot be parsed."""


class EnrollmentError(OptoutGuardError):
    """The enrollment folder is missing or not laid out as ``enrollments/<student_id>/photos``."""
