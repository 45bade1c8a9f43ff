"""The live page in headless Chromium, driven by Playwright: tooltips, links, live updates.

Uses Debian's Chromium (/usr/bin/chromium), never a browser that Playwright downloads. Outside
CI the test skips when Chromium or Playwright is missing; in CI, conftest.py ends the run
instead, because chromium is in REQUIRED_EXECUTABLES.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest

from renderers.digraph import DONE, LEGEND

from thehat.webauth import parse_webauth_section

from tests.conftest import running_in_ci
from tests.web_support import (FLOW_PATH, WIKI_NOTE, WIKI_URL, RunningSite, make_datadir,
                               running_site)

try:
    from playwright import async_api as playwright_api
except ImportError:
    if running_in_ci():
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')",
                allow_module_level=True)

ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "test-artifacts"
XLINK: Final = "http://www.w3.org/1999/xlink"
# Flags for Chromium as root in a sandboxed machine without network: no sandbox of its own,
# no GPU, and none of the background connections that a closed network refuses.
CHROMIUM_FLAGS: Final = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (scripts/test installs Debian's package)")
    return path


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[RunningSite]:
    async with running_site(make_datadir(tmp_path)) as running:
        yield running


# A test credential only; no assertion prints it.
TOKEN: Final = "browser-test-token-0123456789"


@pytest.fixture
async def protected(tmp_path: Path) -> AsyncIterator[RunningSite]:
    auth = parse_webauth_section({"token": TOKEN}, "test.yaml", tmp_path)
    async with running_site(make_datadir(tmp_path), webauth=auth) as running:
        yield running


@pytest.fixture
async def page() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(),
                                                   headless=True, args=CHROMIUM_FLAGS)
        try:
            yield await browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            await browser.close()


# Reads the fill of a step's box in the inline SVG, found by the step's <title>.
FILL_OF_STEP: Final = """(step) => {
    for (const node of document.querySelectorAll("#graph svg g.node")) {
        const title = node.querySelector("title");
        if (title && title.textContent === step) {
            return node.querySelector("polygon").getAttribute("fill");
        }
    }
    return null;
}"""

# Returns the link and tooltip of a step's <a> in the inline SVG.
LINK_OF_STEP: Final = """([step, xlink]) => {
    for (const node of document.querySelectorAll("#graph svg g.node")) {
        const title = node.querySelector("title");
        if (title && title.textContent === step) {
            const link = node.querySelector("a");
            return {title: title.textContent,
                    href: link && (link.getAttributeNS(xlink, "href") || link.getAttribute("href")),
                    tooltip: link && link.getAttributeNS(xlink, "title")};
        }
    }
    return null;
}"""


def legend_hex(colour: str) -> str:
    return next(entry[1] for entry in LEGEND if entry[0] == colour).lower()


async def test_live_page_updates_without_reload(site: RunningSite, page: object) -> None:
    navigations: list[str] = []
    problems: list[str] = []
    page.on("framenavigated",
            lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.on("console", lambda message: problems.append(message.text)
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    await page.goto(site.base + FLOW_PATH)
    await page.wait_for_selector("#graph svg g.node")
    await page.wait_for_function(
        "document.getElementById('live').textContent.startsWith('Live: connected')",
        timeout=5000)

    # The graph carries the step's tooltip and link, and the table lists the first step.
    wiki = await page.evaluate(LINK_OF_STEP, ["wiki", XLINK])
    assert wiki == {"title": "wiki", "href": WIKI_URL, "tooltip": WIKI_NOTE}
    assert await page.locator("#steps td.name").all_text_contents() == ["prepare"]
    assert await page.evaluate(FILL_OF_STEP, "prepare") != DONE

    await page.evaluate("window.marker = 1")
    loaded = len(navigations)
    await site.say("gimme prepare")
    await site.say("finish prepare")

    done = [DONE.lower(), legend_hex(DONE)]
    await page.wait_for_function(
        f"(done) => done.includes(String(({FILL_OF_STEP})('prepare')).toLowerCase())",
        arg=done, timeout=2000)
    await page.wait_for_function(
        "document.querySelector('#steps td.name').textContent === 'wiki'", timeout=2000)

    assert await page.evaluate("window.marker") == 1
    assert len(navigations) == loaded
    assert "1 of 3 steps finished" in await page.locator("#progress").inner_text()
    assert [p for p in problems if "Content Security Policy" in p or "Refused" in p] == []

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)


async def test_token_link_opens_live_page(protected: RunningSite, page: object) -> None:
    await page.goto(protected.base + FLOW_PATH + "?token=" + TOKEN)

    # The redirect leaves the token out of the address, and the cookie carries the session.
    # The address is compared first, so that a failure does not print the token.
    at_page = page.url == protected.base + FLOW_PATH
    assert at_page, "the browser is not at the live page's address without the token"
    await page.wait_for_selector("#graph svg g.node")
    await page.wait_for_function(
        "document.getElementById('live').textContent.startsWith('Live: connected')",
        timeout=5000)
    assert await page.evaluate(FILL_OF_STEP, "prepare") is not None

    await page.click("a[href='map']")
    await page.wait_for_selector("img[usemap]")
    await page.wait_for_function(
        "document.querySelector('img[usemap]').complete "
        "&& document.querySelector('img[usemap]').naturalWidth > 0", timeout=5000)
    assert page.url == protected.base + FLOW_PATH + "map"


async def test_token_link_from_other_site(protected: RunningSite, page: object) -> None:
    # localhost and 127.0.0.1 are different sites to the browser, but the same server.
    await page.goto(f"http://localhost:{protected.port}/elsewhere")
    await page.evaluate("""(url) => {
        const link = document.createElement("a");
        link.href = url;
        link.id = "token-link";
        link.textContent = "live page";
        document.body.appendChild(link);
    }""", protected.base + FLOW_PATH + "?token=" + TOKEN)
    async with page.expect_navigation():
        await page.click("#token-link")

    at_page = page.url == protected.base + FLOW_PATH
    assert at_page, "the browser is not at the live page's address without the token"
    assert await page.locator("#graph svg g.node").count() > 0
