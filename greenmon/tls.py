"""TLS trust: one SSLContext per way of verifying, built once and shared by every connection.

Left to itself, urllib3 builds a context and loads the CA file for every new
connection (tens of milliseconds with certifi's bundle). ``ca_file`` adds to
the default trust (certifi), as the config promises, instead of replacing it.
"""

from __future__ import annotations

import ssl

import certifi
from urllib3.util.ssl_ import create_urllib3_context


class TrustStore:
    """The contexts built so far, by verify setting; ``loaded`` says which exist."""

    def __init__(self) -> None:
        self._contexts: dict[bool | str, ssl.SSLContext] = {}

    def context(self, verify: bool | str) -> ssl.SSLContext:
        """``verify``: False (no checks), True (default CAs) or a PEM file of extra CAs."""
        context = self._contexts.get(verify)
        if context is None:
            if verify is False:
                context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
                context.check_hostname = False
            else:
                context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
                context.load_verify_locations(cafile=certifi.where())
                if isinstance(verify, str):
                    context.load_verify_locations(cafile=verify)
            self._contexts[verify] = context
        return context

    def loaded(self) -> frozenset:
        return frozenset(self._contexts)
