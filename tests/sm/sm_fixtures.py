"""Fixtures of the SM tests (conftest.py re-exports them; tests import helpers from here): a real SM
under gunicorn with mTLS, and a world to populate it.

``sm_server`` runs ``init_sm`` in a temporary directory and starts ``python -m bonseyes_py.sm`` (gunicorn,
two gthread workers) on 127.0.0.1:<free port>; it is shared by the session, so tests create their own
users, hosts and artefacts (names carry a counter) instead of assuming an empty database.
``world`` offers the steps of the paper as one-liners that go through the real HTTPS API.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sm_testlib import (
    Client,
    check_response,
    digest_of,
    fake_hardware_id,
    free_port,
    new_csr,
    start_sm,
    stop,
    wait_ready,
    write_identity,
)

from bonseyes_py.identity.ids import sign_host_id
from bonseyes_py.jose import Signer
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate
from bonseyes_py.pki.keys import PrivateKey
from bonseyes_py.sm import SMConfig, init_sm
from bonseyes_py.sm.bm_client import BonseyesModuleEndpoint, BonseyesModuleError, HttpsBonseyesModuleClient

HERE = Path(__file__).parent
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


@dataclass
class SMServer:
    config: SMConfig
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def root(self) -> Path:
        return self.config.ca_directory / "root.pem"

    def client(self, cert: Path, key: Path, source_ip: str | None = None) -> Client:
        return Client(self.base_url, cert, key, self.root, source_ip=source_ip)

    def admin(self) -> Client:
        return self.client(self.config.admin_certificate, self.config.admin_key)


def launch_sm(directory: Path, **settings: Any) -> SMServer:
    port = free_port()
    config = init_sm(directory, bind=f"127.0.0.1:{port}", **{"workers": 2, "threads": 4, **settings})
    log = directory / "server.log"
    process = start_sm(directory, log)
    server = SMServer(config, f"https://127.0.0.1:{port}", process, log)
    wait_ready(server.admin(), process, log)
    return server


@pytest.fixture(scope="session")
def sm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SMServer]:
    server = launch_sm(tmp_path_factory.mktemp("sm"))
    yield server
    stop(server.process)


@dataclass
class Identity:
    name: str
    cert: Path
    key: Path
    private_key: PrivateKey
    client: Client
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    """Drives the SM through its HTTPS API the way users, hosts, the Marketplace and BL would."""

    sm: SMServer
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def admin(self) -> Client:
        return self.sm.admin()

    def enrol_user(self, name: str | None = None, organisation: str = "lab") -> Identity:
        name = name or unique("user")
        key, csr = new_csr()
        body = check_response(self.admin.post("/v1/users", {"user_id": name, "csr": csr,
                                                            "organisation": organisation}),
                              "POST", "/v1/users", 201)
        cert, key_path = write_identity(self.directory / "ids", name, key, body["certificate"])
        return Identity(name, cert, key_path, key, self.sm.client(cert, key_path))

    def marketplace(self) -> Identity:
        name = unique("mp")
        key, csr = new_csr()
        body = check_response(self.admin.post("/v1/services", {"role": "marketplace", "name": name, "csr": csr}),
                              "POST", "/v1/services", 201)
        cert, key_path = write_identity(self.directory / "ids", name, key, body["certificate"])
        return Identity(name, cert, key_path, key, self.sm.client(cert, key_path))

    def host_id_token(self, owner: Identity, hardware_id: str) -> str:
        ca = CertificateAuthority.load(self.sm.config.ca_directory)
        owner_cert = load_certificate(owner.cert.read_bytes())
        from bonseyes_py.pki.roles import identity_of

        return sign_host_id(Signer(owner.private_key, [owner_cert, ca.intermediate]), identity_of(owner_cert).uri,
                            hardware_id)

    def register_host(self, owner: Identity, *, premises: tuple[str, ...] = (), ip: str = "127.0.0.2",
                      label: str | None = None, gpu_count: int = 0) -> Identity:
        hardware_id = fake_hardware_id(label or unique("machine"))
        key, csr = new_csr()
        body = check_response(owner.client.post("/v1/hosts", {
            "host_id": self.host_id_token(owner, hardware_id), "csr": csr, "premises": list(premises),
            "gpu_count": gpu_count}), "POST", "/v1/hosts", 201)
        cert, key_path = write_identity(self.directory / "ids", body["host_id"], key, body["certificate"],
                                        body["chain"])
        return Identity(body["host_id"], cert, key_path, key, self.sm.client(cert, key_path, source_ip=ip),
                        extra={"ip": ip, "hardware_id": hardware_id})

    def start_bm(self, host: Identity, overrides: dict[str, str] | None = None) -> Path:
        """Start the BM test peer for ``host`` on its loopback address; heartbeat with its port."""
        port = free_port(host.extra["ip"])
        state = self.directory / f"bm-{host.name}.json"
        state.write_text(json.dumps({"overrides": overrides or {}}))
        log = self.directory / f"bm-{host.name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen([sys.executable, str(HERE / "bm_peer.py"), f"{host.extra['ip']}:{port}",
                                        str(host.cert), str(host.key), str(self.sm.config.ca_bundle), str(state)],
                                       stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        # Probe with the SM's own BM client: it pins the BM certificate to this host's name.
        client = HttpsBonseyesModuleClient(self.sm.config.tls_certificate, self.sm.config.tls_key,
                                           self.sm.config.ca_bundle, timeout_seconds=2)
        endpoint = BonseyesModuleEndpoint(host.name, host.extra["ip"], port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.fetch_images(endpoint, [])
                break
            except BonseyesModuleError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"BM test peer did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        host.extra["bm_port"] = port
        host.extra["state"] = state
        self.heartbeat(host)
        return state

    def heartbeat(self, host: Identity) -> dict[str, Any]:
        body = {"bm_port": host.extra["bm_port"]} if "bm_port" in host.extra else {}
        return check_response(host.client.post("/v1/hosts/heartbeat", body), "POST", "/v1/hosts/heartbeat", 200)

    def premise(self, name: str | None = None, *, users: list[str], hosts: list[str],
                policy: str | None = None) -> dict[str, Any]:
        name = name or unique("premise")
        body: dict[str, Any] = {"users": users, "hosts": hosts}
        if policy is not None:
            body["policy"] = policy
        return check_response(self.admin.put(f"/v1/premises/{name}", body), "PUT", "/v1/premises/{name}", 200)

    def artefact(self, marketplace: Identity, owner: str, *, terms: dict[str, Any] | None = None,
                 name: str | None = None) -> dict[str, Any]:
        name = name or unique("artefact")
        body = {"artefact_id": name, "owner": owner, "digest": digest_of(name), "terms": terms or {}}
        return check_response(marketplace.client.post("/v1/artefacts", body), "POST", "/v1/artefacts", 201)

    def runtime(self, licence: dict[str, Any]) -> Identity:
        from bonseyes_py.pki.keys import load_private_key_pem

        key = load_private_key_pem(licence["runtime_key"].encode())
        name = licence["runtime_name"]
        cert, key_path = write_identity(self.directory / "ids", name, key, licence["runtime_chain"])
        return Identity(name, cert, key_path, key, self.sm.client(cert, key_path))

    def close(self) -> None:
        for process in self.processes:
            stop(process)


@pytest.fixture(scope="session")
def world(sm_server: SMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    created = World(sm_server, tmp_path_factory.mktemp("world"))
    yield created
    created.close()


@dataclass
class Lab:
    """One ready pipeline: user, host with a running BM test peer, premise, artefact."""

    user: Identity
    host: Identity
    marketplace: Identity
    premise: dict[str, Any]
    artefact: dict[str, Any]
    pipeline: dict[str, Any]

    @property
    def digest(self) -> str:
        return self.artefact["images"][0]["digest"]

    def licence_request(self, nonce: str) -> dict[str, Any]:
        return {"image_digest": self.digest, "artefact_id": self.artefact["artefact_id"],
                "user_id": self.user.name, "nonce": nonce}


def build_lab(world: World, *, terms: dict[str, Any] | None = None, policy: str | None = None,
              ip: str = "127.0.0.2") -> Lab:
    user = world.enrol_user()
    marketplace = world.marketplace()
    host = world.register_host(user, ip=ip)
    premise = world.premise(users=[user.name], hosts=[host.name], policy=policy)
    artefact = world.artefact(marketplace, user.name, terms=terms)
    world.start_bm(host)
    pipeline = check_response(user.client.post("/v1/pipelines", {
        "premise": premise["name"], "stages": [{"artefact_id": artefact["artefact_id"], "host_id": host.name}]}),
        "POST", "/v1/pipelines", 201)
    assert pipeline["status"] == "ready", pipeline
    return Lab(user, host, marketplace, premise, artefact, pipeline)


@pytest.fixture(scope="session")
def lab(world: World) -> Lab:
    return build_lab(world)
