"""Shared fixtures of the trust-core tests: real CAs on disk, an issuer and a sample runtime ID.

CAs are session-scoped because RSA-3072 key generation is slow; tests that change a CA's state
(revocation, CRL rewrites) use ``fresh_ca`` so the shared CAs stay as issued.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import HostLicence, LicenceIssuer
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import KeyAlgorithm, PrivateKey, generate_private_key, signature_hash

ALGORITHMS = (KeyAlgorithm.EC_P256, KeyAlgorithm.ED25519, KeyAlgorithm.RSA_3072)
SAMPLE_DIGEST = "sha256:" + "ab" * 32
SAMPLE_NONCE = "nonce-0123456789abcdef"


@pytest.fixture(scope="session")
def ca_for(tmp_path_factory: pytest.TempPathFactory) -> Callable[[KeyAlgorithm], CertificateAuthority]:
    """One CA per algorithm, created on first use and kept for the session."""
    cache: dict[KeyAlgorithm, CertificateAuthority] = {}

    def get(algorithm: KeyAlgorithm) -> CertificateAuthority:
        if algorithm not in cache:
            cache[algorithm] = CertificateAuthority.init(tmp_path_factory.mktemp(f"ca-{algorithm.value}"),
                                                         algorithm=algorithm)
        return cache[algorithm]

    return get


@pytest.fixture(scope="session")
def ca(ca_for: Callable[[KeyAlgorithm], CertificateAuthority]) -> CertificateAuthority:
    """The default (ECDSA P-256) CA."""
    return ca_for(KeyAlgorithm.EC_P256)


@pytest.fixture(params=ALGORITHMS, ids=[a.value for a in ALGORITHMS])
def any_ca(request: pytest.FixtureRequest,
           ca_for: Callable[[KeyAlgorithm], CertificateAuthority]) -> CertificateAuthority:
    """Each of the three CAs in turn."""
    return ca_for(request.param)


@pytest.fixture(scope="session")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """A second CA with the same trust domain and names: only its keys differ from ``ca``."""
    return CertificateAuthority.init(tmp_path_factory.mktemp("foreign-ca"))


@pytest.fixture
def fresh_ca(tmp_path: Path) -> CertificateAuthority:
    """A CA of this test only, for tests that revoke or rewrite the CRL."""
    return CertificateAuthority.init(tmp_path / "ca")


@pytest.fixture(scope="session")
def issuer(ca: CertificateAuthority) -> LicenceIssuer:
    return LicenceIssuer(ca)


@pytest.fixture(scope="session")
def runtime_id() -> RuntimeID:
    return RuntimeID(image_digest=SAMPLE_DIGEST, artefact_id="face-detector", user_id="alice",
                     host_id="h-0123456789abcdef0123456789abcdef", nonce=SAMPLE_NONCE, host_ip="10.0.0.7")


@pytest.fixture(scope="session")
def host_licence(issuer: LicenceIssuer, runtime_id: RuntimeID) -> HostLicence:
    return issuer.issue_host_licence(runtime_id)


@pytest.fixture
def make_csr() -> Callable[..., tuple[PrivateKey, x509.CertificateSigningRequest]]:
    """A requester-side key and CSR: the key stays with the test, only the CSR goes to the CA."""

    def build(algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
              common_name: str = "requester") -> tuple[PrivateKey, x509.CertificateSigningRequest]:
        key = generate_private_key(algorithm)
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .sign(key, signature_hash(key)))  # type: ignore[arg-type]
        return key, csr

    return build


# -- pytest-xdist: tests that share a machine-wide resource run on one worker --------------------------------
# scripts/test.sh runs the suite on ``-n <workers>``. Ungrouped tests spread over the workers one by one; each
# group below stays on one worker, in file order, because its tests hold something only one process at a
# time may own:
#   openstack: the control plane's fixed ports and state directory (tests/openstack/openstack_lab.py);
#   molecule:  the scenarios' fixed container names;
#   e2e:       one lab of BMs, registries and SM per session, heavy enough that two copies would only slow
#              every other worker down;
#   mp:        the MP tests check that a registration leaves the engine's images and tags as they were
#              (tests/mp/helpers_mp.py image_state), which another MP's registration in flight would change.
XDIST_GROUPS = {
    "tests/mp/": "mp",
    "tests/openstack/": "openstack",
    "tests/ansible/test_molecule.py": "molecule",
    "tests/e2e/": "e2e",
}


def xdist_scope(nodeid: str) -> str:
    """The group a test runs in: its resource's group, or the test alone."""
    path = nodeid.split("::", 1)[0]
    return next((group for prefix, group in XDIST_GROUPS.items() if path.startswith(prefix)), nodeid)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown when it is not installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's ``loadgroup`` with the groups above, keyed on the node ID's path.

    Not ``xdist_group`` marks: xdist 3.8 puts a mark's group into ``Item._nodeid``, which pytest 9 no longer
    reads, so the marks were silently ignored and grouped tests ran on two workers at once.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ResourceGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return ResourceGroups(config, log)
