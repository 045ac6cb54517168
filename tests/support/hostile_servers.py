"""Hostile local servers for test_hostile and test_signal_quality: silence, floods, bombs, flakiness.

Like servers.py, everything binds 127.0.0.1 and runs on the test process's
gevent hub. Every handler here is bounded: it ends when the client goes away,
when its server is stopped, or after a fixed time, never "forever".
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import socket
import ssl
import struct
import tempfile
import zlib
from collections import Counter
from typing import Callable, Iterator

import gevent
from gevent.server import StreamServer

from support.servers import read_request_head

HOLD_LIMIT_S = 30.0  # the longest any silent handler keeps a connection
CHUNK = 64 * 1024


# --- Raw-socket handlers (for servers.RawServer) ---------------------------------

def hold_silently(sock: socket.socket) -> None:
    """Accept, read whatever comes, never send a byte; return when the client closes.

    Over an https:// URL this is a TLS handshake that never finishes (the
    ClientHello is read and ignored); over http:// a request never answered.
    """
    with gevent.Timeout(HOLD_LIMIT_S, False):
        while sock.recv(65536):
            pass


def reset_mid_response(head: bytes, partial_body: bytes, pause: float = 0.05
                       ) -> Callable[[socket.socket], None]:
    """Response headers (and a part of the body), a pause, then a TCP reset (SO_LINGER 0)."""
    def handler(sock):
        read_request_head(sock)
        sock.sendall(head + partial_body)
        gevent.sleep(pause)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return handler


class KeepAliveOK:
    """Raw handler: a 200 to every request on a connection until the client closes it.
    ``open`` counts the connections the client has not closed yet."""

    def __init__(self) -> None:
        self.open = 0

    def __call__(self, sock) -> None:
        self.open += 1
        try:
            with gevent.Timeout(HOLD_LIMIT_S, False):
                while read_request_head(sock).endswith(b"\r\n\r\n"):
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            self.open -= 1


def answer_then_smuggle(extra: bytes, delay: float = 0.0) -> Callable[[socket.socket], None]:
    """Keep-alive: answer every request with a 200, then send ``extra`` (``delay`` s later)
    that nobody asked for, e.g. a second response a desynchronised client would take for
    the answer to its next request."""
    def handler(sock):
        with gevent.Timeout(HOLD_LIMIT_S, False):
            while read_request_head(sock).endswith(b"\r\n\r\n"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if delay:
                    gevent.sleep(delay)
                sock.sendall(extra)
    return handler


# --- WSGI handlers (for servers.HTTPFarm) -----------------------------------------

class GiantBody:
    """A WSGI handler streaming ``total`` bytes in ``chunk``-sized pieces from a generator.

    Nothing large is ever built: one chunk is reused. ``sent`` counts the bytes
    handed to the server so far; ``finished`` is set when the generator ends,
    ``completed`` only if it produced everything (the client read it all).
    """

    def __init__(self, total: int, chunk: int = CHUNK, content_length: bool = True):
        self.total = total
        self.chunk = b"g" * chunk
        self.content_length = content_length
        self.sent = 0
        self.finished = False
        self.completed = False

    def __call__(self, environ):
        headers = [("Content-Length", str(self.total))] if self.content_length else []
        return "200 OK", headers, self._body()

    def _body(self) -> Iterator[bytes]:
        try:
            while self.sent < self.total:
                piece = self.chunk[:self.total - self.sent]
                self.sent += len(piece)
                yield piece
            self.completed = True
        finally:
            self.finished = True


def gzip_of_zeros(decoded_size: int, member_size: int = 1024 * 1024) -> bytes:
    """A gzip body that inflates to ``decoded_size`` zero bytes, about 1/1000 of that on the wire.

    It is one small gzip member (``member_size`` zeros) repeated: a gzip stream
    may hold several members, and decoders inflate them one after the other.
    Cheap to build at any size, where compressing 1 GB would take seconds.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = compressor.compress(bytes(member_size)) + compressor.flush()
    return member * max(1, decoded_size // member_size)


def gzip_bomb(compressed: bytes) -> Callable[[dict], tuple]:
    """A 200 whose small gzip body decodes to something huge (a decompression bomb)."""
    def handler(environ):
        return "200 OK", [("Content-Encoding", "gzip")], compressed
    return handler


# --- TLS ----------------------------------------------------------------------------

def self_signed_context(host: str = "127.0.0.1") -> tuple[ssl.SSLContext, bytes]:
    """A server context with a self-signed certificate for ``host`` (no CA at all),
    and that certificate's PEM (to trust it explicitly)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "greenmon self-signed test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        alt_name = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt_name = x509.DNSName(host)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "wb") as handle:
            handle.write(cert_pem)
        with open(key_path, "wb") as handle:
            handle.write(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context, cert_pem


# --- Ports where nothing listens, at scale ----------------------------------------

def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            low, high = (int(part) for part in handle.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


class RefusedPorts:
    """``count`` loopback ports where nothing listens, so every connect is refused.

    Ports inside the kernel's ephemeral range are avoided: a connect to such a
    port can, rarely, be given that same port as its source and connect to
    itself (TCP simultaneous open), which at thousands of connects happens.
    Each candidate below the range is bound once to prove nothing holds it,
    then released. When there are not enough, the rest are held bound but not
    listening (refused as well, and the kernel never hands them out).
    """

    def __init__(self, count: int, start: int = 10_000):
        self.count = count
        self.start = start
        self.ports: list[int] = []
        self._held: list[socket.socket] = []

    def __enter__(self) -> "RefusedPorts":
        low, _ = _ephemeral_range()
        port = self.start
        while len(self.ports) < self.count and port < low:
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", port))
                self.ports.append(port)
            except OSError:
                pass
            finally:
                probe.close()
            port += 1
        while len(self.ports) < self.count:
            holder = socket.socket()
            holder.bind(("127.0.0.1", 0))
            self._held.append(holder)
            self.ports.append(holder.getsockname()[1])
        return self

    def __exit__(self, *exc_info) -> None:
        for holder in self._held:
            holder.close()


# --- A scripted keep-alive HTTP server ----------------------------------------------

RESET = "reset"    # close the connection with a TCP reset, no response
CLOSE = "close"    # close the connection cleanly, no response

_REASONS = {200: "OK", 500: "Internal Server Error", 503: "Service Unavailable"}


def _response(status: int) -> bytes:
    body = b"ok" if status == 200 else b"not ok"
    reason = _REASONS.get(status, "Status")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class ScriptedServer:
    """A keep-alive HTTP/1.1 server whose every answer is chosen by ``decide(path)``:
    a status code (int), RESET or CLOSE. ``requests`` counts requests per path.

    ``refuse()`` stops listening and drops open connections, keeping the port
    bound but not listening (connects are refused, and nobody else gets the
    port); ``listen_again()`` serves on the same port again.
    """

    def __init__(self, decide: Callable[[str], object]):
        self.decide = decide
        self.requests: Counter = Counter()
        self.port: int = 0
        self._server: StreamServer | None = None
        self._holder: socket.socket | None = None
        self._handlers: set = set()  # greenlets serving open connections

    def __enter__(self) -> "ScriptedServer":
        self._listen()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop()
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def refuse(self) -> None:
        self._stop()
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", self.port))
        self._holder = holder

    def listen_again(self) -> None:
        if self._holder is not None:
            self._holder.close()
            self._holder = None
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(1024)
        self.port = listener.getsockname()[1]
        self._server = StreamServer(listener, self._handle)
        self._server.start()

    def _stop(self) -> None:
        """Close the listener and every open connection (as a server process that dies would)."""
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
        # StreamServer without a pool does not kill its handlers: the keep-alive ones would live on.
        gevent.killall(list(self._handlers), block=True, timeout=1)

    def _handle(self, sock, address) -> None:
        buffer = b""
        self._handlers.add(gevent.getcurrent())
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")  # greenmon's GETs have no body
                path = head.split(b" ", 2)[1].decode("latin-1")
                self.requests[path] += 1
                action = self.decide(path)
                if action == RESET:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if action == CLOSE:
                    return
                sock.sendall(_response(int(action)))
        except OSError:
            pass
        finally:
            self._handlers.discard(gevent.getcurrent())
            sock.close()


class FlakyPlan:
    """``decide`` for a ScriptedServer: each request fails with probability ``rate``,
    independently, as a 503 or a reset (half each); otherwise 200.

    Each path draws from its own generator seeded with (seed, path): a target's
    requests are sequential, so its sequence of answers is the same in every
    run whatever order the sweep's checks happen to interleave in.
    """

    def __init__(self, seed: int, rate: float):
        self.seed = seed
        self.rate = rate
        self._rngs: dict[str, random.Random] = {}
        self.answers: Counter = Counter()  # 200 / 503 / RESET -> how many were given

    def __call__(self, path: str):
        rng = self._rngs.get(path)
        if rng is None:
            rng = self._rngs[path] = random.Random(f"{self.seed}:{path}")
        answer = 200
        if rng.random() < self.rate:
            answer = 503 if rng.random() < 0.5 else RESET
        self.answers[answer] += 1
        return answer


class Switch:
    """``decide`` for a ScriptedServer: 200 while ``up``, else the ``down`` answer."""

    def __init__(self, down: object = 500):
        self.up = True
        self.down = down

    def __call__(self, path: str):
        return 200 if self.up else self.down


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status (VmRSS)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
