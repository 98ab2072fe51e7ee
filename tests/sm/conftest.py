"""The SM tests' fixtures, defined in ``sm_fixtures.py``.

Tests import their helpers (``World``, ``Lab``, ``unique``...) from ``sm_fixtures``, a module name no other
test directory uses: ``from conftest import ...`` resolved to whichever ``conftest`` module pytest had
imported last, so ``pytest tests/sm tests/mp`` failed at collection.
"""

from sm_fixtures import lab, sm_server, world

__all__ = ["lab", "sm_server", "world"]
