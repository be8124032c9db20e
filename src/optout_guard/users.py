"""Accounts for the review desk when it serves the network (``optout-guard users``).

One private JSON file (0600, in the workspace's private folder): name -> salted scrypt hash
(Werkzeug's ``generate_password_hash``), whether the account may see students' names, and the
schools it answers for (none: the whole district).
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from optout_guard.errors import OptoutGuardError
from optout_guard.fsutil import atomic_write, private_dir

USERS_FILE = "desk-users.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10


class UserStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / USERS_FILE

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OptoutGuardError(f"the desk's account file {self.path} is unreadable ({exc})") from None

    def _write(self, users: dict[str, Any]) -> None:
        private_dir(self.path.parent)
        atomic_write(self.path, json.dumps(users, indent=1), prefix=".users-")

    def names(self) -> list[str]:
        return sorted(self._read())

    def exists(self, name: str) -> bool:
        return name in self._read()

    def epoch(self, name: str) -> str | None:
        """The account's current epoch (None: no such account)."""
        entry = self._read().get(name)
        return None if entry is None else str(entry.get("epoch", ""))

    def can_see_names(self, name: str) -> bool:
        return bool(self._read().get(name, {}).get("names"))

    def schools_of(self, name: str) -> tuple[str, ...]:
        """The schools an account answers for, as given; () = the whole district."""
        return tuple(self._read().get(name, {}).get("schools", []))

    def add(self, name: str, password: str, names: bool = False, schools: tuple[str, ...] = ()) -> None:
        from werkzeug.security import generate_password_hash

        if not NAME.match(name):
            raise OptoutGuardError(f"{name!r} is not a usable account name (letters, digits, . _ @ -)")
        if len(password) < MIN_PASSWORD:
            raise OptoutGuardError(f"the password must be at least {MIN_PASSWORD} characters")
        users = self._read()
        # A new epoch on every add (a new password, a re-created account): sessions signed in before
        # carry the old one and stop working at once.
        users[name] = {"hash": generate_password_hash(password, method="scrypt"), "names": names, "epoch": secrets.token_hex(16),
                       "schools": list(schools)}  # fmt: skip
        self._write(users)

    def remove(self, name: str) -> bool:
        users = self._read()
        if users.pop(name, None) is None:
            return False
        self._write(users)
        return True

    def verify(self, name: str, password: str) -> bool:
        from werkzeug.security import check_password_hash

        entry = self._read().get(name)
        if entry is None:
            check_password_hash("scrypt:32768:8:1$x$" + "0" * 128, password)  # same time for unknown names
            return False
        return check_password_hash(entry["hash"], password)


def listed_schools(workspace: Path, schools: list[str]) -> tuple[str, ...]:
    """The schools an account is limited to, each checked against the saved opt-out list (a typo
    would give an account that sees nothing, or a school nobody meant). Raises ConfigError."""
    from optout_guard.errors import ConfigError
    from optout_guard.optout_list import load_list, school_key

    listed = load_list(workspace)
    known = {school_key(s.school): s.school for s in (listed.students.values() if listed else []) if s.school}
    unknown = [s for s in schools if school_key(s) not in known]
    if unknown:
        raise ConfigError(f"no student on the opt-out list is at {', '.join(unknown)}. Known schools: "
                          f"{', '.join(sorted(known.values())) or 'none (import a list with sync first)'}")  # fmt: skip
    return tuple(schools)
