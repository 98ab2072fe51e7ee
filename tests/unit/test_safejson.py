"""Bounded JSON parsing (``bonseyes_py.safejson``), the sites that use it, and a guard that no other parser exists.

The parser checks size, UTF-8 and nesting before ``json.loads`` sees a document, so a deeply nested
body or file is one ``InputError`` (``json-too-deep``), never a ``RecursionError``. The last tests walk
``bonseyes_py/`` and ``plugins/`` and fail on any JSON parse that bypasses it, so the class stays closed
even where ruff's TID251 ban is not run.
"""

from __future__ import annotations

import ast
import base64
import json
import time
from pathlib import Path

import pytest

from bonseyes_py import safejson
from bonseyes_py.errors import InputError, LicenceError
from bonseyes_py.pki.ca import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]


def deep(depth: int, kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"k":' * depth + "0" + "}" * depth


def refused(data: str | bytes, check: str, **kwargs: int) -> InputError:
    with pytest.raises(InputError) as error:
        safejson.loads(data, what="the document", **kwargs)
    assert error.value.check == check, error.value
    assert "the document" in error.value.args[0]
    assert "\n" not in error.value.args[0]
    return error.value


# -- nesting ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["[", "{"])
def test_documents_at_the_depth_limit_parse(kind: str) -> None:
    text = deep(safejson.MAX_DEPTH, kind)
    assert safejson.nesting_depth(text) == safejson.MAX_DEPTH
    assert safejson.loads(text, what="x") == json.loads(text)


@pytest.mark.parametrize("kind", ["[", "{"])
def test_one_level_over_the_limit_is_json_too_deep(kind: str) -> None:
    error = refused(deep(safejson.MAX_DEPTH + 1, kind), "json-too-deep")
    assert f"{safejson.MAX_DEPTH} levels" in error.args[0]


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
def test_deep_documents_never_reach_the_parser(depth: int) -> None:
    refused(deep(depth), "json-too-deep")
    refused(deep(depth, "{"), "json-too-deep")
    refused(deep(depth).encode(), "json-too-deep")


def test_mixed_and_unbalanced_nesting() -> None:
    assert safejson.nesting_depth('[{"a": [1, {"b": []}]}, [[]]]') == 5
    # Closing brackets before any opening one do not lower the count below zero (the parser refuses them).
    assert safejson.nesting_depth("]]]]" + "[" * 40) == 40
    refused("]]]]]" + "[" * 40, "json-too-deep")
    # An unclosed prefix still counts: the parser would recurse through it before failing.
    refused("[" * 40, "json-too-deep")


def test_custom_depth_limit() -> None:
    assert safejson.loads(deep(5), what="x", max_depth=5) == json.loads(deep(5))
    refused(deep(6), "json-too-deep", max_depth=5)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[" * 5_000, "b": "{" * 5_000, "c": "]}" * 100})
    assert safejson.nesting_depth(text) == 1
    assert safejson.loads(text, what="x")["a"] == "[" * 5_000


def test_escaped_quotes_and_backslashes_keep_the_string_boundaries() -> None:
    # "\"[[[" is one string; "\\" ends with an escaped backslash, so the brackets after it are real.
    inside = json.dumps(["\"" + "[" * 100, "\\"])
    assert safejson.nesting_depth(inside) == 1
    assert safejson.loads(inside, what="x") == ["\"" + "[" * 100, "\\"]
    outside = '["\\\\"' + ",[" * 40 + "]" * 41
    assert safejson.nesting_depth(outside) == 41
    refused(outside, "json-too-deep")


def test_unterminated_strings_are_scanned_in_linear_time() -> None:
    """A quote that never closes, followed by many escaped quotes: each quote must not restart a scan."""
    text = '"' + 'a\\"' * 85_000 + "[" * 40
    started = time.perf_counter()
    assert safejson.nesting_depth(text) == 0
    refused(text, "json")
    assert time.perf_counter() - started < 1.0
    many = '["' + '\\"' * 100_000
    started = time.perf_counter()
    refused(many + "[" * 40, "json")
    assert time.perf_counter() - started < 1.0


def test_the_depth_scan_stops_at_the_limit() -> None:
    assert safejson.nesting_depth("[" * 100_000, limit=10) == 11


def test_a_quarter_megabyte_of_brackets_is_refused_quickly() -> None:
    started = time.perf_counter()
    refused(deep(128 * 1024), "json-too-deep")
    assert time.perf_counter() - started < 1.0


# -- size and encoding --------------------------------------------------------------------------------

def test_size_limit() -> None:
    document = json.dumps({"a": "x" * 100})
    assert safejson.loads(document, what="x", max_bytes=len(document)) == {"a": "x" * 100}
    error = refused(document, "json-too-large", max_bytes=len(document) - 1)
    assert str(len(document)) in error.args[0]
    refused(b"[" + b"1," * 600_000 + b"1]", "json-too-large")


def test_non_utf8_bytes_are_refused() -> None:
    error = refused(b'{"a": "\xff\xfe"}', "json")
    assert "UTF-8" in error.args[0]
    refused('{"a": "é"}'.encode("latin-1"), "json")
    assert safejson.loads('{"a": "é"}'.encode(), what="x") == {"a": "é"}


def test_invalid_json_is_one_line_input_error() -> None:
    for text in ("", "{", "{'a': 1}", "[1,]", "nope", '{"a":\n\n1,,}', "1" * 5000):
        error = refused(text, "json")
        assert "not valid JSON" in error.args[0]


def test_loads_object() -> None:
    assert safejson.loads_object(b'{"a": [1]}', what="x") == {"a": [1]}
    for text in ("[]", "1", '"s"', "null"):
        with pytest.raises(InputError, match="must be a JSON object"):
            safejson.loads_object(text, what="x")


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text('{"a": 1}')
    assert safejson.load_file(path) == {"a": 1}
    assert safejson.load_object_file(path, what="the config") == {"a": 1}
    for content, check in ((deep(400), "json-too-deep"), ("garbage", "json"), ("x" * 2_000, "json-too-large")):
        path.write_text(content)
        with pytest.raises(InputError) as error:
            safejson.load_file(path, max_bytes=1_000)
        assert error.value.check == check
        assert str(path) in error.value.args[0]
    path.write_text("[1]")
    with pytest.raises(InputError, match="must hold a JSON object"):
        safejson.load_object_file(path)
    with pytest.raises(InputError, match="cannot read"):
        safejson.load_file(tmp_path / "missing.json")
    with pytest.raises(InputError, match="is a directory"):
        safejson.load_file(tmp_path)


# -- the sites: configuration files, licences, BL's inputs, gunicorn's errors ----------------------------

def _write_config(directory: Path, name: str, content: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(content)
    return path


@pytest.mark.parametrize("content", ["garbage {", deep(10_000), "[1, 2]", '{"a": ' + deep(100) + "}"],
                         ids=["garbage", "deep", "array", "deep-value"])
def test_config_loaders_refuse_bad_files_in_one_line_naming_the_file(tmp_path: Path, content: str) -> None:
    from bonseyes_py.bm.config import BMConfig
    from bonseyes_py.mp.config import MPConfig
    from bonseyes_py.sm.config import SMConfig

    for loader, name in ((SMConfig.load, "sm.json"), (BMConfig.load, "bm.json"), (MPConfig.load, "mp.json")):
        directory = tmp_path / name.removesuffix(".json")
        path = _write_config(directory, name, content)
        with pytest.raises(InputError) as error:
            loader(directory)
        message = error.value.args[0]
        assert str(path) in message, message
        assert "\n" not in message, message


def test_ca_configuration_is_bounded(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")
    ca.paths.config.write_text(deep(10_000))
    with pytest.raises(InputError) as error:
        CertificateAuthority.load(ca.paths.directory)
    assert error.value.check == "json-too-deep"
    assert str(ca.paths.config) in error.value.args[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_jws_with_a_deep_header_is_json_too_deep_not_recursion(ca: CertificateAuthority) -> None:
    from bonseyes_py.jose import unverified_header, verify_jws
    from bonseyes_py.pki.roles import Role

    for depth in (100, 3_000):
        token = f"{_b64(deep(depth).encode())}.{_b64(b'{}')}.{_b64(b'sig')}"
        with pytest.raises(InputError) as error:
            verify_jws(token, ca.trust_store(), typ="x", signer_roles=(Role.LICENCE_SIGNER,))
        assert error.value.check == "json-too-deep"
        with pytest.raises(InputError):
            unverified_header(token)


def test_jws_header_bounds(ca: CertificateAuthority) -> None:
    from bonseyes_py.jose import MAX_HEADER_BYTES, unverified_header

    big = json.dumps({"alg": "ES256", "pad": "x" * MAX_HEADER_BYTES}).encode()
    with pytest.raises(InputError) as error:
        unverified_header(f"{_b64(big)}.{_b64(b'{}')}.{_b64(b'sig')}")
    assert error.value.check == "json-too-large"
    # Not JSON at all, or not UTF-8: still the licence format failure it always was.
    for header in (b"not json", b"\xff\xfe{}"):
        with pytest.raises(LicenceError) as refusal:
            unverified_header(f"{_b64(header)}.{_b64(b'{}')}.{_b64(b'sig')}")
        assert refusal.value.check == "format"


def test_real_headers_fit_the_header_bound(any_ca: CertificateAuthority) -> None:
    """Three certificates of the largest key type (RSA-3072) stay well under MAX_HEADER_BYTES."""
    from bonseyes_py.jose import MAX_HEADER_BYTES, Signer, unverified_header
    from bonseyes_py.pki.keys import algorithm_of

    signer = Signer(any_ca.signer_key, [*any_ca.signer_chain, any_ca.root][:3])
    token = signer.sign({"a": 1}, "x")
    header = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    assert len(header) * 2 < MAX_HEADER_BYTES, (algorithm_of(any_ca.signer_key), len(header))
    assert unverified_header(token)["alg"] == signer.algorithm


def test_signed_deep_payload_is_json_too_deep(ca: CertificateAuthority) -> None:
    """Even a payload that carries a valid signature is bounded before it is parsed."""
    from bonseyes_py.jose import Signer, verify_jws
    from bonseyes_py.pki.roles import Role

    signer = Signer(ca.signer_key, ca.signer_chain)
    header = signer._header_segment("x")
    signing_input = header + b"." + _b64(deep(5_000).encode()).encode()
    signature = signer._jwa.sign(signing_input, signer.key)  # type: ignore[attr-defined]
    token = (signing_input + b"." + _b64(signature).encode()).decode()
    with pytest.raises(InputError) as error:
        verify_jws(token, ca.trust_store(), typ="x", signer_roles=(Role.LICENCE_SIGNER,))
    assert error.value.check == "json-too-deep"


def test_bl_metadata_and_endpoints_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bonseyes_py.bl import main, protocol

    metadata = tmp_path / "metadata.json"
    metadata.write_text(deep(10_000))
    with pytest.raises(main.LayerError) as error:
        main.read_metadata(str(metadata))
    assert "json-too-deep" in str(error.value)
    assert error.value.status == main.EXIT_CONFIG
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(deep(10_000))
    monkeypatch.setattr(protocol, "ENDPOINTS", str(endpoints))
    protocol.relay_sockets.cache_clear()
    try:
        assert protocol.relay_sockets() == {}
    finally:
        protocol.relay_sockets.cache_clear()


def test_bl_relay_frames_are_bounded() -> None:
    import asyncio
    import struct

    from bonseyes_py.bl.relay import RelayRefused, _read_frame

    async def read(data: bytes) -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack("!I", len(data)) + data)
        reader.feed_eof()
        return await _read_frame(reader)

    with pytest.raises(RelayRefused, match="deeper than"):
        asyncio.run(read(deep(10_000).encode()))
    with pytest.raises(RelayRefused):
        asyncio.run(read(b"\xff not json"))
    assert asyncio.run(read(b'{"host_licence": "a.b.c"}')) == {"host_licence": "a.b.c"}


def test_gunicorn_errors_become_json_answers() -> None:
    from gunicorn.http.errors import InvalidHeader, InvalidRequestLine, LimitRequestHeaders, LimitRequestLine

    from bonseyes_py.web.workers import json_error_answer

    cases = [
        (LimitRequestLine(10_022, 8190), b"HTTP/1.1 414 URI Too Long\r\n", 414, "uri-too-long"),
        (LimitRequestHeaders("limit request headers fields size"),
         b"HTTP/1.1 431 Request Header Fields Too Large\r\n", 431, "headers-too-large"),
        (InvalidRequestLine("<script>"), b"HTTP/1.1 400 Bad Request\r\n", 400, "bad-request-line"),
        (InvalidHeader("Bad Name"), b"HTTP/1.1 400 Bad Request\r\n", 400, "bad-header"),
        (InvalidRequestLine("x"), b"", 400, "bad-request-line"),  # no page caught: the class decides
        (RuntimeError("boom"), b"HTTP/1.1 500 Internal Server Error\r\n", 500, "internal"),
    ]
    for exc, page, status, check in cases:
        answer = json_error_answer(exc, page)
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith(f"HTTP/1.1 {status} "), lines
        assert "Content-Type: application/json" in lines
        assert f"Content-Length: {len(body)}" in lines
        error = json.loads(body)
        assert error["error"] == check, error
        assert error["message"], error
        if status == 500:
            assert "boom" not in error["message"]


def test_worker_classes_keep_the_json_errors_whatever_the_thread_count() -> None:
    from gunicorn.util import load_class

    from bonseyes_py.web.workers import JSONErrors, worker_class_for

    for name in ("gthread", "sync"):
        for threads in (1, 8):
            loaded = load_class(worker_class_for(name, threads))
            assert issubclass(loaded, JSONErrors)
            assert not worker_class_for(name, threads).endswith("SyncWorker")  # gunicorn would swap those


# -- the guard: no JSON parse outside safejson --------------------------------------------------------

BANNED_MODULES = {"simplejson", "ujson", "orjson", "rapidjson"}
ALLOWED = {REPO / "bonseyes_py" / "safejson.py"}


def unbounded_json_parses(path: Path) -> list[str]:
    """Each ``json.load(s)`` / ``JSONDecoder`` use, ``.json()`` call, or third-party JSON parser in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    json_names = {"json"}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "json" and alias.asname:
                    json_names.add(alias.asname)
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "json" and any(a.name in ("loads", "load", "JSONDecoder", "decoder")
                                             for a in node.names):
                found.append(f"{path}:{node.lineno}: from json import {', '.join(a.name for a in node.names)}")
            if node.module.split(".")[0] in BANNED_MODULES or node.module.startswith("json.decoder"):
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in json_names \
                and node.attr in ("loads", "load", "JSONDecoder", "decoder", "scanner"):
            found.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "json" \
                and not node.args:
            # requests' Response.json() and urllib3's HTTPResponse.json(): unbounded json.loads inside.
            found.append(f"{path}:{node.lineno}: {ast.unparse(node.func)}()")
        elif isinstance(node, ast.Attribute) and node.attr == "raw_decode":
            found.append(f"{path}:{node.lineno}: .raw_decode")
    return found


def python_sources() -> list[Path]:
    sources = sorted((REPO / "bonseyes_py").rglob("*.py")) + sorted((REPO / "plugins").rglob("*.py"))
    assert len(sources) > 50
    return [path for path in sources if path not in ALLOWED]


def test_the_guard_finds_each_kind_of_unbounded_parse(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nimport json as j\nfrom json import loads\nimport orjson\n"
                      "json.loads(x)\nj.load(f)\nresponse.json()\nself.session.get(u).json()\n"
                      "json.JSONDecoder().raw_decode(s)\njson.dumps(x)\napp.json.sort_keys = False\n"
                      "safejson.loads(x, what='y')\n")
    found = unbounded_json_parses(sample)
    lines = sorted({int(entry.split(":")[1]) for entry in found})
    assert lines == [3, 4, 5, 6, 7, 8, 9], found


def test_no_json_is_parsed_outside_safejson() -> None:
    found = [entry for path in python_sources() for entry in unbounded_json_parses(path)]
    assert not found, "JSON parsed without bonseyes_py.safejson (size and nesting unbounded):\n" + "\n".join(found)


@pytest.mark.parametrize("text", [
    '{"role": "user", "role": "admin"}',
    '{"a": {"sub": 1, "sub": 2}}',
    '[{"x": 1}, {"y": 1, "y": 1}]',
])
def test_a_key_given_twice_is_refused_not_resolved(text: str) -> None:
    """Python keeps the last copy, other parsers the first: a reader must not pick one silently."""
    with pytest.raises(InputError, match="appears twice in one object") as raised:
        safejson.loads(text, what="request body")
    assert raised.value.check == "json-duplicate-key"
    assert "\n" not in str(raised.value)


def test_the_same_key_in_different_objects_is_fine() -> None:
    assert safejson.loads('[{"a": 1}, {"a": 2}, {"b": {"a": 3}}]', what="x") == [{"a": 1}, {"a": 2}, {"b": {"a": 3}}]
