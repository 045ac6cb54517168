"""Trust bundles: the default CAs plus an extra PEM file from ``ca_file``.

requests' ``verify=PATH`` replaces the default trust; the config promises an
*extra* bundle, so the two are joined once per distinct ca_file into a file
that lives as long as the process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import certifi


class TrustStore:
    def __init__(self) -> None:
        self._bundles: dict[str, str] = {}
        self._directory: str | None = None

    def bundle_with(self, ca_file: str) -> str:
        """Path of a bundle trusting the default CAs and those in ``ca_file``."""
        bundle = self._bundles.get(ca_file)
        if bundle is None:
            if self._directory is None:
                self._directory = tempfile.mkdtemp(prefix="greenmon-ca-")
                atexit.register(shutil.rmtree, self._directory, True)
            bundle = os.path.join(self._directory, f"bundle-{len(self._bundles)}.pem")
            with open(certifi.where(), "rb") as default, open(ca_file, "rb") as extra, \
                    open(bundle, "wb") as out:
                out.write(default.read() + b"\n" + extra.read())
            self._bundles[ca_file] = bundle
        return bundle
