"""Certificate path validation per second: memo hit, memo miss, and the bare signature checks beneath.

    .venv/bin/python bench/bench_path_validation.py [--seconds 2]

``verify_certificate`` on a host leaf (root -> intermediate -> leaf, ECDSA P-256, with the CA's CRL)
with its trust store's verified-chain memo warm (hit: windows, role and revocation only) and cleared
before every call (miss: every signature and every RFC 5280 check again); ``verify_licence`` (x5c
signer chain plus the JWS signature) likewise. The baseline, measured in alternating bursts with each
row, is the two signature checks a path of this shape needs, called bare on cryptography: a miss
cannot beat it, a hit shows what the memo saves. Ratios, not absolute speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_core import paired_rates  # the same alternating-bursts measurement as the core bench

from bonseyes_py import jose
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import Expectations, LicenceIssuer, LicenceKind, verify_licence
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.keys import generate_private_key
from bonseyes_py.pki.roles import Role
from bonseyes_py.pki.verify import TrustStore, verify_certificate


def forget(trust: TrustStore) -> Callable[[], None]:
    """The cold path: the store's own memo (and the x5c parse cache, which is not a trust decision)."""
    clear = getattr(trust, "clear_memo", None)
    if clear is None:  # before the memo moved into the trust store
        from bonseyes_py.pki import verify

        return verify.clear_verification_memos  # type: ignore[attr-defined,no-any-return]

    def both() -> None:
        clear()
        jose.clear_header_cache()

    return both


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        authority = CertificateAuthority.init(Path(directory) / "ca")
        host = authority.issue(generate_private_key("ec-p256").public_key(), authority.identity(Role.HOST, "h1"))
        trust = authority.trust_store(with_crl=True)
        clear = forget(trust)
        runtime = RuntimeID(image_digest="sha256:" + "ab" * 32, artefact_id="a", user_id="u",
                            host_id="h-" + "0" * 32, nonce="nonce-0123456789abcdef", host_ip="10.0.0.7")
        token = LicenceIssuer(authority).issue_host_licence(runtime).token
        expect = Expectations(host_id=runtime.host_id, nonce=runtime.nonce)

        def bare() -> None:
            host.verify_directly_issued_by(authority.intermediate)
            authority.intermediate.verify_directly_issued_by(authority.root)

        def hit() -> None:
            verify_certificate(host, trust, roles=[Role.HOST])

        def miss() -> None:
            clear()
            verify_certificate(host, trust, roles=[Role.HOST])

        def licence_hit() -> None:
            verify_licence(token, trust, kind=LicenceKind.HOST, expect=expect)

        def licence_miss() -> None:
            clear()
            verify_licence(token, trust, kind=LicenceKind.HOST, expect=expect)

        print(f"{'operation':<34}{'per second':>12}{'bare/s':>10}{'ratio':>8}")
        for label, operation in (("verify_certificate, memo hit", hit), ("verify_certificate, memo miss", miss),
                                 ("verify_licence, memo hit", licence_hit),
                                 ("verify_licence, memo miss", licence_miss)):
            figure, baseline = paired_rates(operation, bare, args.seconds)
            print(f"{label:<34}{figure:>12.0f}{baseline:>10.0f}{figure / baseline:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
