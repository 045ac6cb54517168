"""The parts of a URL greenmon needs: whether it can be sent, its origin, and the URL as it may be shown."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import idna


def origin(url: str) -> str:
    """scheme://host:port, lowercased as hosts and schemes compare (no user info): what a
    connection pool is kept for, and what the schedule counts contacts of."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


def redact_url(url: str) -> str:
    """The URL without the password of its user info (safe to print and export)."""
    if "@" not in url:
        return url  # no user info, so no password (the common case, on every result)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def unsendable(url: str) -> str | None:
    """What requests would refuse at send time: a host that is not a name it can send. The
    rules of the libraries that prepare a URL, with the idna package they use: urllib3 takes
    a name of RFC 3986 characters (a "%" only as %XX) and encodes each non-ASCII label (IDNA
    2008, strict, STD3 rules); requests refuses a host that starts with "*" or ".".
    tests/test_targets.py holds this to what requests does with the same URL."""
    written = urlsplit(url).netloc.rpartition("@")[2]
    if written.startswith("["):
        return None   # an IPv6 literal: urlsplit has checked it
    host = written.rpartition(":")[0] if ":" in written else written
    if host.startswith(("*", ".")) or not _REG_NAME.fullmatch(host):
        return _REFUSED
    for label in host.lower().split("."):
        if not label.isascii():
            try:
                idna.encode(label, strict=True, std3_rules=True)
            except idna.IDNAError:
                return _REFUSED
    return None


_REG_NAME = re.compile(r"(?:[^\[\]%:/?#]|%[a-fA-F0-9]{2})*")   # urllib3's, from RFC 3986
_REFUSED = "is not a usable URL (its host is not a name that can be sent)"
