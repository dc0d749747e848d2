"""CI smoke of the load command: a few seconds of traffic, and not one hit lost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ["asyncio"] + (["wrk"] if shutil.which("wrk") else [])


@pytest.mark.slow
class TestLoadSmoke:
    """`python -m loadtest run` for 3 seconds answers hits and the database holds every one."""

    @pytest.mark.parametrize("driver", DRIVERS)
    def test_no_loss(self, server_url: str, driver: str) -> None:
        """Exit 0 and `loss: 0 of N` with N > 0; no timing is asserted."""
        env = {**os.environ, "DATABASE_URL": server_url}
        proc = subprocess.run(
            [sys.executable, "-m", "loadtest", "run", "--duration", "3", "--driver", driver,
             "--connections", "16", "--recipients", "5000", "--mix-size", "10000"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        match = re.search(r"^loss: 0 of (\d+)", proc.stdout, re.MULTILINE)
        assert match, proc.stdout + proc.stderr
        assert int(match.group(1)) > 0
