"""BM-private records of the runtimes it started, and the per-runtime directory handed to BL.

Records (``records/<nonce>.json``, 0600) survive a BM restart, so the restarted BM knows which
containers it licensed and which it must remove. The runtime directory (``runtimes/<nonce>/``,
0700 root) holds what BL needs: the host licence, the runtime key and certificate chain, the SM
CA bundle and the endpoints to call, and ``net/``, the relay's sockets (``netrelay.py``; mounted
read-write at ``/run/bonseyes-net``). It is bind-mounted read-only at ``/run/bonseyes`` into that
one container and nowhere else; nothing of it goes into the container's environment, which
``docker inspect`` shows to anyone allowed to talk to the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bonseyes_py import safejson
from bonseyes_py.errors import InputError
from bonseyes_py.pki.keys import write_public_file, write_secret_file

# File names inside the runtime directory (BL reads them under /run/bonseyes).
HOST_LICENCE = "host-licence.jwt"
RUNTIME_KEY = "runtime.key"
RUNTIME_CHAIN = "runtime.pem"
CA_BUNDLE = "ca.pem"
ENDPOINTS = "endpoints.json"
# Subdirectory with the relay's Unix sockets (bm/netrelay.py), bind-mounted read-write at /run/bonseyes-net.
NET = "net"

STARTING, RUNNING, FAILED, STOPPED = "starting", "running", "failed", "stopped"

# The runtime directory is mounted at /run/bonseyes in the container. Mode 0000 (when BM runs as root,
# which writes into it through CAP_DAC_OVERRIDE): inside the container only a process holding
# CAP_DAC_OVERRIDE opens it, which BL does and its payload does not, even one that runs as root
# (BL drops the capability from the payload's bounding set, see bl/main.py confine_payload). A BM that
# is not root needs owner access (0700), and then a payload that runs as root could read the key.
_MATERIAL_MODE = 0o000 if os.geteuid() == 0 else 0o700


@dataclass
class RuntimeRecord:
    nonce: str
    runtime_name: str
    pipeline_id: str
    position: int
    artefact_id: str
    digest: str
    user_id: str
    host_licence_id: str
    host_licence_expires: float
    status: str = STARTING
    container_id: str = ""
    container_name: str = ""
    artefact_licence_id: str = ""
    artefact_licence_expires: float = 0.0
    artefact_licences: int = 0  # how many BL presented: 1 at start, one more per BL renewal
    detail: str = ""
    created_at: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)
    routes: list[dict[str, Any]] = field(default_factory=list)  # the relay's routes (netrelay.Route views)

    def view(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class RecordStore:
    def __init__(self, records: Path, runtimes: Path) -> None:
        self.records = records
        self.runtimes = runtimes

    def save(self, record: RuntimeRecord) -> None:
        write_secret_file(self.records / f"{record.nonce}.json", json.dumps(record.view()).encode())

    def load_all(self) -> list[RuntimeRecord]:
        found = []
        for path in sorted(self.records.glob("*.json")):
            try:
                found.append(RuntimeRecord.from_dict(safejson.load_object_file(path, what=f"runtime record {path}")))
            except (InputError, ValueError, TypeError):
                path.unlink(missing_ok=True)
        return found

    def delete(self, nonce: str) -> None:
        (self.records / f"{nonce}.json").unlink(missing_ok=True)
        self.delete_material(nonce)

    def directory(self, nonce: str) -> Path:
        return self.runtimes / nonce

    def write_material(self, nonce: str, *, host_licence: str, runtime_key_pem: str, runtime_chain_pem: str,
                       ca_bundle_pem: bytes, endpoints: dict[str, Any]) -> Path:
        """Create (or refresh, on renewal) the runtime directory; files are replaced atomically."""
        directory = self.directory(nonce)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, _MATERIAL_MODE)
        write_secret_file(directory / RUNTIME_KEY, runtime_key_pem.encode())
        write_secret_file(directory / HOST_LICENCE, host_licence.encode())
        write_public_file(directory / RUNTIME_CHAIN, runtime_chain_pem.encode())
        write_public_file(directory / CA_BUNDLE, ca_bundle_pem)
        write_public_file(directory / ENDPOINTS, json.dumps(endpoints, sort_keys=True).encode())
        return directory

    def net_directory(self, nonce: str) -> Path:
        """The relay's socket directory of a runtime, with the material directory's mode (see ``_MATERIAL_MODE``)."""
        directory = self.directory(nonce) / NET
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, _MATERIAL_MODE)
        return directory

    def delete_material(self, nonce: str) -> None:
        directory = self.directory(nonce)
        if directory.is_dir():
            shutil.rmtree(directory, ignore_errors=True)
