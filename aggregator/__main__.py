"""`python -m aggregator [--once | --purge] [--interval N]`: the aggregator without the pixeltrack CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from aggregator.commands import add_aggregator_flags, aggregator_command
from pixeltrack.core.config import CommonConfig, ConfigError


def main(argv: list[str] | None = None) -> int:
    """Parse flags, configure logging, run."""
    parser = argparse.ArgumentParser(prog="python -m aggregator", description="pixeltrack report aggregator")
    add_aggregator_flags(parser)
    args = parser.parse_args(argv)
    # --once and --purge print their result; the service's INFO lines are its output.
    level = logging.WARNING if args.once or args.purge else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # "Running job ..." every interval
    try:
        return aggregator_command(args, CommonConfig.from_env())
    except ConfigError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
