"""Configuration of one Bonseyes Module, kept as ``bm.json`` in its directory.

Everything the BM owns lives under one directory: the host identity (``tls/``), the per-runtime
material handed to containers (``runtimes/``, 0700 root) and BM-private runtime records
(``records/``). The host key never leaves ``tls/host.key`` (0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bonseyes_py import safejson
from bonseyes_py.errors import InputError

CONFIG_NAME = "bm.json"


@dataclass
class BMConfig:
    directory: Path
    host_id: str = ""
    sm_url: str = "https://127.0.0.1:8443"
    bind_ip: str = "127.0.0.1"
    port: int = 8444
    registry: str = ""  # host:port of the Marketplace's mTLS pull endpoint (a DNS name, not 127.x)
    registry_scheme: str = "https"  # "http" only for a legacy plain endpoint (logged as a warning)
    engine_certs_dir: str = "/etc/docker/certs.d"  # where the engine looks for per-registry client identities
    docker_url: str = ""  # empty: the engine of the environment (DOCKER_HOST or the local socket)
    heartbeat_seconds: float = 20.0
    renew_seconds: float = 0.0  # 0: a third of each host licence's lifetime
    bl_timeout_seconds: float = 60.0
    threads: int = 16
    loglevel: str = "warning"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    @property
    def certificate(self) -> Path:
        """Host certificate followed by the intermediate: the TLS identity on both sides."""
        return self.directory / "tls" / "host.pem"

    @property
    def key(self) -> Path:
        return self.directory / "tls" / "host.key"

    @property
    def ca_bundle(self) -> Path:
        """SM root then intermediate."""
        return self.directory / "tls" / "ca-bundle.pem"

    @property
    def runtimes(self) -> Path:
        return self.directory / "runtimes"

    @property
    def records(self) -> Path:
        return self.directory / "records"

    @property
    def url(self) -> str:
        return f"https://{self.bind_ip}:{self.port}"

    def ensure_private_dirs(self) -> None:
        for directory in (self.directory, self.runtimes, self.records):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (self.runtimes, self.records):
            os.chmod(directory, 0o700)

    def save(self) -> Path:
        data = asdict(self)
        data["directory"] = str(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / CONFIG_NAME
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path | str, **overrides: Any) -> BMConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.exists():
            raise InputError(f"no Bonseyes Module in {directory}: {path} is missing; run `bonseyes bm enrol` first",
                             check="bm-missing")
        data = safejson.load_object_file(path, what=f"Bonseyes Module configuration {path}")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["directory"] = Path(directory)
        return cls(**data)
