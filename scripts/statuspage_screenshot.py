"""Take docs/statuspage.png: the status page of the demo farm, in headless Chromium.

    python scripts/statuspage_screenshot.py [--out docs/statuspage.png] [--seconds 40]

It runs greenmon's demo farm and a daemon on it in this process, every target
checked every 2 s (the demo's own interval is 10 s) so that the strips and
sparklines have some history, for ``--seconds``; then it opens the page in
Debian's chromium through chromedriver (apt-get install chromium
chromium-driver; pip install selenium) and saves a screenshot of it. Loopback
only: the demo farm and the daemon listen on 127.0.0.1.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

from greenmon.demo import DemoFarm  # noqa: E402
from greenmon.discovery.loading import discover  # noqa: E402
from greenmon.daemon import Daemon  # noqa: E402
from greenmon.web import WebServer  # noqa: E402

INTERVAL_S = 2.0


def screenshot(url: str, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1500,880",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(url)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python scripts/statuspage_screenshot.py")
    parser.add_argument("--out", default="docs/statuspage.png")
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    with DemoFarm() as farm:
        config = discover(farm.config()).replace("monitor", interval=INTERVAL_S)
        daemon = Daemon(config)
        server = WebServer(daemon, "127.0.0.1:0")
        server.start()
        runner = gevent.spawn(daemon.run)
        try:
            gevent.sleep(args.seconds)
            screenshot(f"http://127.0.0.1:{server.port}/", Path(args.out))
        finally:
            daemon.stop()
            runner.join(timeout=10)
            server.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
