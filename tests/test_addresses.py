"""Every address behind a name (SPEC 15): addresses = "all" and ip_version.

A real DNS server on 127.0.0.1:53 gives the name svc.test several loopback
addresses (127.0.0.1, 127.0.0.2, 127.0.0.3, ::1), with one real HTTP server per
address on one port; one of them misbehaves. Every test installs a fresh
resolver asking that server and restores the process's resolver afterwards.
"""

from __future__ import annotations

import time

import pytest
import trustme
from prometheus_client.exposition import generate_latest

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.metrics import build_registry
from greenmon.schema import ConfigError
from greenmon.statuspage import row
from greenmon.store import store_for

from support.configs import config_text
from support.daemon_helpers import value
from support.dns_server import DNSServer, addresses
from support.helpers import sweep_config
from support.servers import HTTPFarm, delayed, reply, sequence, tls_server_context

NAME = "svc.test"
GOOD = ("::1", "127.0.0.1")   # the resolver puts IPv6 first (RFC 6724); IPv4 ones in any order
BAD = "127.0.0.3"


class Name:
    """svc.test on the good addresses (and BAD, when ``bad`` is a handler or "refused"), one
    server each, on one port; ``hits[address]`` counts what each received."""

    def __init__(self, bad=None, ttl: int = 60, ssl_context=None, bad_context=None):
        self.bad, self.ttl, self.ssl_context, self.bad_context = bad, ttl, ssl_context, bad_context
        self.farms: dict[str, HTTPFarm] = {}

    def __enter__(self) -> "Name":
        first = HTTPFarm({"/": reply()}, ssl_context=self.ssl_context).__enter__()
        self.farms["127.0.0.1"] = first
        self.port = first.port
        self.farms["::1"] = HTTPFarm({"/": reply()}, ssl_context=self.ssl_context,
                                     address="::1", port=self.port).__enter__()
        listed = ["127.0.0.1", "::1"]
        if self.bad is not None:
            listed.append(BAD)
            if self.bad != "refused":
                self.farms[BAD] = HTTPFarm({"/": self.bad}, address=BAD, port=self.port,
                                           ssl_context=self.bad_context or self.ssl_context).__enter__()
        self.dns = DNSServer({NAME: addresses(*listed, ttl=self.ttl)}).__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.dns.__exit__(*exc_info)
        for farm in self.farms.values():
            farm.__exit__(*exc_info)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{NAME}:{self.port}/"

    def hits(self) -> dict[str, int]:
        return {address: farm.hits("/") for address, farm in self.farms.items()}


def check(name: Name, *, scheme: str = "http", timeout: float = 2.0, retries: int = 0, **target):
    config = parse_config(config_text([{"name": "svc", "url": name.url(scheme), **target}],
                                      timeout=timeout, retries=retries, backoff=0.01), "<test>")
    (result,) = sweep_config(config)
    return result


@pytest.mark.parametrize("bad, error_class, detail", [
    (reply("500 Internal Server Error"), "http", "500"),
    ("refused", "connection", "refused"),
    (delayed(5.0), "timeout", "read"),
], ids=["500", "refused", "hanging"])
def test_all_sees_the_bad_address_and_names_it_first_does_not(fresh_resolver, bad, error_class, detail):
    with Name(bad) as name:
        every = check(name, addresses="all", timeout=1.0)
        first = check(name, timeout=1.0)
        hits = name.hits()
    assert (every.ok, every.error_class, every.detail) == (False, error_class, detail), every.error
    assert every.error.startswith(f"{BAD}: "), every.error
    assert sorted((a.address, a.ok) for a in every.addresses) == sorted([(a, True) for a in GOOD] + [(BAD, False)])
    assert every.attempts == 3
    assert first.ok and first.addresses == () and "addresses" not in first.to_dict()
    # Every address was contacted once by "all"; "first" went to the first address only.
    assert hits == {"::1": 2, "127.0.0.1": 1, **({} if bad == "refused" else {BAD: 1})}


def test_each_request_carries_the_name_and_the_check_is_up_when_every_address_is(fresh_resolver):
    with Name() as name:
        result = check(name, addresses="all")
        seen = {address: farm.requests["/"][0][1]["Host"] for address, farm in name.farms.items()}
    assert result.ok and [a.address for a in result.addresses] == list(GOOD), result.error   # IPv6 first
    assert seen == dict.fromkeys(GOOD, f"{NAME}:{name.port}")
    assert result.latency_s == max(a.latency_s for a in result.addresses)
    document = result.to_dict()["addresses"]
    assert [set(item) for item in document] == [
        {"address", "ok", "status_code", "latency_s", "error_class", "detail"}] * 2


def test_https_verifies_the_name_on_every_address(fresh_resolver, tmp_path):
    """Certificates for svc.test only, never for the addresses: each connection is verified
    against the name. The bad address presents a certificate for another name."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good, other = tls_server_context(ca, NAME), tls_server_context(ca, "other.test")
    with Name(reply(), ssl_context=good, bad_context=other) as name:
        result = check(name, scheme="https", addresses="all", ca_file=str(ca_file))
    assert sorted((a.address, a.ok) for a in result.addresses) == sorted([(a, True) for a in GOOD] + [(BAD, False)])
    assert (result.error_class, result.detail) == ("connection", "tls") and result.error.startswith(BAD)


def test_ip_version_filters_the_addresses_in_both_modes(fresh_resolver):
    with Name(reply("500 Internal Server Error")) as name:
        four = check(name, addresses="all", ip_version="4")
        six = check(name, addresses="all", ip_version="6")
        first_six = check(name, ip_version="6")
        hits = name.hits()
    assert sorted(a.address for a in four.addresses) == ["127.0.0.1", BAD] and not four.ok
    assert [a.address for a in six.addresses] == ["::1"] and six.ok
    assert first_six.ok and first_six.addresses == ()
    assert hits == {"::1": 2, "127.0.0.1": 1, BAD: 1}


def test_a_name_without_an_address_of_the_family_is_connection_dns(fresh_resolver):
    with HTTPFarm({"/": reply()}) as farm, DNSServer({"four.test": addresses("127.0.0.1")}):
        url = farm.url("/", host="four.test")
        results = [check_url(url, **kwargs) for kwargs in (
            {"ip_version": "6"}, {"ip_version": "6", "addresses": "all"}, {"addresses": "all"})]
    assert [(r.ok, r.error_class, r.detail) for r in results] == [
        (False, "connection", "dns"), (False, "connection", "dns"), (True, None, None)]
    assert results[0].error == "DNS lookup failed (IPv6)"


def check_url(url: str, **target):
    (result,) = sweep_config(parse_config(config_text([{"name": "t", "url": url, **target}]), "<test>"))
    return result


def test_an_ip_literal_is_its_one_address(fresh_resolver):
    with HTTPFarm({"/": reply()}) as farm:
        result = check_url(farm.url("/"), addresses="all")
        wrong_family = check_url(farm.url("/"), ip_version="6")
    assert result.ok and [a.address for a in result.addresses] == ["127.0.0.1"]
    assert (wrong_family.error_class, wrong_family.detail) == ("connection", "dns")


def test_an_address_is_retried_on_its_own_and_attempts_count_every_address(fresh_resolver):
    """Three addresses, the bad one failing its first attempt only: 4 attempts, one check up."""
    with Name(sequence(reply("503 Service Unavailable"), reply())) as name:
        result = check(name, addresses="all", retries=2)
        hits = name.hits()
    assert result.ok and result.attempts == 4, result.error
    assert hits == {"127.0.0.1": 1, "::1": 1, BAD: 2}


def test_a_changed_answer_adds_and_drops_address_series(fresh_resolver):
    with Name(reply(), ttl=1) as name:
        config = parse_config(config_text([{"name": "svc", "url": name.url(), "addresses": "all"}]), "<test>")
        store = store_for(config, config.enabled_targets)
        engine = Engine(config, listeners=[store.observe])
        try:
            engine.sweep()
            before = generate_latest(build_registry(store)).decode()
            name.dns.rules[NAME] = addresses("127.0.0.1", BAD, ttl=1)   # ::1 goes
            time.sleep(1.2)   # past the answer's TTL (the resolver keeps one at least 1 s)
            (result,) = engine.sweep()
            after = generate_latest(build_registry(store)).decode()
        finally:
            engine.close()
    assert {a: value(before, "greenmon_address_up", target="svc", address=a) for a in (*GOOD, BAD)} == {
        "::1": 1, "127.0.0.1": 1, BAD: 1}
    assert sorted(a.address for a in result.addresses) == ["127.0.0.1", BAD]
    assert value(after, "greenmon_address_up", target="svc", address="::1") is None
    assert value(after, "greenmon_address_duration_seconds", target="svc", address=BAD) > 0
    html = row(store.series["svc"], slo_p95_s=2.0, objective=0.999, now=time.time())
    assert "addresses: " in html and "127.0.0.1 \u2713" in html and f"{BAD} \u2713" in html
    assert "::1" not in html


@pytest.mark.parametrize("text, key, words", [
    ('[[targets]]\nname = "f"\naddresses = "all"\n[[targets.steps]]\nurl = "http://127.0.0.1:9/"\n',
     "targets[0].addresses", 'addresses = "all" is for a target of one request, not a flow'),
    ('[[targets]]\nurl = "http://127.0.0.1:9/"\naddresses = "all"\nproxy = "http://127.0.0.1:3128"\n',
     "targets[0].addresses", "cannot be kept through a proxy"),
    ('[monitor]\nip_version = "6"\nproxy_env = true\n[[targets]]\nurl = "http://127.0.0.1:9/"\n',
     "monitor.ip_version", "cannot be kept through a proxy"),
    ('[[targets]]\nurl = "http://127.0.0.1:9/"\nip_version = 6\n',
     "targets[0].ip_version", "must be one of 'any', '4', '6', got an integer"),
    ('[monitor]\naddresses = "every"\n[[targets]]\nurl = "http://127.0.0.1:9/"\n',
     "monitor.addresses", "must be one of 'first', 'all', got 'every'"),
    ('[[file_sd]]\nfiles = ["sd.json"]\naddresses = "all"\nproxy = "http://127.0.0.1:3128"\n',
     "file_sd[0].addresses", "cannot be kept through a proxy, which resolves the name itself (file_sd[0])"),
], ids=["flow", "proxy", "proxy-env", "ip-version-integer", "unknown-mode", "file-sd"])
def test_an_address_choice_that_cannot_hold_is_a_config_error(text, key, words):
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    message = str(raised.value)
    assert message.startswith("greenmon.toml:") and f" {key}: " in message and words in message, message
