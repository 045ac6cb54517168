"""The transport: one shared session for every target, so what one request adds must stay
with that request. Real requests to a local server."""

from __future__ import annotations

from greenmon.engine import Engine
from helpers import config_for
from servers import HTTPFarm, reply


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
        config = config_for([{"name": "post", "url": farm.url("/post"), "method": "POST",
                              "body": '{"ping": true}'}]
                            + [{"name": f"get{i}", "url": farm.url("/get")} for i in range(3)],
                            timeout=2.0)
        for _ in range(2):
            results = sweep(config)
        assert all(result.ok for result in results.values()), results
        assert farm.hits("/post") == 2
    assert len(lengths) == 6
    assert all(length in (None, "") for length in lengths), lengths


def test_a_post_sends_its_body_with_its_own_length():
    seen = []

    def record(environ):
        seen.append((environ.get("CONTENT_LENGTH"), environ["wsgi.input"].read()))
        return reply()(environ)

    with HTTPFarm({"/post": record}) as farm:
        config = config_for([{"name": "a", "url": farm.url("/post"), "method": "POST", "body": "abc"},
                             {"name": "b", "url": farm.url("/post"), "method": "POST", "body": "hello"}])
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
        config = config_for([{"name": f"t{i}", "url": farm.url("/a")} for i in range(4)])
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
