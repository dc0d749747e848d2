"""Helpers for browser tests: the system's headless Chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")


@asynccontextmanager
async def chromium(flags: list[str]) -> AsyncIterator[Any]:
    """One headless Chromium launched with ``flags`` (the system binary, never a downloaded one).

    Playwright is imported here, not at module level: test modules skip themselves
    with ``pytest.importorskip`` when it is missing.
    """
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=flags, timeout=30_000)
        yield browser
        await browser.close()
