"""The status page at /: what a person sees of a real Daemon served on 127.0.0.1 (statuspage
writes the HTML; views picks the rows, orders them and keeps them per target).

Rows by state, failures and burning budgets first, a strip of outcomes and a latency sparkline
per target, the filter (``?q=``) and the pages (``?page=``), a row that follows its target's
result, and hostile names, URLs and queries escaped. The same page in a real browser (the
filter as one types) is test_browser.py's; its headers (nosniff, the Content-Security-Policy)
are test_security.py's.
"""

from __future__ import annotations

import html as htmllib
import re

import pytest

from greenmon.views import PAGE_ROWS
from support.configs import BREAKER_OPENS_AT_ONCE
from support.daemon_helpers import daemon_config, running_daemon
from support.helpers import wait_until
from support.servers import HTTPFarm, reply


@pytest.fixture
def farm():
    routes = {"/ok": reply(body=b"fine"), "/broken": reply("500 Internal Server Error")}
    with HTTPFarm(routes) as server:
        yield server


def outcomes(running, name: str) -> int:
    series = running.daemon.store.series.get(name)
    return 0 if series is None else len(series.history)


def _state(row: str) -> str:
    """The first cell of a row: UP, DOWN, SKIPPED or PENDING."""
    return re.search(r"<td class='[a-z]*'>([A-Z]+)</td>", row)[1]


# --- Rows, their order and what they show -------------------------------------------------------

def _rows(html: str) -> dict[str, str]:
    """Table rows of the status page by target name (the second cell, before its URL line)."""
    rows = {}
    for row in re.findall(r"<tr data-search=[^>]*>(.*?)</tr>", html, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if len(cells) > 1:
            rows[cells[1].split("<div", 1)[0]] = row
    return rows


def test_status_page_lists_failures_first_with_breaker_state(farm):
    targets = [{"name": "aaa-healthy", "url": farm.url("/ok")},
               {"name": "mmm-healthy", "url": farm.url("/ok")},
               {"name": "zzz-broken", "url": farm.url("/broken")}]
    # A deadline no loaded machine reaches: a healthy target that failed would sort first.
    config = daemon_config(targets, timeout=10.0, extra=BREAKER_OPENS_AT_ONCE)
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        response = running.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    html = response.text
    for t in targets:
        assert t["name"] in html
    assert html.index("zzz-broken") < html.index("aaa-healthy") < html.index("mmm-healthy")
    rows = _rows(html)
    assert set(rows) == {"aaa-healthy", "mmm-healthy", "zzz-broken"}
    broken = rows["zzz-broken"]
    # DOWN after its failure; SKIPPED once the next sweep (0.3 s later) found its breaker open,
    # which on a loaded machine can come before the page is fetched. Either way: first, open.
    assert ">open<" in broken and _state(broken) in ("DOWN", "SKIPPED") and "http / 500" in broken
    assert ">closed<" in rows["aaa-healthy"] and "UP" in rows["aaa-healthy"]


def test_status_page_has_no_external_assets(farm):
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}])
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        html = running.get("/").text
    assert re.search(r"<html", html, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"@import|url\(\s*[\"']?(https?:)?//", html, re.I)


def test_status_page_escapes_target_names(farm):
    name = "<b>evil</b> & co"
    config = daemon_config([{"name": name, "url": farm.url("/broken")}])
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        html = running.get("/").text
    assert "&lt;b&gt;evil&lt;/b&gt; &amp; co" in html
    assert "<b>evil</b>" not in html


def test_targets_never_checked_are_pending():
    config = daemon_config([{"name": "first", "url": "http://127.0.0.1:9/a"},
                             {"name": "second", "url": "http://127.0.0.1:9/b"}])
    with running_daemon(config, start=False) as idle:
        html = idle.get("/").text
    rows = _rows(html)
    assert {name: _state(row) for name, row in rows.items()} == {"first": "PENDING", "second": "PENDING"}
    assert list(rows) == ["first", "second"]                 # config order when nothing burns
    assert "0 up (0 degraded), 0 down (0 skipped by open breakers) of 2 targets" in " ".join(html.split())
    assert "event loop lag: not measured yet" in html


def test_a_check_skipped_by_an_open_breaker_shows_as_skipped():
    with HTTPFarm({"/broken": reply("500 Internal Server Error")}) as farm:
        config = daemon_config([{"name": "down", "url": farm.url("/broken")}], extra=BREAKER_OPENS_AT_ONCE)
        with running_daemon(config) as running:
            wait_until(lambda: outcomes(running, "down") >= 2, 5, message="a failure, then a skip")
            html = running.get("/").text
    row = _rows(html)["down"]
    assert _state(row) == "SKIPPED" and "<td class='skip'>" in row and ">open<" in row
    assert "http / 500" in row                                  # why it was opened
    assert "class='b'><title>" in row                           # the failure that opened it: red
    assert re.search(r"class='s'><title>[^<]*http/500 \(skipped\)</title>", row), row   # then amber
    assert "1 down (1 skipped by open breakers)" in " ".join(html.split())


def test_a_row_follows_its_targets_result():
    """Rows are kept per target between pages: a new result makes a new row."""
    up = {"now": True}

    def switch(environ):
        return (reply() if up["now"] else reply("500 Internal Server Error"))(environ)
    with HTTPFarm({"/switch": switch}) as farm:
        config = daemon_config([{"name": "flips", "url": farm.url("/switch")}])
        with running_daemon(config) as running:
            running.wait_sweeps(1)
            before = _rows(running.get("/").text)["flips"]
            up["now"] = False
            wait_until(lambda: not running.daemon.store.series["flips"].last.ok, 5, message="a failed check")
            after = _rows(running.get("/").text)["flips"]
    assert _state(before) == "UP" and "http / 500" not in before
    assert _state(after) == "DOWN" and "http / 500" in after


def test_targets_burning_their_budget_faster_come_first():
    count = {"n": 0}

    def every_other(environ):
        count["n"] += 1
        return (reply() if count["n"] % 2 else reply("503 Service Unavailable"))(environ)
    routes = {"/ok": reply(), "/sometimes": every_other, "/never": reply("503 Service Unavailable")}
    with HTTPFarm(routes) as farm:
        config = daemon_config([{"name": "healthy", "url": farm.url("/ok")},
                                 {"name": "sometimes", "url": farm.url("/sometimes")},
                                 {"name": "never", "url": farm.url("/never")}], interval=0.1)
        with running_daemon(config) as running:
            wait_until(lambda: min(outcomes(running, name) for name in ("healthy", "sometimes", "never")) >= 4,
                       5, message="four outcomes of each")
            html = running.get("/").text
    assert list(_rows(html)) == ["never", "sometimes", "healthy"]


def test_the_status_page_has_a_strip_and_a_sparkline_per_target_burning_first():
    with HTTPFarm({"/ok": reply(), "/bad": reply("503 Service Unavailable")}) as farm:
        config = daemon_config([{"name": "aaa-ok", "url": farm.url("/ok")},
                                 {"name": "zzz-bad", "url": farm.url("/bad")}], interval=0.1)
        with running_daemon(config) as running:
            wait_until(lambda: len(running.daemon.store.series["zzz-bad"].history) >= 3, 5,
                       message="three outcomes")
            html = running.get("/").text
            filtered = running.get("/?q=aaa").text
    assert html.index("zzz-bad") < html.index("aaa-ok")     # burning its budget: first
    assert len(re.findall(r"<svg class='strip'", html)) == 2
    assert len(re.findall(r"<svg class='spark'", html)) == 2
    assert "class='b'><title>" in html      # a failure on the strip, its class on hover
    assert "zzz-bad" not in filtered and "aaa-ok" in filtered   # the filter, without JavaScript


def test_a_thousand_targets_page_in_pages():
    config = daemon_config([{"name": f"t{i:05d}", "url": f"http://127.0.0.1:9/{i}"} for i in range(1_000)])
    with running_daemon(config, start=False) as idle:
        first = idle.get("/").text
        last = idle.get("/?page=5").text
    assert first.count("<tr data-search") == PAGE_ROWS
    assert "t00000" in first and "t00999" not in first
    assert "t00999" in last and "page=4" in last


def test_a_hostile_url_is_escaped_in_the_row_and_its_search_text(farm):
    url = farm.url("/ok?x='\"><svg/onload=alert(1)>")
    config = daemon_config([{"name": "api", "url": url}])
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        html = running.get("/").text
    assert "<svg/onload" not in html and "\"><svg" not in html
    assert htmllib.escape(url) in html                                      # the URL line
    assert f'data-search="{htmllib.escape(("api " + url).lower())}"' in html  # the filter's text


def test_the_query_is_escaped_where_the_page_shows_it_again(farm):
    query = '"><script>alert(1)</script>'
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}])
    with running_daemon(config, start=False) as idle:
        html = idle.get("/", params={"q": query}).text
    assert "<script>alert(1)" not in html
    assert f'value="{htmllib.escape(query)}"' in html


# --- The filter and the pages ---------------------------------------------------------------------

def test_the_filter_matches_the_url_too_whatever_the_case(farm):
    config = daemon_config([{"name": "alpha", "url": farm.url("/ok?team=payments")},
                             {"name": "beta", "url": farm.url("/ok?team=search")}])
    with running_daemon(config, start=False) as idle:
        by_url = idle.get("/", params={"q": "Team=SEARCH"}).text
        by_name = idle.get("/", params={"q": "ALPHA"}).text
        nothing = idle.get("/", params={"q": "checkout"}).text
    assert list(_rows(by_url)) == ["beta"] and "1 shown" in by_url
    assert list(_rows(by_name)) == ["alpha"]
    assert _rows(nothing) == {} and "0 shown" in nothing


@pytest.fixture(scope="module")
def paged():
    """Two and a quarter pages of targets, never checked, served at once."""
    config = daemon_config([{"name": f"t{i:05d}", "url": f"http://127.0.0.1:9/{i}"}
                             for i in range(2 * PAGE_ROWS + 50)])
    with running_daemon(config, start=False) as idle:
        yield idle


@pytest.mark.parametrize("page, first, shown", [
    ("1", 0, PAGE_ROWS), ("2", PAGE_ROWS, PAGE_ROWS), ("3", 2 * PAGE_ROWS, 50),
    ("99", 2 * PAGE_ROWS, 50),          # past the end: the last page
    ("0", 0, PAGE_ROWS), ("-1", 0, PAGE_ROWS), ("two", 0, PAGE_ROWS),     # not a page: the first
], ids=["first", "second", "last", "past-the-end", "zero", "negative", "not-a-number"])
def test_a_page_shows_its_share_of_the_rows(paged, page, first, shown):
    html = paged.get("/", params={"page": page}).text
    assert list(_rows(html)) == [f"t{i:05d}" for i in range(first, first + shown)]
    number = first // PAGE_ROWS + 1
    assert f"<b>{number}</b>" in html                            # the page shown is not a link
    assert f"page={number}'" not in html
    assert all(f"href='?page={n}'" in html for n in {1, 2, 3} - {number})


def test_pages_keep_the_filter_and_one_page_has_no_links(paged):
    filtered = paged.get("/", params={"q": "T00", "page": "2"}).text
    one_page = paged.get("/", params={"q": "t004"}).text
    assert list(_rows(filtered))[0] == f"t{PAGE_ROWS:05d}"
    assert "href='?q=T00&amp;page=1'" in filtered and "href='?q=T00&amp;page=3'" in filtered
    assert f"{2 * PAGE_ROWS + 50} shown" in filtered
    assert len(_rows(one_page)) == 50 and "pages:" not in one_page
