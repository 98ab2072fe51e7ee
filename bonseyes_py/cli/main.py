"""Entry point of ``bonseyes``: builds the parser from each command group and maps errors to one line.

A command group is a module with ``register(subparsers)`` that sets ``func`` on its parsers; a
``func`` returns the process exit code. Every error the core raises on purpose, and every OS error
(missing file, permission), ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bonseyes_py import __version__
from bonseyes_py.cli import ca_commands, id_commands, licence_commands
from bonseyes_py.errors import BonseyesError

EXIT_FAILED_CHECK = 1
EXIT_USAGE = 2

COMMAND_GROUPS = [ca_commands, id_commands, licence_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonseyes",
        description="Virtual premise of a collaborative AI lab: PKI, Security Manager, Marketplace, "
                    "Bonseyes Module and pipelines.")
    parser.add_argument("--version", action="version", version=f"bonseyes {__version__}")
    subparsers = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    _register_optional(subparsers)
    return parser


def _register_optional(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Command groups of services register themselves when their modules are present."""
    import importlib

    for module_name in ("sm_commands", "artefact_commands", "audit_commands", "deploy_commands",
                        "pipeline_commands", "bm_commands", "mp_commands"):
        try:
            module = importlib.import_module(f"bonseyes_py.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bonseyes_py.cli.{module_name}":
                raise
            continue
        module.register(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BonseyesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
