"""Configuration of one Marketplace instance, kept as ``mp.json`` in its directory.

Everything the MP owns lives under one directory: its TLS identity (``tls/``: role
``marketplace``, issued by the SM from a CSR or by the CA directly in an all-in-one install), the
catalogue database, the registry it runs (``registry/``) and a spool for uploads (``uploads/``).
Who signs IDs is either the SM's CA directory (``ca_directory``, all-in-one) or a running SM
(``sm_url``, over mutual TLS with the marketplace certificate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bonseyes_py import settings
from bonseyes_py.errors import InputError
from bonseyes_py.mp.vetting import VettingRules
from bonseyes_py.settings import LogLevel, setting

CONFIG_NAME = "mp.json"


@dataclass
class MPConfig:
    """The settings of ``mp.json``; the loader refuses keys not declared here and values of another type."""

    directory: Path
    name: str = setting("marketplace", non_empty=True)
    bind: str = setting("127.0.0.1:8445", non_empty=True)
    workers: int = setting(2, minimum=1)
    threads: int = setting(4, minimum=1)
    # A registration holds its request for minutes (build, push): gthread keeps the worker alive meanwhile.
    worker_class: Literal["gthread", "sync"] = "gthread"
    max_body_bytes: int = setting(256 * 1024, minimum=1)  # JSON requests
    max_upload_bytes: int = setting(4 * 1024**3, minimum=1)  # a docker save archive, streamed to the spool
    database_url: str = ""
    sm_url: str = ""
    ca_directory: str = ""
    registry_directory: str = ""  # default: <directory>/registry
    registry_host: str = setting("127.0.0.1", non_empty=True)
    registry_port: int = settings.port(5000)
    manage_registry: bool = True  # serve() starts and stops the registry process
    # Some VettingRules fields (max_size_bytes, required_labels ...), checked against VettingRules' own
    # annotations; the ones not given keep VettingRules' defaults. Scanners are code, not settings.
    vetting: dict[str, Any] = setting(default_factory=dict, keys_of=VettingRules,  # noqa: RUF009 - a field()
                                      skip=("scanners",))
    pidfile: str | None = None
    accesslog: str | None = None
    loglevel: LogLevel = "warning"

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
        return settings.save_file(self, self.directory / CONFIG_NAME)

    @classmethod
    def load(cls, directory: Path | str, **overrides: Any) -> MPConfig:
        """The checked settings of the MP in ``directory``; ``overrides`` (None: not given) win over the file."""
        return settings.load_directory(cls, directory, CONFIG_NAME, what="Marketplace",
                                       missing_hint="run `bonseyes mp init` first", missing_check="mp-missing",
                                       overrides=overrides)
