"""The dashboard in a real browser: Playwright driving Debian's headless Chromium
(/usr/bin/chromium; no browser is downloaded) against the service on a real PostgreSQL, Redis
and the reference ML service.

The page must draw every chart, follow the traffic (its hit-rate figures move to what
/api/v1/metrics/cache reports), send operator actions with the typed token, fit a phone's width
and log no console error. ``PGCACHE_DASHBOARD_SCREENSHOT=<path>`` keeps the 1280 px screenshot
there (the README's picture: ``.github/dashboard.png``); otherwise it goes to the test's
temporary directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)
from tests.support.postgres import Workload
from tests.support.service import ADMIN_TOKEN, service_settings
from tests.support.service_load import run_load, warm_up

from pgcache.ml.reference import MLServiceHandle
from pgcache.service.app import ServiceHandle, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
# As the machine's notes say: no background networking (its connections would be refused on a
# closed network), no GPU, and no sandbox when running as root (Chromium refuses otherwise).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    *(["--no-sandbox"] if os.geteuid() == 0 else []),
]
CHARTS = 10  # the panels with a chart: data-chart="..." in dashboard.html
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)",
            pytrace=False,
        )
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield chromium
    chromium.close()


@pytest.fixture
def service(
    postgres_url: str, redis_url: str, ml_service: MLServiceHandle
) -> Iterator[ServiceHandle]:
    """A service of the test's own, so that its first figures are those of no traffic."""
    settings = service_settings(
        database_url=postgres_url,
        ml_service_url=ml_service.url,
        redis_url=redis_url,
        redis_key_prefix=f"pgcache-dashboard-{uuid.uuid4().hex[:12]}:",
    )
    with serve_in_thread(settings) as handle:
        yield handle


class ConsoleErrors(list[str]):
    """Console errors and uncaught exceptions of a page."""

    def watch(self, page: Page) -> Page:
        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.append(f"console: {message.text} at {message.location}")

        page.on("console", console)
        page.on("pageerror", lambda error: self.append(f"uncaught: {error}"))
        return page


def _open(browser: Browser, url: str, viewport: ViewportSize) -> tuple[Page, ConsoleErrors]:
    errors = ConsoleErrors()
    page = errors.watch(browser.new_page(viewport=viewport))
    page.goto(f"{url}/dashboard")
    _wait_for_events(page, 2)
    return page, errors


def _wait_for_events(page: Page, count: int) -> None:
    """Until the page has drawn at least ``count`` events and every chart exists."""
    page.wait_for_function(
        "([count, charts]) => Number(document.body.dataset.drawn || 0) >= count"
        " && document.querySelectorAll('[data-chart] canvas').length === charts",
        arg=[count, CHARTS],
        timeout=30_000,
    )


def _figure(page: Page, element_id: str) -> float:
    return float(page.get_attribute(f"#{element_id}", "data-value") or "nan")


def _wait_for_figure(page: Page, element_id: str, value: float) -> None:
    page.wait_for_function(
        "([id, value]) => Math.abs(Number(document.getElementById(id).dataset.value) - value)"
        " < 1e-9",
        arg=[element_id, value],
        timeout=30_000,
    )


def _screenshot_path(tmp_path: Path, name: str) -> Path:
    wanted = os.environ.get("PGCACHE_DASHBOARD_SCREENSHOT")
    if wanted and name == "desktop":
        path = Path(wanted)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path / f"dashboard-{name}.png"


def test_hit_rate_figures_move_to_what_the_metrics_endpoint_reports(
    browser: Browser, service: ServiceHandle, pg_workload: Workload, tmp_path: Path
) -> None:
    page, errors = _open(browser, service.url, DESKTOP)
    assert page.inner_text("#connection") == "live"
    assert _figure(page, "hit-rate-overall") == 0.0
    assert page.inner_text("#hit-rate-overall") == "no lookups yet"
    assert page.inner_text("#hit-rate-features") == "unused"

    hashes = pg_workload.negative_ids[:12] + pg_workload.positive_ids[:12]
    warm_up(service.url, hashes[:6])
    for seed, keys in enumerate((hashes[:12], hashes, hashes)):  # a few seconds of changes
        load = run_load(service.url, keys, clients=4, requests_per_client=100, seed=seed)
        assert load.errors == []
    reported = httpx.get(f"{service.url}/api/v1/metrics/cache", timeout=30.0).json()["metrics"]
    assert 0 < reported["overall_hit_rate"] < 100

    for element_id, value in (
        ("hit-rate-overall", reported["overall_hit_rate"]),
        ("hit-rate-features", reported["feature_cache"]["hit_rate"]),
        ("hit-rate-predictions", reported["prediction_cache"]["hit_rate"]),
    ):
        _wait_for_figure(page, element_id, value)
        shown = page.inner_text(f"#{element_id}")
        assert shown.endswith(" %")
        assert float(shown.removesuffix(" %")) == pytest.approx(value, abs=0.051)

    drawn = int(page.get_attribute("body", "data-drawn") or 0) + 2
    _wait_for_events(page, drawn)
    for chart in page.query_selector_all("[data-chart]"):
        assert int(chart.get_attribute("data-points") or 0) >= drawn - 1
    assert page.inner_text("#redis-figures").split()[:2] == ["STATE", "ok"]
    endpoints = page.inner_text("#requests-table")
    assert "GET /api/v1/queries/{query_hash}/features" in endpoints
    page.screenshot(path=_screenshot_path(tmp_path, "desktop"), full_page=True)
    assert errors == []


def test_operator_actions_send_the_typed_token(
    browser: Browser, service: ServiceHandle, pg_workload: Workload
) -> None:
    page, errors = _open(browser, service.url, DESKTOP)
    invalidate = page.locator("#invalidate-form button")
    assert invalidate.is_disabled()
    page.fill("#admin-token", ADMIN_TOKEN)
    assert invalidate.is_enabled()
    query_hash = pg_workload.negative_ids[0]  # beyond 2**53: sent as written, not as a float
    page.fill("#invalidate-hash", str(query_hash))
    with page.expect_response("**/api/v1/cache/invalidate") as answer:
        invalidate.click()
    response = answer.value
    assert response.request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert response.request.post_data_json == {"query_hash": query_hash}
    assert response.status == 200
    page.wait_for_function("document.getElementById('operator-result').textContent.includes('->')")
    assert "-> 200 " in page.inner_text("#operator-result")

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response("**/api/v1/cache/anomalies") as answer:
        page.select_option("#clear-cache", "anomalies")
        page.click("#clear-form button")
    assert answer.value.request.method == "DELETE"
    assert answer.value.request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert answer.value.status == 200
    assert errors == []


def test_page_fits_a_phone(browser: Browser, service: ServiceHandle, tmp_path: Path) -> None:
    page, errors = _open(browser, service.url, PHONE)
    widths: dict[str, Any] = page.evaluate(
        "() => ({page: document.documentElement.scrollWidth, window: window.innerWidth,"
        " charts: Array.from(document.querySelectorAll('[data-chart] canvas'),"
        " c => c.getBoundingClientRect().right)})"
    )
    assert widths["page"] <= widths["window"]
    assert max(widths["charts"]) <= widths["window"]
    page.screenshot(path=_screenshot_path(tmp_path, "phone"), full_page=True)
    assert errors == []
