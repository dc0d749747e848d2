"""A quiet command line: each command prints its own result; library chatter goes to the log file or -v."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.support import free_port
from pixeltrack.cli import logs
from pixeltrack.cli.main import main
from tests.support.process import ROOT

TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fresh() -> Iterator[Path]:
    """A folder for a fresh machine's HOME, TMPDIR and working folder.

    Not below pytest's tmp_path: the embedded server runs as its own user, and
    pytest runs elsewhere on the machine reset /tmp/pytest-of-<user> to 0700.
    """
    with tempfile.TemporaryDirectory(prefix="pixeltrack-fresh-") as folder:
        yield Path(folder)


def fresh_machine(folder: Path) -> dict[str, str]:
    """The environment of a first run: no DATABASE_URL, no XDG folders, a new HOME and temp folder."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "PIXELTRACK_", "PG")) and k != "DATABASE_URL"}  # fmt: skip
    for name in ("home", "tmp", "work"):
        (folder / name).mkdir()
    # PYTHONWARNINGS=default: a warning would show even if the caller's environment hides them.
    env.update(HOME=str(folder / "home"), TMPDIR=str(folder / "tmp"), PYTHONPATH=str(ROOT),
               PYTHONWARNINGS="default")  # fmt: skip
    return env


def pixeltrack(env: dict[str, str], cwd: Path, *argv: str) -> tuple[int, str, str]:
    """Run the pixeltrack command in a child process."""
    proc = subprocess.run([sys.executable, "-m", "pixeltrack.cli.main", *argv], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
class TestFreshMachine:
    """On a fresh machine the embedded server starts silently and the first commands work."""

    def test_first_commands_print_only_their_result(self, fresh: Path) -> None:
        """`job create` prints the id, `job list` the table with minute times; no log line, no warning."""
        env, work = fresh_machine(fresh), fresh / "work"
        assert pixeltrack(env, work, "job", "create", "--name", "Spring sale", "--mode", "blind") == (0, "1\n", "")
        code, out, err = pixeltrack(env, work, "job", "list")
        assert (code, err) == (0, "")
        header, row = out.splitlines()
        assert header.split() == ["id", "kind", "mode", "recipients", "created", "sent", "name"]
        assert re.fullmatch(rf"\s+1  mail  blind\s+0  {TIME}  -\s+Spring sale", row), row
        log = (work / ".pixeltrack" / logs.LOG_FILE).read_text()
        assert "initdb" in log and "starting embedded PostgreSQL" in log

    def test_verbose_shows_the_servers_log(self, fresh: Path) -> None:
        """-v puts the embedded server's transcript on the terminal; stdout still holds only the result."""
        env, work = fresh_machine(fresh), fresh / "work"
        code, out, err = pixeltrack(env, work, "-v", "job", "list")
        assert (code, out.split()) == (0, ["id", "kind", "mode", "recipients", "created", "sent", "name"])
        assert "INFO pgserver: Running commandline" in err and "initdb" in err
        assert "Warning" not in err


    def test_up_prints_urls_and_status(self, fresh: Path) -> None:
        """`up` prints its URLs on stdout and only pixeltrack's own INFO lines on stderr (no initdb, no scheduler)."""
        env, work = fresh_machine(fresh), fresh / "work"
        proc = subprocess.Popen([sys.executable, "-m", "pixeltrack.cli.main", "up", "--port", str(free_port())],
                                env=env | {"PIXELTRACK_DRAIN_GRACE": "0.1", "PIXELTRACK_OPERATOR_PORT": str(free_port()),
                                             "PIXELTRACK_DASHBOARD_PORT": str(free_port())}, cwd=work, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stdout is not None
        shown: list[str] = []
        try:
            while not shown or shown[-1] != "Ctrl-C stops everything.":
                line = proc.stdout.readline()
                assert line, shown
                shown.append(line.rstrip("\n"))
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0
        base = r"http://127\.0\.0\.1:\d+"
        expected = ["", r"pixeltrack is up\.", rf"  open pixel    {base}/o/\S+\.gif", rf"  tracked link  {base}/c/\S+",
                    rf"  document page {base}/d/\S+/1\.gif", rf"  health        {base}/healthz .*",
                    r"  metrics       http://127\.0\.0\.1:\d+/metrics \(operator port\)",
                    r"  report        pixeltrack report --job 1   \(the aggregator rolls up every 60 s\)",
                    r"  dashboard     http://127\.0\.0\.1:\d+/",
                    r"  log in as     admin@localhost  password \S+  \(shown once; change it with",
                    r"                `pixeltrack user add admin@localhost --role admin --replace`\)",
                    r"  log file      \.pixeltrack/pixeltrack\.log   \(-v shows it all here\)",
                    r"Ctrl-C stops everything\."]  # fmt: skip
        assert len(shown) == len(expected) and all(map(re.fullmatch, expected, shown)), shown
        assert out.strip() == ""
        loggers = [re.fullmatch(r"\S+ \S+ INFO (\S+): .*", line) for line in err.splitlines()]
        assert all(loggers), err
        assert {m.group(1) for m in loggers if m} == {
            "pixeltrack.core.embedded", "pixeltrack.core.db", "collector.serve", "collector.app", "aggregator.scheduler",
            "pixeltrack.dashboard.serve"}
        assert "apscheduler" in (work / ".pixeltrack" / logs.LOG_FILE).read_text()


class TestTerminal:
    """Which log lines reach the terminal, in-process with DATABASE_URL set."""

    @pytest.fixture
    def env(self, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        monkeypatch.setenv("DATABASE_URL", db_url)
        monkeypatch.setenv("PIXELTRACK_DATA_DIR", str(tmp_path / "data"))
        return tmp_path / "data"

    def test_one_shot_prints_result_only(self, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`initdb` prints "schema applied" once, on stdout; its INFO log line stays off the terminal."""
        assert run(capsys, "initdb") == (0, "schema applied\n", "")
        assert not env.exists()  # with DATABASE_URL set, no data folder is made for a log

    def test_verbose_shows_info(self, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """-v adds the INFO line (and DEBUG ones) on stderr."""
        code, out, err = run(capsys, "-v", "initdb")
        assert (code, out) == (0, "schema applied\n")
        assert "INFO pixeltrack.core.db: schema applied" in [line.split(" ", 2)[2] for line in err.splitlines()]

    def test_log_file_when_the_data_folder_exists(self, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An existing data folder gets the INFO lines in pixeltrack.log."""
        env.mkdir()
        assert run(capsys, "initdb") == (0, "schema applied\n", "")
        lines = (env / logs.LOG_FILE).read_text().splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == ["INFO pixeltrack.core.db: schema applied"]

    def test_job_list_times(self, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`job list` shows the creation and send times to the minute, in UTC."""
        run(capsys, "job", "create", "--name", "News", "--mode", "unique", "--sent-at", "2026-12-03T09:19:59")
        code, out, err = run(capsys, "job", "list")
        assert (code, err) == (0, "")
        assert re.fullmatch(rf"\s+1  mail  unique\s+0  {TIME}  2026-12-03 09:19 UTC  News", out.splitlines()[1])


class TestServiceLogging:
    """A service logs its INFO lines; the libraries' chatter goes only to the file."""

    def test_chatter_only_in_the_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """pgserver and apscheduler INFO: file only; their warnings and our INFO: both."""
        log_file = logs.configure(verbose=False, service=True, log_file=tmp_path / "pixeltrack.log")
        logging.getLogger("pgserver").info("initdb transcript")
        logging.getLogger("apscheduler.scheduler").info("Running job")
        logging.getLogger("apscheduler.scheduler").warning("job missed")
        logging.getLogger("aggregator.scheduler").info("aggregator: roll-up every 60 s")
        logging.getLogger("pgserverish").info("not pgserver")
        logs.reset()
        shown = [line.split(" ", 2)[2] for line in capsys.readouterr().err.splitlines()]
        assert shown == ["WARNING apscheduler.scheduler: job missed",
                         "INFO aggregator.scheduler: aggregator: roll-up every 60 s",
                         "INFO pgserverish: not pgserver"]  # fmt: skip
        assert log_file is not None
        kept = [line.split(" ", 2)[2] for line in log_file.read_text().splitlines()]
        assert kept == ["INFO pgserver: initdb transcript", "INFO apscheduler.scheduler: Running job",
                        "WARNING apscheduler.scheduler: job missed",
                        "INFO aggregator.scheduler: aggregator: roll-up every 60 s", "INFO pgserverish: not pgserver"]
