"""Requests are checked against the OpenAPI document each service serves (``bonseyes_py.web.request_schema``).

The over-the-wire checks (real gunicorn, mutual TLS) live beside each service's tests:
``tests/sm/test_request_validation.py``, the BM's in ``tests/sm/test_hostile_input.py`` and the
MP's in ``tests/mp/test_hostile_input_mp.py``. Here: the rules of the messages, that every route
that takes a body has a request schema (a walk over each app's URL map), and that validators are
compiled when the app is built, never per request (the SM app in-process, its caller's certificate
verified for real).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from flask import Flask

from bonseyes_py.bm.app import create_app as create_bm_app
from bonseyes_py.bm.openapi import openapi_document as bm_document
from bonseyes_py.errors import InputError
from bonseyes_py.mp.app import create_app as create_mp_app
from bonseyes_py.mp.openapi import openapi_document as mp_document
from bonseyes_py.sm import init_sm
from bonseyes_py.sm.app import create_app as create_sm_app
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.openapi import openapi_document as sm_document
from bonseyes_py.web import request_schema
from bonseyes_py.web.flaskapp import REQUEST_SCHEMAS, create_flask_app, json_body
from bonseyes_py.web.request_schema import RequestSchemas, path_template, python_pattern
from bonseyes_py.web.tls import PEER_CERT_KEY, PEER_IP_KEY

IGNORED_METHODS = {"HEAD", "OPTIONS"}
# Write routes that take no body at all (their operations declare none, and their handlers read none).
BODYLESS_WRITES = {"POST /v1/pipelines/{pipeline_id}/start"}


def _refusal(schemas: RequestSchemas, method: str, path: str, body: Any) -> InputError:
    operation = schemas.operation(method, path)
    assert operation is not None
    with pytest.raises(InputError) as info:
        operation.check_body(body)
    return info.value


@pytest.fixture(scope="module")
def sm_schemas() -> RequestSchemas:
    return RequestSchemas.from_openapi(sm_document())


# -- messages ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body", "check", "message"), [
    ("PUT", "/v1/premises/{name}", {"policy": {"a": 1}}, "invalid-field", "body.policy: expected string, got object"),
    ("POST", "/v1/revocations", {"kind": "user"}, "missing-field", "body.id: required field is missing"),
    ("POST", "/v1/hosts/heartbeat", {"bm_port": 1, "colour": "red"}, "unknown-field",
     "body.colour: unknown field; allowed: bm_port"),
    ("POST", "/v1/revocations", {"kind": "user", "id": "x" * 129}, "invalid-field",
     "body.id: longer than 128 characters"),
    ("POST", "/v1/pipelines", {"premise": "p", "stages": [{"artefact_id": "a", "host_id": 7}]}, "invalid-field",
     "body.stages[0].host_id: expected string, got integer"),
    ("POST", "/v1/revocations", {"kind": "planet", "id": "x"}, "invalid-field",
     "body.kind: must be one of user, host, artefact, licence, certificate"),
    ("POST", "/v1/hosts/heartbeat", {"bm_port": 70000}, "invalid-field",
     "body.bm_port: greater than the maximum 65535"),
    ("POST", "/v1/users", {"user_id": "bad name!"}, "invalid-field",
     "body.user_id: does not match the pattern ^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"),
    ("PUT", "/v1/artefacts/{artefact_id}/terms", {"requires_gpu": "yes"}, "invalid-field",
     "body.requires_gpu: expected boolean, got string"),
])
def test_a_refusal_names_the_path_and_the_rule(sm_schemas: RequestSchemas, method: str, path: str, body: Any,
                                               check: str, message: str) -> None:
    error = _refusal(sm_schemas, method, path, body)
    assert (error.check, str(error.args[0])) == (check, message)


def test_a_refusal_never_echoes_the_value_and_stays_on_one_line(sm_schemas: RequestSchemas) -> None:
    secret = "s3cret-passphrase-" * 100
    error = _refusal(sm_schemas, "POST", "/v1/users", {"user_id": "u", "passphrase": secret})
    assert secret[:20] not in str(error)
    assert str(error.args[0]) == "body.passphrase: longer than 1024 characters"
    hostile_name = "a\nb" * 100
    error = _refusal(sm_schemas, "POST", "/v1/hosts/heartbeat", {hostile_name: 1})
    assert error.check == "unknown-field"
    assert "\n" not in str(error.args[0]), error
    assert len(str(error.args[0])) < 300, error


def test_a_pattern_anchor_does_not_let_a_trailing_newline_through(sm_schemas: RequestSchemas) -> None:
    """``$`` in Python's re matches before a final newline; ECMA-262's (JSON Schema's) does not."""
    assert python_pattern("^[a-z]+$") == "^[a-z]+\\Z"
    assert python_pattern("^cost\\$") == "^cost\\$"  # an escaped dollar sign stays a dollar sign
    assert python_pattern("^a\\\\$") == "^a\\\\\\Z"
    error = _refusal(sm_schemas, "POST", "/v1/users", {"user_id": "alice\n"})
    assert str(error.args[0]).startswith("body.user_id: does not match the pattern"), error
    digest = "sha256:" + "a" * 64
    _refusal(sm_schemas, "POST", "/v1/artefacts/{artefact_id}/images", {"digest": digest + "\n"})
    operation = sm_schemas.operation("POST", "/v1/artefacts/<artefact_id>/images")
    assert operation is not None
    operation.check_body({"digest": digest})


def test_query_parameters_are_typed_and_checked(sm_schemas: RequestSchemas) -> None:
    operation = sm_schemas.operation("GET", "/v1/audit")
    assert operation is not None
    assert operation.check_query({"limit": "5", "after": "0", "undeclared": "ignored"}) == {"limit": 5, "after": 0}
    for args, message in (({"limit": "5000"}, "query.limit: greater than the maximum 1000"),
                          ({"limit": "ten"}, "query.limit: expected integer, got text"),
                          ({"after": "-1"}, "query.after: less than the minimum 0")):
        with pytest.raises(InputError) as info:
            operation.check_query(args)
        assert str(info.value.args[0]) == message


def test_references_resolve_and_cycles_are_refused_when_compiled() -> None:
    def document(schemas: dict[str, Any], body: str) -> dict[str, Any]:
        return {"paths": {"/x": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}}}}, "components": {"schemas": schemas}}

    nested = RequestSchemas.from_openapi(document({
        "Outer": {"type": "object", "properties": {"inner": {"$ref": "#/components/schemas/Inner"}}},
        "Inner": {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}},
        "Outer"))
    assert str(_refusal(nested, "POST", "/x", {"inner": {"m": 1}}).args[0]).startswith("body.inner.m: unknown field")
    with pytest.raises(ValueError, match="refers to itself"):
        RequestSchemas.from_openapi(document({"Node": {"type": "object", "properties": {
            "next": {"$ref": "#/components/schemas/Node"}}}}, "Node"))
    with pytest.raises(ValueError, match="not local"):
        RequestSchemas.from_openapi(document({"Far": {"$ref": "https://example.invalid/schema.json"}}, "Far"))
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        RequestSchemas.from_openapi(document({"Bad": {"type": "no-such-type"}}, "Bad"))


# -- every route that takes a body has a request schema ----------------------------------------------

def _sm_app(tmp_path: Path) -> Flask:
    return create_sm_app(init_sm(tmp_path / "sm"))


def _mp_app(tmp_path: Path) -> Flask:
    # Built only to walk its URL map: no request reaches the Marketplace or the trust store.
    config = SimpleNamespace(max_body_bytes=1024, max_upload_bytes=1024, uploads=tmp_path / "uploads")
    return create_mp_app(config, marketplace=SimpleNamespace(), trust=lambda: None)  # type: ignore[arg-type,return-value]


def _bm_app(_tmp_path: Path) -> Flask:
    # Built only to walk its URL map: no request reaches the agent.
    return create_bm_app(SimpleNamespace(trust_store=lambda: None, host_id="walk"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("build", "document"), [(_sm_app, sm_document), (_mp_app, mp_document),
                                                 (_bm_app, bm_document)], ids=["sm", "mp", "bm"])
def test_every_route_that_takes_a_body_has_a_request_schema(tmp_path: Path, build: Any, document: Any) -> None:
    app = build(tmp_path)
    try:
        schemas: RequestSchemas = app.extensions[REQUEST_SCHEMAS]
        routes = [(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
                  for method in sorted(rule.methods or ()) if method not in IGNORED_METHODS]
        undocumented = [f"{m} {path_template(r)}" for m, r in routes if schemas.operation(m, r) is None]
        assert undocumented == [], "routes without an operation in the served document"
        missing = set(schemas.write_routes_without_body_schema(iter(routes)))
        assert missing - BODYLESS_WRITES == set(), "write routes without a request body schema"
        served = {f"{m} {path_template(r)}" for m, r in routes}
        assert BODYLESS_WRITES & served <= missing, "a route listed as bodyless now takes a body: drop it from the list"
        # The app checks requests against the document it serves, not a copy that could differ.
        assert {(m.upper(), p) for p, item in document()["paths"].items() for m in item} == set(schemas.operations)
    finally:
        sm = app.extensions.get("bonseyes_sm")
        if sm is not None:
            sm.close()


def test_a_handler_reading_an_undeclared_body_is_a_server_error_not_an_unchecked_body() -> None:
    document = {"paths": {"/declared": {"post": {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}}}}}},
        "/undeclared": {"post": {}}}}
    app = create_flask_app("walk", openapi=document)
    app.add_url_rule("/declared", "declared", lambda: json_body(), methods=["POST"])
    app.add_url_rule("/undeclared", "undeclared", lambda: json_body(), methods=["POST"])
    client = app.test_client()
    assert client.post("/declared", json={"n": 1}).get_json() == {"n": 1}
    refused = client.post("/declared", json={"n": "1"})
    assert (refused.status_code, refused.get_json()) == (400, {"error": "invalid-field",
                                                               "message": "body.n: expected integer, got string"})
    assert client.post("/declared", data=b"").get_json()["error"] == "json"
    assert client.post("/undeclared", json={"n": 1}).status_code == 500


# -- compiled once -----------------------------------------------------------------------------------

def test_validators_are_compiled_when_the_app_is_built_not_per_request(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    compile_schema = request_schema._compile

    def counting(schema: Any, document: Any, where: str) -> Any:
        built.append(where)
        return compile_schema(schema, document, where)

    monkeypatch.setattr(request_schema, "_compile", counting)
    config: SMConfig = init_sm(tmp_path / "sm")
    app = create_sm_app(config)
    try:
        schemas: RequestSchemas = app.extensions[REQUEST_SCHEMAS]
        at_creation = len(built)
        assert at_creation == schemas.validators_built > 10
        admin = x509.load_pem_x509_certificate(config.admin_certificate.read_bytes())
        client = app.test_client()
        environ = {PEER_CERT_KEY: admin, PEER_IP_KEY: "127.0.0.1"}
        for index in range(20):
            # Refused by the schema, and accepted by it (the revocation of an unknown licence is then a 404).
            refused = client.post("/v1/revocations", json={"kind": "licence", "id": "x" * 200},
                                  environ_base=environ)
            assert refused.status_code == 400
            assert refused.get_json()["message"].startswith("body.id: longer")
            passed = client.post("/v1/revocations", json={"kind": "licence", "id": f"none-{index}"},
                                 environ_base=environ)
            assert passed.status_code == 404, passed.get_json()
            audit = client.get("/v1/audit?limit=1", environ_base=environ)
            assert audit.status_code == 200, audit.get_json()
        # HEAD is served by the GET view, under the GET operation's rules.
        assert client.head("/v1/audit?limit=1", environ_base=environ).status_code == 200
        assert client.head("/v1/audit?limit=5000", environ_base=environ).status_code == 400
        assert len(built) == at_creation, "validators were compiled while serving requests"
        assert schemas.validators_built == at_creation
        again = schemas.operation("POST", "/v1/revocations")
        assert again is schemas.operation("POST", "/v1/revocations")
        assert again is not None
        # The compiled copy holds Python's anchors; the served document keeps the portable ECMA-262 ones.
        users = schemas.operation("POST", "/v1/users")
        assert users is not None
        assert users.body is not None
        assert "\\Z" in str(users.body.schema)
        assert "\\Z" not in str(sm_document())
    finally:
        app.extensions["bonseyes_sm"].close()
