"""Stopping a pipeline on the real SM, and what a tenant learns of other tenants' objects.

- a stop (by the user, an admin, or a failed start) revokes every unexpired licence of the pipeline
  and its runtime certificates at once: published at ``GET /v1/licences/revoked`` and on the CRL;
- a stopped or aborted pipeline keeps its status, also when step 3 ends after the stop, and the
  images its BMs fetched are removed;
- a non-admin gets the same answer for an unknown premise, pipeline or host as for another tenant's.

The BMs are ``FakeBM`` (``test_sm_tenancy.py``), in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography import x509
from sm_fixtures import World, unique
from sm_testlib import check_error, check_response, fake_hardware_id, new_csr, nonce
from test_sm_tenancy import FakeBM, Tenancy, pipeline_of, tenancy

from bonseyes_py.errors import BonseyesError, LicenceError
from bonseyes_py.licences import LicenceKind, verify_licence
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_crl
from bonseyes_py.pki.roles import Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate

STOP = "/v1/pipelines/{pipeline_id}/stop"


@pytest.fixture
def bms() -> Iterator[list[FakeBM]]:
    started: list[FakeBM] = []
    yield started
    for bm in started:
        bm.close()


def served_revocations(world: World) -> tuple[TrustStore, set[str]]:
    """What a verifier fetches from the SM: the CRL (in a trust store) and the revoked licence IDs."""
    reader = world.admin
    crl = load_crl(reader.get("/v1/crl").content)
    ids = check_response(reader.get("/v1/licences/revoked"), "GET", "/v1/licences/revoked", 200)["licence_ids"]
    ca = CertificateAuthority.load(world.sm.config.ca_directory)
    return TrustStore(root=ca.root, intermediates=[ca.intermediate], crls=[crl], trust_domain=ca.trust_domain,
                      require_crl=True), set(ids)


def refused_as_revoked(world: World, licence: dict[str, Any], kind: LicenceKind) -> None:
    trust, revoked = served_revocations(world)
    with pytest.raises(LicenceError) as raised:
        verify_licence(licence["licence"], trust, kind=kind, revoked_licence_ids=revoked)
    assert raised.value.check == "revoked", raised.value


def runtime_certificate(licence: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(licence["runtime_certificate"].encode())


def stop_by(client: Any, pipeline_id: str, reason: str | None = None) -> dict[str, Any]:
    body = {"reason": reason} if reason is not None else None
    return check_response(client.post(f"/v1/pipelines/{pipeline_id}/stop", body), "POST", STOP, 200)


def audit(world: World, action: str, subject: str) -> list[dict[str, Any]]:
    return list(check_response(world.admin.get("/v1/audit", params={"action": action, "subject": subject,
                                                                    "limit": 1000}),
                               "GET", "/v1/audit", 200)["entries"])


# -- 1. a stop revokes the licences the pipeline already has ---------------------------------------------


def test_stopping_a_pipeline_revokes_every_licence_it_has_and_publishes_them(world: World,
                                                                            bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.31")
    first = lab.request_pipeline()
    host_licence = lab.host_licence()
    artefact_licence = check_response(lab.artefact_licence(host_licence), "POST", "/v1/licences/artefact", 201)
    renewed = lab.host_licence(host_licence["runtime_id"]["nonce"], renews=host_licence["licence_id"])
    other_runtime = lab.host_licence()
    assert {pipeline_of(world, x) for x in (host_licence, renewed, other_runtime)} == {first["pipeline_id"]}
    # A second pipeline of the same user and stage: its licences are not the first one's business.
    second = lab.request_pipeline()
    unrelated = lab.host_licence()
    assert pipeline_of(world, unrelated) == second["pipeline_id"]
    before, _ = served_revocations(world)
    for licence in (host_licence, renewed, other_runtime, unrelated):
        verify_licence(licence["licence"], before, kind=LicenceKind.HOST)

    stopped = lab.stop(first)
    ours = {host_licence["licence_id"], artefact_licence["licence_id"], renewed["licence_id"],
            other_runtime["licence_id"]}
    assert stopped["status"] == "stopped"
    # Published for verifiers (BM, BL): the licence IDs, and the runtime certificates on the CRL.
    trust, revoked = served_revocations(world)
    assert ours <= revoked
    assert set(stopped["revoked_licences"]) == ours
    assert unrelated["licence_id"] not in revoked
    for licence in (host_licence, renewed, other_runtime):
        refused_as_revoked(world, licence, LicenceKind.HOST)
        with pytest.raises(BonseyesError) as raised:
            verify_certificate(runtime_certificate(licence), trust, roles=[Role.RUNTIME])
        assert raised.value.check == "revoked"
    refused_as_revoked(world, artefact_licence, LicenceKind.ARTEFACT)
    verify_licence(unrelated["licence"], trust, kind=LicenceKind.HOST, revoked_licence_ids=revoked)
    verify_certificate(runtime_certificate(unrelated), trust, roles=[Role.RUNTIME])
    # The SM itself refuses the revoked runtime's certificate now, before any pipeline check.
    check_error(lab.artefact_licence(renewed), 403, "revoked")
    check_response(lab.artefact_licence(unrelated), "POST", "/v1/licences/artefact", 201)
    # One audit entry names what the stop revoked.
    [entry] = audit(world, "revoked", f"pipeline:{first['pipeline_id']}")
    assert set(entry["details"]["licences"]) == ours
    assert {format(runtime_certificate(x).serial_number, "x") for x in (host_licence, renewed, other_runtime)} \
        <= set(entry["details"]["serials"])
    assert entry["actor"].endswith(f"/user/{lab.user.name}")


def test_an_admin_stop_and_an_aborted_start_revoke_the_licences_too(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.32")
    pipeline = lab.request_pipeline()
    licence = lab.host_licence()
    stopped = stop_by(world.admin, pipeline["pipeline_id"], "stopped by the operator")
    refused_as_revoked(world, licence, LicenceKind.HOST)
    assert stopped["revoked_licences"] == [licence["licence_id"]]
    # A start that fails on a BM aborts the pipeline through the same stop.
    aborting = lab.request_pipeline()
    held = lab.host_licence()
    lab.bm.fail_start = True
    started = check_response(lab.user.client.post(f"/v1/pipelines/{aborting['pipeline_id']}/start"),
                             "POST", "/v1/pipelines/{pipeline_id}/start", 200)
    assert started["status"] == "aborted"
    refused_as_revoked(world, held, LicenceKind.HOST)
    assert started["revoked_licences"] == [held["licence_id"]]


# -- 3. a terminal status stays --------------------------------------------------------------------------


def test_stopping_an_aborted_or_stopped_pipeline_keeps_its_status(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.33")
    aborted = lab.request_pipeline()
    lab.bm.fail_start = True
    started = check_response(lab.user.client.post(f"/v1/pipelines/{aborted['pipeline_id']}/start"),
                             "POST", "/v1/pipelines/{pipeline_id}/start", 200)
    assert started["status"] == "aborted"
    reason = started["reason"]
    assert reason.startswith("set-up failed")
    for client in (lab.user.client, world.admin):
        again = stop_by(client, aborted["pipeline_id"], "changed my mind")
        assert (again["status"], again["reason"]) == ("aborted", reason), again
        assert again["revoked_licences"] == []
    record = check_response(world.admin.get(f"/v1/pipelines/{aborted['pipeline_id']}"), "GET",
                            "/v1/pipelines/{pipeline_id}", 200)
    assert (record["status"], record["reason"]) == ("aborted", reason)

    lab.bm.fail_start = False
    stopped = lab.request_pipeline()
    assert stop_by(lab.user.client, stopped["pipeline_id"], "first stop")["status"] == "stopped"
    again = stop_by(world.admin, stopped["pipeline_id"], "second stop")
    assert (again["status"], again["reason"]) == ("stopped", "first stop")
    assert len(audit(world, "pipeline-stop-repeated", stopped["pipeline_id"])) == 1


# -- 4. step 3 ending after a stop -----------------------------------------------------------------------


def _stopped_during_step_3(world: World, lab: Tenancy) -> tuple[str, Any]:
    """Request a pipeline, stop it while its BM fetches, let the fetch answer; (pipeline ID, the request's answer)."""
    lab.bm.release_fetch.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        requested = pool.submit(lab.user.client.post, "/v1/pipelines", {
            "premise": lab.premise, "stages": [{"artefact_id": lab.artefact, "host_id": lab.host.name}]})
        assert lab.bm.fetching.wait(30), "the SM never asked the BM to fetch"
        entries = check_response(world.admin.get("/v1/audit", params={"action": "pipeline-requested",
                                                                      "limit": 1000}), "GET", "/v1/audit", 200)
        pipeline_id = next(e["subject"] for e in reversed(entries["entries"])
                           if e["details"].get("premise") == lab.premise)
        assert lab.stop({"pipeline_id": pipeline_id})["status"] == "stopped"
        assert "/v1/images/remove" not in lab.bm.calls
        lab.bm.release_fetch.set()
        return pipeline_id, requested.result(timeout=60)


def test_the_images_of_a_pipeline_stopped_during_step_3_are_removed(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.34")
    pipeline_id, answer = _stopped_during_step_3(world, lab)
    assert check_response(answer, "POST", "/v1/pipelines", 201)["status"] == "stopped"
    assert lab.bm.calls.count("/v1/images/remove") == 1, lab.bm.calls
    [entry] = audit(world, "pipeline-images-removed", pipeline_id)
    assert entry["details"]["hosts"] == [lab.host.name]
    assert entry["details"]["removal_errors"] == []


def test_a_pipeline_stopped_during_a_failing_step_3_stays_stopped(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.35")
    lab.bm.wrong_digests = True
    pipeline_id, answer = _stopped_during_step_3(world, lab)
    check_error(answer, 409, "image-integrity")
    assert lab.bm.calls.count("/v1/images/remove") == 1, lab.bm.calls
    record = check_response(world.admin.get(f"/v1/pipelines/{pipeline_id}"), "GET", "/v1/pipelines/{pipeline_id}",
                            200)
    assert (record["status"], record["reason"]) == ("stopped", "stopped by its user"), record


# -- 2. an unknown object is answered like another tenant's -----------------------------------------------


def _same(first: dict[str, Any], second: dict[str, Any], first_id: str, second_id: str) -> None:
    assert first["error"] == second["error"]
    assert first["message"].replace(first_id, "ID") == second["message"].replace(second_id, "ID")


def test_host_registration_answers_an_unknown_premise_like_another_tenants(world: World) -> None:
    alice, mallory = world.enrol_user(), world.enrol_user()
    theirs = world.premise(users=[alice.name], hosts=[])["name"]
    nowhere = unique("nowhere")

    def register(caller: Any, premise: str) -> Any:
        _, csr = new_csr()
        return caller.post("/v1/hosts", {"host_id": world.host_id_token(mallory, fake_hardware_id(unique("m"))),
                                         "csr": csr, "premises": [premise]})

    _same(check_error(register(mallory.client, nowhere), 403, "premise-member"),
          check_error(register(mallory.client, theirs), 403, "premise-member"), nowhere, theirs)
    check_error(register(world.admin, nowhere), 404, "not-found")


def test_a_user_learns_nothing_of_pipelines_that_are_not_hers(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.36")
    pipeline = lab.request_pipeline()["pipeline_id"]
    unknown = "pl-" + "0" * 32
    mallory = world.enrol_user()
    for method, path in (("GET", "/v1/pipelines/{}"), ("GET", "/v1/pipelines/{}/runtime"),
                         ("POST", "/v1/pipelines/{}/start"), ("POST", "/v1/pipelines/{}/stop")):
        _same(check_error(mallory.client.request(method, path.format(unknown)), 403, "pipeline-owner"),
              check_error(mallory.client.request(method, path.format(pipeline)), 403, "pipeline-owner"),
              unknown, pipeline)
    check_error(world.admin.get(f"/v1/pipelines/{unknown}"), 404, "not-found")
    check_error(world.admin.post(f"/v1/pipelines/{unknown}/stop"), 404, "not-found")
    assert world.admin.get(f"/v1/pipelines/{pipeline}").json()["status"] == "ready"


def test_users_and_hosts_learn_nothing_of_hosts_that_are_not_theirs(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.41")
    mallory = world.enrol_user()
    # To a user, an unknown host and another user's; to a host, an unknown host and another host.
    unknown_host = "h-" + "0" * 32
    _same(check_error(mallory.client.get(f"/v1/hosts/{unknown_host}"), 403, "host-owner"),
          check_error(mallory.client.get(f"/v1/hosts/{lab.host.name}"), 403, "host-owner"), unknown_host, lab.host.name)
    other_host = world.register_host(mallory, ip="127.0.0.37").name
    _same(check_error(lab.host.client.get(f"/v1/hosts/{unknown_host}"), 403, "host-owner"),
          check_error(lab.host.client.get(f"/v1/hosts/{other_host}"), 403, "host-owner"), unknown_host, other_host)
    check_error(world.admin.get(f"/v1/hosts/{unknown_host}"), 404, "not-found")


def _request(caller: Any, lab: Tenancy, premise: str, host: str) -> Any:
    return caller.post("/v1/pipelines", {"premise": premise, "stages": [{"artefact_id": lab.artefact,
                                                                         "host_id": host}]})


def test_a_pipeline_request_answers_an_unknown_premise_like_another_tenants(world: World,
                                                                           bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.38")
    mallory = world.enrol_user()
    # Unknown, or existing (default policy) without her: one denial.
    unknown = check_error(_request(mallory.client, lab, unique("nowhere"), lab.host.name), 403, "policy-denied")
    known = check_error(_request(mallory.client, lab, lab.premise, lab.host.name), 403, "policy-denied")
    assert (unknown["error"], unknown["message"]) == (known["error"], known["message"])


def test_a_pipeline_stage_answers_an_unknown_host_like_another_tenants(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.42")
    # Unknown, another tenant's, or another tenant's revoked: one refusal.
    bob = world.enrol_user()
    bobs = world.register_host(bob, ip="127.0.0.39").name
    revoked = world.register_host(bob, ip="127.0.0.39").name
    check_response(world.admin.post("/v1/revocations", {"kind": "host", "id": revoked}), "POST", "/v1/revocations",
                   200)
    unknown_host = "h-" + "1" * 32
    answers = {host: check_error(_request(lab.user.client, lab, lab.premise, host), 403, "host-not-in-premise")
               for host in (unknown_host, bobs, revoked)}
    _same(answers[unknown_host], answers[bobs], unknown_host, bobs)
    _same(answers[unknown_host], answers[revoked], unknown_host, revoked)


def test_a_host_learns_nothing_of_users_without_a_pipeline_on_it(world: World, bms: list[FakeBM]) -> None:
    lab = tenancy(world, bms, "127.0.0.40")
    gone = world.enrol_user()
    check_response(world.admin.post("/v1/revocations", {"kind": "user", "id": gone.name}), "POST",
                   "/v1/revocations", 200)
    bystander = world.enrol_user()
    answers = {user: check_error(lab.host.client.post("/v1/licences/host", {
        **lab.licence_request(nonce()), "user_id": user}), 403, "no-pipeline")
        for user in (unique("nobody"), gone.name, bystander.name)}
    messages = {body["message"].replace(user, "USER") for user, body in answers.items()}
    assert len(messages) == 1, messages

