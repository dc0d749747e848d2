"""Commands run in-process install log handlers; each test starts without them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pixeltrack.cli import logs


@pytest.fixture(autouse=True)
def _no_cli_logging() -> Iterator[None]:
    """Remove the handlers `pixeltrack.cli.main` installed, so the next test sees the terminal it expects."""
    yield
    logs.reset()
