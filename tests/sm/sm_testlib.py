"""Helpers of the SM tests: mTLS clients per identity, source-address binding, OpenAPI checks.

Clients pass ``verify=`` and ``cert=`` on every request because ``REQUESTS_CA_BUNDLE`` in the
environment would override a Session's ``verify``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter

from bonseyes_py.pki.certs import certificate_pem
from bonseyes_py.pki.keys import PrivateKey, generate_private_key, signature_hash, write_private_key
from bonseyes_py.sm.openapi import openapi_document


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def new_csr(key: PrivateKey | None = None) -> tuple[PrivateKey, str]:
    key = key or generate_private_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "requester")]))
           .sign(key, signature_hash(key)))  # type: ignore[arg-type]
    from cryptography.hazmat.primitives import serialization
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def fake_hardware_id(label: str) -> str:
    return "hw-" + hashlib.sha256(label.encode()).hexdigest()


def nonce() -> str:
    return secrets.token_urlsafe(18)


def digest_of(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen loopback address, so a test plays a host at 127.0.0.2."""

    def __init__(self, source_ip: str, **kwargs: Any) -> None:
        self.source_ip = source_ip
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Client:
    """An mTLS client speaking as one identity (certificate + key files)."""

    base_url: str
    cert: Path
    key: Path
    root: Path
    source_ip: str | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        if self.source_ip:
            self.session.mount("https://", SourceAddressAdapter(self.source_ip))

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.base_url + path, cert=(str(self.cert), str(self.key)),
                                    verify=str(self.root), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, json=body, **kwargs)


def write_identity(directory: Path, name: str, key: PrivateKey, certificate_text: str,
                   chain_text: str = "") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = write_private_key(directory / f"{name}.key", key)
    cert_path = directory / f"{name}.pem"
    cert_path.write_text(certificate_text + chain_text)
    return cert_path, key_path


def write_certificate(directory: Path, name: str, key: PrivateKey, certificate: x509.Certificate) -> tuple[Path, Path]:
    return write_identity(directory, name, key, certificate_pem(certificate).decode())


# -- OpenAPI response checks ------------------------------------------------------------------------

_DOCUMENT = openapi_document()


def check_response(response: requests.Response, method: str, path_template: str, status: int) -> dict[str, Any]:
    """Assert the status and that the body matches the documented schema of that status."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    operation = _DOCUMENT["paths"][path_template][method.lower()]
    documented = operation["responses"][str(status)]["content"]
    if "application/json" not in documented:
        return {}
    schema = {**documented["application/json"]["schema"], "components": _DOCUMENT["components"]}
    body = response.json()
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    return body


def check_error(response: requests.Response, status: int, check: str) -> dict[str, Any]:
    """A documented error: the status, the ``Error`` shape, and the named check."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    schema = {**_DOCUMENT["components"]["schemas"]["Error"], "components": _DOCUMENT["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    assert body["error"] == check, body
    return body


# -- gunicorn subprocesses --------------------------------------------------------------------------

def wait_ready(client: Client, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if client.get("/v1/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s: {log.read_text()[-2000:]}")


def start_sm(directory: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "bonseyes_py.sm", str(directory), *extra],
                                stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Workers of a SIGKILLed master are orphans in its session: end exactly that process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
