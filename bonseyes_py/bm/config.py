"""Configuration of one Bonseyes Module, kept as ``bm.json`` in its directory.

Everything the BM owns lives under one directory: the host identity (``tls/``), the per-runtime
material handed to containers (``runtimes/``, 0700 root) and BM-private runtime records
(``records/``). The host key never leaves ``tls/host.key`` (0600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bonseyes_py import settings
from bonseyes_py.settings import LogLevel, setting

CONFIG_NAME = "bm.json"
# Keys older versions wrote that nothing reads: accepted with their old value only (see settings._section).
RETIRED_KEYS: dict[str, Any] = {"extra": {}}


@dataclass
class BMConfig:
    """The settings of ``bm.json``; the loader refuses keys not declared here and values of another type."""

    directory: Path
    # The SM's name for this host (from enrolment): a BM without it could neither heartbeat nor be found.
    host_id: str = setting(non_empty=True)
    sm_url: str = setting("https://127.0.0.1:8443", non_empty=True)
    bind_ip: str = setting("127.0.0.1", non_empty=True)
    port: int = settings.port(8444)
    registry: str = ""  # host:port of the Marketplace's mTLS pull endpoint (a DNS name, not 127.x)
    registry_scheme: Literal["https", "http"] = "https"  # "http" only for a legacy plain endpoint (logged)
    engine_certs_dir: str = "/etc/docker/certs.d"  # where the engine looks for per-registry client identities
    docker_url: str = ""  # empty: the engine of the environment (DOCKER_HOST or the local socket)
    heartbeat_seconds: float = setting(20.0, above=0)
    renew_seconds: float = setting(0.0, minimum=0)  # 0: a third of each host licence's lifetime
    bl_timeout_seconds: float = setting(60.0, above=0)
    threads: int = setting(16, minimum=1)
    loglevel: LogLevel = "warning"

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
        return settings.save_file(self, self.directory / CONFIG_NAME)

    @classmethod
    def load(cls, directory: Path | str, **overrides: Any) -> BMConfig:
        """The checked settings of the BM in ``directory``; ``overrides`` (None: not given) win over the file."""
        return settings.load_directory(cls, directory, CONFIG_NAME, what="Bonseyes Module",
                                       missing_hint="run `bonseyes bm enrol` first", missing_check="bm-missing",
                                       overrides=overrides, retired=RETIRED_KEYS)
