"""``python -m bonseyes_py.bm DIRECTORY``: run the Bonseyes Module of one host in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from bonseyes_py import settings
from bonseyes_py.bm.config import BMConfig
from bonseyes_py.bm.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bonseyes_py.bm", description="Run a Bonseyes Module.")
    parser.add_argument("directory")
    parser.add_argument("--port", type=int)
    parser.add_argument("--bind-ip", dest="bind_ip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s bm %(levelname)s %(message)s")
    return settings.serve_until_error(lambda: BMConfig.load(args.directory, port=args.port, bind_ip=args.bind_ip),
                                      serve)


if __name__ == "__main__":
    sys.exit(main())
