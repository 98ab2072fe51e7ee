"""Start the Marketplace service under gunicorn (``python -m bonseyes_py.mp``) for the service tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bonseyes_py.mp.client import MarketplaceClient, MarketplaceRefusal
from bonseyes_py.mp.config import MPConfig
from bonseyes_py.mp.registry import RegistryProcess, free_port
from bonseyes_py.mp.server import init_mp
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import chain_pem
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import Role


@dataclass
class Person:
    name: str
    cert: str
    key: str


def issue_identity(ca: CertificateAuthority, directory: Path, role: Role, name: str) -> Person:
    key = generate_private_key()
    certificate = ca.issue(key.public_key(), ca.identity(role, name))
    directory.mkdir(parents=True, exist_ok=True)
    key_path = write_private_key(directory / f"{role.value}-{name}.key", key)
    cert_path = directory / f"{role.value}-{name}.pem"
    cert_path.write_bytes(chain_pem([certificate, ca.intermediate]))
    return Person(name, str(cert_path), str(key_path))


@dataclass
class MPServer:
    config: MPConfig
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    sm_root: str

    def client(self, person: Person) -> MarketplaceClient:
        return MarketplaceClient(self.url, person.cert, person.key, self.sm_root, timeout=600)

    def uploads(self) -> list[str]:
        return sorted(p.name for p in self.config.uploads.iterdir()) if self.config.uploads.exists() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_mp(directory: Path, registry: RegistryProcess, sm_root: Path | str, probe: Person, *,
             ca_directory: Path | str | None = None, sm_url: str | None = None,
             admin: tuple[Path, Path] | None = None, **settings: Any) -> MPServer:
    """``init_mp`` against an already running registry (the test owns it), then gunicorn."""
    port = free_port()
    enrol: dict[str, Any] = {}
    if admin is not None:
        enrol = {"admin_certificate": admin[0], "admin_key": admin[1], "sm_root": sm_root}
    config = init_mp(directory, ca_directory=ca_directory, sm_url=sm_url, bind=f"127.0.0.1:{port}",
                     manage_registry=False, registry_directory=str(registry.directory),
                     registry_host=registry.host, registry_port=registry.port,
                     **{"workers": 1, "threads": 4, **enrol, **settings})
    log = directory / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    with log.open("ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "bonseyes_py.mp", str(directory)], stdout=handle,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = MPServer(config, f"https://127.0.0.1:{port}", process, log, str(sm_root))
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"MP exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            server.client(probe).ping()
            return server
        except MarketplaceRefusal:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"MP not ready: {log.read_text()[-3000:]}") from None
            time.sleep(0.2)
