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
import os
import ssl
from dataclasses import dataclass

import certifi
from urllib3.util.ssl_ import create_urllib3_context

from greenmon import trace
from greenmon.schema import optional_file


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """The TLS session of a connection: its version and the server's (leaf) certificate."""

    version: str | None
    cert_not_after: float | None      # Unix time
    cert_subject: str | None
    cert_issuer: str | None

    def to_dict(self) -> dict:
        from greenmon.result import iso_timestamp
        return {"version": self.version,
                "cert_not_after": None if self.cert_not_after is None else iso_timestamp(self.cert_not_after),
                "cert_subject": self.cert_subject, "cert_issuer": self.cert_issuer}


def facts_of(sock) -> TLSFacts | None:
    """The TLS facts of a connected TLS socket (None for anything else)."""
    version = getattr(sock, "version", None)
    if version is None:
        return None
    der = sock.getpeercert(binary_form=True)
    not_after, subject, issuer = _certificate(der) if der else (None, None, None)
    return TLSFacts(version(), not_after, subject, issuer)


@functools.lru_cache(maxsize=4096)
def _certificate(der: bytes) -> tuple[float | None, str | None, str | None]:
    """(notAfter, subject, issuer) of a DER certificate; one parse per certificate seen."""
    from cryptography import x509
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


def verification(verify_tls: bool, ca_file: str) -> bool | str:
    """The ``verify`` of a TrustStore context: False (no checks), True (default CAs) or a CA
    file added to them."""
    return ca_file if verify_tls and ca_file else verify_tls


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


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _stamps(verify: bool | str, cert: ClientCert | None) -> tuple:
    files = ((verify,) if isinstance(verify, str) else ()) + (cert or ())
    return tuple(_stamp(path) for path in files)


def ca_bundle(value) -> str:
    """Config check: a file of PEM CA certificates ("" for none), read once per version of
    the file (10,000 targets naming one bundle read it once)."""
    path = optional_file(value)
    if path:
        problem = _bundle_problem(path, _stamp(path))
        if problem:
            raise ValueError(problem)
    return path


@functools.lru_cache(maxsize=64)
def _bundle_problem(path: str, stamp: tuple[int, int] | None) -> str | None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as error:
        return f"{path} is not a PEM bundle of CA certificates ({error.reason or error})"
    except OSError as error:
        return f"cannot read {path} ({error.strerror or error})"
    return None


def check_client_cert(cert_file: str, key_file: str) -> str | None:
    """What is wrong with a client certificate and key (None: they load as a pair)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        return f"does not load with client_cert ({error.reason or error})"
    except OSError as error:
        return f"cannot read it ({error.strerror or error})"
    return None
