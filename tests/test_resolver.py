"""Name resolution under load: the cache, its TTL, the negative cache, the cap, and the detail of
a check whose name does not resolve, against a real DNS server on 127.0.0.1:53 (README, "Where
the time went").

Every test installs a fresh resolver (an empty cache) asking that server, and
restores the process's resolver afterwards.
"""

from __future__ import annotations

import socket
import time

import gevent

from greenmon import resolver
from greenmon.config import parse_config
from greenmon.errors import CONNECTION, TIMEOUT
from support.configs import config_text
from support.dns_server import DNSServer, answer, nxdomain, silent, slow
from support.helpers import sweep_config
from support.servers import HTTPFarm, reply


def targets_on(farm: HTTPFarm, host: str, count: int, prefix: str = "t") -> list[dict]:
    return [{"name": f"{prefix}{i}", "url": farm.url(f"/ok?{i}", host=host)} for i in range(count)]


CLOSING = reply(headers=[("Connection", "close")])   # every check opens a new connection


def test_a_host_is_looked_up_once_for_many_targets(fresh_resolver):
    with DNSServer({"svc.test": answer(ttl=60)}) as dns, HTTPFarm({"/ok": CLOSING}) as farm:
        config = parse_config(config_text(targets_on(farm, "svc.test", 50)), "<test>")
        first = sweep_config(config)
        again = sweep_config(config)
    assert all(r.ok for r in first + again), [r for r in first + again if not r.ok][:2]
    assert fresh_resolver.lookups == 1
    assert dns.asked("svc.test") <= 2       # one lookup: its A and AAAA questions
    # 50 checks at once waited for that one lookup; later connections found it cached: dns 0.
    assert all(r.timings["dns"] > 0 for r in first)
    assert all(r.timings["dns"] == 0 and r.timings["connect"] > 0 for r in again)


def test_localhost_is_the_loopback_and_no_name_server_is_asked(fresh_resolver):
    """RFC 6761: a check of http://localhost/ never depends on a name server (here one that
    says NXDOMAIN to everything, so an answer from it would fail the check)."""
    with DNSServer({"": nxdomain()}) as dns, HTTPFarm({"/ok": CLOSING}) as farm:
        config = parse_config(config_text(targets_on(farm, "localhost", 2) +
                                          targets_on(farm, "api.localhost", 1, prefix="sub")), "<test>")
        results = sweep_config(config)
    assert all(r.ok for r in results), results
    assert all(r.timings["dns"] == 0 for r in results)
    assert (fresh_resolver.lookups, dns.asked("localhost"), dns.asked("api.localhost")) == (0, 0, 0)


def test_an_ip_address_is_its_own_answer_the_resolver_would_give(fresh_resolver):
    """An address written as one is answered without the resolver underneath, exactly as it
    answers: the family it belongs to, the address in its canonical form, the refusal of a
    family it does not belong to. A zone (fe80::1%lo) and a name still go to it."""
    asked = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def getaddrinfo(self, *args):
            asked.append(args[0])
            return self.inner.getaddrinfo(*args)

    underneath = fresh_resolver.fallback
    fresh_resolver.fallback = Counting(underneath)
    v4, v6 = socket.AF_INET, socket.AF_INET6
    for host, family in [("127.0.0.5", 0), ("127.0.0.5", v4), ("::1", 0), ("0:0::1", v6),
                         ("127.0.0.1", v6), ("::1", v4), ("::ffff:127.0.0.1", 0)]:
        ours = _answer_or_error(fresh_resolver, host, family)
        theirs = _answer_or_error(underneath, host, family)
        assert ours == theirs, (host, family)
    assert asked == ["127.0.0.1", "::1"]   # the refusals: the resolver's own errors
    _answer_or_error(fresh_resolver, "fe80::1%lo", v6)
    assert asked[-1] == "fe80::1%lo"


def _answer_or_error(resolver_, host, family):
    try:
        return [tuple(info) for info in resolver_.getaddrinfo(host, 80, family, socket.SOCK_STREAM)]
    except OSError as error:
        return type(error), error.args


def test_an_answer_is_kept_for_its_ttl_and_asked_again_after(fresh_resolver):
    with DNSServer({"short.test": answer(ttl=1)}) as dns, HTTPFarm({"/ok": CLOSING}) as farm:
        config = parse_config(config_text(targets_on(farm, "short.test", 1)), "<test>")
        assert sweep_config(config)[0].ok
        assert sweep_config(config)[0].ok       # within the TTL: cached
        assert fresh_resolver.lookups == 1
        gevent.sleep(1.3)                       # past the 1 s TTL
        assert sweep_config(config)[0].ok
    assert fresh_resolver.lookups == 2
    assert dns.asked("short.test") >= 2


def test_a_name_that_does_not_exist_is_connection_dns_and_is_not_asked_again_at_once(fresh_resolver):
    with DNSServer({"": nxdomain()}) as dns:
        config = parse_config(config_text([{"name": "nope", "url": "http://nope.invalid/"}]), "<test>")
        first = sweep_config(config)[0]
        second = sweep_config(config)[0]
    for result in (first, second):
        assert (result.error_class, result.detail) == (CONNECTION, "dns"), result
    assert fresh_resolver.lookups == 1               # the second found the negative answer
    assert dns.asked("nope.invalid") <= 2


def test_a_deadline_while_the_name_is_resolved_is_timeout_dns(fresh_resolver):
    with DNSServer({"": silent()}):
        config = parse_config(config_text([{"name": "stuck", "url": "http://stuck.test/"}], timeout=0.5), "<test>")
        [result] = sweep_config(config)
    assert (result.error_class, result.detail) == (TIMEOUT, "dns"), result
    assert result.timings["dns"] >= 0.4
    assert result.timings["connect"] is None


def test_lookups_in_flight_are_capped_and_the_cache_coalesces_them(fresh_resolver):
    names = [f"n{i}.test" for i in range(60)]
    with DNSServer({"test": slow(0.2, answer(ttl=60))}) as dns, HTTPFarm({"/ok": reply()}) as farm:
        targets = [{"name": n, "url": farm.url("/ok", host=n)} for n in names]
        targets += [{"name": f"again-{n}", "url": farm.url("/ok?again", host=n)} for n in names]
        results = sweep_config(parse_config(config_text(targets, timeout=10.0), "<test>"))
    assert all(r.ok for r in results), [r for r in results if not r.ok][:2]
    assert fresh_resolver.lookups == len(names)        # 120 targets, 60 names: 60 lookups
    # At most MAX_LOOKUPS lookups at once, each an A and an AAAA question.
    assert dns.most_unanswered <= 2 * resolver.MAX_LOOKUPS
    assert dns.most_unanswered >= 2


def test_a_thousand_names_that_do_not_resolve_leave_healthy_targets_alone(fresh_resolver):
    with DNSServer({"": nxdomain()}), HTTPFarm({"/ok": reply()}) as farm:
        bad = [{"name": f"bad-{i}", "url": f"http://bad-{i}.invalid/"} for i in range(1000)]
        good = [{"name": f"good-{i}", "url": farm.url(f"/ok?{i}")} for i in range(50)]
        started = time.monotonic()
        results = {r.target: r for r in sweep_config(parse_config(config_text(bad + good, timeout=3.0),
                                                                  "<test>"))}
        took = time.monotonic() - started
    assert {(r.error_class, r.detail) for name, r in results.items() if name.startswith("bad")} == \
        {(CONNECTION, "dns")}
    assert all(results[f"good-{i}"].ok for i in range(50))
    # Generous behaviour bounds (the benchmark has the figures): no lookup storm of seconds.
    assert took < 30
    assert max(results[f"good-{i}"].latency_s for i in range(50)) < 3.0
