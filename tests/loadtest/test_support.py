"""loadtest.support, shared by the tests and the load scripts: the outage relay and throwaway databases."""

from __future__ import annotations

import asyncpg
import pytest

from loadtest.support import Relay, create_database, database_name, drop_database


class TestRelayTarget:
    """The relay reaches the server of a URL: TCP host and port, or the socket of a ?host= folder."""

    def test_tcp_url(self) -> None:
        """A TCP URL gives host and port; no socket."""
        relay = Relay("postgresql://root@127.0.0.1:5433/test")
        assert (relay.target, relay.socket_path) == (("127.0.0.1", 5433), "")

    def test_socket_url(self) -> None:
        """The embedded server's URL gives its socket file, port 5432 unless ?port= says otherwise."""
        assert Relay("postgresql://postgres:@/postgres?host=/tmp/pg").socket_path == "/tmp/pg/.s.PGSQL.5432"
        assert Relay("postgresql://postgres@/postgres?host=/tmp/pg&port=6000").socket_path == "/tmp/pg/.s.PGSQL.6000"

    def test_route_keeps_user_and_database(self) -> None:
        """A database URL through the relay: user and database kept, host and port the relay's, no ?host=."""
        relay = Relay("postgresql://postgres:@/postgres?host=/tmp/pg", port=41234)
        assert relay.route("postgresql://postgres:@/pt_t_1?host=/tmp/pg&sslmode=disable") == (
            "postgresql://postgres:@127.0.0.1:41234/pt_t_1?sslmode=disable"
        )
        assert Relay("postgresql://root@db.example:5432/x", port=7).route("postgresql://root@db.example:5432/y") == (
            "postgresql://root@127.0.0.1:7/y"
        )


class TestRelayOutage:
    """Cut, the relay refuses connections and aborts the open ones; restored, it answers on the same port."""

    async def test_cut_and_restore(self, server_url: str, db_url: str) -> None:
        """SELECT 1 through the relay; after cut() the open connection and a new one fail; restore() heals both."""
        relay = Relay(server_url)
        await relay.start()
        try:
            url = relay.route(db_url)
            conn = await asyncpg.connect(url)
            assert await conn.fetchval("SELECT 1") == 1
            port = relay.port
            await relay.cut()
            with pytest.raises((OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
                await conn.fetchval("SELECT 1")
            with pytest.raises(OSError):
                await asyncpg.connect(url, timeout=5)
            await relay.restore()
            again = await asyncpg.connect(url)
            assert (relay.port, await again.fetchval("SELECT 2")) == (port, 2)
            await again.close()
            conn.terminate()
        finally:
            await relay.close()


class TestThrowawayDatabases:
    """Throwaway databases: made empty with the schema or as a copy, and only those are ever dropped."""

    async def test_copy_of_a_template(self, server_url: str, db_url: str) -> None:
        """A copy of the test's database holds its rows; dropped, it is gone from pg_database."""
        conn = await asyncpg.connect(db_url)
        await conn.execute("INSERT INTO jobs (name, mode) VALUES ('a', 'blind'), ('b', 'unique')")
        await conn.close()
        copy = await create_database(server_url, "pt_copy", template=db_url)
        conn = await asyncpg.connect(copy)
        names = [r["name"] for r in await conn.fetch("SELECT name FROM jobs ORDER BY name")]
        await conn.close()
        await drop_database(server_url, copy)
        admin = await asyncpg.connect(server_url)
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database_name(copy))
        await admin.close()
        assert (names, left) == (["a", "b"], 0)

    async def test_only_throwaway_names(self, server_url: str) -> None:
        """A prefix or a database not starting with pt_ is refused before anything is sent."""
        with pytest.raises(ValueError, match="throwaway"):
            await create_database(server_url, "bench")
        with pytest.raises(ValueError, match="refusing to drop 'test'"):
            await drop_database(server_url, "postgresql://root@127.0.0.1:5432/test")


class TestCampaignSets:
    """loadtest.campaign.setup(sets=N): N jobs of each mode, the recipients shared out among them."""

    async def test_two_sets(self, db_url: str, conn: asyncpg.Connection) -> None:
        """1,000 recipients in two sets: ten jobs, two of each mode in mode order twice; personal 175 each,
        permission_personal 125, anonymous and unique 100, blind none; the recipients table holds exactly those."""
        from loadtest.campaign import setup

        camp = await setup(db_url, 1_000, sets=2)
        modes = ["personal", "permission_personal", "anonymous", "unique", "blind"]
        assert [j.mode for j in camp.jobs] == modes * 2
        assert [j.recipients for j in camp.jobs] == [175, 125, 100, 100, 0] * 2
        stored = {r["job_id"]: r["n"] for r in await conn.fetch(
            "SELECT job_id, count(*) AS n FROM recipients GROUP BY job_id")}
        assert stored == {j.job_id: j.recipients for j in camp.jobs if j.recipients}
