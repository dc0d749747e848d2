"""Fixtures shared by the collector tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import CollectorConfig
from tests.support.collector import make_config


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> CollectorConfig:
    """The test config (fast flushes) on the test's own database, spooling to its own folder."""
    return make_config(db_url, tmp_path / "spool")
