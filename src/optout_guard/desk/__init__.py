"""The review desk: a small local web application (``optout-guard serve``).

- *Check photos*: drop photos on the page; verdict, marked-up copy, per face the closest students.
- *Review queue*: one card per face that needs a person (from the page, the check folder and the
  audit): the face enlarged beside up to 3 candidates' reference photos. Keyboard-first.
- Decisions go to the review book (``review.py``) and the activity log; "this student" can add
  the face as a new dated reference of that student (``enroll.add_reference_face``).

``service`` is what the desk does (typed results, no HTTP); ``web`` is the Flask Blueprint, its
Jinja2 templates (autoescaped) and static files.

Safety: bound to 127.0.0.1 unless ``lan=True``, which needs accounts (``users.py``: hashed
passwords) and a login. Every POST carries a CSRF token (Flask-WTF), the session cookie is
HttpOnly + SameSite=Strict, and the Host header must be the address served (no DNS rebinding).
No URL takes a file path: photos, faces and references are addressed by hash or id and looked up
in the book or the index, and a file is served only if it lies inside a folder the desk owns or
was told about. Pages load nothing from outside (no CDN, no fonts).
"""

from typing import Any

from optout_guard.desk.service import CROP_PX, MARKED, MAX_UPLOAD_BYTES, UPLOADS, Desk, DeskOptions
from optout_guard.desk.signin import SignInThrottle, require_accounts
from optout_guard.errors import NeedsConfirmation


def __getattr__(name: str) -> Any:
    # The web layer imports Flask at its top: only a desk that is served (or tested) loads it, not
    # every command that reads the review book through this package.
    if name in ("create_app", "serve"):
        from optout_guard.desk import web

        return getattr(web, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CROP_PX",
    "MARKED",
    "MAX_UPLOAD_BYTES",
    "UPLOADS",
    "Desk",
    "DeskOptions",
    "NeedsConfirmation",
    "SignInThrottle",
    "create_app",
    "require_accounts",
    "serve",
]
