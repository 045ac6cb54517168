"""The exporter-toolkit web config (``--web-config-file``): TLS for the daemon's endpoints and
basic-auth users, in the YAML format Prometheus exporters share, so one file serves them all.

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # mutual TLS towards Prometheus
      client_ca_file: prometheus-ca.crt
    basic_auth_users:
      prometheus: $2y$10$...                           # bcrypt hashes

Paths are relative to the file's folder. ``http_server_config`` is accepted
and ignored (greenmon serves HTTP/1.1); any other key, a missing pair, an
unreadable or mismatched certificate and key, or a value that is not a
bcrypt hash is a config error naming the file, line and key. Loading builds
the server's SSLContext, so a broken file never reaches the running server.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from greenmon.schema import ConfigError

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# exporter-toolkit's other two ask for a client certificate without verifying it, which
# Python's ssl module cannot do: refused with a pointer to the verifying ones.
_UNVERIFIED_TYPES = ("RequestClientCert", "RequireAnyClientCert")
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass(frozen=True)
class WebConfig:
    """What the file says, ready to serve: an SSLContext (None: plain HTTP) and the users."""

    path: str = ""
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    users: Mapping[str, bytes] = field(default_factory=dict)   # user -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


class _Where:
    """Lines of the keys of a YAML document, for messages (read only when there is an error)."""

    def __init__(self, path: str, text: str):
        self.path, self.text = path, text

    def error(self, keys: tuple, problem: str) -> ConfigError:
        line = self._line(keys)
        where = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{where}: {'.'.join(keys)}: {problem}" if keys else f"{where}: {problem}")

    def _line(self, keys: tuple) -> int | None:
        try:
            node = yaml.compose(self.text)
        except yaml.YAMLError:
            return None
        line = None
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            for key_node, value_node in node.value:
                if key_node.value == key:
                    line, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                break
        return line


def for_config(config) -> WebConfig:
    """The web config a greenmon config names (server.web_config_file), or none: plain HTTP,
    no users. ConfigError as ``load``."""
    path = config.server.web_config_file
    return load(path) if path else WebConfig()


def load(path: str) -> WebConfig:
    """Read and check a web config file; raises ConfigError naming file, line and key."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read web config file: "
                          f"{getattr(error, 'strerror', None) or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(f"{where}: YAML syntax error: {getattr(error, 'problem', error)}") from None
    where = _Where(path, text)
    if document is None:
        return WebConfig(path)
    if not isinstance(document, dict):
        raise where.error((), "must be a mapping of tls_server_config, basic_auth_users")
    for key in document:
        if key not in _TOP_KEYS:
            raise where.error((str(key),), f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    base = os.path.dirname(os.path.abspath(path))
    context = _tls(document.get("tls_server_config"), where, base)
    users = _users(document.get("basic_auth_users"), where)
    return WebConfig(path, context, users)


def _file(value: Any, keys: tuple, where: _Where, base: str) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(keys, "must be a file path")
    path = value if os.path.isabs(value) else os.path.join(base, value)
    if not os.path.isfile(path):
        raise where.error(keys, f"file not found: {path}")
    return path


def _tls(table: Any, where: _Where, base: str) -> ssl.SSLContext | None:
    if table is None:
        return None
    keys = ("tls_server_config",)
    if not isinstance(table, dict):
        raise where.error(keys, "must be a mapping")
    for key in table:
        if key not in _TLS_KEYS:
            raise where.error(keys + (str(key),), f"unknown key (known: {', '.join(sorted(_TLS_KEYS))})")
    for key in ("cert_file", "key_file"):
        if key not in table:
            raise where.error(keys, f"{key} is required (TLS needs a certificate and its key)")
    cert = _file(table["cert_file"], keys + ("cert_file",), where, base)
    key = _file(table["key_file"], keys + ("key_file",), where, base)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise where.error(keys + ("key_file",), f"certificate and key do not load as a pair "
                                                f"({getattr(error, 'reason', None) or error})") from None
    auth = table.get("client_auth_type", "NoClientCert")
    if auth in _UNVERIFIED_TYPES:
        raise where.error(keys + ("client_auth_type",),
                          f"{auth} (a client certificate that is not verified) is not supported: "
                          "use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    if auth not in CLIENT_AUTH_TYPES:
        raise where.error(keys + ("client_auth_type",),
                          f"must be one of {', '.join(CLIENT_AUTH_TYPES)}, got {auth!r}")
    context.verify_mode = CLIENT_AUTH_TYPES[auth]
    if auth != "NoClientCert":
        if "client_ca_file" not in table:
            raise where.error(keys, f"client_ca_file is required with client_auth_type {auth}")
        ca = _file(table["client_ca_file"], keys + ("client_ca_file",), where, base)
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as error:
            raise where.error(keys + ("client_ca_file",), f"not a PEM CA bundle ({error})") from None
    for key, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in table:
            if table[key] not in _TLS_VERSIONS:
                raise where.error(keys + (key,), f"must be one of {', '.join(_TLS_VERSIONS)}")
            setattr(context, attribute, _TLS_VERSIONS[table[key]])
    return context


def _users(table: Any, where: _Where) -> dict[str, bytes]:
    if table is None:
        return {}
    keys = ("basic_auth_users",)
    if not isinstance(table, dict):
        raise where.error(keys, "must be a mapping of user names to bcrypt hashes")
    users = {}
    for user, hashed in table.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise where.error(keys + (str(user),), "a user name must be a non-empty string without ':'")
        if not isinstance(hashed, str) or not hashed.startswith(_BCRYPT_PREFIXES) or len(hashed) != 60:
            # Never echo the value: it may be a password written in by mistake.
            raise where.error(keys + (user,), "must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
        users[user] = hashed.encode()
    return users
