"""Shared fixtures: a real PostgreSQL, and a throwaway database per test.

The server comes from DATABASE_URL when it is set, otherwise the embedded
pgserver is started in a temporary folder. A template database with schema.sql
applied is made once per run; each test gets its own copy and drops it after
(both made by ``loadtest.support``, which the load scripts use too).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from loadtest.support import create_database, drop_database
from pixeltrack.core import db

TEST_SECRET = "test-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of an administrative database on a real PostgreSQL server."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="pixeltrack-pg-") as tmp:
        server = pgserver.get_server(Path(tmp), cleanup_mode="stop")
        yield server.get_uri()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """URL of a template database with schema.sql applied, dropped at the end."""
    url = asyncio.run(create_database(server_url, f"pt_tmpl_{os.getpid()}"))
    yield url
    asyncio.run(drop_database(server_url, url))


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh database with the schema, private to one test."""
    url = await create_database(server_url, "pt_t", template=template_db)
    yield url
    await drop_database(server_url, url)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's own database (UTC session)."""
    connection = await db.connect(db_url)
    yield connection
    await connection.close()
