"""Functions the ``bonseyes artefact register|list|show`` commands call.

They take a ``Marketplace`` (built by ``open_marketplace`` from a marketplace directory for an
all-in-one install) and the caller's verified identity; they return plain dicts ready for JSON
output. ``progress`` receives ``(stage, detail)`` for the vet, build, push, sign and done stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bonseyes_py.mp.catalogue import Catalogue
from bonseyes_py.mp.layer import Progress
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.mp.service import Marketplace
from bonseyes_py.mp.signing import ArtefactSigner, LocalArtefactSigner
from bonseyes_py.mp.vetting import VettingRules
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Identity


def open_marketplace(directory: Path | str, registry: RegistryProcess, *, signer: ArtefactSigner | None = None,
                     ca_directory: Path | str | None = None, rules: VettingRules | None = None) -> Marketplace:
    """An MP over ``directory/catalogue.db`` and a running registry; the signer defaults to the local SM CA."""
    if signer is None:
        if ca_directory is None:
            raise ValueError("give either a signer or the SM CA directory")
        signer = LocalArtefactSigner(CertificateAuthority.load(ca_directory))
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return Marketplace(catalogue=Catalogue.sqlite(path / "catalogue.db"), registry=registry.client(),
                       registry_address=registry.address, credentials=registry.credentials(), signer=signer,
                       rules=rules)


def register_artefact(marketplace: Marketplace, caller: Identity, source: Path | str, name: str,
                      policies: dict[str, Any] | str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    return marketplace.register(source, caller=caller, name=name, policies=policies, progress=progress).as_dict()


def list_artefacts(marketplace: Marketplace, caller: Identity, owner: str | None = None) -> list[dict[str, Any]]:
    return [artefact.as_dict() for artefact in marketplace.list(caller, owner)]


def show_artefact(marketplace: Marketplace, caller: Identity, name: str) -> dict[str, Any]:
    return marketplace.show(caller, name).as_dict()
