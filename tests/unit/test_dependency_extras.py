"""A managed host installs the base package only: the BM agent, the CLI and the host-side modules.

pyproject.toml keeps the services' dependencies in the ``sm`` and ``mp`` extras. These tests import,
in a fresh interpreter where those dependencies cannot be imported, everything a host runs, so a new
top-level import of SQLAlchemy, Alembic, Cedar, bcrypt or YAML on the host path fails here instead of on
an operator's host.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_ONLY = ("sqlalchemy", "alembic", "cedarpy", "bcrypt", "yaml", "psycopg")
# Modules that run on a managed host (the rest manage the SM or MP on their own hosts).
HOST_MODULES = ("bonseyes_host_key", "bonseyes_hardware_id", "bonseyes_host_enrol", "bonseyes_licence_info",
                "bonseyes_pipeline", "bonseyes_user", "bonseyes_ca")
HOST_PACKAGES = ("bonseyes_py.bm.server", "bonseyes_py.bm.__main__", "bonseyes_py.bm.app", "bonseyes_py.cli.main",
                 "bonseyes_py.bl.main")

BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVICE_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (a service extra, not installed on a host)")
        return None
sys.meta_path.insert(0, Block())
"""


def bonseyes_imports_of(module_file: Path) -> list[str]:
    """Every ``bonseyes_py`` module a plugin file imports, at top level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bonseyes_py"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("bonseyes_py"))
    return sorted(names)


def import_without_service_extras(modules: list[str]) -> subprocess.CompletedProcess[str]:
    code = BLOCKER + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)


def test_the_blocker_refuses_a_service_dependency() -> None:
    """Positive control: the SM application does need the ``sm`` extra."""
    result = import_without_service_extras(["bonseyes_py.sm.app"])
    assert result.returncode != 0
    assert "a service extra, not installed on a host" in result.stderr


@pytest.mark.parametrize("module", HOST_PACKAGES)
def test_host_code_imports_without_the_service_extras(module: str) -> None:
    result = import_without_service_extras([module])
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("module", HOST_MODULES)
def test_host_side_ansible_modules_import_without_the_service_extras(module: str) -> None:
    imports = bonseyes_imports_of(ROOT / "plugins" / "modules" / f"{module}.py")
    result = import_without_service_extras(imports)
    assert result.returncode == 0, f"{module} imports {imports}: {result.stderr[-2000:]}"


def test_service_dependencies_are_extras_not_base_requirements() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert not [name for name in SERVICE_ONLY if name in base]
    extras = project["optional-dependencies"]
    assert {"sqlalchemy", "alembic", "cedarpy"} <= {d.split(">")[0].split("[")[0] for d in extras["sm"]}
    assert {"sqlalchemy", "bcrypt", "pyyaml"} <= {d.split(">")[0].split("[")[0] for d in extras["mp"]}
