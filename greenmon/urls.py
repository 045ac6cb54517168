"""The parts of a URL greenmon needs: its origin, and the URL as it may be shown."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
