"""The status page in a real browser: Debian's Chromium driven by Playwright, against a
real agent on the simulated line (tests/monitoring/conftest.py).

Chromium is the system package (`apt-get install chromium`); Playwright's own browser
download is never used (the machine may have no internet). Without Chromium the tests
fail and say how to install it: a skip would hide that the page went untested.

Screenshots go to build/test-artifacts/ (kept by CI); docs/img/ holds copies of two.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from agent.monitoring.status import DestinationState
from floorgate_demo.simulator import SimulatedLine
from tests.helpers import wait_until
from tests.monitoring.conftest import HEALTH_TOKEN, RunningLine

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[2] / "build/test-artifacts"
PANEL = {"width": 1280, "height": 800}  # a 10-inch panel PC
PHONE = {"width": 390, "height": 844}
MACHINES = ("press1", "press2", "packer1")
SHOWN = 15_000  # ms: the page refreshes every 3 s; a bound of a few refreshes


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium; install it with"
            " `sudo apt-get install -y --no-install-recommends chromium` (.ci/system-deps"
            " does that in CI)",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class Console:
    """Every console error and uncaught exception of a page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location})")


async def open_page(browser: Browser, viewport: dict[str, int]) -> tuple[Page, Console]:
    page = await browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    return page, Console(page)


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def simulator_states(line: SimulatedLine) -> dict[str, str]:
    """Each machine's state as the simulator has it now (its last transition)."""
    return {t.machine: t.state.name.lower() for t in line.transitions}


async def shown_states(page: Page) -> dict[str, str]:
    cells: dict[str, str] = await page.eval_on_selector_all(
        "#machines tbody tr",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.key, r.cells[1].innerText]))",
    )
    return cells


async def until_shown(page: Page, check: Callable[[], Any], what: str) -> None:
    """Poll the live page (it refreshes itself; never reloaded) until ``check`` holds."""
    async with asyncio.timeout(SHOWN / 1000 * 4):
        while not await check():
            await asyncio.sleep(0.2)
    del what


async def until_true(page: Page, expression: str, timeout_ms: int = SHOWN) -> None:
    """Poll a JavaScript expression on the page until it is true (bounded). Not
    ``wait_for_function``: that evaluates a string, which the page's policy forbids."""
    async with asyncio.timeout(timeout_ms / 1000):
        while not await page.evaluate(expression):
            await asyncio.sleep(0.1)


async def test_status_page_follows_the_line_and_shows_an_outage(
    browser: Browser, running_line: RunningLine
) -> None:
    line, receiver = running_line.line, running_line.receiver
    page, console = await open_page(browser, PANEL)
    await page.goto(running_line.url + "/")
    await page.wait_for_selector("#main:not([hidden])")
    await until_true(page, "document.querySelector('#status').textContent !== ''")
    assert await page.text_content("#agent") == "gw-test"
    # Each machine's state changes on the page as on the line: the test steps the line
    # itself (frozen between steps) until that machine changes, then waits for the page.
    line.freeze()
    for machine in MACHINES:
        before = simulator_states(line)[machine]
        while simulator_states(line)[machine] == before:
            line.step()
        truth = simulator_states(line)

        async def page_agrees(truth: dict[str, str] = truth) -> bool:
            return await shown_states(page) == truth

        await until_shown(page, page_agrees, f"{machine} changed from {before}")
    rows = await page.locator("#sources tbody tr").all_inner_texts()
    assert any("line-plc" in r and "connected" in r for r in rows)
    assert any("press2-opcua" in r and "connected" in r for r in rows)
    assert "middleware (http)" in await page.inner_text("#destinations")
    await page.screenshot(path=screenshot_path("status-page.png"), full_page=True)

    # An outage: the middleware stops answering. Once the agent's health says so, the
    # open page shows it at its next refresh, with the reason.
    port = receiver.port
    line.resume()  # events keep coming, so the destination tries and fails
    await receiver.stop()
    health = running_line.agent.destinations["middleware"]
    await wait_until(lambda: health.state is not DestinationState.CONNECTED, 60, "outage")
    destination = page.locator("#destinations tbody tr[data-key=middleware] td:nth-child(2)")
    await until_true(
        page,
        "document.querySelector('#destinations tr[data-key=middleware] td:nth-child(2)')"
        ".innerText !== 'connected'",
        SHOWN,
    )
    assert await destination.inner_text() in ("retrying", "disconnected", "degraded")
    assert "destination middleware" in await page.inner_text("#reasons")
    await page.screenshot(path=screenshot_path("status-page-outage.png"), full_page=True)
    await receiver.start("127.0.0.1", port)
    await until_true(
        page,
        "document.querySelector('#destinations tr[data-key=middleware] td:nth-child(2)')"
        ".innerText === 'connected'",
        SHOWN * 4,  # the forwarder's backoff first, then one refresh
    )
    assert console.errors == []


async def test_signal_view_shows_the_simulators_raw_and_decoded_values(
    browser: Browser, running_line: RunningLine
) -> None:
    line = running_line.line
    line.freeze()
    words = line.holding[5:7]
    raw = f"0x{words[0]:04X} 0x{words[1]:04X}"
    temperature = struct.unpack(">f", struct.pack(">HH", *words))[0]
    page, console = await open_page(browser, PANEL)
    await page.goto(running_line.url + "/")
    await page.click("nav >> text=Signals")
    await page.wait_for_url("**/signals")
    row = page.locator("#signals tbody tr[data-key='press1.temperature']")
    await row.locator("td:nth-child(6)").filter(has_text=raw).wait_for(timeout=SHOWN)
    cells = await row.locator("td").all_inner_texts()
    where = ["press1.temperature", "line-plc", "unit 1 holding 40006-40007", "float32", "none"]
    assert cells[:5] == where
    assert float(cells[6]) == pytest.approx(temperature, abs=1e-4)
    assert cells[7] == "good"
    opc = page.locator("#signals tbody tr[data-key='opc.press2.temperature']")
    await opc.wait_for()
    opc_cells = await opc.locator("td").all_inner_texts()
    assert opc_cells[1] == "press2-opcua" and opc_cells[2].endswith("s=press2.temperature")
    assert opc_cells[5].split()[0] in ("Double", "Float") and opc_cells[6].endswith(" degC")
    assert float(opc_cells[5].split()[1]) == pytest.approx(float(opc_cells[6].split()[0]))
    await page.screenshot(path=screenshot_path("signals.png"), full_page=True)
    # Filters: by machine, then by part of a name as well.
    await page.select_option("#machine", "press2")
    await until_true(
        page,
        "[...document.querySelectorAll('#signals tbody tr')]"
        ".every(r => r.dataset.key.startsWith('press2.'))",
        SHOWN,
    )
    await page.fill("#name", "temp")
    await until_true(page, "document.querySelectorAll('#signals tbody tr').length === 1", SHOWN)
    assert await page.locator("#signals tbody tr").get_attribute("data-key") == (
        "press2.temperature"
    )
    assert "machine=press2" in page.url and "name=temp" in page.url
    assert console.errors == []


async def test_the_page_fits_a_phone(browser: Browser, running_line: RunningLine) -> None:
    page, console = await open_page(browser, PHONE)
    await page.goto(running_line.url + "/")
    await page.wait_for_selector("#machines tbody tr")
    # The page itself never scrolls sideways: wide tables scroll inside their box.
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await page.screenshot(path=screenshot_path("status-page-phone.png"), full_page=True)
    await page.goto(running_line.url + "/signals")
    await page.wait_for_selector("#signals tbody tr")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    assert console.errors == []


@pytest.mark.parametrize("health_token", ["with-token"], indirect=True)
async def test_the_page_asks_for_the_token_once(
    browser: Browser, running_line: RunningLine
) -> None:
    page, console = await open_page(browser, PANEL)
    await page.goto(running_line.url + "/")
    await page.wait_for_selector("#login:not([hidden])")
    assert await page.is_hidden("#main")
    await page.fill("#token", "not-the-token")
    await page.click("#login button")
    error = page.locator("#login-error")
    await error.filter(has_text="Wrong token").wait_for()
    await page.fill("#token", HEALTH_TOKEN)
    await page.click("#login button")
    await page.wait_for_selector("#machines tbody tr")
    assert await page.text_content("#agent") == "gw-test"
    assert await page.is_hidden("#login")
    # Kept for the session: another page of the same tab does not ask again.
    await page.goto(running_line.url + "/signals")
    await page.wait_for_selector("#signals tbody tr")
    assert await page.is_hidden("#login")
    # ... and a new session (another browser context) does.
    other = await browser.new_page()
    await other.goto(running_line.url + "/")
    await other.wait_for_selector("#login:not([hidden])")
    assert HEALTH_TOKEN not in await page.content()
    assert console.errors == []
