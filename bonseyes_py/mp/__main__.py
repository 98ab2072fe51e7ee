"""``python -m bonseyes_py.mp DIRECTORY [--bind HOST:PORT] [--workers N]``: run the Marketplace.

A minimal entry point for process supervisors and tests; ``bonseyes mp serve`` wraps the same ``serve``.
"""

from __future__ import annotations

import argparse
import sys

from bonseyes_py import settings
from bonseyes_py.mp.config import MPConfig
from bonseyes_py.mp.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bonseyes_py.mp", description="Run the Marketplace.")
    parser.add_argument("directory")
    parser.add_argument("--bind")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "directory"}
    return settings.serve_until_error(lambda: MPConfig.load(args.directory, **overrides), serve)


if __name__ == "__main__":
    sys.exit(main())
