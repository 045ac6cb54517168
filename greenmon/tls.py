"""TLS: one SSLContext per way of verifying, and what a handshake says about the server.

Left to itself, urllib3 builds a context and loads the CA file for every new
connection (tens of milliseconds with certifi's bundle). ``ca_file`` adds to
the default trust (certifi), as the config promises, instead of replacing it.

Every context makes ``TracedSSLSocket``s (``SSLContext.sslsocket_class``, the
documented seam): the handshake is a phase of the attempt's trace, and the
certificate the server presented is read from its DER form, which the socket
gives with ``verify_tls = false`` too (``getpeercert()`` alone says nothing
then). The DER is parsed with ``cryptography``, once per certificate.

A context is built again when a file it was built from changed (a rotated CA
bundle or client certificate) and the trust is loaded again: at a reload.
"""

from __future__ import annotations

import functools
import importlib
import ssl

import certifi
from urllib3.util.ssl_ import create_urllib3_context

from greenmon import trace
from greenmon.files import file_stamp
from greenmon.result import TLSFacts


def facts_of(sock) -> TLSFacts | None:
    """The TLS facts of a connected TLS socket (None for anything else)."""
    version = getattr(sock, "version", None)
    if version is None:
        return None
    der = sock.getpeercert(binary_form=True)
    not_after, subject, issuer = _certificate(der) if der else (None, None, None)
    return TLSFacts(version(), not_after, subject, issuer)


_x509 = None   # cryptography.x509, once load_parser ran


def load_parser():
    """Import the certificate parser (cryptography.x509: about 50 modules, 80-90 ms cold).
    Called before the first HTTPS check starts its clock (Transport.load_trust), so that no
    check waits for it on the loop; a process without HTTPS targets never pays it."""
    global _x509
    if _x509 is None:
        _x509 = importlib.import_module("cryptography.x509")
    return _x509


@functools.lru_cache(maxsize=4096)
def _certificate(der: bytes) -> tuple[float | None, str | None, str | None]:
    """(notAfter, subject, issuer) of a DER certificate; one parse per certificate seen."""
    x509 = _x509 or load_parser()   # loaded already, unless a redirect led to HTTPS first
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None, None, None
    return (cert.not_valid_after_utc.timestamp(), cert.subject.rfc4514_string(),
            cert.issuer.rfc4514_string())


class TracedSSLSocket(ssl.SSLSocket):
    """gevent's SSLSocket whose handshake opens the ``tls`` phase of the attempt's trace."""

    def do_handshake(self, *args, **kwargs):
        record = trace.current()
        if record is not None:
            record.enter(trace.TLS)
        return super().do_handshake(*args, **kwargs)


ClientCert = tuple[str, str]   # (certificate file, key file), PEM


class TrustStore:
    """The contexts built so far, by verify setting and client certificate; ``loaded`` says
    which exist."""

    def __init__(self) -> None:
        self._contexts: dict[tuple, ssl.SSLContext] = {}
        self._stamps: dict[tuple, tuple] = {}   # the files' (mtime, size) each was built from

    def context(self, verify: bool | str, cert: ClientCert | None = None) -> ssl.SSLContext:
        """``verify``: False (no checks), True (default CAs) or a PEM file of extra CAs;
        ``cert``: the client certificate presented to servers that ask for one (mTLS)."""
        context = self._contexts.get((verify, cert))
        return self._build(verify, cert, _stamps(verify, cert)) if context is None else context

    def load(self, verify: bool | str, cert: ClientCert | None = None) -> bool:
        """Build the context now, or again if one of its files changed since it was built
        (True: it replaced one, whose pools must go)."""
        key = (verify, cert)
        stamps = _stamps(verify, cert)
        if key in self._contexts and self._stamps[key] == stamps:
            return False
        replaced = key in self._contexts
        self._build(verify, cert, stamps)
        return replaced

    def _build(self, verify: bool | str, cert: ClientCert | None, stamps: tuple) -> ssl.SSLContext:
        """``stamps``: the files' stamps, taken before they are read (a change while they are
        read shows at the next load)."""
        if verify is False:
            context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
            context.check_hostname = False
        else:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(cafile=certifi.where())
            if isinstance(verify, str):
                context.load_verify_locations(cafile=verify)
        if cert is not None:
            context.load_cert_chain(*cert)
        context.sslsocket_class = TracedSSLSocket
        self._contexts[(verify, cert)] = context   # connections made from now on use it
        self._stamps[(verify, cert)] = stamps
        return context

    def loaded(self) -> frozenset:
        """The verify settings (with a client certificate: (verify, cert)) built so far."""
        return frozenset(verify if cert is None else (verify, cert) for verify, cert in self._contexts)


def _stamps(verify: bool | str, cert: ClientCert | None) -> tuple:
    files = ((verify,) if isinstance(verify, str) else ()) + (cert or ())
    return tuple(file_stamp(path) for path in files)
