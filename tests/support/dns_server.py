"""A DNS server on 127.0.0.1:53 (UDP) for the resolver tests: answers, refuses, stalls, counts.

The tests' name server is 127.0.0.1 (conftest sets GEVENT_RESOLVER_NAMESERVERS),
where nothing listens otherwise: names not in /etc/hosts fail at once. While
a DNSServer runs, each question is answered by the first rule whose suffix
matches the name:

- ``answer(address, ttl)``: an A record (AAAA questions get an empty answer);
- ``addresses(*ips, ttl)``: A and AAAA records, as many as given;
- ``nxdomain()``: the name does not exist;
- ``silent()``: no reply at all (the resolver times out, or the check's deadline fires);
- ``slow(seconds, rule)``: ``rule``, after a delay.

It counts the questions per name and the most it held unanswered at once.
Replies are built with dnspython (a test dependency), never by hand.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import gevent
from gevent import socket
from gevent.server import DatagramServer

Rule = Callable[[dns.message.Message], dns.message.Message | None]


def answer(address: str = "127.0.0.1", ttl: int = 300) -> Rule:
    def rule(query):
        reply = dns.message.make_response(query)
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(question.name, ttl, "IN", "A", address))
        return reply
    return rule


def addresses(*ips: str, ttl: int = 300) -> Rule:
    """A name with several addresses: A records for the IPv4 ones, AAAA for the IPv6 ones, in
    the order given."""
    def rule(query):
        reply = dns.message.make_response(query)
        question = query.question[0]
        kind = {dns.rdatatype.A: "A", dns.rdatatype.AAAA: "AAAA"}.get(question.rdtype)
        found = [ip for ip in ips if kind == ("AAAA" if ":" in ip else "A")]
        if found:
            reply.answer.append(dns.rrset.from_text_list(question.name, ttl, "IN", kind, found))
        return reply
    return rule


def nxdomain() -> Rule:
    def rule(query):
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply
    return rule


def silent() -> Rule:
    return lambda query: None


def slow(seconds: float, inner: Rule) -> Rule:
    def rule(query):
        gevent.sleep(seconds)
        return inner(query)
    return rule


class DNSServer:
    """``with DNSServer({"svc.test": answer(ttl=30), "": nxdomain()}) as dns: ...``"""

    def __init__(self, rules: dict[str, Rule], address: str = "127.0.0.1"):
        self.rules = rules
        self.questions: Counter = Counter()   # name (no trailing dot) -> questions asked
        self.unanswered = 0
        self.most_unanswered = 0
        # Bound here, without SO_REUSEADDR (which gevent would set, and which lets a second
        # UDP socket share the port): a name server already on port 53 (another test run on
        # this machine) is an error now, not answers from the wrong rules.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((address, 53))
        except OSError:
            sock.close()
            raise
        self._server = DatagramServer(sock, self._handle)

    def __enter__(self) -> "DNSServer":
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(timeout=1)

    def asked(self, name: str) -> int:
        return self.questions[name]

    def _rule(self, name: str) -> Rule:
        for suffix, rule in self.rules.items():
            if name == suffix or name.endswith("." + suffix) or suffix == "":
                return rule
        return nxdomain()

    def _handle(self, data: bytes, address) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:   # noqa: BLE001 - not DNS: ignore it
            return
        name = query.question[0].name.to_text().rstrip(".")
        self.questions[name] += 1
        self.unanswered += 1
        self.most_unanswered = max(self.most_unanswered, self.unanswered)
        try:
            reply = self._rule(name)(query)
        finally:
            self.unanswered -= 1
        if reply is not None:
            self._server.sendto(reply.to_wire(), address)
