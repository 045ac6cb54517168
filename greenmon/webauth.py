"""Basic auth for the daemon's endpoints: bcrypt hashes, checked off the event loop.

A bcrypt check takes 50-300 ms of CPU by design. It runs in gevent's thread
pool (bcrypt releases the GIL), at most CHECKS_AT_ONCE at a time, so a flood
of wrong passwords costs at most that many threads and never holds the loop
that times checks. A credential that passed is remembered as an HMAC (a
random per-process key) of the password, per user, and compared with
``hmac.compare_digest``: Prometheus scraping every 15 s pays for bcrypt once.
An unknown user costs a bcrypt check too, so timing does not tell users
apart. Nothing here logs a user or a password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Mapping

import bcrypt
import gevent.lock

from greenmon.cooperative import off_loop

CHECKS_AT_ONCE = 2
# A valid hash of a random password: unknown users are checked against it.
_NOBODY = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(10))
compare = hmac.compare_digest   # the comparison of remembered credentials (constant time)


class BasicAuth:
    def __init__(self, users: Mapping[str, bytes]):
        self.users = dict(users)
        self._key = os.urandom(32)
        self._passed: dict[str, bytes] = {}   # user -> HMAC of the password that passed
        self._checks = gevent.lock.Semaphore(CHECKS_AT_ONCE)

    @property
    def required(self) -> bool:
        return bool(self.users)

    def allows(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries a user's right password."""
        credentials = _basic(authorization)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(self._key, password, hashlib.sha256).digest()
        remembered = self._passed.get(user)
        if remembered is not None and compare(remembered, digest):
            return True
        hashed = self.users.get(user)
        with self._checks:
            ok = off_loop(_checks_out, password, hashed or _NOBODY) and hashed is not None
        if ok:
            self._passed[user] = digest
        return ok


def _checks_out(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:   # longer than bcrypt's 72 bytes, or a malformed hash: no
        return False


def _basic(authorization: str | None) -> tuple[str, bytes] | None:
    if not authorization or not authorization[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True)
    except ValueError:
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
