"""Signing in to the review desk on the network: where a client really is (behind a configured
proxy), the back-off after wrong passwords, which host names the desk answers to, where to go after
signing in, the session key, and the rule that serving the network needs accounts."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from optout_guard.errors import OptoutGuardError
from optout_guard.fsutil import atomic_write


def client_address(remote: str, forwarded: str, trusted: tuple[str, ...]) -> str:
    """The client's address: the connection's, or — when that is a configured proxy — the last
    address in X-Forwarded-For that is not one of the proxies (a header from anyone else is ignored)."""
    if remote not in trusted or not forwarded:
        return remote
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    while hops and hops[-1] in trusted:
        hops.pop()
    return hops[-1] if hops else remote


class SignInThrottle:
    """Back-off after wrong passwords, per account *at an address* and per address: 5 free tries,
    then a wait that doubles with every further failure (1 s, 2 s, 4 s … up to 15 minutes). Never per
    account alone: anyone could then keep the privacy officer locked out from anywhere."""

    FREE = 5
    LONGEST = 900.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.state: dict[str, tuple[int, float]] = {}  # key -> (failures, not before)

    @staticmethod
    def _keys(name: str, client: str) -> tuple[str, str]:
        return (f"ua:{name}\0{client}", f"a:{client}")

    def wait(self, name: str, client: str) -> float:
        now = self.clock()
        return max(0.0, *(self.state.get(k, (0, 0.0))[1] - now for k in self._keys(name, client)))

    def failure(self, name: str, client: str) -> None:
        for key in self._keys(name, client):
            count = self.state.get(key, (0, 0.0))[0] + 1
            delay = 0.0 if count < self.FREE else min(self.LONGEST, 2.0 ** (count - self.FREE))
            self.state[key] = (count, self.clock() + delay)

    def success(self, name: str, client: str) -> None:
        for key in self._keys(name, client):
            self.state.pop(key, None)


def local_target(target: str) -> str:
    """A page of this desk to return to after sign-in, or "": never another site ("//evil", "https://…")."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(c in target for c in "\r\n\\"):
        return ""
    return target


def lan_host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """On the LAN the desk answers to an address typed as such, to this computer's own name, and to
    the names given with --allowed-host (e.g. the district's HTTPS proxy): never to any other name."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    names = {"localhost", socket.gethostname().lower(), *(h.lower() for h in allowed)}
    return host.lower() in names


def secret_key(state: Path) -> bytes:
    """A random key kept (0600) beside the index: sessions survive a restart of the desk."""
    path = state / "desk-secret"
    if not path.exists():
        atomic_write(path, secrets.token_bytes(32))  # private from the start, never half-written
    return path.read_bytes()


def require_accounts(desk_state: Path) -> None:
    from optout_guard.users import UserStore

    if not UserStore(desk_state).names():
        raise OptoutGuardError("serving on the network needs accounts: add one with: optout-guard users add NAME")
