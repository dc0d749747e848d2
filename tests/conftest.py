"""Shared fixtures: a real PostgreSQL, and a throwaway database per test.

The server comes from DATABASE_URL when it is set, otherwise the embedded
pgserver is started in a temporary folder. A template database with schema.sql
applied is made once per run; each test gets its own copy and drops it after.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pixeltrack.core import db

TEST_SECRET = "test-secret-0123456789abcdef"


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (handles socket URLs with ?host=)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


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
    """Name of a template database with schema.sql applied, dropped at the end."""
    name = f"pt_tmpl_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await db.apply_schema(with_database(server_url, name))

    asyncio.run(create())
    yield name
    asyncio.run(_drop(server_url, name))


async def _drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db_url(server_url: str, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh database with the schema, private to one test."""
    name = f"pt_t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield with_database(server_url, name)
    await _drop(server_url, name)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's own database (UTC session)."""
    connection = await db.connect(db_url)
    yield connection
    await connection.close()
