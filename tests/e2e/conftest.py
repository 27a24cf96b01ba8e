"""Real-browser tests against `vetify serve` (the ``live_server`` fixture), with Playwright.

* The browser: Playwright's own Chromium where `playwright install chromium` put one, else the
  system's (Debian's ``chromium`` package). Having neither fails the run, never skips it.
* The network: the browser reaches only the live server (which serves Swagger UI's files
  itself); every outside request is refused, so a run is hermetic and the same offline as on CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Playwright, Route

from tests.harness.live import LiveServer

SYSTEM_CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def chromium_launch_args(playwright: Playwright) -> dict[str, Any]:
    bundled = playwright.chromium.executable_path
    if bundled and Path(bundled).exists():
        return {}
    system = shutil.which("chromium") or shutil.which("chromium-browser")
    if system is None:
        pytest.fail(
            "No Chromium for the e2e tests: neither Playwright's own "
            f"({bundled}) nor a system one on PATH. Install one: "
            "`apt-get install chromium` or `playwright install --with-deps chromium`.",
            pytrace=False,
        )
    return {"executable_path": system, "args": SYSTEM_CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], playwright: Playwright
) -> dict[str, Any]:
    launch = {**browser_type_launch_args, **chromium_launch_args(playwright)}
    launch.setdefault("headless", True)  # pytest-playwright sets it only for --headed
    return launch


@pytest.fixture(scope="session", autouse=True)
def _live_server_first(live_server: LiveServer) -> LiveServer:
    """Start the server before Playwright: its setup and teardown call ``asyncio.run``, which
    refuses to run while Playwright's sync API has its event loop set on this thread."""
    return live_server


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    """pytest-playwright passes this to every browser context: ``page.goto("/docs")``."""
    return live_server.url


@pytest.fixture(scope="session")
def reports_dir(pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.rootpath / "reports" / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- the browser's network: the live server, and nothing outside ----------------------------------
def _is_outside(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname not in LOOPBACK_HOSTS


@pytest.fixture
def context(context: BrowserContext) -> BrowserContext:
    """pytest-playwright's context, with every request outside the machine refused."""

    def offline(route: Route) -> None:
        route.abort("blockedbyclient")

    context.route(_is_outside, offline)
    return context
