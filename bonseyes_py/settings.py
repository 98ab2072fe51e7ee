"""Strict settings files: the one loader behind ``sm.json``, ``mp.json`` and ``bm.json``.

A settings dataclass is its own schema. Its field annotations say what each key may hold (``int``,
``float``, ``bool``, ``str``, ``Path``, ``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Any``, or a nested dataclass for a nested section), and ``setting()`` adds the bounds
a type cannot say (a port range, a positive timeout, a non-empty name). Loading a file then refuses, in
one line naming the file and the key:

- a key no field declares, top level or nested, with the closest declared key as a suggestion: a typo
  such as ``bm_prot`` would otherwise leave the default in force without a word;
- a value of the wrong JSON type (``"80a"`` for an integer, ``1`` for a boolean: JSON ``true`` is not a
  number here and ``1`` is not a boolean), a value out of its bounds, a missing required key.

Bad values therefore stop a service at start, where the operator is looking, instead of surfacing as a
``TypeError`` in a worker or as a setting silently not applied. Files are read through
``bonseyes_py.safejson`` (bounded size and nesting) like every other JSON from outside.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import secrets
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError

T = TypeVar("T")

_RULE = "bonseyes_setting"
# A config an operator writes is small; a megabyte of it is a mistake, not a setting.
MAX_SETTINGS_BYTES = 256 * 1024
MAX_PORT = 65535
# gunicorn's levels: it maps any other word to "info" without a warning, so the loader refuses it instead.
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """Bounds of one field beyond its type; kept in the field's metadata by ``setting()``."""

    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound: timeouts and periods that must be > 0
    maximum: float | None = None  # inclusive
    non_empty: bool = False
    # A ``dict`` field whose keys and value types a dataclass declares, kept as a plain dict of the keys
    # given (the consumer applies the dataclass's own defaults); ``skip`` names fields JSON cannot set.
    keys_of: type | None = None
    skip: tuple[str, ...] = ()


def setting(default: Any = dataclasses.MISSING, *, default_factory: Callable[[], Any] | None = None,
            minimum: float | None = None, above: float | None = None, maximum: float | None = None,
            non_empty: bool = False, keys_of: type | None = None, skip: tuple[str, ...] = ()) -> Any:
    """A dataclass field with bounds the loader enforces (``Any`` so it fits any annotation for mypy)."""
    rule = Rule(minimum=minimum, above=above, maximum=maximum, non_empty=non_empty, keys_of=keys_of, skip=skip)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={_RULE: rule})
    return dataclasses.field(default=default, metadata={_RULE: rule})


def port(default: Any = dataclasses.MISSING) -> Any:
    """A TCP port field: an integer from 1 to 65535."""
    return setting(default, minimum=1, maximum=MAX_PORT)


# -- checking one value -----------------------------------------------------------------------------


class _Refused(Exception):
    """A value that does not fit; ``expected`` completes "must be ..." in the message."""

    def __init__(self, key: str, expected: str, value: Any, *, verb: str = "must be") -> None:
        super().__init__(key)
        self.key, self.expected, self.value, self.verb = key, expected, value, verb


def _shown(value: Any) -> str:
    """A value as JSON, cut short: the message stays one line whatever the file holds."""
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(annotation: Any) -> str:
    """What an annotation admits, in words for the message."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return "any JSON value"
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        words = [_describe(option) for option in options if option is not type(None)]
        if type(None) in options:
            words.insert(0, "null")
        return " or ".join(words)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(choice) for choice in typing.get_args(annotation))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or annotation is dict:
        return "an object"
    if dataclasses.is_dataclass(annotation):
        return "an object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Path: "a path (a non-empty string)"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _check_bounds(key: str, value: Any, original: Any, rule: Rule) -> None:
    """Refuse a converted ``value`` outside ``rule``; the message shows the ``original`` the file holds."""
    if rule.non_empty and not value:
        raise _Refused(key, "empty", original, verb="must not be")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, high = rule.minimum, rule.maximum
    if low is not None and high is not None and not low <= value <= high:
        raise _Refused(key, f"between {_number(low)} and {_number(high)}", original)
    if low is not None and value < low:
        raise _Refused(key, f"at least {_number(low)}", original)
    if high is not None and value > high:
        raise _Refused(key, f"at most {_number(high)}", original)
    if rule.above is not None and not value > rule.above:
        raise _Refused(key, f"above {_number(rule.above)}", original)


def _convert(key: str, value: Any, annotation: Any, source: str) -> Any:
    """``value`` as the Python value ``annotation`` declares, or ``_Refused`` naming ``key``."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [option for option in args if option is not type(None)]
        for option in options:
            try:
                return _convert(key, value, option, source)
            except _Refused as refused:
                # A value of the right kind that breaks a rule inside (a nested key, a list item) keeps
                # its precise message when it is the only option that could have matched.
                if len(options) == 1 and refused.key != key:
                    raise
        raise _Refused(key, _describe(annotation), value)
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return value
        raise _Refused(key, _describe(annotation), value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Refused(key, _describe(annotation), value)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Refused(key, _describe(annotation), value)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Refused(key, "a finite number" if isinstance(value, float) else _describe(annotation), value)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Refused(key, _describe(annotation), value)
    if annotation is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise _Refused(key, _describe(annotation), value)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _Refused(key, _describe(annotation), value)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"settings support tuple[X, ...] only, not {annotation}")
        item = args[0] if args else Any
        items = [_convert(f"{key}[{index}]", element, item, source) for index, element in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _Refused(key, _describe(annotation), value)
        item = args[1] if len(args) == 2 else Any
        return {name: _convert(f"{key}.{name}", element, item, source) for name, element in value.items()}
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise _Refused(key, _describe(annotation), value)
        return annotation(**_section(annotation, value, source, prefix=f"{key}."))
    raise TypeError(f"settings cannot declare {key} as {annotation!r}")


# -- checking a section (a file, or a nested object in it) ---------------------------------------------


def _fail(source: str, message: str) -> InputError:
    return InputError(f"{source}: {message}", check="config")


def _unknown(source: str, key: str, prefix: str, known: list[str]) -> InputError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        hint = f' (did you mean "{prefix}{close[0]}"?)'
    else:
        hint = "; known keys: " + ", ".join(prefix + name for name in sorted(known))
    return _fail(source, f'key "{prefix}{key}" is unknown{hint}')


def _section(cls: type, data: Mapping[str, Any], source: str, *, prefix: str = "", partial: bool = False,
             provided: frozenset[str] = frozenset(), retired: Mapping[str, Any] | None = None,
             skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checked and converted keyword arguments of ``cls`` from ``data``.

    ``partial``: missing keys are fine (overrides); ``provided``: keys the caller supplies itself, so the
    file need not hold them; ``retired``: keys an older version wrote, accepted only with the value they
    always had and then dropped, so existing files keep loading while a value someone meant to matter
    is refused rather than ignored.
    """
    hints = typing.get_type_hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):  # a Python caller's mapping; JSON keys are always strings
            raise _fail(source, f"key {key!r} is not a string")
        if key not in declared:
            if retired is not None and key in retired:
                if value != retired[key]:
                    raise _fail(source, f'key "{prefix}{key}" is no longer read; move its settings to the top level '
                                        f"of the file and remove it")
                continue
            raise _unknown(source, key, prefix, list(declared))
        spec = declared[key]
        rule: Rule = spec.metadata.get(_RULE, Rule())
        name = prefix + key
        try:
            if rule.keys_of is not None:
                if not isinstance(value, dict):
                    raise _Refused(name, "an object", value)
                converted: Any = _section(rule.keys_of, value, source, prefix=name + ".", partial=True,
                                          skip=rule.skip)
            else:
                converted = _convert(name, value, hints[key], source)
            _check_bounds(name, converted, value, rule)
        except _Refused as refused:
            raise _fail(source, f'"{refused.key}" {refused.verb} {refused.expected}, got {_shown(refused.value)}') \
                from None
        values[key] = converted
    if not partial:
        for key, spec in declared.items():
            required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            if required and key not in values and key not in provided:
                raise _fail(source, f'key "{prefix}{key}" is required ({_describe(hints[key])}); add it')
    return values


# -- files ----------------------------------------------------------------------------------------------


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str, fixed: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Any] | None = None, retired: Mapping[str, Any] | None = None) -> T:
    """An instance of the settings dataclass ``cls`` from ``data``, checked as described in the module.

    ``fixed`` values are set by the caller after the check (a config's own directory: where the file is
    wins over what it says); ``overrides`` (command-line options, ``None`` meaning "not given") are
    checked like the file and win over it. An ``InputError`` from the dataclass itself (a rule across
    keys) is prefixed with ``source`` so it too names the file.
    """
    fixed = dict(fixed or {})
    values = _section(cls, data, source, provided=frozenset(fixed), retired=retired)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    values.update(_section(cls, given, f"{source} (with the options given)", partial=True))
    values.update(fixed)
    try:
        return cls(**values)
    except InputError as exc:
        raise _fail(source, str(exc.args[0])) from exc


def load_file(cls: type[T], path: Path | str, *, what: str, fixed: Mapping[str, Any] | None = None,
              overrides: Mapping[str, Any] | None = None, retired: Mapping[str, Any] | None = None) -> T:
    """``from_mapping`` over a JSON file, read with bounded size and nesting; ``what`` names it if unreadable."""
    data = safejson.load_object_file(path, what=f"{what} {path}", max_bytes=MAX_SETTINGS_BYTES)
    return from_mapping(cls, data, source=str(path), fixed=fixed, overrides=overrides, retired=retired)


def load_directory(cls: type[T], directory: Path | str, file_name: str, *, what: str, missing_hint: str,
                   missing_check: str, overrides: Mapping[str, Any] | None = None,
                   retired: Mapping[str, Any] | None = None) -> T:
    """The settings kept as ``file_name`` in a service directory whose ``directory`` field is that directory."""
    path = Path(directory) / file_name
    if not path.exists() and not path.is_symlink():
        raise InputError(f"no {what} in {directory}: {path} is missing; {missing_hint}", check=missing_check)
    return load_file(cls, path, what=f"{what} configuration", fixed={"directory": Path(directory)},
                     overrides=overrides, retired=retired)


def to_json(instance: Any) -> dict[str, Any]:
    """The JSON object of a settings dataclass: what ``from_mapping`` reads back to an equal instance."""
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {str(key): plain(item) for key, item in value.items()}
        return value

    return {key: plain(value) for key, value in dataclasses.asdict(instance).items()}


def check(instance: Any, *, source: str) -> dict[str, Any]:
    """Refuse settings built in code that their file could not hold; returns their JSON object.

    For callers that build a config from arguments and must fail before side effects (creating a CA,
    registering a host), not only when ``save`` writes the file at the end.
    """
    data = to_json(instance)
    from_mapping(type(instance), data, source=source)
    return data


def save_file(instance: Any, path: Path) -> Path:
    """Write the settings atomically (a reader never sees half a file), keeping an existing file's mode.

    The values are checked first as the loader will check them, so no code path (``init_sm``, ``enrol_host``,
    an Ansible module) writes a file its service would then refuse to start on.
    """
    data = check(instance, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    # 0o666 less the umask, as a plain write would create it; an existing file's mode is kept below.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def serve_until_error(load: Callable[[], T], serve: Callable[[T], None]) -> int:
    """Run a service on its loaded settings; exit status 1 with one ``error:`` line for a ``BonseyesError``.

    What supervisord runs (``python -m bonseyes_py.sm|mp|bm``): a refused setting ends up as one line naming
    the file and the key in the service's log, not as a traceback an operator must read from the bottom.
    """
    try:
        serve(load())
    except BonseyesError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
