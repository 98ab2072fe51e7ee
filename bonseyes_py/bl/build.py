"""Build BL into a self-contained executable with PyInstaller, cached by a hash of its sources.

Artefact images need not contain Python (a Debian minbase has none), so BL ships as a PyInstaller
bundle that carries its interpreter, ``cryptography`` and PyJWT, and needs only glibc.

``--onedir`` is the default: measured here it starts in about half the time of ``--onefile``
(which unpacks itself to a temporary directory at every start, and so also needs a writable
``/tmp``, which a container started with ``--read-only`` lacks); the price is a larger layer, paid
once per image in the registry's deduplicated blob store.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bonseyes_py.errors import BonseyesError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../bonseyes_py
# What BL imports; a change to any of these files gives a new cache key.
SOURCES = ("bl", "errors.py", "safejson.py", "jose.py", "licences.py", "identity", "pki")
EXECUTABLE_NAME = "bonseyes-layer"


class BuildError(BonseyesError):
    check = "bl-build"


def default_cache_dir() -> Path:
    configured = os.environ.get("BONSEYES_BL_CACHE")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/bonseyes/bl")
    return Path.home() / ".cache" / "bonseyes" / "bl"


def source_hash(mode: str) -> str:
    import PyInstaller

    hasher = hashlib.sha256()
    hasher.update(f"{mode}|{sys.version}|{platform.machine()}|{PyInstaller.__version__}".encode())
    for source in SOURCES:
        base = PACKAGE_ROOT / source
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base]
        for path in files:
            hasher.update(str(path.relative_to(PACKAGE_ROOT)).encode() + b"\0")
            hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()[:24]


def build_layer(*, mode: str = "onedir", cache_dir: Path | None = None, log: Path | None = None) -> Path:
    """Return a directory holding ``bonseyes-layer`` (and, for onedir, its ``_internal``), building if needed."""
    if mode not in ("onedir", "onefile"):
        raise BuildError(f"mode must be onedir or onefile, not {mode!r}")
    cache = cache_dir or default_cache_dir()
    target = cache / f"{mode}-{source_hash(mode)}"
    if (target / EXECUTABLE_NAME).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bl-build-", dir=cache) as work:
        workdir = Path(work)
        command = [
            sys.executable, "-m", "PyInstaller", f"--{mode}", "--noconfirm", "--clean", "--log-level=WARN",
            "--name", EXECUTABLE_NAME, "--paths", str(PACKAGE_ROOT.parent),
            "--distpath", str(workdir / "dist"), "--workpath", str(workdir / "build"),
            "--specpath", str(workdir),
            # Modules BL never needs but whose hooks PyInstaller would pull in through optional imports.
            "--exclude-module", "tkinter", "--exclude-module", "docker", "--exclude-module", "flask",
            "--exclude-module", "sqlalchemy", "--exclude-module", "cedarpy",
            # Never used by BL; excluding them also drops their runtime hooks, which run (and import)
            # before BL's first line at every container start.
            "--exclude-module", "multiprocessing", "--exclude-module", "bcrypt", "--exclude-module", "yaml",
            "--exclude-module", "requests", "--exclude-module", "urllib3",
            # Modules as .pyc files beside the executable instead of an archive appended to it: the
            # interpreter's own path finder loads them faster than the archive's importer (measured:
            # about 10% of BL's start to step 5), for 4 MB more on disk (0.2 MB compressed).
            "--debug", "noarchive",
            # Symbols and debug sections stripped from the bundled libraries (libpython alone carries
            # 17 MB of them): half the layer every cold pull transfers and unpacks (23 -> 13 MB gzip).
            "--strip",
            # Garbage collector off during the start-up imports (see startup_hook.py).
            "--runtime-hook", str(PACKAGE_ROOT / "bl" / "startup_hook.py"),
            str(PACKAGE_ROOT / "bl" / "main.py"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if log is not None:
            log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise BuildError(f"PyInstaller failed ({result.returncode}): {tail}")
        built = workdir / "dist" / EXECUTABLE_NAME if mode == "onedir" else workdir / "dist"
        staged = workdir / "staged"
        shutil.copytree(built, staged, symlinks=True)
        try:
            staged.rename(target)
        except OSError:
            if not (target / EXECUTABLE_NAME).is_file():  # a concurrent build may have won the race
                raise
    return target


if __name__ == "__main__":
    print(build_layer(mode=sys.argv[1] if len(sys.argv) > 1 else "onedir"))
