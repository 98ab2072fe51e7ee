"""``python -m bonseyes_py.sm DIRECTORY [--bind HOST:PORT] [--workers N] [--worker-class gthread|sync]``.

A minimal entry point for process supervisors and tests; the ``bonseyes`` CLI wraps the same
``serve`` function.
"""

from __future__ import annotations

import argparse
import sys

from bonseyes_py import settings
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bonseyes_py.sm", description="Run the Security Manager.")
    parser.add_argument("directory")
    parser.add_argument("--bind")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--worker-class", choices=("gthread", "sync"))
    parser.add_argument("--database-url")
    parser.add_argument("--pidfile")
    parser.add_argument("--heartbeat-ttl", type=int, dest="heartbeat_ttl_seconds")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "directory"}
    return settings.serve_until_error(lambda: SMConfig.load(args.directory, **overrides), serve)


if __name__ == "__main__":
    sys.exit(main())
