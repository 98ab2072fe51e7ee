"""Configuration of one Security Manager instance, kept as ``sm.json`` in its directory.

Everything the SM owns lives under one directory: the CA (``ca/``), the TLS server identity and
CA bundle (``tls/``), the first admin identity (``admin/``), the at-rest data key (``private/``) and,
by default, the SQLite database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bonseyes_py import settings
from bonseyes_py.settings import LogLevel, setting

CONFIG_NAME = "sm.json"
# Keys older versions wrote that nothing reads: accepted with their old value only (see settings._section).
RETIRED_KEYS: dict[str, Any] = {"extra": {}}


@dataclass
class SMConfig:
    """The settings of ``sm.json``; the loader refuses keys not declared here and values of another type."""

    directory: Path
    database_url: str = ""
    bind: str = setting("127.0.0.1:8443", non_empty=True)
    workers: int = setting(2, minimum=1)
    worker_class: Literal["gthread", "sync"] = "gthread"
    threads: int = setting(8, minimum=1)
    heartbeat_ttl_seconds: int = setting(90, minimum=1)
    host_licence_seconds: int = setting(900, minimum=1)
    artefact_licence_seconds: int = setting(3600, minimum=1)
    bm_port: int = settings.port(8444)
    bm_timeout_seconds: float = setting(10.0, above=0)
    max_body_bytes: int = setting(256 * 1024, minimum=1)
    # NORMAL (WAL): survives kill -9; FULL: also survives a power cut, at an fsync per commit (see db.py).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Heartbeats of an available host are batched in memory and written every this many seconds.
    heartbeat_flush_seconds: float = setting(1.0, above=0)
    pidfile: str | None = None
    accesslog: str | None = None
    loglevel: LogLevel = "warning"

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
        return settings.save_file(self, self.directory / CONFIG_NAME)

    @classmethod
    def load(cls, directory: Path | str, **overrides: Any) -> SMConfig:
        """The checked settings of the SM in ``directory``; ``overrides`` (None: not given) win over the file."""
        return settings.load_directory(cls, directory, CONFIG_NAME, what="Security Manager",
                                       missing_hint="run init_sm first", missing_check="sm-missing",
                                       overrides=overrides, retired=RETIRED_KEYS)
