"""The certificate files a config names, checked at load time: CA bundles and client
certificate pairs load with the standard ssl module (no handshake, nothing sent). Which
trust a check asks for is ``MonitorSettings.verification``; the contexts the checks use
are tls.py's.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

from greenmon.files import file_stamp
from greenmon.schema import optional_file


def ca_file(value: Any) -> str:
    """Config check: a file of PEM CA certificates ("" for none) that loads, read once per
    version of the file (10,000 targets naming one bundle read it once)."""
    path = optional_file(value)
    if path:
        problem = _bundle_problem(path, file_stamp(path))
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
