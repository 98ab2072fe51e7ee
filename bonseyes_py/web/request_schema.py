"""Requests checked against the OpenAPI document the service serves, so the two cannot drift apart.

A service hands its document to ``create_flask_app``; every operation's JSON request body and
declared query parameters are compiled here once, when the app is built (``$ref`` to the document's
components resolved by inlining, so a request pays for no reference lookups), into one validator
per (method, path template). A refusal is one line that names the JSON path of the first problem and
the rule it breaks (``body.policy: expected string, got object``), never the offending value, which
may be large or secret (a passphrase). The check name stays machine-readable: ``unknown-field``,
``missing-field`` or ``invalid-field``.

What a schema cannot say (one field required only of some callers, ownership, a CSR that parses) is
left to the handlers and the service.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from bonseyes_py.errors import BonseyesError, InputError

JSON_MEDIA_TYPE = "application/json"
_FLASK_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_INTEGER_TEXT = re.compile(r"^-?[0-9]{1,19}\Z")
_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (dict, "object"), (list, "array"),
    (type(None), "null"))
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UnsupportedMediaType(BonseyesError):
    """The request's Content-Type is not one the operation declares for its (non-JSON) body."""

    check = "content-type"
    http_status = 415


def path_template(rule: str) -> str:
    """The OpenAPI path template of a Flask rule: ``/v1/hosts/<host_id>`` is ``/v1/hosts/{host_id}``."""
    return _FLASK_PARAMETER.sub(r"{\1}", rule)


def _json_type(value: Any) -> str:
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _key(name: Any) -> str:
    """A field name as it appears in a path; a hostile name is escaped and shortened, never echoed raw."""
    text = str(name)
    if _PLAIN_KEY.match(text):
        return f".{text}"
    return f"[{json.dumps(text[:64])}]"


def _location(root: str, path: Iterator[Any]) -> str:
    return root + "".join(f"[{part}]" if isinstance(part, int) else _key(part) for part in path)


def _list(values: Any) -> str:
    return ", ".join("null" if v is None else str(v) for v in values)


def describe(error: ValidationError, root: str) -> InputError:
    """One line naming where the first problem is and which rule it breaks (no value is echoed)."""
    where = _location(root, iter(error.absolute_path))
    keyword, rule = error.validator, error.validator_value
    if "propertyNames" in error.relative_schema_path:
        return InputError(f"{where}: field name {_key(error.instance)[1:]} breaks the {keyword} rule of its names",
                          check="invalid-field")
    if keyword == "required" and isinstance(error.instance, dict):
        missing = next((name for name in rule if name not in error.instance), "?")
        return InputError(f"{where}{_key(missing)}: required field is missing", check="missing-field")
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        extra = sorted(str(name) for name in error.instance if name not in known)
        unknown = extra[0] if extra else "?"
        allowed = f"allowed: {_list(known)}" if known else "no fields are allowed here"
        return InputError(f"{where}{_key(unknown)}: unknown field; {allowed}", check="unknown-field")
    messages = {
        "type": lambda: f"expected {' or '.join(rule) if isinstance(rule, list) else rule}, "
                        f"got {_json_type(error.instance)}",
        "pattern": lambda: f"does not match the pattern {rule[:-2] + '$' if rule.endswith(chr(92) + 'Z') else rule}",
        "maxLength": lambda: f"longer than {rule} characters",
        "minLength": lambda: f"shorter than {rule} characters",
        "maxItems": lambda: f"more than {rule} items",
        "minItems": lambda: f"fewer than {rule} items",
        "maxProperties": lambda: f"more than {rule} entries",
        "minimum": lambda: f"less than the minimum {rule}",
        "maximum": lambda: f"greater than the maximum {rule}",
        "enum": lambda: f"must be one of {_list(rule)}",
        "const": lambda: f"must be {rule}",
    }
    text = messages[keyword]() if keyword in messages else f"breaks the schema's {keyword} rule"
    return InputError(f"{where}: {text}", check="invalid-field")


def python_pattern(pattern: str) -> str:
    """An ECMA-262 ``pattern`` for Python's ``re``: a final ``$`` becomes ``\\Z``.

    JSON Schema patterns follow ECMA-262, where ``$`` matches only at the end of the text; jsonschema
    runs them with ``re.search``, where ``$`` also matches before a final newline, so ``"alice\\n"``
    would pass ``^[a-z]+$``. The document keeps the portable form; the compiled validator gets this one.
    """
    if not pattern.endswith("$"):
        return pattern
    body = pattern[:-1]
    if (len(body) - len(body.rstrip("\\"))) % 2:  # an escaped dollar sign, not an anchor
        return pattern
    return body + "\\Z"


def _resolve(node: Any, document: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """A copy of ``node`` with every local ``$ref`` replaced by what it points to (cycles refused).

    Patterns are rewritten for Python on the way (``python_pattern``).
    """
    if isinstance(node, list):
        return [_resolve(item, document, seen) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str):
        if not reference.startswith("#/"):
            raise ValueError(f"request schema $ref {reference!r} is not local to the OpenAPI document")
        if reference in seen:
            raise ValueError(f"request schema $ref {reference!r} refers to itself; request schemas must be finite")
        target: Any = document
        for part in reference[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        siblings = {k: _resolve(v, document, seen) for k, v in node.items() if k != "$ref"}
        return {**_resolve(target, document, (*seen, reference)), **siblings}
    return {key: python_pattern(value) if key == "pattern" and isinstance(value, str)
            else _resolve(value, document, seen) for key, value in node.items()}


@dataclass(frozen=True)
class QueryParameter:
    name: str
    required: bool
    schema_type: str | None
    validator: Draft202012Validator

    def parse(self, text: str) -> Any:
        """The query string's text as the type the schema declares (query values arrive as strings)."""
        if self.schema_type == "integer":
            if not _INTEGER_TEXT.match(text):
                raise InputError(f"query.{self.name}: expected integer, got text", check="invalid-field")
            return int(text)
        if self.schema_type == "boolean":
            if text not in ("true", "false"):
                raise InputError(f"query.{self.name}: expected true or false", check="invalid-field")
            return text == "true"
        return text


@dataclass(frozen=True)
class OperationSchema:
    """The compiled request rules of one operation (method + path template)."""

    method: str
    path: str
    body: Draft202012Validator | None
    body_required: bool
    takes_other_body: bool
    query: tuple[QueryParameter, ...] = field(default=())
    media_types: tuple[str, ...] = field(default=())
    summary: str = ""

    @property
    def takes_json(self) -> bool:
        return self.body is not None

    def check_media_type(self, mimetype: str) -> None:
        """A non-JSON body (an upload) must come as a type the operation declares, before it is read.

        JSON bodies are not held to their Content-Type: clients have always sent them without one.
        """
        if self.takes_other_body and mimetype not in self.media_types:
            what = f"{self.summary}: " if self.summary else f"{self.method} {self.path}: "
            raise UnsupportedMediaType(f"{what}Content-Type must be {' or '.join(self.media_types)}, "
                                       f"not {mimetype or 'none'}")

    def check_body(self, body: Any) -> None:
        if self.body is None:
            return
        errors = self.body.iter_errors(body)
        first = next(errors, None)
        if first is None:
            return
        chosen = best_match([first, *errors])
        raise describe(chosen if chosen is not None else first, "body")

    def check_query(self, args: Mapping[str, str]) -> dict[str, Any]:
        """The declared query parameters, typed and validated; undeclared ones are ignored."""
        values: dict[str, Any] = {}
        for parameter in self.query:
            text = args.get(parameter.name)
            if text is None:
                if parameter.required:
                    raise InputError(f"query.{parameter.name}: required parameter is missing", check="missing-field")
                continue
            value = parameter.parse(text)
            error = next(parameter.validator.iter_errors(value), None)
            if error is not None:
                raise describe(error, f"query.{parameter.name}")
            values[parameter.name] = value
        return values


class RequestSchemas:
    """Every operation of one OpenAPI document, compiled once when the app is built."""

    def __init__(self, operations: dict[tuple[str, str], OperationSchema], validators_built: int) -> None:
        self.operations = operations
        # Flask rule -> operation, filled as rules are first seen (an app has a fixed, small set of rules).
        self._by_rule: dict[tuple[str, str], OperationSchema | None] = {}
        # How many validators were compiled: constant for the app's life (a test checks no request adds one).
        self.validators_built = validators_built

    @classmethod
    def from_openapi(cls, document: Mapping[str, Any]) -> RequestSchemas:
        operations: dict[tuple[str, str], OperationSchema] = {}
        built = 0
        for path, item in document.get("paths", {}).items():
            shared = item.get("parameters", [])
            for method, operation in item.items():
                if method == "parameters" or not isinstance(operation, dict):
                    continue
                content = (operation.get("requestBody") or {}).get("content", {})
                body = None
                if JSON_MEDIA_TYPE in content:
                    body = _compile(content[JSON_MEDIA_TYPE].get("schema", {}), document, f"{method} {path}")
                    built += 1
                query = []
                for parameter in [*shared, *operation.get("parameters", [])]:
                    parameter = _resolve(parameter, document)
                    if parameter.get("in") != "query":
                        continue
                    schema = parameter.get("schema", {})
                    query.append(QueryParameter(parameter["name"], bool(parameter.get("required")),
                                                schema.get("type") if isinstance(schema.get("type"), str) else None,
                                                _compile(schema, document, f"{method} {path} ?{parameter['name']}")))
                    built += 1
                operations[(method.upper(), path)] = OperationSchema(
                    method.upper(), path, body, bool((operation.get("requestBody") or {}).get("required")),
                    bool(content) and body is None, tuple(query), tuple(content), str(operation.get("summary", "")))
        return cls(operations, built)

    def operation(self, method: str, rule: str) -> OperationSchema | None:
        """The operation of a Flask rule (``<name>`` parameters) or an OpenAPI path template."""
        key = (method, rule)
        if key not in self._by_rule:
            self._by_rule[key] = self.operations.get((method.upper(), path_template(rule)))
        return self._by_rule[key]

    def write_routes_without_body_schema(self, rules: Iterator[tuple[str, str]]) -> list[str]:
        """Of ``(method, rule)`` pairs, the write routes with neither a JSON nor another request body declared."""
        missing = []
        for method, rule in rules:
            if method.upper() not in _WRITE_METHODS:
                continue
            operation = self.operation(method, rule)
            if operation is None or not (operation.takes_json or operation.takes_other_body):
                missing.append(f"{method.upper()} {path_template(rule)}")
        return sorted(missing)


def _compile(schema: Any, document: Mapping[str, Any], where: str) -> Draft202012Validator:
    resolved = _resolve(schema, document)
    try:
        Draft202012Validator.check_schema(resolved)
    except SchemaError as exc:
        raise ValueError(f"the request schema of {where} is not a valid JSON Schema: {exc}") from exc
    return Draft202012Validator(resolved)


__all__ = ["OperationSchema", "QueryParameter", "RequestSchemas", "UnsupportedMediaType", "describe", "path_template",
           "python_pattern"]
