"""Bounded JSON parsing: the one way the project reads JSON it did not write itself in this process.

Python's ``json`` recurses once per nesting level, so a body of ``[[[[...]]]]`` a few kilobytes long
raises ``RecursionError`` deep inside a request handler (a 500) or a CLI command (a traceback). Every
JSON document that comes from outside (HTTP bodies and answers, licence headers and payloads, config,
policy and state files, archive manifests) is therefore checked here for size and nesting *before*
``json.loads`` sees it, and any failure is one ``InputError`` whose message names what was read.

A key given twice in one object is refused too: parsers disagree on which copy wins (Python keeps the last,
others the first), and a licence claim, a request field or a config key that two readers see differently
is how a check gets bypassed (RFC 7515 section 4 and RFC 8259 section 4 leave the choice open; refusing is
the safe one).

``json.loads`` and ``json.load`` are banned elsewhere by ruff (``TID251`` in pyproject.toml), so a new
parser site cannot skip the bounds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bonseyes_py.errors import InputError

# Deeper than any document the project defines (licences, configs and OCI manifests nest < 10 levels).
MAX_DEPTH = 32
DEFAULT_MAX_BYTES = 1024 * 1024
# A JSON string (skipped whole, escapes included) or one bracket. The closing quote is optional so that
# an unterminated string ends the scan in one step: with it required, every later quote would start a
# new attempt that runs to the end of the text, which is quadratic (minutes of CPU for 256 KiB).
# Possessive quantifiers never backtrack, so each character is looked at once.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)


def bracket_nesting(text: str, tokens: re.Pattern[str], limit: int | None = None) -> int:
    """The deepest bracket nesting of ``text``, where ``tokens`` matches a single bracket or a run to skip whole.

    Runs that do not start with a bracket (strings, comments) are skipped. Linear in ``len(text)``; with
    ``limit`` it stops as soon as the nesting exceeds it (and returns ``limit + 1``). Unbalanced closing
    brackets count as nothing: the parsers refuse those texts anyway.
    """
    depth = deepest = 0
    for match in tokens.finditer(text):
        first = text[match.start()]
        if first in "([{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if limit is not None and deepest > limit:
                    return deepest
        elif first in ")]}" and depth > 0:
            depth -= 1
    return deepest


def nesting_depth(text: str, limit: int | None = None) -> int:
    """The deepest bracket nesting of a JSON ``text``, with brackets inside strings ignored."""
    return bracket_nesting(text, _TOKEN, limit)


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return value


def loads(data: str | bytes | bytearray, *, what: str, max_bytes: int = DEFAULT_MAX_BYTES,
          max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` after checking its size and nesting; ``what`` names it in the one-line error."""
    if len(data) > max_bytes:
        raise InputError(f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit", check="json-too-large")
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{what} is not UTF-8 text: {exc.reason} at byte {exc.start}", check="json") from exc
    else:
        text = data
    # Cheap exit first: a text with few brackets cannot nest deeply.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text, max_depth) > max_depth:
        raise InputError(f"{what} nests deeper than {max_depth} levels", check="json-too-deep")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)  # noqa: TID251 - the one allowed call
    except DuplicateKeyError as exc:
        raise InputError(f"{what} is ambiguous: {exc}", check="json-duplicate-key") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}", check="json") from exc


def loads_object(data: str | bytes | bytearray, *, what: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``loads`` for documents that must be a JSON object."""
    value = loads(data, what=what, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, not {type(value).__name__}", check="json")
    return value


def load_file(path: Path | str, *, what: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """Read and parse a JSON file, reading at most ``max_bytes`` + 1 bytes of it."""
    label = what or f"file {path}"
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except IsADirectoryError as exc:
        raise InputError(f"{label} is a directory, not a JSON file", check="json") from exc
    except OSError as exc:
        raise InputError(f"cannot read {label}: {exc.strerror or exc}", check="json") from exc
    return loads(data, what=label, max_bytes=max_bytes, max_depth=max_depth)


def load_object_file(path: Path | str, *, what: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``load_file`` for files that must hold a JSON object."""
    label = what or f"file {path}"
    value = load_file(path, what=label, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(value, dict):
        raise InputError(f"{label} must hold a JSON object, not {type(value).__name__}", check="json")
    return value
