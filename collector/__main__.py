"""`python -m collector`: the collector alone, configured from the environment."""

from __future__ import annotations

import argparse
import logging
import sys

from collector.config import CollectorConfig
from collector.serve import run, run_workers
from pixeltrack.core.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Parse flags, read the environment, serve."""
    p = argparse.ArgumentParser(prog="python -m collector")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--reuse-port", action="store_true", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    try:
        config = CollectorConfig.from_env(host=args.host, port=args.port, workers=args.workers,
                                          reuse_port=args.reuse_port)
    except ConfigError as exc:
        print(f"collector: configuration error: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1 and not config.reuse_port:
        return run_workers(config, {})
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
