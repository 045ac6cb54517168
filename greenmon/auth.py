"""Auth sources: the header a check sends, read inline, from the environment or from a file.

A source is asked for its header on every check, so a token file rotated on
disk is picked up at the next check; a file is re-read only when it changed.
Secrets live only here and in the request headers: ``repr`` hides them.
An oauth2 source holds the settings of its token requests (parsed by
``oauth2``); the tokens, fetched from its token endpoint, are the network's
(``tokens``).
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from greenmon.files import file_stamp
from greenmon.schema import Document, Path, file_path, header_name, header_value, string

log = logging.getLogger(__name__)

AUTH_TYPES = ("bearer", "basic", "header", "oauth2")


class Secret:
    """One secret value and where it comes from: inline, an env variable or a file."""

    def __init__(self, origin: str, where: str | None, value: str):
        self.origin = origin  # "inline" | "env" | "file"
        self.where = where    # variable name or file path (not secret)
        self._value = value
        self._file_stamp: tuple[int, int] | None = None

    @property
    def refreshable(self) -> bool:
        return self.origin != "inline"

    def get(self) -> str:
        """The current value; a changed file is re-read."""
        if self.origin == "file":
            self._reload_file_if_changed()
        return self._value

    def refresh(self) -> None:
        """Re-read the source now (after a 401/403); keeps the old value if it cannot."""
        if self.origin == "env":
            self._value = os.environ.get(self.where, self._value)
        elif self.origin == "file":
            self._file_stamp = None
            self._reload_file_if_changed()

    def _reload_file_if_changed(self) -> None:
        stamp = file_stamp(self.where)
        if stamp is not None and stamp == self._file_stamp:
            return
        try:
            self._value = _read_secret_file(self.where)
            self._file_stamp = stamp
        except OSError as error:
            log.warning("cannot re-read secret file %s (%s); keeping the last value",
                        self.where, error.strerror)

    def __repr__(self) -> str:
        return f"Secret({self.origin}, {self.where or '***'})"


def _read_secret_file(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


class AuthSource:
    """A named [auth.NAME] entry: builds the header of every check that references it."""

    def __init__(self, name: str, kind: str, header_name: str, secrets: dict[str, Secret],
                 username: str = ""):
        self.name = name
        self.kind = kind
        self.header_name = header_name
        self._secrets = secrets
        self._username = username

    @property
    def refreshable(self) -> bool:
        return any(secret.refreshable for secret in self._secrets.values())

    def header(self) -> tuple[str, str]:
        """The header to send, with the secret's current value."""
        if self.kind == "bearer":
            return self.header_name, f"Bearer {self._secrets['token'].get()}"
        if self.kind == "basic":
            pair = f"{self._username}:{self._secrets['password'].get()}".encode()
            return self.header_name, "Basic " + base64.b64encode(pair).decode("ascii")
        return self.header_name, self._secrets["value"].get()

    def refresh(self, sent: tuple[str, str] | None = None) -> None:
        """Re-read the secrets after a 401/403 (``sent``: the header that was refused)."""
        for secret in self._secrets.values():
            secret.refresh()

    def __repr__(self) -> str:
        return f"AuthSource({self.name!r}, {self.kind})"


@dataclass(frozen=True, eq=False)
class OAuth2Source:
    """An [auth.NAME] entry of type oauth2: what to ask its token endpoint (oauth2.py parses
    it; tokens.py fetches the tokens). Its identity is the source: a reload makes new ones,
    and with them new tokens."""

    name: str
    token_url: str
    client_id: str
    secret: Secret = field(repr=False)
    scopes: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    client_auth: str = "basic"
    timeout: float = 10.0
    verify: bool | str = True

    kind = "oauth2"
    header_name = "Authorization"
    refreshable = True   # a refused token is dropped and another fetched


_CHECKS = {
    "bearer": {"type": string, "token": string, "token_env": string, "token_file": file_path},
    "basic": {"type": string, "username": string, "password": string, "password_env": string,
              "password_file": file_path},
    "header": {"type": string, "name": header_name, "value": string, "value_env": string,
               "value_file": file_path},
}
_SECRET_KEY = {"bearer": "token", "basic": "password", "header": "value"}


def auth_type(doc: Document, name: str, raw: Any) -> str:
    """The type of one [auth.NAME] table (one of AUTH_TYPES), which says who parses it: this
    module, or oauth2 for "oauth2"."""
    path: Path = ("auth", name)
    if not isinstance(raw, dict):
        raise doc.error(path, "must be a table")
    kind = raw.get("type")
    if kind not in AUTH_TYPES:
        raise doc.error(path + ("type",), f"must be one of {', '.join(AUTH_TYPES)}, got {kind!r}")
    return kind


def parse_auth(doc: Document, name: str, raw: dict, kind: str) -> AuthSource:
    """Validate one [auth.NAME] table of a static ``kind`` (bearer, basic, header: auth_type)
    and read its secret once (load time errors are config errors)."""
    path: Path = ("auth", name)
    values = doc.read_table(raw, path, _CHECKS[kind])
    key = _SECRET_KEY[kind]
    secret = parse_secret(doc, path, key, values)
    if kind == "basic":
        if "username" not in values:
            raise doc.error(path + ("username",), "is required for basic auth")
        return AuthSource(name, kind, "Authorization", {key: secret}, username=values["username"])
    if kind == "header":
        if "name" not in values:
            raise doc.error(path + ("name",), "is required for header auth")
        return AuthSource(name, kind, values["name"], {key: secret})
    return AuthSource(name, kind, "Authorization", {key: secret})


def parse_secret(doc: Document, path: Path, key: str, values: dict[str, str]) -> Secret:
    given = [k for k in (key, f"{key}_env", f"{key}_file") if k in values]
    if len(given) != 1:
        raise doc.error(path + (given[-1] if given else key,),
                        f"give exactly one of {key}, {key}_env, {key}_file")
    option = given[0]
    where = values[option]
    if option == key:
        secret = Secret("inline", None, where)
    elif option.endswith("_env"):
        if where not in os.environ:
            raise doc.error(path + (option,), f"environment variable {where} is not set")
        secret = Secret("env", where, os.environ[where])
    else:
        try:
            secret = Secret("file", where, _read_secret_file(where))
        except OSError as error:
            raise doc.error(path + (option,), f"cannot read {where}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise doc.error(path + (option,), f"{where} is not UTF-8 text") from None
    try:
        header_value(secret.get())
    except ValueError as problem:
        raise doc.error(path + (option,), f"the secret: {problem}") from None
    return secret
