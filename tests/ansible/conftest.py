"""Fixtures for the bonseyes.vp collection tests.

Modules are exercised two ways: in-process through ``ansible.module_utils.testing.patch_module_args``
(fast, one module call per test), and through real ``ansible-playbook`` runs on localhost with the
project's Python (the community.crypto pattern: check mode, real, check mode again, real again).
Both find the collection through a throw-away ``ansible_collections/bonseyes/vp`` link to the
repository, so the tests do not depend on ``scripts/install_collections.sh`` having run, except the
site test, which needs community.crypto and runs that script itself.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def collections_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A collections path holding only bonseyes.vp, linked to this checkout; importable in-process too."""
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "bonseyes"
    namespace.mkdir(parents=True)
    (namespace / "vp").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[name]


class ModuleResult(dict):
    """The JSON a module printed, plus the exit code it ended with."""

    rc: int

    @property
    def failed(self) -> bool:
        return bool(self.get("failed")) or self.rc != 0


@pytest.fixture
def run_module(collections_root: Path):
    """Run a bonseyes.vp module's ``main()`` in-process with the given arguments."""

    def run(name: str, args: dict[str, Any], *, check_mode: bool = False, diff: bool = False) -> ModuleResult:
        module = importlib.import_module(f"ansible_collections.bonseyes.vp.plugins.modules.{name}")
        arguments = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        output = io.StringIO()
        with patch_module_args(arguments), redirect_stdout(output), pytest.raises(SystemExit) as exited:
            module.main()
        result = ModuleResult(json.loads(output.getvalue()))
        result.rc = int(exited.value.code or 0)
        return result

    return run


def ansible_env(collections_path: str, local_temp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_LOCAL_TEMP=str(local_temp),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=collections_path,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
    )
    return env


@pytest.fixture
def ansible_playbook(collections_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Run ansible-playbook from the project's venv; returns the completed process (stdout + stderr)."""

    def run(*args: str, collections_path: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), *args],
            cwd=REPO,
            env=ansible_env(collections_path or str(collections_root), tmp_path_factory.mktemp("ansible-tmp")),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def installed_collections() -> str:
    """The project's collections path, filled by the real install script (cached after its first run)."""
    subprocess.run(["bash", str(REPO / "scripts/install_collections.sh")], check=True, cwd=REPO,
                   capture_output=True, text=True, timeout=600)
    return str(REPO / ".ansible/collections")


# -- a real Security Manager for the modules that talk to one --------------------------------------


def _sm_fixtures() -> Any:
    """tests/sm/sm_fixtures.py: its ``launch_sm`` and ``World`` are reused rather than copied, so these tests
    start the SM exactly the way the SM's own tests do (init_sm, then ``python -m bonseyes_py.sm`` under
    gunicorn with mTLS on a free loopback port)."""
    sm_tests = REPO / "tests" / "sm"
    if str(sm_tests) not in sys.path:
        sys.path.insert(0, str(sm_tests))
    return importlib.import_module("sm_fixtures")


@pytest.fixture(scope="session")
def sm_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real SM for the session; tests make their own users, hosts and premises (unique names)."""
    fixtures = _sm_fixtures()
    server = fixtures.launch_sm(tmp_path_factory.mktemp("sm"))
    yield server
    fixtures.stop(server.process)


@pytest.fixture(scope="session")
def sm_world(sm_service: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    world = _sm_fixtures().World(sm_service, tmp_path_factory.mktemp("world"))
    yield world
    world.close()


@pytest.fixture
def sm_admin_args(sm_service: Any) -> dict[str, Any]:
    """The sm_connection options of the SM's first admin."""
    config = sm_service.config
    return {"sm_url": sm_service.base_url, "client_cert": str(config.admin_certificate),
            "client_key": str(config.admin_key), "ca_cert": str(config.ca_bundle)}
