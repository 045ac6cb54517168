"""Test setup: gevent patches first, exactly as the greenmon command does.

Name lookups go to gevent's c-ares resolver pointed at 127.0.0.1, where no
DNS server listens: names that are not in /etc/hosts fail at once, and no
test ever queries the machine's own resolver (only loopback traffic).

The shared helpers are the package ``support`` beside this file (``from support.servers
import HTTPFarm``): pytest puts this folder on sys.path for its test modules and for this
conftest (rootdir-based "prepend" import mode), and the helper processes that import it
get it on their PYTHONPATH (support.load_helpers.helper_env).

Hypothesis runs under a profile chosen by the environment variable HYPOTHESIS_PROFILE
(docs/testing.md, "Property tests"):

- ``ci``, the default: derandomized and without an example database, so that every run on
  every machine (with the pinned Hypothesis of the ``test`` extra) checks the same examples
  and a green run can be reproduced; no deadline (a loaded machine is not a failure);
- ``explore``: random examples, ten times as many, and the failures found kept in
  ``.hypothesis/examples`` of the checkout to be tried first on the next run; for a person
  hunting bugs, not for the gate.
"""

import os

os.environ["GEVENT_RESOLVER"] = "ares"
os.environ["GEVENT_RESOLVER_NAMESERVERS"] = "127.0.0.1"

from gevent import monkey  # noqa: E402

monkey.patch_all()

from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402
import trustme  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

from greenmon import resolver  # noqa: E402

# Big generated documents are the point of the fuzz tests, and the load of a busy machine
# must not fail them: neither health check says anything about greenmon.
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, deadline=None,
                          print_blob=True, suppress_health_check=_SUPPRESSED)
settings.register_profile("explore", max_examples=1000, derandomize=False, deadline=None,
                          print_blob=True, suppress_health_check=_SUPPRESSED,
                          database=DirectoryBasedExampleDatabase(
                              Path(__file__).resolve().parent.parent / ".hypothesis" / "examples"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def write_config(tmp_path):
    """Write TOML text to a file in tmp_path and return its path."""
    def write(text: str, name: str = "greenmon.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return write


@pytest.fixture(scope="module")
def ca():
    """One trustme CA per test module: the issuer of every certificate the module's servers show."""
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca, tmp_path_factory):
    """The module's CA certificate as a PEM file (for ca_file)."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def fresh_resolver():
    """A new caching resolver (an empty cache) asking the tests' DNS server on 127.0.0.1:53
    (support.dns_server); the process's resolver is put back afterwards."""
    hub = gevent.get_hub()
    before = hub.resolver
    installed = resolver.install(servers=["127.0.0.1"], fresh=True)
    try:
        yield installed
    finally:
        hub.resolver = before
