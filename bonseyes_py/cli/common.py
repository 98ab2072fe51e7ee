"""Small helpers shared by command groups: reading secrets and files, JSON output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bonseyes_py.errors import InputError


def read_passphrase(path: str | None, env: str | None = None) -> bytes | None:
    """Passphrases come from a file (or an environment variable), never from the command line."""
    if path:
        return Path(path).read_bytes().rstrip(b"\r\n")
    if env and os.environ.get(env):
        return os.environ[env].encode()
    return None


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def require_one(**options: object) -> None:
    given = [name for name, value in options.items() if value]
    if len(given) != 1:
        names = " or ".join("--" + n.replace("_", "-") for n in options)
        raise InputError(f"give exactly one of {names}", check="usage")


def read_text_file(path: str | Path, *, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a file of at most ``max_bytes``; one ``InputError`` naming it otherwise."""
    label = f"{what} {path}"
    if Path(path).is_dir():
        raise InputError(f"{label} is a directory, not a file", check="input-file")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{label} is over {max_bytes} bytes", check="input-file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label} is not UTF-8 text: {exc.reason} at byte {exc.start}", check="input-file") from exc
