"""Hostile input on the real Marketplace (gunicorn, mutual TLS): deep JSON is a 400 json-too-deep, never a 500.

The ``policies`` query parameter of an upload is parsed by the MP and must be bounded; a JSON body of
``POST /v1/artefacts`` (registration takes uploads only) is refused before it is parsed. The MP
runs on the same gunicorn workers as the SM, so gunicorn's own refusals are JSON here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mp_server import MPServer, Person, issue_identity, start_mp

from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Role

pytestmark = [pytest.mark.docker]

DEPTH = 10_000
DEEP_ARRAY = "[" * DEPTH + "]" * DEPTH


@pytest.fixture(scope="module")
def alice(ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> Person:
    return issue_identity(ca, tmp_path_factory.mktemp("hostile-people"), Role.USER, "alice")


@pytest.fixture(scope="module")
def server(ca: CertificateAuthority, registry: RegistryProcess, alice: Person,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[MPServer]:
    started = start_mp(tmp_path_factory.mktemp("mp-hostile"), registry, ca.paths.root_cert, alice,
                       ca_directory=ca.paths.directory)
    yield started
    started.stop()


def post(server: MPServer, person: Person, path: str, data: bytes, content_type: str,
         params: dict[str, str] | None = None) -> requests.Response:
    return requests.post(server.url + path, data=data, params=params, headers={"Content-Type": content_type},
                         cert=(person.cert, person.key), verify=server.sm_root, timeout=60)


def assert_error(response: requests.Response, status: int, check: str) -> dict[str, str]:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert body["error"] == check, body
    assert isinstance(body["message"], str), body
    return body


@pytest.mark.parametrize("body", [DEEP_ARRAY, '{"name":' * DEPTH + "1" + "}" * DEPTH], ids=["array", "object"])
def test_deep_json_body_is_refused_unparsed(server: MPServer, alice: Person, body: str) -> None:
    """A registration is an upload only: a JSON body is a 415 content-type, refused before it is parsed."""
    assert_error(post(server, alice, "/v1/artefacts", body.encode(), "application/json"), 415, "content-type")


def test_deep_policies_string_in_a_json_body_is_refused_unparsed(server: MPServer, alice: Person,
                                                                 tmp_path: Path) -> None:
    body = json.dumps({"name": "deep-policies", "image": "bonseyes-test/none:1", "policies": DEEP_ARRAY})
    assert_error(post(server, alice, "/v1/artefacts", body.encode(), "application/json"), 415, "content-type")
    assert not server.uploads()


def test_deep_policies_query_parameter_of_an_upload_is_400_json_too_deep(server: MPServer, alice: Person) -> None:
    # Within gunicorn's request-line limit once percent-encoded (%5B): 1,200 levels, past the parser's recursion limit.
    policies = "[" * 1_200 + "]" * 1_200
    response = post(server, alice, "/v1/artefacts", b"\0" * 1024, "application/x-tar",
                    params={"name": "deep-query", "policies": policies})
    assert response.status_code == 400, f"{response.status_code}: {response.text[:300]}"
    error = json.loads(response.content)
    # The MP names the field (policies) or the JSON check; either way the nesting is what is refused.
    assert error["error"] in ("json-too-deep", "policies"), error
    assert "deeper than" in error["message"], error
    assert not server.uploads()


def test_uri_too_long_is_a_json_414(server: MPServer, alice: Person) -> None:
    response = requests.get(server.url + "/v1/artefacts?owner=" + "a" * 10_000, cert=(alice.cert, alice.key),
                            verify=server.sm_root, timeout=30)
    assert_error(response, 414, "uri-too-long")


def test_server_still_answers(server: MPServer, alice: Person) -> None:
    response = requests.get(server.url + "/v1/ping", cert=(alice.cert, alice.key), verify=server.sm_root, timeout=30)
    assert response.status_code == 200, response.text


# -- requests checked against the served OpenAPI document ---------------------------------------------

def _get(server: MPServer, person: Person, path: str, params: dict[str, str] | None = None) -> requests.Response:
    return requests.get(server.url + path, params=params, cert=(person.cert, person.key), verify=server.sm_root,
                        timeout=30)


def test_upload_query_parameters_are_checked_before_the_upload_is_read(server: MPServer, alice: Person) -> None:
    """The Marketplace takes no JSON body: its request rules are the Content-Type and the query parameters."""
    error = assert_error(post(server, alice, "/v1/artefacts", b"\0" * 1024, "application/x-tar"), 400,
                         "missing-field")
    assert error["message"] == "query.name: required parameter is missing", error
    error = assert_error(post(server, alice, "/v1/artefacts", b"\0" * 1024, "application/x-tar",
                              params={"name": "bad name!"}), 400, "invalid-field")
    assert error["message"].startswith("query.name: does not match the pattern ^"), error
    error = assert_error(post(server, alice, "/v1/artefacts", b"\0" * 1024, "application/x-tar",
                              params={"name": "trailing\n"}), 400, "invalid-field")
    assert not server.uploads()


def test_a_json_registration_names_the_content_types_the_document_declares(server: MPServer, alice: Person) -> None:
    document = _get(server, alice, "/openapi.json").json()
    declared = list(document["paths"]["/v1/artefacts"]["post"]["requestBody"]["content"])
    error = assert_error(post(server, alice, "/v1/artefacts", b'{"name": "x"}', "application/json",
                              params={"name": "x"}), 415, "content-type")
    assert f"Content-Type must be {' or '.join(declared)}, not application/json" in error["message"], error
    assert "\n" not in error["message"]


def test_catalogue_queries_are_checked_and_valid_ones_pass(server: MPServer, alice: Person) -> None:
    error = assert_error(_get(server, alice, "/v1/artefacts", {"owner": "../etc"}), 400, "invalid-field")
    assert error["message"].startswith("query.owner: does not match the pattern"), error
    listed = _get(server, alice, "/v1/artefacts", {"owner": "alice"})
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json()["artefacts"], list)
