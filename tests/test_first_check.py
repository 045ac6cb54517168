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


def first_sweep(script: str, plain_targets: int, ca, ca_pem, write_config) -> dict:
    """What ``script`` printed, run in a fresh interpreter on a config of ``plain_targets``
    plain targets, then one HTTPS target (named "tls")."""
    with HTTPFarm({"/": reply()}) as plain, \
            HTTPFarm({"/": reply()}, ssl_context=tls_server_context(ca, "127.0.0.1")) as tls:
        targets = [{"name": f"plain{i}", "url": plain.url("/")} for i in range(plain_targets)]
        targets.append({"name": "tls", "url": tls.url("/"), "ca_file": ca_pem})
        path = write_config(config_text(targets))
        run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_no_module_is_imported_while_the_first_sweep_with_https_is_timed(ca, ca_pem, write_config):
    seen = first_sweep(CHILD, 5, ca, ca_pem, write_config)
    assert seen["ok"] == [True] * 6 and seen["tls"] == [False] * 5 + [True], seen
    assert seen["imported"] == [], seen["imported"]


TICKING = """
import gevent.monkey; gevent.monkey.patch_all()
import json, sys
import gevent
from greenmon.config import load_config
from greenmon.engine import Engine
engine = Engine(load_config(sys.argv[1]))   # what a check needs is made ready here
LOADERS = {"load_verify_locations", "load_default_certs", "set_default_verify_paths", "load_cert_chain"}
state = {"events": 0, "tls": "waiting"}
turns, loaded = [], []

def profile(frame, event, arg):
    state["events"] += 1
    if event == "c_call" and getattr(arg, "__name__", "") in LOADERS:
        loaded.append(arg.__name__)

def ticker():
    while True:   # a turn: what the loop ran between two of its ticks, counted in calls
        turns.append((state["events"], state["tls"]))
        state["events"] = 0
        gevent.sleep(0)

check = engine.check
def watched(target):
    if target.name == "tls":
        state["tls"] = "running"
    try:
        return check(target)
    finally:
        if target.name == "tls":
            state["tls"] = "done"
engine.check = watched
before = set(sys.modules)
ticking = gevent.spawn(ticker)
gevent.sleep(0)
sys.setprofile(profile)
results = engine.sweep()
sys.setprofile(None)
ticking.kill()
engine.close()
print(json.dumps({"ok": [r.ok for r in results], "tls": [r.tls is not None for r in results],
                  "turns": turns, "loaded": loaded, "imported": sorted(set(sys.modules) - before)}))
"""
LONGEST_TURN = 40_000   # calls; importing cryptography.x509 is about 90,000


def test_a_ticking_greenlet_keeps_ticking_through_the_first_https_check(ca, ca_pem, write_config):
    """A greenlet ticks on the loop through a fresh interpreter's first sweep, 20 plain
    targets and one HTTPS target. It ticks while the HTTPS check is in flight; no trust store
    or certificate is loaded and no module imported in the sweep (those are the stalls the
    first HTTPS check had); and no turn of the loop between two ticks runs more than
    LONGEST_TURN Python calls. The stall is counted in calls, not timed: a loaded machine
    cannot fail it."""
    seen = first_sweep(TICKING, 20, ca, ca_pem, write_config)
    assert seen["ok"] == [True] * 21 and seen["tls"] == [False] * 20 + [True], seen["ok"]
    during = [calls for calls, tls_check in seen["turns"] if tls_check == "running"]
    assert len(during) >= 2, seen["turns"]   # it ticked, more than once, through the check
    assert seen["loaded"] == [] and seen["imported"] == [], (seen["loaded"], seen["imported"])
    longest = max(calls for calls, _ in seen["turns"])
    assert longest < LONGEST_TURN, seen["turns"]


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
