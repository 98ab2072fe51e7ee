"""Trust-core throughput against the raw ceiling of the same primitives, in one process and one run.

    .venv/bin/python bench/bench_core.py [--seconds 3]

Issuance: ``LicenceIssuer.issue_host_licence`` (runtime key pair + runtime certificate + JWS) next
to the same three primitives called bare on cryptography (P-256 keygen, certificate build + sign,
ECDSA over the JWS signing input). Verification: ``verify_licence`` (type/alg checks, x5c parse,
chain to root, CRL lookup, signature, time window, bindings) next to the bare primitives (x5c DER
parse, two certificate signature checks, the CRL signature check and lookup, one ECDSA verify, JSON
parse). ``verify_licence`` memoises signature checks of certificates and CRLs it has already seen
(never windows, roles or revocation); the third row clears those memos before every call to show
the cold path as well.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bonseyes_py import jose
from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import Expectations, LicenceIssuer, LicenceKind, verify_licence
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Role, ekus_for


def paired_rates(api: Callable[[], object], bare: Callable[[], object], seconds: float,
                 rounds: int = 10) -> tuple[float, float]:
    """Alternate short bursts of both operations so a change in machine load hits both figures alike."""
    for _ in range(20):
        api()
        bare()
    totals = {"api": [0, 0.0], "bare": [0, 0.0]}
    slice_seconds = seconds / rounds
    for _ in range(rounds):
        for name, operation in (("bare", bare), ("api", api)):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < slice_seconds:
                for _ in range(20):
                    operation()
                count += 20
            totals[name][0] += count
            totals[name][1] += time.perf_counter() - start
    return totals["api"][0] / totals["api"][1], totals["bare"][0] / totals["bare"][1]


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    args = parser.parse_args()

    authority = CertificateAuthority.init(Path(tempfile.mkdtemp()) / "ca")
    issuer = LicenceIssuer(authority)
    trust = authority.trust_store()
    runtime = RuntimeID("sha256:" + "ab" * 32, "bench-artefact", "alice", "h-" + "0" * 32,
                        secrets.token_urlsafe(16), "127.0.0.2")
    intermediate_key = authority._intermediate_key  # the bare ceiling signs with the same key
    sample = issuer.issue_host_licence(runtime).runtime_certificate
    runtime_subject = sample.subject
    runtime_key_usage = sample.extensions.get_extension_for_class(x509.KeyUsage).value
    aki = sample.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    signer_key = authority.signer_key

    def bare_issue() -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        # The same certificate content CertificateAuthority.issue produces for a runtime.
        certificate = (
            x509.CertificateBuilder()
            .subject_name(runtime_subject)
            .issuer_name(authority.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(minutes=15))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(runtime_key_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(ekus_for(Role.RUNTIME))), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier("spiffe://bonseyes.local/runtime/rt-0123456789abcdef0123456789abcdef"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]), critical=False)
            .add_extension(aki, critical=False)
            .sign(intermediate_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        certificate.public_bytes(serialization.Encoding.DER)
        signing_input = b64url(b'{"alg":"ES256"}') + b"." + b64url(json.dumps(runtime.as_claim()).encode())
        signer_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]

    def api_issue() -> None:
        issuer.issue_host_licence(runtime)

    token = issuer.issue_host_licence(runtime).token
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    der_chain = [base64.b64decode(entry) for entry in header["x5c"]]
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der_signature = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    root = authority.root
    crl = authority.current_crl()

    def bare_verify() -> None:
        leaf = x509.load_der_x509_certificate(der_chain[0])
        intermediate = x509.load_der_x509_certificate(der_chain[1])
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        crl.is_signature_valid(intermediate.public_key())  # type: ignore[arg-type]
        crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        leaf.public_key().verify(der_signature, f"{header_b64}.{payload_b64}".encode(),  # type: ignore[call-arg,union-attr]
                                 ec.ECDSA(hashes.SHA256()))
        json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))

    expect = Expectations(host_id=runtime.host_id, host_ip=runtime.host_ip, image_digest=runtime.image_digest,
                          nonce=runtime.nonce, artefact_id=runtime.artefact_id)

    def api_verify() -> None:
        verify_licence(token, trust, kind=LicenceKind.HOST, expect=expect)

    def api_verify_cold() -> None:
        trust.clear_memo()
        jose.clear_header_cache()
        verify_licence(token, trust, kind=LicenceKind.HOST, expect=expect)

    rows = []
    for label, api, bare, goal in (("host licence issuance", api_issue, bare_issue, 0.70),
                                   ("licence verification", api_verify, bare_verify, 0.80),
                                   ("  same, memos cleared", api_verify_cold, bare_verify, 0.80)):
        api_rate, bare_rate = paired_rates(api, bare, args.seconds)
        rows.append((label, api_rate, bare_rate, api_rate / bare_rate, goal))
    print(f"{'operation':<24}{'bonseyes_py/s':>14}{'bare ceiling/s':>16}{'ratio':>8}{'goal':>7}")
    for label, api_rate, bare_rate, ratio, goal in rows:
        verdict = "ok" if ratio >= goal else "BELOW"
        print(f"{label:<24}{api_rate:>14.0f}{bare_rate:>16.0f}{ratio:>8.2f}{goal:>7.2f} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
