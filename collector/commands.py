"""`pixeltrack collector`."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from collector.config import CollectorConfig
from collector.serve import run, run_workers
from pixeltrack.core.config import CommonConfig

log = logging.getLogger(__name__)


def collector_config(args: argparse.Namespace, settings: CommonConfig, **extra: Any) -> CollectorConfig:
    """Environment, then flags, with the resolved database URL and secret."""
    env = dict(os.environ)
    assert settings.database_url
    env["DATABASE_URL"] = settings.database_url
    if settings.secrets:
        env["PIXELTRACK_SECRET"] = settings.secrets.current
    return CollectorConfig.from_env(env, host=args.host, port=args.port, **extra)


def cmd_collector(args: argparse.Namespace, settings: CommonConfig) -> int:
    """Run the collector (N worker processes with --workers)."""
    config = collector_config(args, settings, workers=getattr(args, "workers", None))
    if config.workers > 1:
        secret_env = {"DATABASE_URL": config.database_url, "PIXELTRACK_SECRET": config.secrets.current}
        return run_workers(config, secret_env)
    return run(config)
