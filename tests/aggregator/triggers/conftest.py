"""Fixtures of the trigger tests: a webhook receiver listening on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.aggregator.triggers.flow import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver answering 200, stopped after the test."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
