"""The pixeltrack command: jobs, recipients import, minting, configuration errors."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from pathlib import Path

import asyncpg
import pytest

from pixeltrack.cli.main import main
from pixeltrack.core.tokens import KIND_CLICK, KIND_DOC, KIND_OPEN, Signer, Token
from tests.conftest import TEST_SECRET
from tests.support.cli import cli_env


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return cli_env(db_url, monkeypatch)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def query(db_url: str, sql: str) -> list[tuple[object, ...]]:
    """Run one query on its own connection (the CLI runs its own event loops)."""

    async def go() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(db_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


def token_of(url: str) -> str:
    return url.split("/")[4].removesuffix(".gif")


class TestJobs:
    def test_create_and_list(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        """`job create` prints the new id; `job list` shows it with its mode."""
        code, out, _ = run(capsys, "job", "create", "--name", "Spring sale", "--mode", "permission_personal")
        assert (code, out) == (0, "1\n")
        assert run(capsys, "job", "create", "--name", "News", "--mode", "blind")[1] == "2\n"
        code, out, _ = run(capsys, "job", "list")
        lines = [re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<time>", line) for line in out.splitlines()]
        assert lines[1].split() == ["1", "mail", "permission_personal", "0", "<time>", "-", "Spring", "sale"]
        assert lines[2].split() == ["2", "mail", "blind", "0", "<time>", "-", "News"]

    def test_bad_mode_refused(self, env: str, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown mode is refused by the parser."""
        with pytest.raises(SystemExit):
            main(["job", "create", "--name", "x", "--mode", "sneaky"])


class TestRecipientsImport:
    def test_all_or_nothing_with_line_numbers(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Bad rows are reported by line number and nothing of the file is imported."""
        run(capsys, "job", "create", "--name", "j", "--mode", "personal")
        f = tmp_path / "r.csv"
        f.write_text("recipient,consent,birth_year,gender,zip\na@x.org,yes,1980,f,8001\n"
                     ",no,,,\nb@x.org,maybe,,,\nc@x.org,no,19x0,,\na@x.org,no,,,\n")
        code, _, err = run(capsys, "recipients", "import", "--job", "1", str(f))
        assert code == 1
        assert [line.split(": ", 1)[0] for line in err.splitlines()[:4]] == [f"{f}:3", f"{f}:4", f"{f}:5", f"{f}:6"]
        assert "nothing was imported" in err
        assert query(env, "SELECT count(*) FROM recipients") == [(0,)]

    def test_import_then_update(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A good file imports every row; importing again updates consent and keeps ids."""
        run(capsys, "job", "create", "--name", "j", "--mode", "permission_personal")
        f = tmp_path / "r.csv"
        f.write_text("recipient,consent,birth_year,gender,zip\na@x.org,yes,1980,f,8001\nb@x.org,no,,,\n")
        assert run(capsys, "recipients", "import", "--job", "1", str(f))[1] == \
            "imported 2 recipients into job 1: 2 new, 0 updated\n"
        f.write_text("recipient,consent\na@x.org,no\nc@x.org,yes\n")
        assert run(capsys, "recipients", "import", "--job", "1", str(f))[1] == \
            "imported 2 recipients into job 1: 1 new, 1 updated\n"
        got = query(env, "SELECT recipient_id, recipient, consent FROM recipients ORDER BY recipient_id")
        assert got == [(0, "a@x.org", False), (1, "b@x.org", False), (2, "c@x.org", True)]

    def test_unknown_job(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Importing into a job that does not exist says so."""
        f = tmp_path / "r.csv"
        f.write_text("recipient\na@x.org\n")
        code, _, err = run(capsys, "recipients", "import", "--job", "99", str(f))
        assert (code, err) == (1, "pixeltrack: no job 99\n")


class TestMint:
    def _setup(self, capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str) -> None:
        run(capsys, "job", "create", "--name", "j", "--mode", mode)
        f = tmp_path / "r.csv"
        f.write_text("recipient,consent\na@x.org,yes\nb@x.org,no\n")
        run(capsys, "recipients", "import", "--job", "1", str(f))

    def test_one_recipient(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """mint prints an open pixel and a click URL that verify to that recipient; the link is registered."""
        self._setup(capsys, tmp_path, "personal")
        code, out, _ = run(capsys, "mint", "--job", "1", "--recipient", "b@x.org", "--url", "https://shop.example/a")
        assert code == 0
        open_line, click_line = out.splitlines()
        open_url = open_line.split(": ", 1)[1]
        click_url = click_line.split(": ", 1)[1]
        assert open_url.startswith("https://t.example/o/") and open_url.endswith(".gif")
        signer = Signer(TEST_SECRET)
        assert signer.verify(token_of(open_url)) == Token(KIND_OPEN, 1, 1, None)
        assert signer.verify(token_of(click_url)) == Token(KIND_CLICK, 1, 1, "https://shop.example/a")
        assert query(env, "SELECT url FROM links WHERE job_id = 1") == [("https://shop.example/a",)]

    def test_all_as_merge_csv(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--all prints one CSV row per recipient with a column per link."""
        self._setup(capsys, tmp_path, "unique")
        code, out, _ = run(capsys, "mint", "--job", "1", "--all", "--url", "https://a.example/", "--url", "https://b.example/")
        table = list(csv.reader(io.StringIO(out)))
        assert table[0] == ["recipient", "open_url", "click_url_1", "click_url_2"]
        assert [r[0] for r in table[1:]] == ["a@x.org", "b@x.org"]
        signer = Signer(TEST_SECRET)
        assert signer.verify(token_of(table[2][3])) == Token(KIND_CLICK, 1, 1, "https://b.example/")

    def test_blind_has_no_recipient(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A blind job's pixel carries no recipient even when one is asked for."""
        self._setup(capsys, tmp_path, "blind")
        out = run(capsys, "mint", "--job", "1", "--recipient", "a@x.org")[1]
        assert Signer(TEST_SECRET).verify(token_of(out.split(": ", 1)[1].strip())) == Token(KIND_OPEN, 1, None, None)

    def test_document_pages(self, env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--doc prints one pixel per page with the page number as the last part."""
        self._setup(capsys, tmp_path, "personal")
        out = run(capsys, "mint", "--job", "1", "--recipient", "a@x.org", "--doc", "--pages", "3")[1]
        urls = [line.split(": ", 1)[1] for line in out.splitlines()]
        assert [u.rsplit("/", 1)[1] for u in urls] == ["1.gif", "2.gif", "3.gif"]
        assert Signer(TEST_SECRET).verify(urls[0].split("/")[4]) == Token(KIND_DOC, 1, 0, None)


class TestConfigErrors:
    def test_missing_secret_names_the_variable(self, db_url: str, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """With DATABASE_URL set and no PIXELTRACK_SECRET, minting stops with a message naming it."""
        monkeypatch.setenv("DATABASE_URL", db_url)
        monkeypatch.delenv("PIXELTRACK_SECRET", raising=False)
        run(capsys, "job", "create", "--name", "j", "--mode", "blind")
        code, _, err = run(capsys, "mint", "--job", "1")
        assert code == 2 and "PIXELTRACK_SECRET" in err

    def test_collector_without_secret(self, db_url: str, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """The collector refuses to start without a signing key, naming the variable."""
        monkeypatch.setenv("DATABASE_URL", db_url)
        monkeypatch.delenv("PIXELTRACK_SECRET", raising=False)
        code, _, err = run(capsys, "collector", "--port", "1")
        assert code == 2 and "PIXELTRACK_SECRET is not set" in err
