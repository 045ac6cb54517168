"""The status page in a real browser: headless Chromium driven by Selenium through chromedriver.

The daemon is the real command (``python -m greenmon``) against local servers;
the browser loads its page from 127.0.0.1 and nothing else (background
networking off). What a person sees is checked: a strip and a sparkline for
every target, the filter box narrowing the rows as one types (the page's one
inline script, allowed by its hash in the Content-Security-Policy), and no
error in the browser's console (a CSP violation would be one).

Debian's chromium and chromium-driver provide the browser; without them the
tests skip, saying how to install them, unless GREENMON_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import os
import shutil

import pytest

from support.configs import config_text
from support.daemon_helpers import DaemonProcess, value
from support.servers import HTTPFarm, delayed, reply

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)
REQUIRE_ENV = "GREENMON_REQUIRE_BROWSER"


def _binary(names) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver = _binary(CHROMIUM), _binary(DRIVER)
    if not (chromium and driver):
        reason = "chromium and chromedriver not found: apt-get install chromium chromium-driver"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1600,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service
    driver_ = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    driver_.set_page_load_timeout(30)
    try:
        yield driver_
    finally:
        driver_.quit()


TARGETS = ["alpha-api", "beta-api", "gamma-broken", "delta-slow"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser")
    routes = {"/ok": reply(), "/broken": reply("503 Service Unavailable"), "/slow": delayed(0.2)}
    with HTTPFarm(routes) as farm:
        targets = [{"name": "alpha-api", "url": farm.url("/ok")}, {"name": "beta-api", "url": farm.url("/ok")},
                   {"name": "gamma-broken", "url": farm.url("/broken")},
                   # Up, but slower than its degraded_latency: degraded on every check.
                   {"name": "delta-slow", "url": farm.url("/slow"), "degraded_latency": 0.1}]
        path = workdir / "greenmon.toml"
        path.write_text(config_text(targets, interval=0.5, timeout=0.5), encoding="utf-8")
        with DaemonProcess(path, workdir) as running:
            running.wait_ready()
            running.wait_metric(lambda t: all(sum(value(t, "greenmon_slo_checks_total", target=n, result=r)
                                                  or 0 for r in ("good", "slow", "bad")) >= 4
                                              for n in TARGETS), timeout=15,
                                message="four checks of every target")
            yield running


def rows(browser, visible_only: bool = False) -> dict:
    """The table's rows by target name (the first line of the second cell)."""
    from selenium.webdriver.common.by import By
    found = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr"):
        if visible_only and not row.is_displayed():
            continue
        cells = row.find_elements(By.TAG_NAME, "td")
        found[cells[1].text.split("\n")[0]] = row
    return found


def test_every_target_has_a_strip_and_a_sparkline(browser, daemon):
    from selenium.webdriver.common.by import By
    browser.get(daemon.url("/"))
    found = rows(browser)
    assert set(found) == set(TARGETS)
    for name, row in found.items():
        strips = row.find_elements(By.CSS_SELECTOR, "svg.strip rect")
        assert len(strips) >= 4, name        # one cell per kept outcome
        spark = row.find_elements(By.CSS_SELECTOR, "svg.spark polyline")
        assert len(spark) == 1 and spark[0].get_attribute("points"), name
        assert row.find_elements(By.CSS_SELECTOR, "svg.spark line.slo"), name   # the objective
    # The broken target burns its budget: it comes first, its failures in red.
    first = browser.find_element(By.CSS_SELECTOR, "#targets tbody tr")
    assert "gamma-broken" in first.text
    assert first.find_elements(By.CSS_SELECTOR, "svg.strip rect.b")


def test_the_filter_narrows_the_rows_as_one_types(browser, daemon):
    from selenium.webdriver.common.by import By
    browser.get(daemon.url("/"))
    box = browser.find_element(By.ID, "filter")
    assert set(rows(browser, visible_only=True)) == set(TARGETS)
    box.send_keys("beta")
    assert set(rows(browser, visible_only=True)) == {"beta-api"}
    box.clear()
    box.send_keys("-api")   # alpha-api and beta-api (the others are named -broken and -slow)
    assert set(rows(browser, visible_only=True)) == {"alpha-api", "beta-api"}


def test_the_filter_works_without_javascript_too(browser, daemon):
    browser.get(daemon.url("/?q=delta"))
    assert set(rows(browser)) == {"delta-slow"}


def test_a_degraded_target_has_its_own_colour_and_its_own_filter(browser, daemon):
    from selenium.webdriver.common.by import By
    browser.get(daemon.url("/"))
    found = rows(browser)
    states = {name: row.find_element(By.TAG_NAME, "td") for name, row in found.items()}
    assert states["delta-slow"].text == "DEGRADED" and states["alpha-api"].text == "UP"
    colour = {name: cell.value_of_css_property("color") for name, cell in states.items()}
    assert len({colour["delta-slow"], colour["alpha-api"], colour["gamma-broken"]}) == 3, colour
    cells = found["delta-slow"].find_elements(By.CSS_SELECTOR, "svg.strip rect.d")
    assert cells and cells[0].value_of_css_property("fill") != found["alpha-api"].find_element(
        By.CSS_SELECTOR, "svg.strip rect.g").value_of_css_property("fill")
    browser.find_element(By.PARTIAL_LINK_TEXT, "degraded (").click()
    assert set(rows(browser)) == {"delta-slow"} and "state=degraded" in browser.current_url


def test_the_browser_saw_no_error(browser, daemon):
    browser.get(daemon.url("/"))
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
