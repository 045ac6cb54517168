"""A name server for the benchmarks: one name whose A records are the farm's loopback addresses.

``addresses = "all"`` needs a name with several addresses. This answers every
A question for NAME with the addresses given (any other name or type: an empty
answer), on 127.0.0.1:53 (UDP), in a thread of the benchmark runner; greenmon
asks it through GEVENT_RESOLVER_NAMESERVERS=127.0.0.1 (gevent's resolver, which
greenmon's wraps, takes no port). Port 53 needs root, as the suite's DNS tests
do. The replies are dnspython's (a test dependency, as the peers are).
"""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rdatatype
import dns.rrset

NAME = "farm.bench.test"
TTL_S = 300


class NameServer:
    """``with NameServer(["127.0.0.1", "127.0.0.2"]) as names: names.server`` ("127.0.0.1")."""

    def __init__(self, addresses: list[str]):
        self.addresses = list(addresses)
        self.questions = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 53))
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def server(self) -> str:
        return "127.0.0.1"

    def __enter__(self) -> "NameServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
                query = dns.message.from_wire(data)
            except (TimeoutError, OSError, dns.exception.DNSException):
                continue
            self.questions += 1
            reply = dns.message.make_response(query)
            question = query.question[0]
            if question.rdtype == dns.rdatatype.A and question.name.to_text().rstrip(".") == NAME:
                reply.answer.append(dns.rrset.from_text_list(question.name, TTL_S, "IN", "A", self.addresses))
            self._sock.sendto(reply.to_wire(), peer)
