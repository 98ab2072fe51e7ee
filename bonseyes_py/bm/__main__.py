"""``python -m bonseyes_py.bm DIRECTORY``: run the Bonseyes Module of one host in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from bonseyes_py.bm.config import BMConfig
from bonseyes_py.bm.server import serve
from bonseyes_py.errors import BonseyesError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bonseyes_py.bm", description="Run a Bonseyes Module.")
    parser.add_argument("directory")
    parser.add_argument("--port", type=int)
    parser.add_argument("--bind-ip", dest="bind_ip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s bm %(levelname)s %(message)s")
    try:
        serve(BMConfig.load(args.directory, port=args.port, bind_ip=args.bind_ip))
    except BonseyesError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
