"""Entry point of ``bonseyes``: builds the parser from each command group and maps errors to one line.

A command group is a module with ``register(subparsers)`` that sets ``func`` on its parsers; a
``func`` returns the process exit code. Every error ends as one line ``error: ...`` on stderr and a
non-zero exit, never a traceback:

- a malformed argument is refused while parsing (the type functions of ``bonseyes_py.cli.arguments``),
  and a usage error is one line naming the option, exit 2 (argparse would print the usage first);
- an error the core raises on purpose (``BonseyesError``) exits 1 with its check and message;
- an OS error (missing file, permission, a directory given for a file) exits 2 naming the path;
- a ``ValueError``/``UnicodeError``/``OverflowError``/``RecursionError`` from a value the command was
  given exits 2 naming the kind of error;
- anything else is a bug, still one line (exit 70); ``BONSEYES_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bonseyes_py import __version__
from bonseyes_py.cli import ca_commands, id_commands, licence_commands
from bonseyes_py.errors import BonseyesError

EXIT_FAILED_CHECK = 1
EXIT_USAGE = 2
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: an internal error

COMMAND_GROUPS = [ca_commands, id_commands, licence_commands]


def one_line(text: object) -> str:
    """``text`` on one line: control characters (newlines, escapes) shown escaped, never emitted."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def fail(message: object, code: int) -> int:
    print(f"error: {one_line(message)}", file=sys.stderr)
    return code


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``error: PROG: argument --X: ...`` (exit 2), no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(self.prog)}: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BonseyesError as exc:
        return fail(exc, EXIT_FAILED_CHECK)
    except OSError as exc:
        return fail(_os_error(exc), EXIT_USAGE)
    except UnicodeError as exc:
        return fail(f"not UTF-8 text: {exc}", EXIT_USAGE)
    except RecursionError:
        return fail("input nests too deeply to be read", EXIT_USAGE)
    except (ValueError, OverflowError) as exc:
        return fail(f"invalid value: {exc}", EXIT_USAGE)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("BONSEYES_DEBUG") == "1":
            raise
        return fail(f"internal error ({type(exc).__name__}): {exc}; BONSEYES_DEBUG=1 shows where", EXIT_SOFTWARE)


if __name__ == "__main__":
    sys.exit(main())
