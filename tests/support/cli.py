"""Helpers for tests that run the pixeltrack CLI in process."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_SECRET


def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the CLI at ``db_url`` with the test signing key and a base URL; ``db_url``."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("PIXELTRACK_SECRET", TEST_SECRET)
    monkeypatch.setenv("PIXELTRACK_BASE_URL", "https://t.example")
    return db_url
