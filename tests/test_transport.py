"""The transport: one shared session for every target, so what one request adds (a body's length,
a cookie) must stay with that request; the headers every request carries; bodies decoded
before they are read. Real requests to a local server."""

from __future__ import annotations

import gzip

import greenmon
from greenmon.config import parse_config
from greenmon.engine import Engine
from support.configs import config_text
from support.servers import HTTPFarm, RawServer, read_request_head, redirect, reply


def sweep(config):
    engine = Engine(config)
    try:
        return {result.target: result for result in engine.sweep()}
    finally:
        engine.close()


def test_a_post_body_does_not_leave_its_content_length_on_other_targets_requests():
    """A POST with a body and no headers of its own starts from the session's shared headers;
    its Content-Length must not reach the GETs checked after it (a server would wait for a
    body that never comes)."""
    lengths = []

    def record(environ):
        lengths.append(environ.get("CONTENT_LENGTH"))   # not among the farm's HTTP_ headers
        return reply()(environ)

    with HTTPFarm({"/post": reply(), "/get": record}) as farm:
        config = parse_config(config_text([{"name": "post", "url": farm.url("/post"), "method": "POST",
                                            "body": '{"ping": true}'}]
                                          + [{"name": f"get{i}", "url": farm.url("/get")} for i in range(3)],
                                          timeout=2.0), "<test>")
        for _ in range(2):
            results = sweep(config)
        assert all(result.ok for result in results.values()), results
        assert farm.hits("/post") == 2
    assert len(lengths) == 6
    assert all(length in (None, "") for length in lengths), lengths


def test_the_request_line_carries_the_path_and_query_as_requests_sends_them():
    """The request line's target is requests' own (path_url, a leading "//" made one "/"),
    for every form of path: none, a query without a path, a doubled slash, a fragment (never
    sent), characters requests quotes."""
    lines = []

    def record(sock):
        lines.append(read_request_head(sock).split(b"\r\n", 1)[0].decode())
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    paths = {"none": "", "query": "?q=1", "double": "//a//b?x=1", "fragment": "/f?k=v#part",
             "quoted": "/caf\u00e9|x"}
    with RawServer(record) as server:
        base = server.url("")
        config = parse_config(config_text([{"name": name, "url": base + path} for name, path in paths.items()],
                                          timeout=5.0, monitor={"concurrency": 1}), "<test>")
        results = sweep(config)
    assert all(result.ok for result in results.values()), results
    assert lines == ["GET / HTTP/1.1", "GET /?q=1 HTTP/1.1", "GET /a//b?x=1 HTTP/1.1",
                     "GET /f?k=v HTTP/1.1", "GET /caf%C3%A9%7Cx HTTP/1.1"]


def test_a_post_sends_its_body_with_its_own_length():
    seen = []

    def record(environ):
        seen.append((environ.get("CONTENT_LENGTH"), environ["wsgi.input"].read()))
        return reply()(environ)

    with HTTPFarm({"/post": record}) as farm:
        config = parse_config(config_text(
            [{"name": "a", "url": farm.url("/post"), "method": "POST", "body": "abc"},
             {"name": "b", "url": farm.url("/post"), "method": "POST", "body": "hello"}]), "<test>")
        results = sweep(config)
    assert all(result.ok for result in results.values())
    assert sorted(seen) == [("3", b"abc"), ("5", b"hello")]


def test_connections_are_kept_and_reused_across_sweeps():
    """Pools start empty (no placeholders) and keep what checks return: a second sweep
    reuses the first one's connections instead of opening new ones."""
    ports = []

    def record(environ):
        ports.append(environ["REMOTE_PORT"])
        return reply()(environ)

    with HTTPFarm({"/a": record}) as farm:
        config = parse_config(config_text([{"name": f"t{i}", "url": farm.url("/a")} for i in range(4)]),
                              "<test>")
        engine = Engine(config)
        try:
            first = engine.sweep()
            opened = set(ports)
            second = engine.sweep()
        finally:
            engine.close()
    assert all(result.ok for result in first + second)
    assert len(ports) == 8 and 1 <= len(opened) <= 4
    assert set(ports[4:]) <= opened, (ports, opened)


def test_no_cookie_is_ever_sent_back_not_even_along_a_redirect():
    """Targets share one session: a cookie one of them sets must reach neither the others nor
    its own next check, nor the next hop of its redirect."""
    sets_cookie = [("Set-Cookie", "session=s3cret; Path=/")]
    with HTTPFarm({"/login": reply("302 Found", b"", headers=sets_cookie + [("Location", "/landing")]),
                   "/landing": reply(headers=[("Set-Cookie", "seen=1; Path=/")]),
                   "/bounce": redirect("/elsewhere"), "/elsewhere": reply(),
                   "/plain": reply(headers=sets_cookie)}) as farm:
        config = parse_config(config_text([{"name": "login", "url": farm.url("/login")},
                                           {"name": "bounce", "url": farm.url("/bounce")},
                                           {"name": "plain", "url": farm.url("/plain")}]), "<test>")
        for _ in range(2):
            results = sweep(config)
        assert all(result.ok for result in results.values()), results
        sent = {path: [headers.get("Cookie") for _, headers in farm.requests[path]]
                for path in ("/login", "/landing", "/bounce", "/elsewhere", "/plain")}
    assert sent == {path: [None, None] for path in sent}


def test_the_session_headers_and_a_targets_own():
    seen = {}

    def record(name):
        def handler(environ):
            seen[name] = {key: environ.get(key) for key in ("HTTP_USER_AGENT", "HTTP_ACCEPT",
                                                            "HTTP_ACCEPT_ENCODING")}
            return reply()(environ)
        return handler
    with HTTPFarm({"/default": record("default"), "/own": record("own")}) as farm:
        own_headers = {"User-Agent": "mine/2", "Accept": "text/plain"}
        targets = [{"name": "default", "url": farm.url("/default")},
                   {"name": "own", "url": farm.url("/own"), "headers": own_headers}]
        default = sweep(parse_config(config_text(targets), "<test>"))
        first = dict(seen)
        configured = sweep(parse_config(config_text(targets, monitor={"user_agent": "probe/1"}), "<test>"))
    assert all(result.ok for result in [*default.values(), *configured.values()])
    assert first["default"] == {"HTTP_USER_AGENT": f"greenmon/{greenmon.__version__}", "HTTP_ACCEPT": "*/*",
                                "HTTP_ACCEPT_ENCODING": "gzip, deflate"}
    assert seen["default"]["HTTP_USER_AGENT"] == "probe/1"                # monitor.user_agent
    assert first["own"]["HTTP_USER_AGENT"] == seen["own"]["HTTP_USER_AGENT"] == "mine/2"   # the target's wins
    assert first["own"]["HTTP_ACCEPT"] == "text/plain"


def test_a_gzip_body_is_decoded_before_it_is_matched_and_counted():
    body = b"status: all systems healthy\n" * 100
    with HTTPFarm({"/gz": reply(body=gzip.compress(body), headers=[("Content-Encoding", "gzip")])}) as farm:
        config = parse_config(config_text([{"name": "gz", "url": farm.url("/gz"),
                                            "expect_body": "all systems healthy"}]), "<test>")
        result = sweep(config)["gz"]
    assert result.ok, result
    assert result.body_bytes == len(body)
