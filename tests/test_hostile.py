"""Hostile targets at scale: each gets the right class and detail, its sweep ends within its
deadline, and the healthy targets swept beside it are not slowed (docs/reliability.md).

test_errors.py covers the basic classification table, one quiet check at a time.
Here every hostile server shares a sweep (and the event loop) with healthy
targets and retries are on, so the assertions are about what an operator sees
in a real sweep: the class and detail, how many attempts were spent, how long
the whole sweep took, and the latency of everything else.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import gevent
import pytest
import trustme

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.errors import CONNECTION, CONTENT, TIMEOUT
from greenmon.limits import sockets_needed
from support.configs import config_text
from support.helpers import wait_until
from support.hostile_servers import (GiantBody, KeepAliveOK, RefusedPorts, answer_then_smuggle, gzip_bomb,
                                     gzip_of_zeros, hold_silently, reset_mid_response, rss_bytes,
                                     self_signed_context)
from support.load_helpers import check_in_subprocess
from support.servers import HTTPFarm, RawServer, redirect, reply, send_raw, tls_server_context, trickle

# verify_tls = false cases make urllib3 warn on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

TIMEOUT_S = 1.0
RETRIES = 1            # every retryable failure costs two attempts: the bound below counts them
BACKOFF_S = 0.01
MARGIN_S = 1.5         # scheduling, server start-up and teardown on a busy 2-core machine
HEALTHY = 20           # healthy neighbours in each hostile sweep
# "Not slowed": a healthy neighbour (milliseconds alone) never waits as long as one hostile
# deadline. A hostile target that held the event loop (a decoded bomb, a blocking lookup)
# or the pool would hold its neighbours at least that long; a loaded machine does not.
HEALTHY_MAX_LATENCY_S = TIMEOUT_S

MiB = 1024 * 1024
GiB = 1024 * MiB


def sweep_bound(timeout: float = TIMEOUT_S, retries: int = RETRIES, backoff: float = BACKOFF_S) -> float:
    """Against hangs: twice the longest a sweep should take (every attempt to its deadline,
    every backoff), plus a margin. What it catches, a server holding a check past its
    deadline, takes 30 s (hold_silently) to 200 s (trickle)."""
    worst = timeout * (retries + 1) + sum(backoff * 2 ** k for k in range(retries))
    return 2 * worst + MARGIN_S


@pytest.fixture(scope="module", autouse=True)
def dns_stays_on_loopback():
    """Guard: the .invalid lookups below (1,000 at once) must go to 127.0.0.1, as conftest sets
    up, and never to the machine's real DNS server: greenmon's resolver asks 127.0.0.1, and
    so does gevent's c-ares resolver behind it (IP literals)."""
    from greenmon.resolver import install
    resolver = install()
    fallback = resolver.fallback
    if (resolver.servers != ["127.0.0.1"] or type(fallback).__module__ != "gevent.resolver.ares"
            or fallback.params.get("servers") != ["127.0.0.1"]):
        pytest.fail(f"name lookups would not stay on loopback: {resolver.servers} "
                    f"{getattr(fallback, 'params', None)}")


# --- Healthy neighbours -----------------------------------------------------------------

@pytest.fixture(scope="module")
def healthy_farm():
    with HTTPFarm({f"/healthy/{i}": reply(body="fine") for i in range(50)}) as farm:
        yield farm


def healthy_targets(farm: HTTPFarm, count: int = HEALTHY) -> list[dict]:
    return [{"name": f"healthy-{i:02d}", "url": farm.url(f"/healthy/{i}")} for i in range(count)]


@dataclass
class Sweep:
    results: dict        # target name -> MonitorResult
    elapsed_s: float
    engine_concurrency: int = 0

    def healthy(self) -> list:
        return [r for name, r in self.results.items() if name.startswith("healthy-")]


def run_sweep(targets: list[dict], *, timeout: float = TIMEOUT_S, retries: int = RETRIES,
              backoff: float = BACKOFF_S, monitor: dict | None = None) -> Sweep:
    config = parse_config(config_text(targets, retries=retries, backoff=backoff, timeout=timeout), "<test>")
    config = config.replace("monitor", concurrency=max(len(targets), 10), **(monitor or {}))
    engine = Engine(config)
    try:
        started = time.monotonic()
        results = engine.sweep()
        elapsed = time.monotonic() - started
    finally:
        engine.close()
    return Sweep({r.target: r for r in results}, elapsed, engine.concurrency)


def assert_healthy_unharmed(sweep: Sweep, count: int = HEALTHY,
                            max_latency: float = HEALTHY_MAX_LATENCY_S) -> None:
    healthy = sweep.healthy()
    assert len(healthy) == count
    down = [(r.target, r.error_class, r.detail) for r in healthy if not r.ok]
    assert not down, down
    slowest = max(r.latency_s for r in healthy)
    assert slowest < max_latency, f"a healthy target took {slowest:.3f}s beside the hostile ones"
    assert all(r.attempts == 1 for r in healthy)


# --- TLS material -------------------------------------------------------------------------

def _days_ago(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)


@dataclass
class TLSMaterial:
    ca: trustme.CA
    ca_pem: str
    self_signed: object          # ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    context, _ = self_signed_context("127.0.0.1")
    return TLSMaterial(ca, str(path), context)


# --- Hostile servers: builders yielding the hostile target's keys ---------------------------

@contextlib.contextmanager
def raw(handler, scheme: str = "http"):
    with RawServer(handler) as server:
        yield {"url": f"{scheme}://127.0.0.1:{server.port}/hostile"}


@contextlib.contextmanager
def farm(routes: dict, start: str = "/hostile", ssl_context=None, **keys):
    with HTTPFarm(routes, ssl_context=ssl_context) as server:
        yield {"url": server.url(start), **keys}


@contextlib.contextmanager
def redirect_elsewhere(location_for: Callable[[], contextlib.AbstractContextManager]):
    """A redirect to a place that cannot be reached; ``location_for`` yields that URL."""
    with location_for() as location, HTTPFarm({"/hostile": redirect(location)}) as server:
        yield {"url": server.url("/hostile")}


@contextlib.contextmanager
def refused_url():
    with RefusedPorts(1) as ports:
        yield f"http://127.0.0.1:{ports.ports[0]}/gone"


@contextlib.contextmanager
def invalid_name_url():
    # .invalid never resolves (RFC 6761); conftest points c-ares at 127.0.0.1: no query leaves the host.
    yield "http://gone.greenmon-test.invalid/gone"


@contextlib.contextmanager
def unresolvable():
    with invalid_name_url() as url:
        yield {"url": url}


def status_then(head: bytes) -> Callable:
    return send_raw(head, then_sleep=0.3)  # the answer, then the connection stays open a moment


MALFORMED_STATUS = b"HTTP/1.1 two-hundred OK\r\nContent-Length: 2\r\n\r\nok"
CONFLICTING_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok"
HUGE_HEADER_LINE = b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 70_000 + b"\r\nContent-Length: 2\r\n\r\nok"
HEADER_FLOOD = (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Flood-%d: v\r\n" % i for i in range(150))
                + b"Content-Length: 2\r\n\r\nok")
NON_NUMERIC_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok"
NEGATIVE_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok"
CUT_MID_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"c" * 100
HEAD_1000 = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
HTTP09_HTML = b"<html><body>hello from 1991</body></html>\r\n"
BINARY_GARBAGE = bytes(range(256)) * 8



@dataclass(frozen=True)
class Case:
    id: str
    build: Callable                  # (TLSMaterial) -> context manager yielding the target's keys
    error_class: str | None          # None: the target is up
    detail: str | None
    attempts: int
    message: str | None = None       # a regex the result's error must match
    monitor: dict = field(default_factory=dict)
    marks: tuple = ()


CASES = [
    # Silence and slowness: each runs to its deadline, twice (timeouts are retried).
    # (A body trickling one byte per 200 ms: test_trickled_body_is_cut_at_the_deadline_of_each_attempt.)
    Case("accepts-never-answers", lambda t: raw(hold_silently), TIMEOUT, "read", 2),
    Case("tls-handshake-never-finishes", lambda t: raw(hold_silently, scheme="https"),
         TIMEOUT, "connect", 2),
    # Broken HTTP: connection/protocol (or reset), retried once.
    Case("malformed-status-line", lambda t: raw(status_then(MALFORMED_STATUS)), CONNECTION, "protocol", 2),
    Case("invalid-header-conflicting-content-length", lambda t: raw(status_then(CONFLICTING_LENGTH)),
         CONNECTION, "protocol", 2),
    Case("invalid-header-line-over-64k", lambda t: raw(status_then(HUGE_HEADER_LINE)),
         CONNECTION, "protocol", 2),
    Case("invalid-header-flood-150-headers", lambda t: raw(status_then(HEADER_FLOOD)),
         CONNECTION, "protocol", 2),
    Case("invalid-header-non-numeric-content-length", lambda t: raw(status_then(NON_NUMERIC_LENGTH)),
         CONNECTION, "protocol", 2),
    Case("invalid-header-negative-content-length", lambda t: raw(status_then(NEGATIVE_LENGTH)),
         CONNECTION, "protocol", 2),
    Case("response-cut-mid-body", lambda t: raw(send_raw(CUT_MID_BODY)), CONNECTION, "protocol", 2),
    Case("reset-after-response-headers", lambda t: raw(reset_mid_response(HEAD_1000, b"r" * 10)),
         CONNECTION, "reset", 2),
    Case("http-0.9-style-html", lambda t: raw(send_raw(HTTP09_HTML)), CONNECTION, "protocol", 2),
    Case("binary-garbage", lambda t: raw(send_raw(BINARY_GARBAGE)), CONNECTION, "protocol", 2),
    # Redirects: a loop is content (not retried); an unreachable destination is the destination's failure.
    Case("redirect-loop-self", lambda t: farm({"/hostile": redirect("/hostile")}),
         CONTENT, "redirects", 1, "too many redirects"),
    Case("redirect-loop-two-hops", lambda t: farm({"/hostile": redirect("/other"),
                                                  "/other": redirect("/hostile")}),
         CONTENT, "redirects", 1, "too many redirects"),
    Case("redirect-to-refused-port", lambda t: redirect_elsewhere(refused_url), CONNECTION, "refused", 2),
    Case("redirect-to-unresolvable-host", lambda t: redirect_elsewhere(invalid_name_url),
         CONNECTION, "dns", 2),
    # DNS.
    Case("name-does-not-resolve", lambda t: unresolvable(), CONNECTION, "dns", 2, "DNS lookup failed"),
    # TLS certificates: rejected at once and never retried (why: test_tls_rejection_says_why).
    Case("tls-self-signed", lambda t: farm({"/hostile": reply(body="x")}, ssl_context=t.self_signed),
         CONNECTION, "tls", 1),
    Case("tls-expired", lambda t: farm({"/hostile": reply(body="x")}, ca_file=t.ca_pem,
                                       ssl_context=tls_server_context(
                                           t.ca, "127.0.0.1", not_before=_days_ago(30),
                                           not_after=_days_ago(1))),
         CONNECTION, "tls", 1),
    Case("tls-wrong-host-name", lambda t: farm({"/hostile": reply(body="x")}, ca_file=t.ca_pem,
                                               ssl_context=tls_server_context(t.ca, "other.example")),
         CONNECTION, "tls", 1),
    Case("tls-self-signed-verify-off", lambda t: farm({"/hostile": reply(body="x")}, verify_tls=False,
                                                      ssl_context=t.self_signed), None, None, 1),
    Case("tls-expired-verify-off", lambda t: farm({"/hostile": reply(body="x")}, verify_tls=False,
                                                  ssl_context=tls_server_context(
                                                      t.ca, "127.0.0.1", not_before=_days_ago(30),
                                                      not_after=_days_ago(1))), None, None, 1),
    Case("tls-wrong-host-name-verify-off",
         lambda t: farm({"/hostile": reply(body="x")}, verify_tls=False,
                        ssl_context=tls_server_context(t.ca, "other.example")),
         None, None, 1),
    # Bodies far past max_body_bytes: the read stops at the cap.
    Case("body-1GiB-content-length", lambda t: farm({"/hostile": GiantBody(GiB)}),
         CONTENT, "body_too_large", 1, monitor={"max_body_bytes": MiB}),
    Case("body-1GiB-chunked", lambda t: farm({"/hostile": GiantBody(GiB, content_length=False)}),
         CONTENT, "body_too_large", 1, monitor={"max_body_bytes": MiB}),
]


def assert_case(case: Case, result) -> None:
    observed = (result.ok, result.error_class, result.detail, result.attempts)
    assert observed == (case.error_class is None, case.error_class, case.detail, case.attempts), result
    if case.message is not None:
        assert re.search(case.message, result.error), result.error


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_hostile_target_beside_healthy_ones(case, tls, healthy_farm):
    with case.build(tls) as keys:
        sweep = run_sweep([{"name": "hostile", **keys}] + healthy_targets(healthy_farm),
                          monitor=case.monitor)
    assert_case(case, sweep.results["hostile"])
    assert_healthy_unharmed(sweep)
    assert sweep.elapsed_s < sweep_bound(), f"sweep took {sweep.elapsed_s:.2f}s"


def test_every_hostile_target_in_one_sweep(tls, healthy_farm):
    """All of them at once, with 50 healthy targets: no hostile server slows another or the
    healthy ones, and the sweep still ends within one target's worst case plus the margin."""
    cases = [c for c in CASES if not c.marks]
    with contextlib.ExitStack() as stack:
        targets = [{"name": f"hostile-{c.id}", **stack.enter_context(c.build(tls))} for c in cases]
        sweep = run_sweep(targets + healthy_targets(healthy_farm, 50), monitor={"max_body_bytes": MiB})
    for case in cases:
        assert_case(case, sweep.results[f"hostile-{case.id}"])
    assert_healthy_unharmed(sweep, count=50)
    assert sweep.elapsed_s < sweep_bound(), f"sweep took {sweep.elapsed_s:.2f}s"




@pytest.mark.parametrize("case_id, why", [
    ("tls-self-signed", r"self.signed"),
    ("tls-expired", r"expired"),
    ("tls-wrong-host-name", r"mismatch"),
])
def test_tls_rejection_says_why(case_id, why, tls):
    """detail is "tls" for all three; the error message is what tells the operator which."""
    [case] = [c for c in CASES if c.id == case_id]
    with case.build(tls) as keys:
        sweep = run_sweep([{"name": "hostile", **keys}])
    result = sweep.results["hostile"]
    assert (result.error_class, result.detail) == (CONNECTION, "tls")
    assert re.search(why, result.error), result.error


def test_trickled_body_is_cut_at_the_deadline_of_each_attempt(healthy_farm):
    """One byte every 200 ms for 1000 bytes would take 200 s an attempt; each attempt ends at
    its total deadline, so the check ends after two deadlines and one backoff.

    The one test of the trickle beside healthy targets and with retries (test_errors has the
    single attempt). Lower bounds: the deadline, not something earlier, ended each attempt;
    upper bounds: a few deadlines, far below the 200 s a per-read timeout would allow."""
    with RawServer(trickle(0.2, 1000)) as server:
        sweep = run_sweep([{"name": "hostile", "url": server.url("/t")}] + healthy_targets(healthy_farm))
        connections = server.connections
    result = sweep.results["hostile"]
    assert (result.error_class, result.detail, result.attempts, connections) == (TIMEOUT, "deadline", 2, 2)
    assert TIMEOUT_S * 0.9 <= result.latency_s < 3 * TIMEOUT_S
    assert 2 * TIMEOUT_S * 0.9 <= result.elapsed_s < 3 * (2 * TIMEOUT_S + BACKOFF_S)
    assert_healthy_unharmed(sweep)


SMUGGLED = b"HTTP/1.1 500 Smuggled\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("delay", [0.0, 0.05], ids=["with-the-answer", "while-idle"])
def test_unsolicited_bytes_on_a_keep_alive_connection_never_become_a_result(delay, healthy_farm):
    """A server that follows each 200 with a 500 nobody asked for: a client reusing that
    connection would report the smuggled 500 on its next check (a false alarm). greenmon
    must see the waiting bytes, drop the connection and report only what it asked for."""
    with RawServer(answer_then_smuggle(SMUGGLED, delay)) as server:
        config = parse_config(config_text([{"name": "hostile", "url": server.url("/t")}] + healthy_targets(healthy_farm),
                                          timeout=TIMEOUT_S), "<test>")
        engine = Engine(config)
        try:
            results = []
            for _ in range(5):
                results.append({r.target: r for r in engine.sweep()})
                gevent.sleep(delay + 0.05)  # the late bytes arrive while the connection is idle
        finally:
            engine.close()
        connections = server.connections
    hostile = [(r["hostile"].ok, r["hostile"].status_code) for r in results]
    assert hostile == [(True, 200)] * 5
    if delay:
        # Bytes waiting on an idle connection: a fresh connection each time, the poisoned one is
        # never reused. (Sent with the answer, they are read into that response's buffer and
        # dropped with it, so the connection may be reused: no harm either way.)
        assert connections == 5
    assert all(r.ok for sweep in results for r in sweep.values())


# --- 1 GB bodies: the read stops at max_body_bytes and memory stays flat ------------------------

RSS_GROWTH_LIMIT = 50 * MiB


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
def test_1gib_body_stops_at_max_body_bytes_and_rss_stays_flat(content_length, healthy_farm):
    giant = GiantBody(GiB, content_length=content_length)  # 64 KiB chunks from a generator
    with HTTPFarm({"/big": giant}) as server:
        before = rss_bytes()
        sweep = run_sweep([{"name": "big", "url": server.url("/big")}] + healthy_targets(healthy_farm),
                          monitor={"max_body_bytes": MiB})
        grew = rss_bytes() - before
        # The client hung up: the server's next writes fail and its generator is closed.
        stopped = wait_until(lambda: giant.finished, 5.0, interval=0.02,
                             message="the server's generator closed")
    result = sweep.results["big"]
    assert (result.error_class, result.detail, result.status_code, result.attempts) == (
        CONTENT, "body_too_large", 200, 1)
    assert result.body_bytes == MiB
    assert stopped and not giant.completed
    assert giant.sent < 64 * MiB, f"the server sent {giant.sent} bytes"  # socket buffers, not 1 GiB
    assert grew < RSS_GROWTH_LIMIT, f"RSS grew by {grew / MiB:.1f} MiB"
    assert result.latency_s < TIMEOUT_S
    assert_healthy_unharmed(sweep)


PEAK_GROWTH_LIMIT = 50 * MiB


def test_gzip_bomb_inflating_to_1gib_stops_at_max_body_bytes(healthy_farm, tmp_path):
    """About 1 MB on the wire that inflates to 1 GiB: only max_body_bytes of it is ever decoded.

    The check runs in a fresh process whose peak RSS (VmHWM) is read after it
    (load_helpers.check_in_subprocess): memory freed once the check is over cannot hide a
    body decoded whole. Decoding 1 GiB also takes seconds in one go, holding the event loop,
    so the 1 s deadline cannot end it: the check's latency shows it as well."""
    with HTTPFarm({"/bomb": gzip_bomb(gzip_of_zeros(GiB))}) as server:
        targets = [{"name": "bomb", "url": server.url("/bomb")}] + healthy_targets(healthy_farm)
        text = config_text(targets, retries=RETRIES, backoff=BACKOFF_S, timeout=TIMEOUT_S,
                           monitor={"max_body_bytes": MiB})
        config = tmp_path / "bomb.toml"
        config.write_text(text, encoding="utf-8")
        run = check_in_subprocess(config)
    results = {r["target"]: r for r in run["results"]}
    bomb = results.pop("bomb")
    assert (bomb["error_class"], bomb["detail"], bomb["attempts"], bomb["body_bytes"]) == (
        CONTENT, "body_too_large", 1, MiB), bomb
    grew = (run["peak_kb"] - run["rss_before_kb"]) * 1024
    assert grew < PEAK_GROWTH_LIMIT, f"peak RSS {grew / MiB:.1f} MiB above the RSS before the check"
    assert bomb["latency_s"] < TIMEOUT_S, f"the bomb's check took {bomb['latency_s']:.2f}s"
    assert len(results) == HEALTHY and all(r["ok"] for r in results.values()), results
    slowest = max(r["latency_s"] for r in results.values())
    assert slowest < HEALTHY_MAX_LATENCY_S, f"a healthy target took {slowest:.3f}s beside the bomb"


# --- At scale: 1,000 names that do not resolve, 2,000 ports that refuse ---------------------------

SCALE_TIMEOUT_S = 5.0


def test_1000_unresolvable_names_do_not_delay_healthy_targets(healthy_farm):
    # Distinct names, so no lookup can be shared; all fail at the c-ares resolver on 127.0.0.1.
    names = [{"name": f"dns-{i:04d}", "url": f"http://host-{i}.greenmon-test.invalid/health"}
             for i in range(1000)]
    sweep = run_sweep(names + healthy_targets(healthy_farm, 50), timeout=SCALE_TIMEOUT_S)
    assert sweep.engine_concurrency >= 1050
    failed = [r for name, r in sweep.results.items() if name.startswith("dns-")]
    assert len(failed) == 1000
    outcomes = {(r.ok, r.error_class, r.detail, r.attempts) for r in failed}
    assert outcomes == {(False, CONNECTION, "dns", RETRIES + 1)}
    assert max(r.elapsed_s for r in failed) < SCALE_TIMEOUT_S / 2  # DNS failures are fast, not timeouts
    assert_healthy_unharmed(sweep, count=50, max_latency=SCALE_TIMEOUT_S / 5)
    assert sweep.elapsed_s < sweep_bound(SCALE_TIMEOUT_S)


@pytest.fixture
def low_soft_file_limit():
    """Lower the open-file soft limit to 1024 for the test (restored after), so the sweep
    only works if greenmon raises it; skip when the hard limit cannot fit the sweep."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2200:
        pytest.skip(f"open-file hard limit {hard} < 2200: 2,050 sockets at once cannot fit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        yield resource
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_2000_refused_ports_beside_healthy_targets(healthy_farm, low_soft_file_limit):
    resource = low_soft_file_limit
    with RefusedPorts(2000) as ports:
        refused = [{"name": f"refused-{i:04d}", "url": f"http://127.0.0.1:{port}/health"}
                   for i, port in enumerate(ports.ports)]
        sweep = run_sweep(refused + healthy_targets(healthy_farm, 50), timeout=SCALE_TIMEOUT_S)
        soft_after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # greenmon raised the soft limit for 2,050 checks in flight instead of lowering concurrency.
    assert sweep.engine_concurrency == 2050
    assert soft_after == resource.RLIM_INFINITY or soft_after >= sockets_needed(2050, 2050)
    failed = [r for name, r in sweep.results.items() if name.startswith("refused-")]
    assert len(failed) == 2000
    outcomes = {(r.ok, r.error_class, r.detail, r.attempts) for r in failed}
    assert outcomes == {(False, CONNECTION, "refused", RETRIES + 1)}
    assert_healthy_unharmed(sweep, count=50, max_latency=SCALE_TIMEOUT_S / 5)
    assert sweep.elapsed_s < sweep_bound(SCALE_TIMEOUT_S)


# --- Cleanup: a closed engine lets go of its targets ------------------------------------------------



def test_closing_the_engine_closes_its_keep_alive_connections():
    server_side = KeepAliveOK()
    with RawServer(server_side) as server:
        engine = Engine(parse_config(config_text([{"name": "kept", "url": server.url("/t")}]), "<test>"))
        engine.sweep()
        held = server_side.open
        engine.close()
        closed = wait_until(lambda: server_side.open == 0, 2.0, interval=0.02,
                            message="the target's side of the connection closed")
        engine.close()  # the engine is still referenced here: only close() may have done the work
    assert held == 1
    assert closed, "the target still holds the connection of a closed engine"
