"""Loading discovery sources: reading their files or fetching their documents, then merging.

The network side of discovery. ``config`` parses a config file without the
network: its ``[[openapi]]`` and ``[[file_sd]]`` entries become Sources, not
yet loaded. ``discover`` loads each one once (a document over HTTP through
greenmon's own transport: its total deadline, TLS verification and CA file)
and merges their targets with ``[[targets]]``: the start-up and ``--once``
path, where a source that cannot be loaded is a config error naming it. The
daemon re-reads them live (``live``), with the same ``load``.
"""

from __future__ import annotations

import os
from typing import Any

from greenmon.config import Config, load_config
from greenmon.discovery.documents import MAX_DOCUMENT_BYTES
from greenmon.discovery.sources import Source, merge
from greenmon.discovery.values import Discovered, SourceError
from greenmon.errors import TransportError
from greenmon.schema import ConfigError
from greenmon.transport import Request, Transport
from greenmon.urls import redact_url

ACCEPT = "application/json, application/yaml;q=0.9, text/yaml;q=0.9, */*;q=0.5"


def discovery_transport(user_agent: str) -> Transport:
    """A small transport of its own for the documents: a handful of hosts, a few connections."""
    return Transport(pool_size=4, hosts=4, user_agent=user_agent)


def fetch(url: str, transport: Transport, *, timeout: float, verify: bool | str) -> bytes:
    """GET ``url`` through greenmon's transport: its total deadline, TLS verification and CA
    file, redirects as for checks, no compression (a body to inflate on the loop)."""
    shown = redact_url(url)
    headers = transport.base_headers(url, {"Accept": ACCEPT, "Accept-Encoding": "identity"})
    request = Request(method="GET", url=url, headers=headers, body="", timeout=timeout,
                      verify=verify, follow_redirects=True, max_body_bytes=MAX_DOCUMENT_BYTES)
    try:
        response = transport.send(request)
    except TransportError as error:
        failure = error.failure
        raise SourceError(f"{shown}: {failure.error_class}/{failure.detail}: {failure.message}") from None
    if not 200 <= response.status_code < 300:
        raise SourceError(f"{shown}: HTTP {response.status_code} {response.reason}".rstrip())
    if response.body_too_large:
        raise SourceError(f"{shown}: larger than {MAX_DOCUMENT_BYTES} bytes")
    return response.body


def fetch_source(source: Source, transport: Transport) -> bytes:
    """The document of a source that ``fetches``: an OpenAPI spec given as a URL."""
    return fetch(source.spec, transport, timeout=source.timeout, verify=source.verify)


def load(source: Source, transport: Transport | None = None) -> Discovered:
    """Read and discover a source now (start-up and --once; blocking). SourceError if it cannot."""
    stamp = source.stamp()
    data = fetch_source(source, transport) if source.fetches else source.read()
    return source.discover(data, stamp)


def cannot_load(config: Config, source: Source, error: SourceError) -> ConfigError:
    """The config error of a source that cannot be loaded, at its line of the config file."""
    return config.document.error(source.path + (source.field_name,), f"cannot load {error}")


def discover(config: Config) -> Config:
    """``config`` with every source loaded once and its targets merged; the first source that
    cannot be loaded is a config error naming it."""
    if not config.sources:
        return config
    transport = None
    try:
        discovered: dict[str, Any] = {}
        for source in config.sources:
            if source.fetches:
                if transport is None:
                    transport = discovery_transport(config.monitor.user_agent)
                transport.load_trust([(source.verify, None)])
            try:
                discovered[source.key] = load(source, transport)
            except SourceError as error:
                raise cannot_load(config, source, error) from None
        return merge(config, discovered)
    finally:
        if transport is not None:
            transport.close()


def loaded_config(path: str | os.PathLike) -> Config:
    """A config file read and validated, its discovery sources loaded: ``greenmon.load_config``."""
    return discover(load_config(path))
