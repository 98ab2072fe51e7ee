"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary directory.

It listens on 127.0.0.1:<free port> (and a unix socket in its own directory) with trust
authentication, and is removed afterwards. As root it runs as the ``postgres`` user (PostgreSQL
refuses to run as root). Missing binaries are a failure, never a skip: run
``scripts/ci/install_postgres.sh``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

INSTALL_HINT = "PostgreSQL server binaries are missing: run scripts/ci/install_postgres.sh (as root) first"


def _bin_directory() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError(INSTALL_HINT)
    return Path(candidates[-1]).parent


@dataclass
class PostgresServer:
    directory: Path
    port: int
    bin_dir: Path
    run_as: list[str]

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast",
                        "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(port: int) -> PostgresServer:
    bin_dir = _bin_directory()
    directory = Path(tempfile.mkdtemp(prefix="bonseyes-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    server = PostgresServer(directory, port, bin_dir, run_as)
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    result = subprocess.run([*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"),
                             "-o", options, "-w", "-t", "60", "start"], capture_output=True, text=True)
    if result.returncode != 0:
        log = (directory / "log").read_text() if (directory / "log").exists() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {result.stderr} {log[-2000:]}")
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(server.admin_dsn, connect_timeout=2):
                return server
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.2)
