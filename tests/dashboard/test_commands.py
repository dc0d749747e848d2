"""`pixeltrack user`, `pixeltrack token`, `pixeltrack dashboard` and the dashboard inside `pixeltrack up`."""

from __future__ import annotations

import asyncio
import io
import re
import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from loadtest.support import free_port
from pixeltrack.cli.main import main
from pixeltrack.dashboard import accounts
from tests.support.process import start, wait_exit


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    return db_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    async def go() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


class TestUser:
    """`user add` hashes the password with argon2; from stdin or typed twice."""

    def test_add_from_stdin(self, env: str, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
        """The stored hash is argon2id and verifies the password; a second add of the e-mail fails."""
        monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
        code, out, _ = run(capsys, "user", "add", "Ann@Example.org", "--role", "admin", "--password-stdin")
        assert (code, out) == (0, "user 1 ann@example.org (admin)\n")
        [(email, hashed, role)] = fetch(env, "SELECT email, password_hash, role FROM dashboard_users")
        assert (email, role) == ("ann@example.org", "admin")
        assert str(hashed).startswith("$argon2id$") and accounts.HASHER.verify(str(hashed), "a long enough secret")
        monkeypatch.setattr("sys.stdin", io.StringIO("another long secret\n"))
        code, _, err = run(capsys, "user", "add", "ann@example.org", "--password-stdin")
        assert code == 1 and "exists already" in err

    def test_prompt(self, env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        """Typed twice at a prompt; different entries or a short password are refused."""
        answers = iter(["first password", "second password", "short", "short"])
        monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
        code, _, err = run(capsys, "user", "add", "bob@example.org")
        assert code == 1 and "the passwords differ" in err
        code, _, err = run(capsys, "user", "add", "bob@example.org")
        assert code == 1 and "at least 10 characters" in err
        assert fetch(env, "SELECT count(*) FROM dashboard_users") == [(0,)]


class TestToken:
    """`token create` prints the token once and keeps its SHA-256; `token revoke` ends it."""

    def test_create_list_revoke(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "token", "create", "--name", "nightly export", "--role", "admin")
        token = out.strip()
        assert code == 0 and re.fullmatch(r"pt_[A-Za-z0-9_-]{43}", token) and "not shown again" in err
        assert fetch(env, "SELECT token_hash, role FROM dashboard_api_tokens") == [(accounts.digest(token), "admin")]
        code, out, _ = run(capsys, "token", "list")
        assert out.split() == ["1", "admin", "live", "nightly", "export"]
        assert run(capsys, "token", "revoke", "1")[:2] == (0, "revoked token 1\n")
        assert run(capsys, "token", "revoke", "1")[0] == 1


@pytest.mark.slow
class TestUp:
    """`pixeltrack up` on the embedded default starts the dashboard and prints a first admin's password."""

    async def test_dashboard_in_up(self, tmp_path: Path) -> None:
        """The printed URL answers the log-in page, and the printed password logs in."""
        port, dash = free_port(), free_port()
        proc = start(["-m", "pixeltrack.cli.main", "up", "--port", str(port)],
                     {"DATABASE_URL": "", "PIXELTRACK_SECRET": "", "PIXELTRACK_DATA_DIR": str(tmp_path / "data"),
                      "PIXELTRACK_DASHBOARD_PORT": str(dash), "PIXELTRACK_DRAIN_GRACE": "0.1"}, tmp_path)
        assert proc.stdout is not None
        lines: list[str] = []
        loop = asyncio.get_running_loop()
        while not any("Ctrl-C" in line for line in lines):
            line = (await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 120)).decode()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        assert f"dashboard     http://127.0.0.1:{dash}/" in text
        password = re.search(r"log in as\s+admin@localhost\s+password (\S+)", text)
        assert password, text
        try:
            # unsafe: keep cookies of an IP-address host (127.0.0.1)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                base = f"http://127.0.0.1:{dash}"
                for _ in range(50):
                    try:
                        form = await (await session.get(f"{base}/login")).text()
                        break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
                answer = await session.post(f"{base}/login", data={
                    "email": "admin@localhost", "password": password.group(1), "csrf_token": csrf},
                    allow_redirects=False)
                assert answer.status == 302
                overview = await session.get(f"{base}/")
                assert overview.status == 200 and "demo" in await overview.text()
        finally:
            proc.send_signal(signal.SIGINT)
            assert await wait_exit(proc, 60) == 0
