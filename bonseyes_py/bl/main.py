"""The Bonseyes Layer entrypoint: verify the host licence, then become the artefact's own command.

Runs as PID 1 of every published artefact container, as root (the MP sets ``USER root``), so that
what BM hands it stays out of the payload's reach until it drops to the artefact's original user.

Steps done here (step 5 of the paper): read the metadata the MP baked into the image, verify the
host licence that BM mounted at ``/run/bonseyes/host-licence.jwt`` against the SM root baked into
the image (signature, chain, time window, and that it names this artefact), then ``exec`` the
original entrypoint + command with the original environment, working directory and user.
Step 6 (artefact licence from SM, forwarded to BM) slots in between verification and exec.

Any failure ends the container with one line on stderr and a non-zero status; the payload never
starts without a valid licence.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bonseyes_py.bl import layout

EXIT_LICENCE = 77  # EX_NOPERM
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_NOT_FOUND = 127
MAX_LICENCE_BYTES = 64 * 1024
# Variables the PyInstaller bootloader adds for its own use; the payload must not inherit them.
_BOOTLOADER_PREFIXES = ("_PYI_", "_MEIPASS")


class LayerError(Exception):
    def __init__(self, check: str, message: str, status: int) -> None:
        super().__init__(f"{check}: {message}")
        self.status = status


@dataclass(frozen=True)
class Original:
    """The artefact image's own start-up settings, as the MP recorded them before replacing them."""

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    workdir: str
    user: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Original:
        return cls(entrypoint=list(data.get("entrypoint") or []), cmd=list(data.get("cmd") or []),
                   env=list(data.get("env") or []), workdir=data.get("workdir") or "/", user=data.get("user") or "")


def read_metadata(path: str = layout.METADATA) -> tuple[str, Original]:
    try:
        metadata = json.loads(Path(path).read_text())
        return str(metadata["artefact"]), Original.from_json(metadata["original"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LayerError("metadata", f"cannot read {path}: {exc}", EXIT_CONFIG) from exc


def verify_host_licence(artefact: str, licence_path: str = layout.HOST_LICENCE) -> dict[str, Any]:
    """Verify the licence BM handed in with the SM certificates baked into the image."""
    # Imported here so that a metadata error is reported without loading the crypto stack.
    from bonseyes_py.errors import BonseyesError
    from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
    from bonseyes_py.pki.certs import read_certificate
    from bonseyes_py.pki.verify import TrustStore

    path = Path(licence_path)
    if not path.is_file():
        raise LayerError("licence", f"no host licence at {licence_path}; the Bonseyes Module must mount it",
                         EXIT_LICENCE)
    try:
        with path.open("rb") as handle:
            token = handle.read(MAX_LICENCE_BYTES + 1)
        if len(token) > MAX_LICENCE_BYTES:
            raise LayerError("licence", f"host licence exceeds {MAX_LICENCE_BYTES} bytes", EXIT_LICENCE)
        trust = TrustStore(root=read_certificate(layout.SM_ROOT),
                           intermediates=[read_certificate(layout.SM_INTERMEDIATE)])
        return verify_licence(token.strip(), trust, kind=LicenceKind.HOST, expect=Expectations(artefact_id=artefact))
    except BonseyesError as exc:
        raise LayerError("licence", f"host licence refused: {exc}", EXIT_LICENCE) from exc
    except OSError as exc:
        raise LayerError("licence", f"cannot read {licence_path} or the baked SM certificates: {exc}",
                         EXIT_LICENCE) from exc


def payload_environment(original: Original, current: dict[str, str]) -> dict[str, str]:
    """The container's environment minus what the bootloader added, plus any original variable lost."""
    env = {k: v for k, v in current.items() if not k.startswith(_BOOTLOADER_PREFIXES)}
    saved = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if saved is not None:
        env["LD_LIBRARY_PATH"] = saved
    else:
        env.pop("LD_LIBRARY_PATH", None)
    for entry in original.env:
        name, _, value = entry.partition("=")
        env.setdefault(name, value)
    return env


def resolve_user(spec: str) -> tuple[int, int, str | None, str | None]:
    """Docker's ``USER`` semantics: name or uid, optional ``:group`` or ``:gid``; returns uid, gid, name, home."""
    import grp
    import pwd

    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid, name, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
    except KeyError as exc:
        if not user.isdigit():
            raise LayerError("user", f"user {user!r} does not exist in the image", EXIT_CONFIG) from exc
        uid, gid, name, home = int(user), 0, None, None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError as exc:
            raise LayerError("user", f"group {group!r} does not exist in the image", EXIT_CONFIG) from exc
    return uid, gid, name, home


def become(original: Original, env: dict[str, str]) -> None:
    if not original.user:
        return
    uid, gid, name, home = resolve_user(original.user)
    if os.getuid() == uid:
        return
    if os.getuid() != 0:
        raise LayerError("user", f"running as uid {os.getuid()}, cannot switch to {original.user!r}", EXIT_CONFIG)
    if name is not None:
        os.initgroups(name, gid)
    else:
        os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if home and not any(entry.startswith("HOME=") for entry in original.env):
        env["HOME"] = home


def start_payload(original: Original, arguments: list[str]) -> NoReturn:
    # As with Docker itself: arguments given to `docker run` replace the command, not the entrypoint.
    command = original.entrypoint + (arguments or original.cmd)
    if not command:
        raise LayerError("command", "the artefact has neither entrypoint nor command", EXIT_CONFIG)
    env = payload_environment(original, dict(os.environ))
    become(original, env)
    try:
        os.chdir(original.workdir)
    except OSError as exc:
        raise LayerError("workdir", f"cannot enter {original.workdir}: {exc}", EXIT_CONFIG) from exc
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 (exec without a shell is the point)
    except OSError as exc:
        raise LayerError("exec", f"cannot start {command[0]!r}: {exc.strerror}", EXIT_NOT_FOUND) from exc


# --- step 6 hook (owned by bonseyes_py/bl/protocol.py; keep this block small) -------------------
def authorize_artefact(artefact: str, claims: dict[str, Any], original: Original) -> None:
    """Step 6: artefact licence from SM, accepted by BM; adds the payload's TLS credentials to its env."""
    from bonseyes_py.bl import protocol

    uid, gid = resolve_user(original.user)[:2] if original.user else (0, 0)
    try:
        token = Path(layout.HOST_LICENCE).read_bytes()[:MAX_LICENCE_BYTES].strip().decode()
        os.environ.update(protocol.authorize(artefact, claims, token, uid, gid))
    except protocol.ProtocolError as exc:
        raise LayerError(exc.check, exc.message, EXIT_LICENCE) from exc
    except OSError as exc:
        raise LayerError("licence", f"step 6 failed: {exc}", EXIT_LICENCE) from exc
# --- end of step 6 hook --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        artefact, original = read_metadata()
        claims = verify_host_licence(artefact)
        authorize_artefact(artefact, claims, original)
        start_payload(original, arguments)
    except LayerError as exc:
        print(f"bonseyes-layer: {exc}", file=sys.stderr, flush=True)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
