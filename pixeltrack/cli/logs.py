"""Where log lines go: the terminal shows a command's own result, the log file keeps the rest.

* one-shot commands (`job list`, `report`, ...) print their result on stdout;
  only warnings and errors reach the terminal;
* services (`up`, `collector`, `aggregator` without --once) log their INFO
  lines, which are their output, but not the libraries' chatter: pgserver's
  initdb and pg_ctl transcripts and APScheduler's "Running job" lines;
* ``-v`` shows everything, DEBUG included;
* the log file in the data folder (``pixeltrack.log``) keeps every INFO line,
  chatter included, for when something went wrong.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

LOG_FILE = "pixeltrack.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines are transcripts, not news (kept in the log file).
CHATTY = ("pgserver", "apscheduler")
MAX_BYTES = 5_000_000  # then pixeltrack.log.1, .2: a long `up` does not fill the disk

_installed: list[logging.Handler] = []
_root_level: list[int] = []


class Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is now (pytest swaps it per test)."""

    @property
    def stream(self) -> Any:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class NoChatter(logging.Filter):
    """Drops the chatty libraries' records below WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        """True to keep ``record``."""
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == name or record.name.startswith(name + ".") for name in CHATTY)


def configure(*, verbose: bool, service: bool, log_file: Path | None) -> Path | None:
    """Install the terminal handler and, when ``log_file`` can be written, the file handler.

    Returns the log file in use, or None. Calling again replaces what an
    earlier call installed (tests run many commands in one process).
    """
    reset()
    root = logging.getLogger()
    _root_level.append(root.level)
    formatter = logging.Formatter(FORMAT)
    console = Stderr()
    console.setFormatter(formatter)
    if verbose:
        console.setLevel(logging.DEBUG)
    elif service:
        console.setLevel(logging.INFO)
        console.addFilter(NoChatter())
    else:
        console.setLevel(logging.WARNING)
    _install(root, console)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(log_file, maxBytes=MAX_BYTES, backupCount=2, encoding="utf-8")
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot write the log file %s: %s", log_file, exc)
            log_file = None
        else:
            handler.setFormatter(formatter)
            handler.setLevel(logging.DEBUG if verbose else logging.INFO)
            _install(root, handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return log_file


def _install(root: logging.Logger, handler: logging.Handler) -> None:
    root.addHandler(handler)
    _installed.append(handler)


def reset() -> None:
    """Remove the handlers ``configure`` installed and restore the root level."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
    if _root_level:
        root.setLevel(_root_level.pop())
