"""A whole virtual premise on loopback for the end-to-end tests and the pipeline benchmark.

Real parts only: the Docker engine, a CNCF registry process, the SM under gunicorn (its own
process), the Marketplace's registration pipeline (in-process, against that engine and registry)
and one BM process per host, each on its own loopback address (127.0.0.2, 127.0.0.3, ...) with its
own hardware facts (a fake sysroot), so host IDs and host IPs in runtime IDs differ per host.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter

from bonseyes_py.bm.enrol import OwnerIdentity, enrol_host
from bonseyes_py.mp.catalogue import Catalogue
from bonseyes_py.mp.registry import RegistryProcess, RegistryTLS
from bonseyes_py.mp.service import Marketplace
from bonseyes_py.mp.signing import LocalArtefactSigner
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem
from bonseyes_py.pki.keys import generate_private_key, signature_hash, write_private_key
from bonseyes_py.pki.roles import Identity, Role
from bonseyes_py.sm.initialise import init_sm

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYBASE = "bonseyes/base-python:bookworm"
# The demo payload of site.yml (one file for both). Tagged by its content, so an edit is rebuilt, not reused.
RELAY_PAYLOAD = HERE.parents[1] / "playbooks" / "files" / "relay_payload.py"
RELAY_IMAGE = "bonseyes-e2e/relay:" + hashlib.sha256(RELAY_PAYLOAD.read_bytes()).hexdigest()[:12]
LABEL_HOST = "io.bonseyes.bm.host"
LABEL_PIPELINE = "io.bonseyes.bm.pipeline"
ENGINE_CERTS_DIR = "/etc/docker/certs.d"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# The pull endpoint's name. The Docker engine treats 127.0.0.0/8 as an insecure registry range, and
# for those it neither verifies the server nor presents client certificates; a name that resolves to
# ::1 only is a "secure" registry to the engine, so hosts pull over TLS with their host certificate.
REGISTRY_NAME = "registry.bonseyes.test"
HOSTS_FILE = Path("/etc/hosts")


def ensure_registry_name() -> None:
    """Map ``REGISTRY_NAME`` to ::1 in /etc/hosts (RFC 6761 ``.test``: never a real name), once."""
    for line in HOSTS_FILE.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if REGISTRY_NAME in fields[1:]:
            if fields[0] != "::1":
                raise AssertionError(f"{HOSTS_FILE} maps {REGISTRY_NAME} to {fields[0]}, not ::1")
            return
    with HOSTS_FILE.open("a") as handle:
        handle.write(f"::1 {REGISTRY_NAME}  # bonseyes e2e: mTLS pull endpoint on IPv6 loopback\n")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # gunicorn workers of a killed master are in its session: end exactly that group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class _PinnedName(HTTPAdapter):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = self.name
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Client:
    base_url: str
    cert: Path
    key: Path
    ca: Path
    assert_hostname: str | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        if self.assert_hostname:
            # A BM's certificate names its host ID (DNS SAN), not its IP: check that name.
            self.session.mount("https://", _PinnedName(self.assert_hostname))

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 300)
        return self.session.request(method, self.base_url + path, cert=(str(self.cert), str(self.key)),
                                    verify=str(self.ca), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, json=body, **kwargs)


@dataclass
class BMHandle:
    directory: Path
    ip: str
    port: int
    host_id: str
    log: Path
    process: subprocess.Popen[bytes] | None = None


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Lab:
    def __init__(self, root: Path, docker_client: docker.DockerClient, bl_dir: Path) -> None:
        self.root = root
        self.docker = docker_client
        self.bl_dir = bl_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.bms: dict[str, BMHandle] = {}
        self.registry: RegistryProcess | None = None
        self.users: dict[str, tuple[Path, Path]] = {}

    # -- SM ------------------------------------------------------------------------------------------

    def start_sm(self) -> None:
        self.sm_port = free_port()
        self.sm_dir = self.root / "sm"
        self.sm_config = init_sm(self.sm_dir, bind=f"127.0.0.1:{self.sm_port}", workers=2, threads=16,
                                 bm_timeout_seconds=300.0, heartbeat_ttl_seconds=60)
        self.sm_url = f"https://127.0.0.1:{self.sm_port}"
        self.ca_bundle = self.sm_config.ca_bundle
        self.ca = CertificateAuthority.load(self.sm_config.ca_directory)
        self.sm_log = self.root / "sm.log"
        self.sm_process = self._spawn([sys.executable, "-m", "bonseyes_py.sm", str(self.sm_dir)], self.sm_log)
        admin_cert = self.root / "admin.pem"
        admin_cert.write_bytes(self.sm_config.admin_certificate.read_bytes() + certificate_pem(self.ca.intermediate))
        self.admin = Client(self.sm_url, admin_cert, self.sm_config.admin_key, self.ca_bundle)
        wait_for(lambda: self._answers(self.admin, "/v1/ping", self.sm_process), 60, "the SM")

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=clean_env(),
                                       start_new_session=True)
        self.processes.append(process)
        return process

    @staticmethod
    def _answers(client: Client, path: str, process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}")
        try:
            return client.get(path, timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def enrol_user(self, user_id: str) -> Client:
        key = generate_private_key()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)]))
               .sign(key, signature_hash(key)))  # type: ignore[arg-type]
        answer = self.admin.post("/v1/users", {"user_id": user_id, "csr": csr.public_bytes(
            serialization.Encoding.PEM).decode()})
        assert answer.status_code == 201, answer.text
        directory = self.root / "users" / user_id
        key_path = write_private_key(directory / "user.key", key)
        cert_path = directory / "user.pem"
        cert_path.write_bytes(answer.json()["certificate"].encode() + certificate_pem(self.ca.intermediate))
        self.users[user_id] = (cert_path, key_path)
        return self.user(user_id)

    def user(self, user_id: str) -> Client:
        cert, key = self.users[user_id]
        return Client(self.sm_url, cert, key, self.ca_bundle)

    def put_premise(self, name: str, users: list[str]) -> None:
        answer = self.admin.put(f"/v1/premises/{name}", {"users": users})
        assert answer.status_code == 200, answer.text

    # -- registry and MP ---------------------------------------------------------------------------------

    def start_registry(self) -> RegistryProcess:
        self.registry = RegistryProcess(self.root / "registry").start()
        # BMs pull from the read-only endpoint over the same storage, over TLS: only holders of an
        # SM-issued certificate may read, nobody may write.
        ensure_registry_name()
        tls_dir = self.root / "registry-tls"
        key = generate_private_key()
        key_path = write_private_key(tls_dir / "server.key", key)
        certificate = self.ca.issue(key.public_key(), self.ca.identity(Role.MARKETPLACE, "registry-pull"),
                                    dns_names=(REGISTRY_NAME,))
        cert_path = tls_dir / "server.pem"
        cert_path.write_bytes(certificate_pem(certificate) + certificate_pem(self.ca.intermediate))
        self.pull_registry = RegistryProcess(self.root / "registry-pull", host=REGISTRY_NAME, port=free_port("::1"),
                                             storage=self.registry.storage, read_only=True,
                                             tls=RegistryTLS(cert_path, key_path, self.ca_bundle)).start()
        self.marketplace = Marketplace(
            catalogue=Catalogue.sqlite(self.root / "catalogue.db"), registry=self.registry.client(),
            registry_address=self.registry.address, credentials=self.registry.credentials(),
            signer=LocalArtefactSigner(self.ca), docker_client=self.docker, bl_dir=self.bl_dir)
        return self.registry

    def relay_image(self) -> str:
        try:
            self.docker.images.get(RELAY_IMAGE)
            return RELAY_IMAGE
        except docker.errors.ImageNotFound:
            pass
        context = self.root / "relay-context"
        context.mkdir(exist_ok=True)
        (context / "relay.py").write_bytes(RELAY_PAYLOAD.read_bytes())
        (context / "Dockerfile").write_text(
            f"FROM {PYBASE}\nCOPY relay.py /srv/relay.py\nUSER nobody\nWORKDIR /srv\n"
            'ENTRYPOINT ["python3", "-u", "/srv/relay.py"]\nCMD ["relay"]\n')
        self.docker.images.build(path=str(context), tag=RELAY_IMAGE, rm=True, forcerm=True, network_mode="none",
                                 pull=False)
        return RELAY_IMAGE

    def register_artefact(self, name: str, owner: str, image: str | None = None,
                          licence_seconds: int = 0) -> dict[str, Any]:
        """Register through the MP (vet, BL layer, push, sign), then record it at the SM."""
        caller = Identity(self.ca.trust_domain, Role.USER, owner)
        artefact = self.marketplace.register_local_image(image or self.relay_image(), owner=caller, name=name)
        record: dict[str, Any] = {"artefact_id": name, "owner": owner, "digest": artefact.digest}
        if licence_seconds:
            record["terms"] = {"licence_seconds": licence_seconds}  # both licences of its runtimes live this long
        answer = self.admin.post("/v1/artefacts", record)
        assert answer.status_code == 201, answer.text
        return {"name": name, "digest": artefact.digest, "repository": artefact.repository,
                "reference": f"{self.pull_registry.address}/{artefact.repository}@{artefact.digest}"}  # type: ignore[union-attr]

    # -- BMs ----------------------------------------------------------------------------------------------

    def add_host(self, ip: str, owner: str, premises: list[str], **settings: Any) -> BMHandle:
        sysroot = self.root / "sysroots" / ip
        (sysroot / "etc").mkdir(parents=True, exist_ok=True)
        (sysroot / "etc" / "machine-id").write_text(secrets.token_hex(16) + "\n")
        cert, key = self.users[owner]
        directory = self.root / "hosts" / ip
        port = free_port(ip)
        settings.setdefault("heartbeat_seconds", 5.0)
        settings.setdefault("bl_timeout_seconds", 60.0)
        config = enrol_host(directory, sm_url=self.sm_url, ca_bundle=self.ca_bundle,
                            owner=OwnerIdentity(cert, key), bind_ip=ip, port=port, registry=self.pull_registry.address,  # type: ignore[union-attr]
                            premises=premises, sysroot=sysroot, **settings)
        handle = BMHandle(directory, ip, port, config.host_id, self.root / f"bm-{ip}.log")
        self.bms[config.host_id] = handle
        return handle

    def bm_client(self, handle: BMHandle) -> Client:
        return Client(f"https://{handle.ip}:{handle.port}", self.admin.cert, self.admin.key, self.ca_bundle,
                      assert_hostname=handle.host_id)

    def start_bm(self, handle: BMHandle, wait: bool = True) -> subprocess.Popen[bytes]:
        handle.process = self._spawn([sys.executable, "-m", "bonseyes_py.bm", str(handle.directory)], handle.log)
        if wait:
            client = self.bm_client(handle)
            wait_for(lambda: self._answers(client, "/v1/ping", handle.process), 60, f"BM {handle.ip}")  # type: ignore[arg-type]
        return handle.process

    def stop_bm(self, handle: BMHandle, sig: int = signal.SIGTERM) -> None:
        if handle.process is not None:
            stop_process(handle.process, sig)

    # -- inspection ---------------------------------------------------------------------------------------

    def containers(self, **labels: str) -> list[Any]:
        """This lab's containers (of its own hosts only: parallel tests run BMs of their own)."""
        filters = [f"{key}={value}" for key, value in labels.items()]
        return [container for host_id in self.bms
                for container in self.docker.containers.list(
                    all=True, ignore_removed=True, filters={"label": [*filters, f"{LABEL_HOST}={host_id}"]})]

    def pipeline_containers(self, pipeline_id: str) -> list[Any]:
        return self.docker.containers.list(all=True, ignore_removed=True,
                                           filters={"label": f"{LABEL_PIPELINE}={pipeline_id}"})

    def has_image(self, digest: str) -> bool:
        return any(entry.endswith("@" + digest) for image in self.docker.images.list(all=True)
                   for entry in image.attrs.get("RepoDigests") or [])

    def close(self) -> None:
        # Only this lab's hosts' containers: other tests (run in parallel by pytest-xdist) have BMs of their own.
        for host_id in self.bms:
            for container in self.docker.containers.list(all=True, ignore_removed=True,
                                                         filters={"label": f"{LABEL_HOST}={host_id}"}):
                container.remove(force=True)
        for process in reversed(self.processes):
            stop_process(process)
        if self.registry is not None:
            self.registry.stop()
            self.pull_registry.stop()
            # The BMs' links to their (now deleted) host identities would break the engine's later pulls.
            shutil.rmtree(Path(ENGINE_CERTS_DIR) / self.pull_registry.address, ignore_errors=True)
            # Images pulled from this lab's registry are of no use once it is gone.
            prefix = self.pull_registry.address + "/"
            for image in self.docker.images.list(all=True):
                if any(entry.startswith(prefix) for entry in image.attrs.get("RepoDigests") or []):
                    with contextlib.suppress(docker.errors.APIError):
                        self.docker.images.remove(image.id, force=True)


def run_pipeline(user: Client, premise: str, stages: list[dict[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Steps 3 to 6: request (fetch + verify on every BM), then start (licences, containers, BL)."""
    requested = user.post("/v1/pipelines", {"premise": premise, "stages": stages})
    assert requested.status_code == 201, requested.text
    pipeline = requested.json()
    started = user.post(f"/v1/pipelines/{pipeline['pipeline_id']}/start")
    assert started.status_code == 200, started.text
    return pipeline, started.json()


def logs_of(container: Any) -> str:
    try:
        return str(container.logs().decode(errors="replace"))
    except docker.errors.NotFound:
        return ""


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


__all__ = ["Lab", "io"]
