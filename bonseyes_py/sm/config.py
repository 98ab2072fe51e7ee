"""Configuration of one Security Manager instance, kept as ``sm.json`` in its directory.

Everything the SM owns lives under one directory: the CA (``ca/``), the TLS server identity and
CA bundle (``tls/``), the first admin identity (``admin/``), the at-rest data key (``private/``) and,
by default, the SQLite database.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bonseyes_py import safejson
from bonseyes_py.errors import InputError

CONFIG_NAME = "sm.json"


@dataclass
class SMConfig:
    directory: Path
    database_url: str = ""
    bind: str = "127.0.0.1:8443"
    workers: int = 2
    worker_class: str = "gthread"
    threads: int = 8
    heartbeat_ttl_seconds: int = 90
    host_licence_seconds: int = 900
    artefact_licence_seconds: int = 3600
    bm_port: int = 8444
    bm_timeout_seconds: float = 10.0
    max_body_bytes: int = 256 * 1024
    # NORMAL (WAL): survives kill -9; FULL: also survives a power cut, at an fsync per commit (see db.py).
    sqlite_synchronous: str = "NORMAL"
    # Heartbeats of an available host are batched in memory and written every this many seconds.
    heartbeat_flush_seconds: float = 1.0
    pidfile: str | None = None
    accesslog: str | None = None
    loglevel: str = "warning"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.directory / 'sm.db'}"

    # -- paths --------------------------------------------------------------------------------------

    @property
    def ca_directory(self) -> Path:
        return self.directory / "ca"

    @property
    def tls_certificate(self) -> Path:
        return self.directory / "tls" / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls" / "server.key"

    @property
    def ca_bundle(self) -> Path:
        """Root then intermediate: the CA file of TLS peers, on both sides."""
        return self.directory / "tls" / "ca-bundle.pem"

    @property
    def data_key(self) -> Path:
        return self.directory / "private" / "data.key"

    @property
    def admin_certificate(self) -> Path:
        return self.directory / "admin" / "admin.pem"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin" / "admin.key"

    # -- persistence --------------------------------------------------------------------------------

    def save(self) -> Path:
        data = asdict(self)
        data["directory"] = str(self.directory)
        path = self.directory / CONFIG_NAME
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path | str, **overrides: Any) -> SMConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.exists():
            raise InputError(f"no Security Manager in {directory}: {path} is missing; run init_sm first",
                             check="sm-missing")
        data = safejson.load_object_file(path, what=f"Security Manager configuration {path}")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["directory"] = Path(directory)
        return cls(**data)
