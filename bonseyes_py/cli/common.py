"""Small helpers shared by command groups: reading secrets and files, JSON output, config pre-checks."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from bonseyes_py import safejson
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


# What a field of a config dataclass may hold in its JSON file, by the field's annotation.
_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (int, float), bool: (bool,), Path: (str,), dict: (dict,), list: (list,),
}


def _allowed_json_types(annotation: Any) -> tuple[type, ...] | None:
    """The JSON value types a field annotation admits, or None when it is not checked here."""
    allowed: list[type] = []
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for option in typing.get_args(annotation) if union else (annotation,):
        origin = typing.get_origin(option) or option
        if option is type(None):
            allowed.append(type(None))
        elif origin in _JSON_TYPES:
            allowed.extend(_JSON_TYPES[origin])
        else:
            return None
    return tuple(allowed)


def check_config_file(directory: str | Path, config_class: type, file_name: str) -> None:
    """Refuse an unusable ``sm.json``/``bm.json`` in one line naming it, before the service code reads it.

    A missing file is left to the loader, whose message says which ``init`` to run. The file must be a
    bounded JSON object whose known fields have the JSON types their dataclass declares: a garbage or
    hand-edited file otherwise surfaces as an ``AttributeError`` or ``TypeError`` deep in a command.
    """
    path = Path(directory) / file_name
    if not path.exists() and not path.is_symlink():
        return
    data = safejson.load_object_file(path, what=f"configuration {path}")
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name not in data or field.name == "directory":
            continue
        value = data[field.name]
        allowed = _allowed_json_types(hints.get(field.name))
        if allowed is None:
            continue
        if isinstance(value, bool) and bool not in allowed:
            allowed = ()  # JSON true/false is not a number here
        if not isinstance(value, allowed):
            raise InputError(f"configuration {path}: {field.name} is {type(value).__name__} "
                             f"{json.dumps(value)[:40]}, not {' or '.join(t.__name__ for t in allowed) or 'that'}",
                             check="config")
