"""The six steps of the paper through the real HTTPS API, with a BM test peer on 127.0.0.2."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.serialization import pkcs12
from sm_fixtures import Lab, World, build_lab
from sm_testlib import check_error, check_response, nonce

from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
from bonseyes_py.pki.ca import CertificateAuthority


def test_enrolment_returns_a_pkcs12_that_opens_with_the_chosen_passphrase(world: World) -> None:
    body = check_response(world.admin.post("/v1/users", {"user_id": "carol", "passphrase": "correct horse"}),
                          "POST", "/v1/users", 201)
    key, certificate, chain = pkcs12.load_key_and_certificates(base64.b64decode(body["pkcs12"]), b"correct horse")
    assert key is not None
    assert certificate is not None
    assert len(chain) == 2
    check_error(world.admin.post("/v1/users", {"user_id": "carol", "passphrase": "correct horse"}), 409,
                "user-exists")
    error = check_error(world.admin.post("/v1/users", {"user_id": "dave", "passphrase": "short"}), 400,
                        "invalid-field")
    assert error["message"] == "body.passphrase: shorter than 8 characters", error


def test_full_protocol_host_licence_then_artefact_licence(world: World, lab: Lab) -> None:
    request = lab.licence_request(nonce())
    licence = check_response(lab.host.client.post("/v1/licences/host", request), "POST", "/v1/licences/host", 201)
    assert licence["runtime_id"]["host_ip"] == "127.0.0.2"
    trust = CertificateAuthority.load(world.sm.config.ca_directory).trust_store()
    claims = verify_licence(licence["licence"], trust, kind=LicenceKind.HOST,
                            expect=Expectations(host_id=lab.host.name, nonce=request["nonce"]))
    assert claims["terms"]["premise"] == lab.premise["name"]
    runtime = world.runtime(licence)
    artefact_licence = check_response(runtime.client.post("/v1/licences/artefact", {
        "host_licence": licence["licence"], "artefact_id": lab.artefact["artefact_id"]}),
        "POST", "/v1/licences/artefact", 201)
    verify_licence(artefact_licence["licence"], trust, kind=LicenceKind.ARTEFACT,
                   expect=Expectations(host_licence_id=licence["licence_id"]))


def test_same_nonce_returns_the_same_licence_and_other_parameters_conflict(lab: Lab) -> None:
    request = lab.licence_request(nonce())
    first = lab.host.client.post("/v1/licences/host", request).json()
    again = check_response(lab.host.client.post("/v1/licences/host", request), "POST", "/v1/licences/host", 201)
    assert again == first
    check_error(lab.host.client.post("/v1/licences/host", {**request, "user_id": "admin"}), 409, "nonce-replay")


def test_a_retry_after_revocation_does_not_return_the_stored_licence(world: World, lab: Lab) -> None:
    request = lab.licence_request(nonce())
    licence = check_response(lab.host.client.post("/v1/licences/host", request), "POST", "/v1/licences/host", 201)
    runtime = world.runtime(licence)
    artefact_request = {"host_licence": licence["licence"], "artefact_id": lab.artefact["artefact_id"]}
    first = check_response(runtime.client.post("/v1/licences/artefact", artefact_request),
                           "POST", "/v1/licences/artefact", 201)
    again = check_response(runtime.client.post("/v1/licences/artefact", artefact_request),
                           "POST", "/v1/licences/artefact", 201)
    assert again == first
    check_response(world.admin.post("/v1/revocations", {"kind": "licence", "id": first["licence_id"]}),
                   "POST", "/v1/revocations", 200)
    check_error(runtime.client.post("/v1/licences/artefact", artefact_request), 403, "revoked")
    check_response(world.admin.post("/v1/revocations", {"kind": "licence", "id": licence["licence_id"]}),
                   "POST", "/v1/revocations", 200)
    check_error(lab.host.client.post("/v1/licences/host", request), 403, "revoked")


def test_artefact_licence_refuses_another_runtime_certificate(world: World, lab: Lab) -> None:
    first = lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())).json()
    second = lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())).json()
    other_runtime = world.runtime(second)
    check_error(other_runtime.client.post("/v1/licences/artefact", {
        "host_licence": first["licence"], "artefact_id": lab.artefact["artefact_id"]}), 403, "runtime-key")


def test_tampered_image_aborts_the_pipeline_and_every_bm_removes_images(world: World) -> None:
    lab = build_lab(world, ip="127.0.0.3")
    other_artefact = world.artefact(lab.marketplace, lab.user.name)
    digest = other_artefact["images"][0]["digest"]
    state = lab.host.extra["state"]
    import json

    state.write_text(json.dumps({"overrides": {digest: "sha256:" + "0" * 64}}))
    response = lab.user.client.post("/v1/pipelines", {"premise": lab.premise["name"], "stages": [
        {"artefact_id": lab.artefact["artefact_id"], "host_id": lab.host.name},
        {"artefact_id": other_artefact["artefact_id"], "host_id": lab.host.name}]})
    check_error(response, 409, "image-integrity")
    assert set(json.loads(state.read_text())["removed"]) == {digest, lab.digest}
    # No licence for the aborted pipeline's new artefact.
    check_error(lab.host.client.post("/v1/licences/host", {
        "image_digest": digest, "artefact_id": other_artefact["artefact_id"], "user_id": lab.user.name,
        "nonce": nonce()}), 403, "no-pipeline")


def test_policy_denial_names_the_policy(world: World, lab: Lab) -> None:
    outsider = world.enrol_user()
    body = check_error(outsider.client.post("/v1/pipelines", {"premise": lab.premise["name"], "stages": [
        {"artefact_id": lab.artefact["artefact_id"], "host_id": lab.host.name}]}), 403, "policy-denied")
    assert "pipeline-non-member" in body["message"]


def test_instance_limit_is_enforced_and_renewal_does_not_count_twice(world: World) -> None:
    lab = build_lab(world, terms={"max_instances": 1}, ip="127.0.0.4")
    request = lab.licence_request(nonce())
    first = check_response(lab.host.client.post("/v1/licences/host", request), "POST", "/v1/licences/host", 201)
    body = check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(nonce())), 403,
                       "policy-denied")
    assert "instances-exhausted" in body["message"]
    renewed = check_response(lab.host.client.post("/v1/licences/host", {**request, "renews": first["licence_id"]}),
                             "POST", "/v1/licences/host", 201)
    assert renewed["licence_id"] != first["licence_id"]
    assert renewed["runtime_id"] == first["runtime_id"]
