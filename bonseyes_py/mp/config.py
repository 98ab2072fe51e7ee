"""Configuration of one Marketplace instance, kept as ``mp.json`` in its directory.

Everything the MP owns lives under one directory: its TLS identity (``tls/``: role
``marketplace``, issued by the SM from a CSR or by the CA directly in an all-in-one install), the
catalogue database, the registry it runs (``registry/``) and a spool for uploads (``uploads/``).
Who signs IDs is either the SM's CA directory (``ca_directory``, all-in-one) or a running SM
(``sm_url``, over mutual TLS with the marketplace certificate).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bonseyes_py import safejson
from bonseyes_py.errors import InputError

CONFIG_NAME = "mp.json"


@dataclass
class MPConfig:
    directory: Path
    name: str = "marketplace"
    bind: str = "127.0.0.1:8445"
    workers: int = 2
    threads: int = 4
    # A registration holds its request for minutes (build, push): gthread keeps the worker alive meanwhile.
    worker_class: str = "gthread"
    max_body_bytes: int = 256 * 1024  # JSON requests
    max_upload_bytes: int = 4 * 1024**3  # a docker save archive, streamed to the spool
    database_url: str = ""
    sm_url: str = ""
    ca_directory: str = ""
    registry_directory: str = ""  # default: <directory>/registry
    registry_host: str = "127.0.0.1"
    registry_port: int = 5000
    manage_registry: bool = True  # serve() starts and stops the registry process
    vetting: dict[str, Any] = field(default_factory=dict)  # VettingRules fields (max_size_bytes, ...)
    pidfile: str | None = None
    accesslog: str | None = None
    loglevel: str = "warning"

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.directory / 'catalogue.db'}"
        if not self.registry_directory:
            self.registry_directory = str(self.directory / "registry")
        if bool(self.sm_url) == bool(self.ca_directory):
            raise InputError("a Marketplace needs exactly one of sm_url (a running SM) or ca_directory (all-in-one)",
                             check="mp-config")

    # -- paths --------------------------------------------------------------------------------------

    @property
    def tls_certificate(self) -> Path:
        return self.directory / "tls" / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls" / "server.key"

    @property
    def ca_bundle(self) -> Path:
        """SM root then intermediate: what TLS peers must chain to."""
        return self.directory / "tls" / "ca-bundle.pem"

    @property
    def sm_root(self) -> Path:
        return self.directory / "tls" / "sm-root.pem"

    @property
    def uploads(self) -> Path:
        return self.directory / "uploads"

    # -- persistence --------------------------------------------------------------------------------

    def save(self) -> Path:
        data = asdict(self)
        data["directory"] = str(self.directory)
        path = self.directory / CONFIG_NAME
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path | str, **overrides: Any) -> MPConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.exists():
            raise InputError(f"no Marketplace in {directory}: {path} is missing; run `bonseyes mp init` first",
                             check="mp-missing")
        data = safejson.load_object_file(path, what=f"Marketplace configuration {path}")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["directory"] = Path(directory)
        return cls(**data)
