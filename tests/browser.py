"""The tests' real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver. Nothing is downloaded: the driver's path is given, so Selenium Manager never
runs. Where no browser can be had the test skips with one line saying why; under
``ATTN2D_REQUIRE_BROWSER=1`` (``make test`` as root with apt-get, i.e. CI, where it installs
them) it fails instead, so CI cannot skip silently.

    with chromium(tmp_path) as browser:
        browser.open(page)
        assert browser.console_errors() == [] and browser.resources() == []
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Flags that work as root on a closed network: no sandbox (root), no GPU, nothing that
# phones home (QUIC, sync, component updates, background networking), a fresh profile.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
# Debian's /usr/bin/chromium is a wrapper script; the binary itself is here.
BINARIES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
DRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install chromium chromium-driver; make test does it as root"


def _binary() -> str | None:
    return next((b for b in BINARIES if os.access(b, os.X_OK)), shutil.which("chromium"))


def _driver() -> str | None:
    return DRIVER if os.access(DRIVER, os.X_OK) else shutil.which("chromedriver")


def browser_problem() -> str | None:
    """Why no real browser can be had here, in one line; None when one can."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _binary() is None:
        return f"Debian's chromium is not installed ({INSTALL})"
    if _driver() is None:
        return f"Debian's chromium-driver is not installed ({INSTALL})"
    return None


def require_browser() -> None:
    """Skip the calling test (fail it where a browser is required) when there is none."""
    problem = browser_problem()
    if problem is None:
        return
    if os.environ.get("ATTN2D_REQUIRE_BROWSER") == "1":
        pytest.fail(f"no real browser, though ATTN2D_REQUIRE_BROWSER=1: {problem}")
    pytest.skip(problem)


class Browser:
    """One headless Chromium; console messages and network entries can be read back."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, page: Path, ready: str | None = None, timeout: float = 60) -> None:
        """Load ``page`` from its file URL; with ``ready``, wait until that JS expression
        is true."""
        self.driver.get(Path(page).resolve().as_uri())
        if ready is not None:
            self.wait_for(ready, timeout)

    def run(self, script: str, *args: Any) -> Any:
        """``script`` (a function body: ``return ...``, ``arguments[i]``) in the page."""
        return self.driver.execute_script(script, *args)

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        end = time.monotonic() + timeout
        while True:
            value = self.run(f"return {expression};")
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"browser: {expression!r} still false after {timeout:g} s; "
                                   f"console: {self.console_errors()}")
            time.sleep(0.05)

    def console_errors(self) -> list[str]:
        """Console errors (and uncaught exceptions, refused loads) since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def resources(self) -> list[str]:
        """Every resource the page requested beyond itself (Resource Timing entries)."""
        return self.run("return performance.getEntriesByType('resource').map(e => e.name);")

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


@contextlib.contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1000) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile under ``profile``; skips (or fails, see the
    module docstring) where there is none."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={Path(profile).resolve()}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=_driver()), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
