"""Error classes end to end: every class and detail produced by a real local server (README, "Error classes").

One table of (server, target, expected class/detail/status); each case is one
check with no retries against a server started for it on 127.0.0.1. Then the
pure retry predicate errors.Failure.retryable, table-driven.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import ssl
import time

import pytest

from greenmon.classify import classify_exception
from greenmon.errors import (AUTH, CONNECTION, CONTENT, ERROR_CLASSES, HTTP, TIMEOUT, Failure,
                             status_failure, timeout_failure)
from support.helpers import check_one
from support.servers import (BacklogFull, HTTPFarm, RawServer, closed_port, never_answer, redirect, reply,
                             reset_after_head, send_raw, streamed, tls_server_context, trickle)

# verify_tls = false cases make urllib3 warn on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

TIMEOUT_S = 1.0
# A failed check must end within its deadline plus this: room for a loaded 2-core machine,
# far below what a missing deadline costs (a server silent for 10 s, a 200 s trickle).
SLACK_S = 1.5

# --- Case builders: each is a context manager yielding (target dict, url) ----

@contextlib.contextmanager
def farm(handler, path="/t", **target):
    with HTTPFarm({path: handler}) as server:
        url = server.url(path)
        yield {"url": url, **target}, url


@contextlib.contextmanager
def raw(handler, scheme="http", **target):
    with RawServer(handler) as server:
        url = f"{scheme}://127.0.0.1:{server.port}/t"
        yield {"url": url, **target}, url


@contextlib.contextmanager
def nothing_listening(**target):
    url = f"http://127.0.0.1:{closed_port()}/t"
    yield {"url": url, **target}, url


@contextlib.contextmanager
def unresolvable(**target):
    # .invalid never resolves (RFC 6761); conftest points c-ares at 127.0.0.1, so no query leaves the host.
    url = "http://greenmon-test.invalid/t"
    yield {"url": url, **target}, url


@contextlib.contextmanager
def hanging_connect(**target):
    with BacklogFull() as backlog:
        if backlog.port is None:
            pytest.skip("this kernel accepts connections beyond a full listen backlog; "
                        "cannot make a connect hang on 127.0.0.1")
        url = f"http://127.0.0.1:{backlog.port}/t"
        yield {"url": url, **target}, url


HEADERS_ONLY = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
GARBAGE_STATUS = b"garbage that is not a status line\r\n\r\n"
CUT_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly twenty bytes...."
BAD_CHUNKS = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\nxx\r\n0\r\n\r\n"
NOT_GZIP = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n"
            b"this is not gzip....")
NON_TLS_SERVER_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def plain_http_answer(sock):
    """A plain HTTP server answering whatever arrives (here: a TLS ClientHello)."""
    sock.recv(4096)
    sock.sendall(NON_TLS_SERVER_REPLY)


# (id, case builder, monitor overrides, class, detail, status_code)
PLAIN_CASES = [
    ("timeout-read", lambda: raw(never_answer), {}, TIMEOUT, "read", None),
    ("timeout-deadline-headers-then-silence", lambda: raw(send_raw(HEADERS_ONLY, then_sleep=10)), {},
     TIMEOUT, "deadline", None),
    ("timeout-connect-backlog", hanging_connect, {}, TIMEOUT, "connect", None),
    ("timeout-connect-tls-handshake", lambda: raw(never_answer, scheme="https"), {},
     TIMEOUT, "connect", None),
    ("connection-refused", nothing_listening, {}, CONNECTION, "refused", None),
    ("connection-dns", unresolvable, {}, CONNECTION, "dns", None),
    ("connection-reset", lambda: raw(reset_after_head), {}, CONNECTION, "reset", None),
    ("connection-protocol-status-line", lambda: raw(send_raw(GARBAGE_STATUS)), {},
     CONNECTION, "protocol", None),
    ("connection-protocol-cut-body", lambda: raw(send_raw(CUT_BODY)), {}, CONNECTION, "protocol", None),
    ("connection-protocol-bad-chunks", lambda: raw(send_raw(BAD_CHUNKS)), {},
     CONNECTION, "protocol", None),
    ("connection-protocol-bad-gzip", lambda: raw(send_raw(NOT_GZIP)), {}, CONNECTION, "protocol", None),
    ("connection-tls-plain-server", lambda: raw(plain_http_answer, scheme="https"), {},
     CONNECTION, "tls", None),
    ("auth-401", lambda: farm(reply("401 Unauthorized", "who are you")), {}, AUTH, "401", 401),
    ("auth-403", lambda: farm(reply("403 Forbidden", "no")), {}, AUTH, "403", 403),
    ("http-500", lambda: farm(reply("500 Internal Server Error", "boom")), {}, HTTP, "500", 500),
    ("http-404", lambda: farm(reply("404 Not Found", "gone")), {}, HTTP, "404", 404),
    ("http-503", lambda: farm(reply("503 Service Unavailable", "later")), {}, HTTP, "503", 503),
    ("content-expect-body", lambda: farm(reply(body='{"status": "degraded"}'),
                                         expect_body='"status": "ok"'), {}, CONTENT, "expect_body", 200),
    ("content-reject-body", lambda: farm(reply(body="all good, no ERROR here? ERROR"),
                                         reject_body="ERROR"), {}, CONTENT, "reject_body", 200),
    ("content-body-too-large-fixed-length", lambda: farm(reply(body=b"x" * 1001)),
     {"max_body_bytes": 1000}, CONTENT, "body_too_large", 200),
    ("content-body-too-large-chunked", lambda: farm(streamed(b"y" * 300, 10)),
     {"max_body_bytes": 1000}, CONTENT, "body_too_large", 200),
    ("content-redirect-loop", lambda: farm(redirect("/t")), {}, CONTENT, "redirects", None),
]


XFAIL_CASES: dict = {}


@pytest.mark.parametrize("build, monitor, error_class, detail, status_code",
                         [pytest.param(*case[1:], id=case[0], marks=XFAIL_CASES.get(case[0], ()))
                          for case in PLAIN_CASES])
def test_failure_is_classified(build, monitor, error_class, detail, status_code):
    with build() as (target, url):
        started = time.monotonic()
        result = check_one(target, monitor=monitor, timeout=TIMEOUT_S)
        elapsed = time.monotonic() - started
    assert (result.ok, result.error_class, result.detail) == (False, error_class, detail)
    assert result.status_code == status_code
    assert result.attempts == 1
    assert result.error and url not in result.error  # a message of greenmon's own, no URL in it
    assert elapsed < TIMEOUT_S + SLACK_S


def test_deadline_ends_a_trickling_body_near_the_timeout_not_after_the_body():
    # 1000 bytes at one byte per 200 ms would take 200 s; each byte arrives well
    # within the socket timeout, so only the total deadline can stop it.
    with RawServer(trickle(0.2, 1000)) as server:
        started = time.monotonic()
        result = check_one({"url": server.url("/t")}, timeout=1.0)
        elapsed = time.monotonic() - started
    assert (result.error_class, result.detail) == (TIMEOUT, "deadline")
    assert 0.9 <= elapsed < 1.0 + SLACK_S
    assert 0.9 <= result.latency_s < 1.0 + SLACK_S


def test_read_timeout_ends_at_the_timeout():
    with RawServer(never_answer) as server:
        result = check_one({"url": server.url("/t")}, timeout=0.5)
    assert (result.error_class, result.detail) == (TIMEOUT, "read")
    assert 0.45 <= result.latency_s < 0.5 + SLACK_S


def test_body_of_exactly_max_body_bytes_is_accepted():
    with HTTPFarm({"/t": reply(body=b"x" * 1000)}) as server:
        result = check_one({"url": server.url("/t")}, monitor={"max_body_bytes": 1000})
    assert result.ok, result
    assert result.body_bytes == 1000


@pytest.mark.parametrize("status, error_class, detail", [
    pytest.param("200 OK", CONTENT, "body_too_large", id="expected-status"),
    pytest.param("503 Service Unavailable", HTTP, "503", id="503"),
    pytest.param("500 Internal Server Error", HTTP, "500", id="500"),
    pytest.param("401 Unauthorized", AUTH, "401", id="401"),
])
def test_large_body_of_an_unexpected_status_is_classified_by_its_status(status, error_class, detail):
    # A 5 kB error page (think: a proxy's HTML 503 page) with max_body_bytes = 1000.
    with HTTPFarm({"/t": reply(status, b"<html>" + b"m" * 5000)}) as server:
        result = check_one({"url": server.url("/t")}, monitor={"max_body_bytes": 1000})
    assert (result.error_class, result.detail) == (error_class, detail)
    assert result.status_code == int(status.split()[0])


def test_server_closing_without_a_response_is_a_connection_failure():
    with RawServer(send_raw(b"")) as server:
        result = check_one({"url": server.url("/t")}, timeout=TIMEOUT_S)
    assert result.error_class == CONNECTION
    assert result.detail in ("closed", "reset", "protocol")


# --- TLS ---------------------------------------------------------------------

def _past(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)


TLS_CASES = [
    # (id, certificate identities, issue_cert kwargs, target keys (CA_PEM: the trustme CA file), ok,
    #  detail, what the error must say: detail is "tls" for all, the message tells them apart)
    ("untrusted-self-signed-ca", ("127.0.0.1",), {}, {}, False, "tls",
     r"^TLS certificate rejected: unable to get local issuer certificate"),
    ("untrusted-but-verify-tls-false", ("127.0.0.1",), {}, {"verify_tls": False}, True, None, None),
    ("ca-file-trusts-it", ("127.0.0.1",), {}, {"ca_file": "CA_PEM"}, True, None, None),
    ("wrong-host-name", ("other.example",), {}, {"ca_file": "CA_PEM"}, False, "tls",
     r"^TLS certificate rejected: .*mismatch"),
    ("wrong-host-name-verify-tls-false", ("other.example",), {}, {"verify_tls": False}, True, None, None),
    ("expired", ("127.0.0.1",), {"not_before": _past(30), "not_after": _past(1)},
     {"ca_file": "CA_PEM"}, False, "tls", r"^TLS certificate rejected: certificate has expired"),
    ("expired-verify-tls-false", ("127.0.0.1",), {"not_before": _past(30), "not_after": _past(1)},
     {"verify_tls": False}, True, None, None),
]


@pytest.mark.parametrize("identities, issue, keys, ok, detail, why",
                         [pytest.param(*case[1:], id=case[0], marks=())
                          for case in TLS_CASES])
def test_tls_certificate_checks(ca, ca_pem, identities, issue, keys, ok, detail, why):
    context = tls_server_context(ca, *identities, **issue)
    keys = {key: (ca_pem if value == "CA_PEM" else value) for key, value in keys.items()}
    with HTTPFarm({"/t": reply(body="secure")}, ssl_context=context) as server:
        url = server.url("/t")
        result = check_one({"url": url, **keys}, timeout=TIMEOUT_S)
        hits = server.hits("/t")
    assert result.ok is ok, result
    if ok:
        assert (result.status_code, result.error_class, hits) == (200, None, 1)
    else:
        assert (result.error_class, result.detail, result.status_code) == (CONNECTION, detail, None)
        assert re.search(why, result.error), result.error
        assert hits == 0  # the request never got past the handshake
        assert url not in result.error


def test_monitor_ca_file_applies_to_every_target(ca, ca_pem):
    context = tls_server_context(ca, "127.0.0.1")
    with HTTPFarm({"/t": reply(body="secure")}, ssl_context=context) as server:
        result = check_one({"url": server.url("/t")}, monitor={"ca_file": ca_pem})
    assert result.ok, result


@pytest.mark.parametrize("monitor_verify, target_keys, ok", [
    pytest.param(False, {}, True, id="monitor-false"),
    pytest.param(True, {"verify_tls": False}, True, id="target-false-wins"),
    pytest.param(False, {"verify_tls": True}, False, id="target-true-wins"),
])
def test_verify_tls_target_overrides_monitor(ca, monitor_verify, target_keys, ok):
    context = tls_server_context(ca, "127.0.0.1")
    with HTTPFarm({"/t": reply(body="secure")}, ssl_context=context) as server:
        result = check_one({"url": server.url("/t"), **target_keys}, monitor={"verify_tls": monitor_verify})
    assert result.ok is ok, result
    if not ok:
        assert (result.error_class, result.detail) == (CONNECTION, "tls")


def test_classify_a_real_tls_handshake_error():
    """Pure: the SSLError of a handshake with a server that speaks plain HTTP (no network)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="example.test")
    incoming.write(NON_TLS_SERVER_REPLY)
    with pytest.raises(ssl.SSLError) as caught:
        client.do_handshake()
    assert isinstance(caught.value.reason, str)  # what trips classify._chain
    failure = classify_exception(caught.value, 1.0)
    assert (failure.error_class, failure.detail, failure.retryable) == (CONNECTION, "tls", False)


def test_a_tls_read_that_timed_out_is_a_timeout_not_a_tls_failure():
    """Pure: the chain urllib3 and requests build when a read on a TLS socket with a timeout
    expires (requests' ReadTimeout <- urllib3's ReadTimeoutError <- ssl.SSLError "The read
    operation timed out"). The SSLError in it must not make it a `tls` failure, which is
    never retried: it is a read timeout."""
    import requests.exceptions
    import urllib3.exceptions

    def read_on_tls():
        raise ssl.SSLError("The read operation timed out")

    def urllib3_read():
        try:
            read_on_tls()
        except ssl.SSLError as error:   # as urllib3's HTTPConnectionPool._raise_timeout does
            raise urllib3.exceptions.ReadTimeoutError(None, "/t", "Read timed out.") from error

    with pytest.raises(requests.exceptions.ReadTimeout) as caught:
        try:
            urllib3_read()
        except urllib3.exceptions.ReadTimeoutError as error:   # as requests' HTTPAdapter.send does
            raise requests.exceptions.ReadTimeout(error)
    failure = classify_exception(caught.value, 1.0)
    assert (failure.error_class, failure.detail, failure.retryable) == (TIMEOUT, "read", True)



# --- Redirects ----------------------------------------------------------------

def test_a_short_redirect_chain_is_followed():
    routes = {"/a": redirect("/b"), "/b": redirect("/c"), "/c": reply(body="landed")}
    with HTTPFarm(routes) as server:
        result = check_one({"url": server.url("/a"), "expect_body": "landed"})
        hits = [server.hits(path) for path in ("/a", "/b", "/c")]
    assert result.ok, result
    assert hits == [1, 1, 1]


def test_redirect_loop_stops_after_ten_redirects():
    with HTTPFarm({"/t": redirect("/t")}) as server:
        result = check_one({"url": server.url("/t")})
        hits = server.hits("/t")
    assert (result.error_class, result.detail) == (CONTENT, "redirects")
    assert hits == 11  # the first request and at most 10 redirects


# --- Failure.retryable: the pure predicate --------------------------------------

RETRYABLE = [
    (TIMEOUT, "connect", True),
    (TIMEOUT, "read", True),
    (TIMEOUT, "deadline", True),
    (CONNECTION, "refused", True),
    (CONNECTION, "dns", True),
    (CONNECTION, "reset", True),
    (CONNECTION, "protocol", True),
    (CONNECTION, "closed", True),
    (CONNECTION, "unreachable", True),
    (CONNECTION, "other", True),
    (CONNECTION, "tls", False),
    (AUTH, "401", False),
    (AUTH, "403", False),
    (HTTP, "429", True),
    (HTTP, "502", True),
    (HTTP, "503", True),
    (HTTP, "504", True),
    (HTTP, "500", False),
    (HTTP, "501", False),
    (HTTP, "404", False),
    (HTTP, "200", False),  # 200 outside expect_status
    (HTTP, "302", False),
    (CONTENT, "expect_body", False),
    (CONTENT, "reject_body", False),
    (CONTENT, "body_too_large", False),
    (CONTENT, "redirects", False),
]


@pytest.mark.parametrize("error_class, detail, retryable", RETRYABLE,
                         ids=[f"{c}-{d}" for c, d, _ in RETRYABLE])
def test_failure_retryable(error_class, detail, retryable):
    assert Failure(error_class, detail, "message").retryable is retryable


def test_every_class_is_covered_by_the_retry_table():
    assert {c for c, _, _ in RETRYABLE} == set(ERROR_CLASSES)


@pytest.mark.parametrize("status, error_class, retryable", [
    (401, AUTH, False), (403, AUTH, False), (500, HTTP, False), (503, HTTP, True),
    (429, HTTP, True), (418, HTTP, False),
])
def test_status_failure(status, error_class, retryable):
    failure = status_failure(status, "Reason Phrase")
    assert (failure.error_class, failure.detail, failure.retryable) == (error_class, str(status), retryable)
    assert failure.message == f"HTTP {status} Reason Phrase"


@pytest.mark.parametrize("phase", ["connect", "read", "deadline"])
def test_timeout_failure(phase):
    failure = timeout_failure(phase, 2.5)
    assert (failure.error_class, failure.detail, failure.retryable) == (TIMEOUT, phase, True)
    assert "2.5s" in failure.message
