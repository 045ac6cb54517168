"""The dependency floors in setup.cfg are real: the transport works with exactly those versions.

The transport relies on requests' ``HTTPAdapter.get_connection_with_tls_context``
and ``build_connection_pool_key_attributes`` (older requests skip both, silently:
``ca_file`` and the pools would change meaning), urllib3's connection classes,
pycares' getaddrinfo TTLs, cryptography's UTC dates, PyYAML's libyaml parser (its
events, composed in Python by discovery) and idna's strict IDNA 2008 encoding (the
config's check of a host, which urllib3 encodes the same way). ``.ci/run`` installs
every declared floor in a fresh virtual environment and runs this file there
with GREENMON_FLOORS=1, which also checks that the installed versions are the
floors. In the ordinary run it checks the same behaviour with what is installed.
"""

from __future__ import annotations

import configparser
import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import trustme

from greenmon.config import parse_config
from greenmon.urls import unsendable
from support.configs import config_text
from support.helpers import check_one, requests_refuses
from support.servers import HTTPFarm, reply, tls_server_context

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def declared_floors() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    floors = {}
    for line in parser["options"]["install_requires"].strip().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)>=([0-9][0-9a-z.]*)\s*", line.split(";")[0])
        assert match, f"install_requires line without a >= floor: {line!r}"
        floors[match.group(1)] = match.group(2)
    return floors


def test_every_dependency_declares_a_floor():
    assert set(declared_floors()) == {"gevent", "requests", "urllib3", "backoff", "prometheus-client",
                                      "pycares", "cryptography", "bcrypt", "PyYAML", "idna"}


@pytest.mark.skipif(os.environ.get("GREENMON_FLOORS") != "1", reason="only in the floors run of .ci/run")
@pytest.mark.parametrize("name, floor", sorted(declared_floors().items()))
def test_the_floor_is_what_is_installed(name, floor):
    assert version(name) == floor


def test_https_with_a_ca_file_checks_and_records_its_phases(tmp_path):
    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    with HTTPFarm({"/t": reply(body="secure")}, ssl_context=tls_server_context(ca, "127.0.0.1")) as farm:
        trusted = check_one({"url": farm.url("/t"), "ca_file": str(ca_pem)})
        untrusted = check_one({"url": farm.url("/t")})
    assert trusted.ok, trusted
    assert trusted.timings["tls"] > 0 and trusted.tls.cert_not_after is not None
    # Without the ca_file, the same server is rejected: ca_file really is what made it trusted.
    assert (untrusted.error_class, untrusted.detail) == ("connection", "tls")


def test_the_daemon_schedules_checks_and_serves_gzipped_metrics():
    """The gevent seams the daemon uses (the loop's clock, idle, the thread pool) at the floor."""
    from support.daemon_helpers import running_daemon, value
    from support.helpers import wait_until

    with HTTPFarm({"/ok": reply()}) as farm:
        config = parse_config(config_text([{"name": "ok", "url": farm.url("/ok")}], timeout=0.2, interval=0.2),
                              "<test>")
        with running_daemon(config) as running:
            wait_until(lambda: farm.hits("/ok") >= 3, 5, message="three checks")
            response = running.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert value(response.text, "greenmon_up", target="ok") == 1
    assert value(response.text, "greenmon_event_loop_lag_seconds_count") > 0


def test_yaml_documents_are_read_through_libyaml_events():
    """Discovery reads YAML as libyaml's events composed in Python (PyYAML's CParser under its
    Composer): the seam must hold at the PyYAML floor, and libyaml must be there."""
    import yaml

    from greenmon.discovery import documents

    assert yaml.__with_libyaml__
    text = b"openapi: 3.0.3\npaths:\n  /a/{id}:\n    get:\n      parameters:\n        - {name: id, in: path, example: 7}\n"
    document, _ = documents.parse(text, "api.yaml")
    assert document["paths"]["/a/{id}"]["get"]["parameters"][0] == {"name": "id", "in": "path", "example": 7}
    assert documents._Loader.__mro__[1] is yaml.composer.Composer


def test_a_web_config_with_a_bcrypt_user_loads_and_checks(tmp_path):
    """PyYAML reads the web config, bcrypt checks its users (the daemon's basic auth)."""
    import base64

    import bcrypt

    from greenmon.webauth import BasicAuth
    from greenmon.webconfig import load

    path = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    path.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n", encoding="utf-8")
    auth = BasicAuth(load(str(path)).users)
    header = "Basic " + base64.b64encode(b"prometheus:s3cret").decode()
    assert auth.allows(header)
    assert not auth.allows("Basic " + base64.b64encode(b"prometheus:wrong").decode())


@pytest.mark.parametrize("host", ["b\u00fccher.example", "\u2603.example", "\ufb01.example", "\u00e9..",
                                  "a\u200db.example", "%41.example", ".example", "*.example"])
def test_the_configs_host_check_agrees_with_what_requests_prepares(host):
    """The config refuses a host without loading requests (urls.unsendable); with these
    versions of requests, urllib3 and idna it refuses exactly what requests does."""
    url = f"http://{host}/health"
    assert (unsendable(url) is not None) == requests_refuses(url), url
