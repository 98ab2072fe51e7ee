"""Tenant boundaries on the real SM (gunicorn, mutual TLS): who may act on whose object, not only which role.

Every attacker here is a real enrolled identity speaking HTTPS with its own certificate: a user who is
not a member of a premise, a marketplace that did not register an artefact, a runtime whose pipeline
its user stopped. Pipelines that need stopping or starting run against ``FakeBM``, a BM-like HTTPS
server in this process (host certificate, the SM's wire format), which answers ``/v1/runtimes`` and
``/v1/runtimes/stop`` at once and can hold step 3's fetch until the test lets it go.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sm_fixtures import Identity, World, unique
from sm_testlib import check_error, check_response, digest_of, fake_hardware_id, new_csr, nonce

from bonseyes_py.licences import LicenceKind, verify_licence
from bonseyes_py.mp.errors import RegistrationError
from bonseyes_py.mp.signing import HttpsArtefactSigner
from bonseyes_py.pki.ca import CertificateAuthority

# -- a BM in this process -----------------------------------------------------------------------------


class FakeBM:
    """Answers the SM's calls to a BM (steps 3-6 and stop) for one host, over TLS with its host certificate."""

    def __init__(self, world: World, host: Identity) -> None:
        self.release_fetch = threading.Event()
        self.release_fetch.set()  # set: fetches answer at once
        self.fetching = threading.Event()
        self.fail_start = False
        self.wrong_digests = False  # step 3 reports digests that are not the images'
        self.calls: list[str] = []
        bm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                bm.calls.append(self.path)
                status, answer = 200, {}
                if self.path == "/v1/images/fetch":
                    bm.fetching.set()
                    bm.release_fetch.wait(60)
                    answer = {"digests": {d: "sha256:" + "0" * 64 if bm.wrong_digests else d
                                          for d in body["digests"]}}
                elif self.path == "/v1/images/remove":
                    answer = {"removed": body["digests"]}
                elif self.path == "/v1/runtimes":
                    if bm.fail_start:
                        status, answer = 500, {"error": "test-refused", "message": "this BM refuses to start"}
                    else:
                        answer = {"runtime_name": "", "nonce": "", "timings": {}}
                elif self.path == "/v1/runtimes/stop":
                    answer = {"stopped": []}
                else:
                    status, answer = 404, {"error": "not-found", "message": self.path}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(host.cert), str(host.key))
        context.load_verify_locations(str(world.sm.config.ca_bundle))
        context.verify_mode = ssl.CERT_REQUIRED
        self.server = ThreadingHTTPServer((host.extra["ip"], 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"fake-bm-{host.name}", daemon=True)
        self.thread.start()
        host.extra["bm_port"] = self.server.server_address[1]
        world.heartbeat(host)

    def close(self) -> None:
        self.release_fetch.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_bms() -> Iterator[list[FakeBM]]:
    started: list[FakeBM] = []
    yield started
    for bm in started:
        bm.close()


@dataclass
class Tenancy:
    """A user's ready pipeline on her host, with a BM in this process."""

    world: World
    user: Identity
    host: Identity
    marketplace: Identity
    premise: str
    artefact: str
    digest: str
    bm: FakeBM

    def request_pipeline(self) -> dict[str, Any]:
        return check_response(self.user.client.post("/v1/pipelines", {
            "premise": self.premise, "stages": [{"artefact_id": self.artefact, "host_id": self.host.name}]}),
            "POST", "/v1/pipelines", 201)

    def licence_request(self, request_nonce: str | None = None, renews: str | None = None) -> dict[str, Any]:
        body = {"image_digest": self.digest, "artefact_id": self.artefact, "user_id": self.user.name,
                "nonce": request_nonce or nonce()}
        if renews is not None:
            body["renews"] = renews
        return body

    def host_licence(self, request_nonce: str | None = None, renews: str | None = None) -> dict[str, Any]:
        return check_response(self.host.client.post("/v1/licences/host", self.licence_request(request_nonce, renews)),
                              "POST", "/v1/licences/host", 201)

    def artefact_licence(self, licence: dict[str, Any]) -> Any:
        runtime = self.world.runtime(licence)
        return runtime.client.post("/v1/licences/artefact", {"host_licence": licence["licence"],
                                                              "artefact_id": self.artefact})

    def stop(self, pipeline: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/pipelines/{pipeline['pipeline_id']}/stop"
        return check_response(self.user.client.post(path), "POST", "/v1/pipelines/{pipeline_id}/stop", 200)


def tenancy(world: World, fake_bms: list[FakeBM], ip: str) -> Tenancy:
    user = world.enrol_user()
    marketplace = world.marketplace()
    host = world.register_host(user, ip=ip)
    premise = world.premise(users=[user.name], hosts=[host.name])["name"]
    artefact = world.artefact(marketplace, user.name)
    bm = FakeBM(world, host)
    fake_bms.append(bm)
    return Tenancy(world, user, host, marketplace, premise, artefact["artefact_id"], artefact["images"][0]["digest"],
                   bm)


def pipeline_of(world: World, licence: dict[str, Any]) -> str:
    trust = CertificateAuthority.load(world.sm.config.ca_directory).trust_store()
    return str(verify_licence(licence["licence"], trust, kind=LicenceKind.HOST)["terms"]["pipeline_id"])


# -- 1. hosts only into one's own premises ------------------------------------------------------------


def _register(world: World, caller: Identity, owner: Identity, hardware_id: str, **fields: Any) -> Any:
    _, csr = new_csr()
    return caller.client.post("/v1/hosts", {"host_id": world.host_id_token(owner, hardware_id), "csr": csr,
                                            **fields})


def _premise_hosts(world: World, premise: str) -> list[str]:
    return list(check_response(world.admin.get(f"/v1/premises/{premise}"), "GET", "/v1/premises/{name}",
                               200)["hosts"])


def test_a_user_cannot_register_her_host_into_a_premise_she_is_not_a_member_of(world: World) -> None:
    alice, mallory = world.enrol_user(), world.enrol_user()
    premise = world.premise(users=[alice.name], hosts=[])["name"]
    hardware = fake_hardware_id(unique("mallory-machine"))
    body = check_error(_register(world, mallory, mallory, hardware, premises=[premise]), 403, "premise-member")
    assert premise in body["message"]
    assert _premise_hosts(world, premise) == []
    # Registered outside the premise, then re-registered naming it: refused too.
    registered = check_response(_register(world, mallory, mallory, hardware), "POST", "/v1/hosts", 201)
    check_error(_register(world, mallory, mallory, hardware, premises=[premise], name=registered["host_id"]), 403,
                "premise-member")
    assert _premise_hosts(world, premise) == []
    host = check_response(world.admin.get(f"/v1/hosts/{registered['host_id']}"), "GET", "/v1/hosts/{host_id}", 200)
    assert host["premises"] == []
    # A member may; an admin may put anybody's host anywhere.
    mine = check_response(_register(world, alice, alice, fake_hardware_id(unique("alice-machine")),
                                    premises=[premise]), "POST", "/v1/hosts", 201)
    assert mine["premises"] == [premise]
    by_admin = check_response(world.admin.post("/v1/hosts", {
        "host_id": world.host_id_token(mallory, hardware), "csr": new_csr()[1], "premises": [premise],
        "name": registered["host_id"]}), "POST", "/v1/hosts", 201)
    assert by_admin["premises"] == [premise]
    assert sorted(_premise_hosts(world, premise)) == sorted([mine["host_id"], registered["host_id"]])
    # An unknown premise is refused to her as the premise of another tenant (test_sm_tenancy_stop.py).


# -- 2. a marketplace acts only on its own artefacts, for their owner -----------------------------------


def test_a_marketplace_cannot_add_images_to_or_rewrite_terms_of_an_artefact_it_did_not_register(
        world: World) -> None:
    alice = world.enrol_user()
    honest, rogue = world.marketplace(), world.marketplace()
    artefact = world.artefact(honest, alice.name, terms={"max_instances": 1})
    name = artefact["artefact_id"]
    foreign = digest_of(unique("foreign-image"))
    images, terms = f"/v1/artefacts/{name}/images", f"/v1/artefacts/{name}/terms"
    # The rogue marketplace, as the requests used to be (no owner; both were accepted), then naming the owner.
    check_error(rogue.client.post(images, {"digest": foreign}), 400, "owner")
    check_error(rogue.client.put(terms, {"max_instances": 0}), 400, "owner")
    check_error(rogue.client.post(images, {"digest": foreign, "owner": alice.name}), 403, "artefact-creator")
    check_error(rogue.client.put(terms, {"max_instances": 0, "allowed_hosts": [], "owner": alice.name}), 403,
                "artefact-creator")
    # The marketplace that registered it, for another owner or without naming one.
    mallory = world.enrol_user()
    check_error(honest.client.post(images, {"digest": foreign, "owner": mallory.name}), 403, "artefact-owner")
    check_error(honest.client.put(terms, {"max_instances": 0, "owner": mallory.name}), 403, "artefact-owner")
    check_error(honest.client.put(terms, {"max_instances": 0}), 400, "owner")
    record = check_response(world.admin.get(f"/v1/artefacts/{name}"), "GET", "/v1/artefacts/{artefact_id}", 200)
    assert record["terms"]["max_instances"] == 1
    assert [i["digest"] for i in record["images"]] == [artefact["images"][0]["digest"]]
    # The registering marketplace for its owner may; an admin may without naming the owner.
    added = check_response(honest.client.post(images, {"digest": foreign, "owner": alice.name}),
                           "POST", "/v1/artefacts/{artefact_id}/images", 201)
    assert added["artefact_id"] == name
    changed = check_response(honest.client.put(terms, {"max_instances": 2, "owner": alice.name}),
                             "PUT", "/v1/artefacts/{artefact_id}/terms", 200)
    assert changed["terms"]["max_instances"] == 2
    changed = check_response(world.admin.put(terms, {"max_instances": 3}), "PUT", "/v1/artefacts/{artefact_id}/terms",
                             200)
    assert changed["terms"]["max_instances"] == 3
    check_error(world.admin.put(terms, {"max_instances": 4, "owner": mallory.name}), 403, "artefact-owner")


def test_an_artefact_registered_by_an_admin_is_not_any_marketplaces(world: World) -> None:
    alice = world.enrol_user()
    marketplace = world.marketplace()
    name = unique("admin-artefact")
    check_response(world.admin.post("/v1/artefacts", {"artefact_id": name, "owner": alice.name,
                                                      "digest": digest_of(name)}), "POST", "/v1/artefacts", 201)
    images = f"/v1/artefacts/{name}/images"
    check_error(marketplace.client.post(images, {"digest": digest_of(unique("x"))}), 400, "owner")
    check_error(marketplace.client.post(images, {"digest": digest_of(unique("x")), "owner": alice.name}), 403,
                "artefact-creator")
    check_error(marketplace.client.put(f"/v1/artefacts/{name}/terms", {"max_instances": 5, "owner": alice.name}),
                403, "artefact-creator")


def test_a_reservation_is_the_reserving_marketplaces_only(world: World) -> None:
    alice, bob = world.enrol_user(), world.enrol_user()
    honest, rogue = world.marketplace(), world.marketplace()
    name = unique("reserved")
    first = check_response(honest.client.post("/v1/artefact-ids", {"name": name, "owner": alice.name}),
                           "POST", "/v1/artefact-ids", 201)
    # Asking for the same name and owner used to hand the rogue marketplace the stored token.
    body = check_error(rogue.client.post("/v1/artefact-ids", {"name": name, "owner": alice.name}), 409, "name-taken")
    assert first["token"] not in json.dumps(body)
    again = check_response(honest.client.post("/v1/artefact-ids", {"name": name, "owner": alice.name}),
                           "POST", "/v1/artefact-ids", 201)
    assert again["token"] == first["token"]
    release = f"/v1/artefact-ids/{name}"
    check_error(rogue.client.request("DELETE", release, params={"owner": alice.name}), 403, "artefact-creator")
    check_error(honest.client.request("DELETE", release), 400, "owner")
    check_error(honest.client.request("DELETE", release, params={"owner": bob.name}), 403, "artefact-owner")
    check_response(world.admin.get(f"/v1/artefacts/{name}"), "GET", "/v1/artefacts/{artefact_id}", 200)
    released = check_response(honest.client.request("DELETE", release, params={"owner": alice.name}),
                              "DELETE", "/v1/artefact-ids/{name}", 200)
    assert released["released"] is True


def test_the_mp_https_signer_names_the_owner_in_both_phases(world: World) -> None:
    alice = world.enrol_user()
    honest, rogue = world.marketplace(), world.marketplace()
    root = world.sm.root

    def signer(marketplace: Identity) -> HttpsArtefactSigner:
        return HttpsArtefactSigner(world.sm.base_url, client_certificate=marketplace.cert,
                                   client_key=marketplace.key, sm_root=root)

    mp, other = signer(honest), signer(rogue)
    name = unique("signed")
    mp.sign_artefact_id(name, alice.name)
    digest = digest_of(name)
    # Another marketplace does not know the owner, and naming it does not help.
    with pytest.raises(RegistrationError, match="owner is unknown"):
        other.sign_image_id(digest, name)
    with pytest.raises(RegistrationError, match="403"):
        other.sign_image_id(digest, name, alice.name)
    mp.sign_image_id(digest, name)
    record = check_response(world.admin.get(f"/v1/artefacts/{name}"), "GET", "/v1/artefacts/{artefact_id}", 200)
    assert [i["digest"] for i in record["images"]] == [digest]
    with pytest.raises(RegistrationError, match="403"):
        other.release_artefact_id(name, alice.name)
    mp.release_artefact_id(name)
    check_error(world.admin.get(f"/v1/artefacts/{name}"), 404, "not-found")


# -- 3. no licence for the runtimes of a pipeline that is not running -----------------------------------
# A stop revokes the licences the pipeline has and their runtime certificates (test_sm_tenancy_stop.py):
# its runtimes are refused as revoked. (``pipeline-not-running`` stays behind that, for licences of a
# pipeline stopped before stops revoked them.)


def test_step_6_refuses_a_runtime_whose_user_stopped_its_pipeline(world: World, fake_bms: list[FakeBM]) -> None:
    lab = tenancy(world, fake_bms, "127.0.0.24")
    pipeline = lab.request_pipeline()
    licence = lab.host_licence()  # step 4 while the pipeline was ready
    assert lab.stop(pipeline)["status"] == "stopped"
    body = check_error(lab.artefact_licence(licence), 403, "revoked")
    assert len(body["message"].splitlines()) == 1
    # Nor step 4 again: a renewal, a retry of the same request, a fresh request.
    runtime_nonce = licence["runtime_id"]["nonce"]
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(runtime_nonce, licence["licence_id"])),
                403, "revoked")
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(runtime_nonce)), 403, "revoked")
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request()), 403, "no-pipeline")


def test_a_runtime_of_a_stopped_pipeline_gets_no_artefact_licence_and_no_renewal(world: World,
                                                                                fake_bms: list[FakeBM]) -> None:
    lab = tenancy(world, fake_bms, "127.0.0.21")
    first = lab.request_pipeline()
    licence = lab.host_licence()
    assert pipeline_of(world, licence) == first["pipeline_id"]
    # A second ready pipeline of the same user with the same stage: its licences name it, not the first.
    second = lab.request_pipeline()
    renewed = lab.host_licence(licence["runtime_id"]["nonce"], renews=licence["licence_id"])
    assert pipeline_of(world, renewed) == first["pipeline_id"], "a renewal stays in its runtime's pipeline"
    lab.stop(first)
    check_error(lab.artefact_licence(renewed), 403, "revoked")
    assert renewed["licence_id"] in world.admin.get("/v1/licences/revoked").json()["licence_ids"]
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(
        licence["runtime_id"]["nonce"], renews=renewed["licence_id"])), 403, "revoked")
    # The second pipeline is unaffected.
    fresh = lab.host_licence()
    assert pipeline_of(world, fresh) == second["pipeline_id"]
    check_response(lab.artefact_licence(fresh), "POST", "/v1/licences/artefact", 201)
    lab.stop(second)
    # Neither a new licence nor the stored one again (a retry of the same request).
    check_error(lab.artefact_licence(fresh), 403, "revoked")
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(fresh["runtime_id"]["nonce"])), 403,
                "revoked")
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request()), 403, "no-pipeline")


def test_a_runtime_of_an_aborted_pipeline_gets_no_artefact_licence(world: World, fake_bms: list[FakeBM]) -> None:
    lab = tenancy(world, fake_bms, "127.0.0.22")
    pipeline = lab.request_pipeline()
    licence = lab.host_licence()
    lab.bm.fail_start = True
    started = check_response(lab.user.client.post(f"/v1/pipelines/{pipeline['pipeline_id']}/start"),
                             "POST", "/v1/pipelines/{pipeline_id}/start", 200)
    assert started["status"] == "aborted", started
    check_error(lab.artefact_licence(licence), 403, "revoked")
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request(
        licence["runtime_id"]["nonce"], renews=licence["licence_id"])), 403, "revoked")


# -- 4. a pipeline stopped during step 3 stays stopped ---------------------------------------------------


def test_a_pipeline_stopped_while_its_images_are_verified_never_becomes_ready(world: World,
                                                                              fake_bms: list[FakeBM]) -> None:
    lab = tenancy(world, fake_bms, "127.0.0.23")
    lab.bm.release_fetch.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        requested = pool.submit(lab.request_pipeline)
        assert lab.bm.fetching.wait(30), "the SM never asked the BM to fetch"
        entries = check_response(world.admin.get("/v1/audit", params={"action": "pipeline-requested",
                                                                      "limit": 1000}), "GET", "/v1/audit", 200)
        pipeline_id = next(e["subject"] for e in reversed(entries["entries"])
                           if e["details"].get("premise") == lab.premise)
        stopped = lab.stop({"pipeline_id": pipeline_id})
        assert stopped["status"] == "stopped"
        lab.bm.release_fetch.set()
        answer = requested.result(timeout=60)
    assert answer["status"] == "stopped", answer
    assert world.admin.get(f"/v1/pipelines/{pipeline_id}").json()["status"] == "stopped"
    check_error(lab.host.client.post("/v1/licences/host", lab.licence_request()), 403, "no-pipeline")
