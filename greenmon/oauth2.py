"""An ``[auth.NAME]`` of type oauth2: its client-credentials settings (RFC 6749 section 4.4), checked at load.

This is the config side: what to ask the token endpoint, and how (its own
``timeout``, ``verify_tls`` and ``ca_file``, else [monitor]'s), made into an
``auth.OAuth2Source``. Fetching and keeping the tokens is the network's
(``tokens.TokenClient``), one client per source in each process.
"""

from __future__ import annotations

from typing import Any

from greenmon.auth import OAuth2Source, parse_secret
from greenmon.certfiles import ca_file
from greenmon.schema import (Document, Path, boolean, file_path, non_empty_string, number, string,
                             string_table, type_name)
from greenmon.targets import check_url

CLIENT_AUTH = ("basic", "post")   # client_secret_basic (RFC 6749 2.3.1), client_secret_post


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s and " " not in s for s in value):
        raise ValueError(f"must be an array of scope names (no spaces), got {type_name(value)}")
    return tuple(value)


def _client_auth(value: Any) -> str:
    if value not in CLIENT_AUTH:
        raise ValueError(f"must be one of {', '.join(CLIENT_AUTH)}, got {value!r}")
    return value


_CHECKS = {
    "type": string, "token_url": non_empty_string, "client_id": non_empty_string,
    "client_secret": string, "client_secret_env": string, "client_secret_file": file_path,
    "scopes": _scopes, "params": string_table(), "client_auth": _client_auth,
    "timeout": number(above=0), "verify_tls": boolean, "ca_file": ca_file,
}


def parse_oauth2(doc: Document, name: str, raw: dict, monitor) -> OAuth2Source:
    """``monitor``: the [monitor] settings, defaults of the token requests."""
    path: Path = ("auth", name)
    values = doc.read_table(raw, path, _CHECKS)
    for key in ("token_url", "client_id"):
        if key not in values:
            raise doc.error(path, f"{key} is required for oauth2 auth")
    try:
        check_url(values["token_url"])
    except ValueError as problem:
        raise doc.error(path + ("token_url",), str(problem)) from None
    secret = parse_secret(doc, path, "client_secret", values)
    return OAuth2Source(
        name, token_url=values["token_url"], client_id=values["client_id"], secret=secret,
        scopes=values.get("scopes", ()), params=dict(values.get("params") or {}),
        client_auth=values.get("client_auth", "basic"),
        timeout=values.get("timeout", monitor.timeout),
        verify=monitor.verification(values.get("verify_tls"), values.get("ca_file")))
