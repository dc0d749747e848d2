"""Typed keys for what the collector app shares between handlers."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from collector.buffer import HitBuffer
from collector.config import CollectorConfig
from collector.metrics import Metrics
from pixeltrack.core.tokens import Signer


@dataclass
class RunState:
    """Mutable run state: set when SIGTERM starts the drain."""

    draining: bool = False


CONFIG = web.AppKey("config", CollectorConfig)
SIGNER = web.AppKey("signer", Signer)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", asyncpg.Pool)
BUFFER = web.AppKey("buffer", HitBuffer)
STATE = web.AppKey("state", RunState)
