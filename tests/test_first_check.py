"""No first-check stall: nothing a check needs is imported while the first checks are timed.

The first HTTPS check used to import the certificate parser (cryptography.x509,
about 50 modules) on the event loop, inside the sweep, while every other check of
that sweep was being timed. This test runs a sweep in a fresh interpreter (this
one has cryptography loaded already, by trustme) and asserts that no module at
all is imported between the start of the first sweep and its end: an order, not
a time, so a loaded machine cannot fail it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.inprocess import InProcessChecks
from greenmon.timing import Timing
from support.configs import config_text
from support.proxy_server import ForwardProxy
from support.servers import HTTPFarm, reply, tls_server_context

CHILD = """
import gevent.monkey; gevent.monkey.patch_all()
import json, sys
from greenmon.config import load_config
from greenmon.engine import Engine
engine = Engine(load_config(sys.argv[1]))   # what a check needs is made ready here
before = set(sys.modules)
results = engine.sweep()
engine.close()
print(json.dumps({"ok": [r.ok for r in results], "tls": [r.tls is not None for r in results],
                  "imported": sorted(set(sys.modules) - before)}))
"""


def test_no_module_is_imported_while_the_first_sweep_with_https_is_timed(ca, ca_pem, write_config):
    with HTTPFarm({"/": reply()}) as plain, \
            HTTPFarm({"/": reply()}, ssl_context=tls_server_context(ca, "127.0.0.1")) as tls:
        targets = [{"name": f"plain{i}", "url": plain.url("/")} for i in range(5)]
        targets.append({"name": "tls", "url": tls.url("/"), "ca_file": ca_pem})
        path = write_config(config_text(targets))
        run = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["ok"] == [True] * 6 and seen["tls"] == [False] * 5 + [True], seen
    assert seen["imported"] == [], seen["imported"]


def test_every_proxy_is_set_up_before_the_first_check_and_after_a_reload():
    """requests makes a proxy's pool manager at the first request through it (an HTTPS
    proxy's with a TLS context): greenmon makes it when the engine is made, and when a
    reload is prepared (off the loop), and the checks then use that one."""
    with HTTPFarm({"/": reply()}) as farm, ForwardProxy() as first, ForwardProxy() as second:
        config = parse_config(config_text([{"name": "a", "url": farm.url("/"), "proxy": first.url},
                                           {"name": "b", "url": farm.url("/")}]), "<test>")
        engine = Engine(config)
        try:
            managers = dict(engine.transport.adapter.proxy_manager)
            assert list(managers) == [first.url]
            assert all(result.ok for result in engine.sweep())
            assert first.requests == 1
            assert engine.transport.adapter.proxy_manager == managers   # none made by the check
        finally:
            engine.close()

        checks = InProcessChecks(config, timing=Timing(), on_result=lambda result: None,
                                 on_breaker=lambda name, state: None, on_pass=lambda seconds: None)
        try:
            reloaded = config.replace("monitor", proxy=second.url)
            transport, _, _ = checks.prepare(reloaded)
            assert set(transport.adapter.proxy_manager) == {first.url, second.url}
        finally:
            checks.close()
