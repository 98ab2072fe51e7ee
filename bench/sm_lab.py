"""Set-up shared by the SM benchmarks and profiles: an SM directory with one ready pipeline, in-process.

The benchmarks measure the served API, so everything they need beforehand (users, a host that has
sent its heartbeat from 127.0.0.2, a premise, an artefact, a verified pipeline, many registered
hosts) is written straight through ``SecurityManager`` before gunicorn starts. Step 3's BM calls
are answered by ``EchoBonseyesModule``, which reports each requested digest as computed: the bench
measures licences, not image pulls. Nothing here imports from ``tests/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter

from bonseyes_py.identity.ids import sign_host_id
from bonseyes_py.jose import Signer
from bonseyes_py.pki.certs import load_certificate
from bonseyes_py.pki.keys import PrivateKey, generate_private_key, signature_hash, write_private_key
from bonseyes_py.pki.roles import Identity, Role, identity_of
from bonseyes_py.sm import SecurityManager, init_sm
from bonseyes_py.sm.bm_client import BonseyesModuleEndpoint
from bonseyes_py.sm.service import admin_identity

HOST_IP = "127.0.0.2"


class EchoBonseyesModule:
    """A BM client whose BMs report exactly the requested digests (no network)."""

    def fetch_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> dict[str, str]:
        return {digest: digest for digest in digests}

    def remove_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> None:
        return None


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen loopback address, so a client plays the host at 127.0.0.2."""

    def __init__(self, source_ip: str, **kwargs: Any) -> None:
        self.source_ip = source_ip
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def new_csr() -> tuple[PrivateKey, str]:
    key = generate_private_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "requester")]))
           .sign(key, signature_hash(key)))  # type: ignore[arg-type]
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def write_identity(directory: Path, name: str, key: PrivateKey, certificate_text: str) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = write_private_key(directory / f"{name}.key", key)
    cert_path = directory / f"{name}.pem"
    cert_path.write_text(certificate_text)
    return str(cert_path), str(key_path)


@dataclass
class BenchLab:
    """One SM directory, ready to serve: a host with a verified pipeline, and its licence request."""

    directory: Path
    sm: SecurityManager
    host_identity: tuple[str, str]
    licence_request: dict[str, Any]
    owner: Identity
    owner_signer: Signer

    def register_hosts(self, count: int, ip: str | None = None) -> list[tuple[str, str]]:
        """Register ``count`` more hosts (and optionally mark them online from ``ip``); their key files."""
        identities = []
        for index in range(count):
            token = sign_host_id(self.owner_signer, self.owner.uri, _hardware_id(f"bench-host-{index}"))
            host_key, host_csr = new_csr()
            host = self.sm.register_host(self.owner, token, host_csr)
            if ip is not None:
                self.sm.heartbeat(self.sm.identity(Role.HOST, host["host_id"]), ip)
            identities.append(write_identity(self.directory / "hosts", host["host_id"], host_key,
                                             host["certificate"]))
        return identities


def _hardware_id(label: str) -> str:
    return "hw-" + hashlib.sha256(label.encode()).hexdigest()


def build_bench_lab(directory: Path, **settings: Any) -> BenchLab:
    """``init_sm`` in ``directory`` plus one ready pipeline for a host at 127.0.0.2."""
    config = init_sm(directory / "sm", **settings)
    sm = SecurityManager.open(config, bm_client=EchoBonseyesModule())
    admin = admin_identity(config)
    key, csr = new_csr()
    owner_answer = sm.enrol_user(admin, "bench-owner", csr_pem=csr)
    owner_cert = load_certificate(owner_answer["certificate"].encode())
    owner = identity_of(owner_cert)
    signer = Signer(key, [owner_cert, sm.ca.intermediate])
    token = sign_host_id(signer, owner.uri, _hardware_id("bench-licensed-host"))
    host_key, host_csr = new_csr()
    host = sm.register_host(owner, token, host_csr)
    host_name = host["host_id"]
    sm.heartbeat(sm.identity(Role.HOST, host_name), HOST_IP)
    sm.put_premise(admin, "bench", users=[owner.name], hosts=[host_name])
    digest = "sha256:" + hashlib.sha256(b"bench-artefact").hexdigest()
    sm.register_artefact(admin, "bench-artefact", owner.name, digest, {})
    pipeline = sm.request_pipeline(owner, "bench", [{"artefact_id": "bench-artefact", "host_id": host_name}])
    assert pipeline["status"] == "ready", pipeline
    host_files = write_identity(directory / "ids", host_name, host_key, host["certificate"] + host["chain"])
    request = {"image_digest": digest, "artefact_id": "bench-artefact", "user_id": owner.name, "nonce": ""}
    return BenchLab(directory, sm, host_files, request, owner, signer)


# -- the served SM ---------------------------------------------------------------------------------

def start_server(sm_directory: Path, bind: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "bonseyes_py.sm", str(sm_directory), "--bind", bind, *extra],
                                stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(base_url: str, cert: tuple[str, str], root: str, process: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(base_url + "/v1/ping", cert=cert, verify=root, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s: {log.read_text()[-2000:]}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
