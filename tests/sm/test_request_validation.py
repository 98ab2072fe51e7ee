"""The real SM (gunicorn, mutual TLS) checks each request against the OpenAPI document it serves.

A body with a wrong type, a missing required field, an unknown field or an oversized string, and a
query parameter out of its range, is a 400 whose one-line message names the JSON path and the rule;
the limits are read from the served ``/openapi.json`` so the test holds the document to its word.
The caller's role is checked first: a caller the route refuses learns nothing about the body.
"""

from __future__ import annotations

from typing import Any

import pytest
from sm_fixtures import Lab, World, unique
from sm_testlib import check_error, check_response, nonce


@pytest.fixture(scope="module")
def document(world: World) -> dict[str, Any]:
    return check_response(world.admin.get("/openapi.json"), "GET", "/openapi.json", 200)


def _one_line(error: dict[str, Any]) -> str:
    message = str(error["message"])
    assert "\n" not in message, error
    return message


def test_a_wrong_type_is_400_naming_the_field(world: World) -> None:
    error = check_error(world.admin.put(f"/v1/premises/{unique('typed')}", {"policy": {"permit": True}}), 400,
                        "invalid-field")
    assert _one_line(error) == "body.policy: expected string, got object"


def test_a_wrong_type_deep_in_the_body_names_its_path(lab: Lab) -> None:
    body = {"premise": lab.premise["name"], "stages": [{"artefact_id": lab.artefact["artefact_id"], "host_id": 7}]}
    error = check_error(lab.user.client.post("/v1/pipelines", body), 400, "invalid-field")
    assert _one_line(error) == "body.stages[0].host_id: expected string, got integer"


def test_a_missing_required_field_is_400_naming_it(world: World) -> None:
    error = check_error(world.admin.post("/v1/revocations", {"kind": "licence"}), 400, "missing-field")
    assert _one_line(error) == "body.id: required field is missing"


def test_an_unknown_field_is_400_naming_it_and_what_is_allowed(lab: Lab) -> None:
    error = check_error(lab.host.client.post("/v1/hosts/heartbeat", {"bm_port": 1, "colour": "red"}), 400,
                        "unknown-field")
    assert _one_line(error) == "body.colour: unknown field; allowed: bm_port"
    terms = f"/v1/artefacts/{lab.artefact['artefact_id']}/terms"
    error = check_error(lab.marketplace.client.put(terms, {"owner": lab.user.name, "max_instance": 3}), 400,
                        "unknown-field")
    assert _one_line(error).startswith("body.max_instance: unknown field; allowed: requires_gpu, max_instances")


def test_an_oversized_string_is_400_at_the_documented_limit(world: World, document: dict[str, Any]) -> None:
    limit = document["components"]["schemas"]["Revoke"]["properties"]["id"]["maxLength"]
    error = check_error(world.admin.post("/v1/revocations", {"kind": "licence", "id": "x" * (limit + 1)}), 400,
                        "invalid-field")
    assert _one_line(error) == f"body.id: longer than {limit} characters"
    # At the limit the schema lets it through: the revocation of an unknown licence is the service's 404.
    check_error(world.admin.post("/v1/revocations", {"kind": "licence", "id": "x" * limit}), 404, "not-found")


def test_a_trailing_newline_does_not_pass_a_pattern(lab: Lab) -> None:
    request = {**lab.licence_request(nonce()), "user_id": lab.user.name + "\n"}
    error = check_error(lab.host.client.post("/v1/licences/host", request), 400, "invalid-field")
    assert _one_line(error).startswith("body.user_id: does not match the pattern ^"), error


def test_query_parameters_are_checked_against_the_document(world: World, document: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in document["paths"]["/v1/audit"]["get"]["parameters"]}
    maximum = parameters["limit"]["schema"]["maximum"]
    error = check_error(world.admin.get(f"/v1/audit?limit={maximum + 1}"), 400, "invalid-field")
    assert _one_line(error) == f"query.limit: greater than the maximum {maximum}"
    error = check_error(world.admin.get("/v1/audit?after=soon"), 400, "invalid-field")
    assert _one_line(error) == "query.after: expected integer, got text"
    page = check_response(world.admin.get(f"/v1/audit?limit={maximum}&after=0"), "GET", "/v1/audit", 200)
    assert len(page["entries"]) <= maximum


def test_the_role_is_checked_before_the_body(lab: Lab) -> None:
    """A user may not revoke: a malformed revocation from her is the 403, not a lesson in its schema."""
    check_error(lab.user.client.post("/v1/revocations", {"kind": 1, "colour": "red"}), 403, "role")


def test_valid_requests_still_pass(world: World, lab: Lab) -> None:
    answer = check_response(lab.host.client.post("/v1/hosts/heartbeat", {"bm_port": lab.host.extra["bm_port"]}),
                            "POST", "/v1/hosts/heartbeat", 200)
    assert answer["host_id"] == lab.host.name
    # The body of a heartbeat is optional (the document says so, and a host may send none).
    check_response(lab.host.client.post("/v1/hosts/heartbeat"), "POST", "/v1/hosts/heartbeat", 200)
    name = unique("valid")
    premise = check_response(world.admin.put(f"/v1/premises/{name}", {"users": [lab.user.name], "hosts": []}),
                             "PUT", "/v1/premises/{name}", 200)
    assert premise["users"] == [lab.user.name]
    check_response(world.admin.get(f"/v1/premises/{name}?revision={premise['revision']}"), "GET",
                   "/v1/premises/{name}", 200)
    licence = check_response(lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())), "POST",
                             "/v1/licences/host", 201)
    assert licence["licence_id"]
