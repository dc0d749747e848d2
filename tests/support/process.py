"""Starting real pixeltrack processes for tests, and talking to them (free ports: ``loadtest.support``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A child Python process running ``args`` (e.g. ['-m', 'collector']); output to a pipe or ``log``.

    No operator listener unless ``env`` asks for one: a fixed default port would clash between tests.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PIXELTRACK_OPERATOR_PORT": "0", **env}
    out = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, *args], env=full_env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


async def wait_ready(session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes],
                     limit: float = 60.0) -> None:
    """Until /readyz answers 200; fail with the process output if it dies first."""
    deadline = asyncio.get_running_loop().time() + limit
    while asyncio.get_running_loop().time() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode()[-3000:] if proc.stdout else "(see its log file)"
            raise AssertionError(f"process exited {proc.returncode}: {output}")
        try:
            async with session.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("process did not become ready")


async def wait_exit(proc: subprocess.Popen[bytes], limit: float = 30.0) -> int:
    """The exit code, waiting without blocking the loop."""
    deadline = asyncio.get_running_loop().time() + limit
    while proc.poll() is None:
        if asyncio.get_running_loop().time() > deadline:
            proc.kill()
            raise AssertionError("process did not exit")
        await asyncio.sleep(0.05)
    return proc.returncode
