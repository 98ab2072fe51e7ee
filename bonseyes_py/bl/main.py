"""The Bonseyes Layer entrypoint: verify the host licence, get the artefact licence, then run the payload.

Runs as PID 1 of every published artefact container, as root (the MP sets ``USER root``), so that
what BM hands it (``/run/bonseyes``, 0700 root) stays out of the reach of a payload that runs as the
artefact's own non-root user.

1. Step 5: read the metadata the MP baked into the image, verify the host licence that BM mounted
   at ``/run/bonseyes/host-licence.jwt`` against the SM root baked into the image (signature, chain,
   time window, and that it names this artefact).
2. Step 6 (``protocol.py``): artefact licence from the SM as the runtime, accepted by BM.
3. BL binds the stage's published port (BM's relay socket when the container has no network) and
   one loopback port per downstream stage (``relay.py``),
   then starts the original entrypoint + command as a child, with the original environment, working
   directory and user. BL stays PID 1: it relays the stages' mutual TLS with the runtime key (which
   the payload never gets), forwards signals, reaps orphans, and renews the artefact licence before
   it expires, separately from BM's host-licence renewals. A final refusal (artefact, host or user
   revoked) or an expired licence stops the payload: BL exits with 77.

Any failure before the payload starts ends the container with one line on stderr and a non-zero
status; the payload never starts without a valid licence.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bonseyes_py import safejson
from bonseyes_py.bl import layout
from bonseyes_py.errors import InputError

if TYPE_CHECKING:  # imported when the payload starts, after BM's acceptance: off BL's critical path
    import subprocess

EXIT_LICENCE = 77  # EX_NOPERM
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_NOT_FOUND = 127
MAX_LICENCE_BYTES = 64 * 1024
# Renew the artefact licence once a third of its lifetime has passed: two more attempts fit before expiry.
RENEW_AT = 1 / 3
RETRY_SECONDS = 5.0
POLL_SECONDS = 1.0
EXPIRY_MARGIN_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
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
        metadata = safejson.load_object_file(path, what=f"BL metadata {path}")
        return str(metadata["artefact"]), Original.from_json(metadata["original"])
    except (InputError, ValueError, KeyError, TypeError) as exc:
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


def payload_identity(original: Original) -> tuple[int, int, list[int], str | None]:
    """uid, gid, supplementary groups and home of the artefact's ``USER`` (root when it names none)."""
    if not original.user:
        return os.getuid(), os.getgid(), os.getgroups(), None
    uid, gid, name, home = resolve_user(original.user)
    groups = os.getgrouplist(name, gid) if name is not None else [gid]
    if os.getuid() != 0 and os.getuid() != uid:
        raise LayerError("user", f"running as uid {os.getuid()}, cannot switch to {original.user!r}", EXIT_CONFIG)
    return uid, gid, groups, home


# Capabilities a payload that runs as root could use to read what BM mounted or what BL holds:
# CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH would open BM's 0000 runtime directory (see bm/records.py),
# CAP_SYS_PTRACE would open BL's memory and descriptors. (linux/capability.h numbers.)
_PAYLOAD_DROPPED_CAPABILITIES = {"CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19}
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24


def confine_payload() -> None:
    """Before the payload exists: keep a payload that runs as root away from the runtime key.

    BM mounts the runtime material in a directory of mode 0000: root reads it only through
    CAP_DAC_OVERRIDE. BL keeps that capability in its own effective set (it re-reads renewed
    material), but drops it, with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, from its bounding set, which
    every process it starts inherits: a root payload ``exec``s without them. BL also makes itself
    non-dumpable, so its memory, descriptors and environment under ``/proc/1`` need CAP_SYS_PTRACE
    (which Docker does not grant). Called from the main thread before the relay's threads and the
    payload are started: the bounding set is per thread and inherited at creation.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise LayerError("confine", f"cannot make BL non-dumpable: {os.strerror(ctypes.get_errno())}", EXIT_CONFIG)
    if os.getuid() != 0:
        return  # Without root, neither BL's children nor BL itself hold these capabilities.
    for name, number in _PAYLOAD_DROPPED_CAPABILITIES.items():
        if libc.prctl(_PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
            raise LayerError("confine", f"cannot drop {name} from the payload's capabilities: "
                             f"{os.strerror(ctypes.get_errno())} (BL needs CAP_SETPCAP, in Docker's default set)",
                             EXIT_CONFIG)


def start_payload(original: Original, arguments: list[str], overrides: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the artefact's own command as a child, as its own user; BL stays PID 1."""
    import subprocess

    # As with Docker itself: arguments given to `docker run` replace the command, not the entrypoint.
    command = original.entrypoint + (arguments or original.cmd)
    if not command:
        raise LayerError("command", "the artefact has neither entrypoint nor command", EXIT_CONFIG)
    env = payload_environment(original, dict(os.environ))
    env.update(overrides)
    uid, gid, groups, home = payload_identity(original)
    if home and not any(entry.startswith("HOME=") for entry in original.env):
        env["HOME"] = home
    if not os.path.isdir(original.workdir):
        raise LayerError("workdir", f"cannot enter {original.workdir}: no such directory", EXIT_CONFIG)
    sys.stdout.flush()
    sys.stderr.flush()
    switch: dict[str, Any] = {}
    if os.getuid() == 0 and uid != 0:
        switch = {"user": uid, "group": gid, "extra_groups": groups}
    try:
        return subprocess.Popen(command, env=env, cwd=original.workdir, close_fds=True,
                                restore_signals=True, **switch)
    except OSError as exc:
        raise LayerError("exec", f"cannot start {command[0]!r}: {exc.strerror}", EXIT_NOT_FOUND) from exc


class Supervisor:
    """PID 1 duties: forward signals to the payload, reap orphans, stop the payload on licence loss."""

    def __init__(self, payload: subprocess.Popen[bytes]) -> None:
        self.payload = payload
        self.status: int | None = None  # set when BL, not the payload, decides the exit status
        self._lock = threading.Lock()

    def forward(self, signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.payload.pid, signum)

    def stop_payload(self, status: int, reason: str) -> None:
        with self._lock:
            if self.status is not None:
                return
            self.status = status
        print(f"bonseyes-layer: stopping the payload: {reason}", file=sys.stderr, flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.payload.pid, signal.SIGTERM)

        def kill_later() -> None:
            time.sleep(STOP_GRACE_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.payload.pid, signal.SIGKILL)

        threading.Thread(target=kill_later, daemon=True).start()

    def wait(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, self.forward)
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid == self.payload.pid:
                code = os.waitstatus_to_exitcode(status)
                payload_status = code if code >= 0 else 128 - code
                return self.status if self.status is not None else payload_status
        return self.status if self.status is not None else 0


def renewal_loop(artefact: str, licence: Any, supervisor: Supervisor) -> None:
    """Step 6 again before each artefact licence expires, on BL's own clock, apart from BM's renewals.

    The SM issues one artefact licence per host licence (a repeated request returns the same one),
    so a renewal needs a host licence BM renewed since the last one: BL waits for it, and when the
    artefact licence runs out first, or the SM refuses (artefact, host or user revoked), the payload
    is stopped and BL exits with 77: nothing runs unlicensed.
    """
    from bonseyes_py.bl import protocol

    while supervisor.status is None:
        lifetime = max(1.0, licence.expires - licence.issued)
        time.sleep(max(0.5, licence.issued + lifetime * RENEW_AT - time.time()))
        while supervisor.status is None:
            if time.time() >= licence.expires - EXPIRY_MARGIN_SECONDS:
                supervisor.stop_payload(EXIT_LICENCE, "artefact licence expired without renewal")
                return
            try:
                if protocol.current_host_licence_id() == licence.host_claims["jti"]:
                    time.sleep(POLL_SECONDS)  # BM has not renewed the host licence yet
                    continue
                licence = protocol.renew(artefact)
                print(f"bonseyes-layer: artefact licence renewed ({licence.claims['jti']}, host licence "
                      f"{licence.host_claims['jti']}, expires {int(licence.expires)})", file=sys.stderr, flush=True)
                break
            except protocol.ProtocolError as exc:
                if exc.final:
                    supervisor.stop_payload(EXIT_LICENCE, f"artefact licence renewal refused: {exc}")
                    return
                print(f"bonseyes-layer: artefact licence renewal failed, will retry: {exc}", file=sys.stderr,
                      flush=True)
                time.sleep(min(RETRY_SECONDS, max(POLL_SECONDS, (licence.expires - time.time()) / 4)))


# --- step 6 hook (owned by bonseyes_py/bl/protocol.py; keep this block small) -------------------
def authorize_artefact(artefact: str, claims: dict[str, Any], timings: dict[str, float], early: Any = None) -> Any:
    """Step 6: artefact licence from SM, accepted by BM."""
    from bonseyes_py.bl import protocol

    try:
        token = Path(layout.HOST_LICENCE).read_bytes()[:MAX_LICENCE_BYTES].strip().decode()
        return protocol.authorize(artefact, claims, token, timings, early)
    except protocol.ProtocolError as exc:
        raise LayerError(exc.check, exc.message, EXIT_LICENCE) from exc
    except OSError as exc:
        raise LayerError("licence", f"step 6 failed: {exc}", EXIT_LICENCE) from exc
# --- end of step 6 hook --------------------------------------------------------------------------


def process_age() -> float:
    """Seconds since this process was created (bootloader and interpreter start-up), from /proc; 0 if unknown."""
    try:
        with open("/proc/self/stat") as handle:
            started_ticks = int(handle.read().rpartition(")")[2].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    timings = {"bl_boot": process_age()}
    began = time.perf_counter()
    try:
        artefact, original = read_metadata()
        from bonseyes_py.bl import protocol

        early = protocol.EarlySMRequest(artefact)  # step 6's SM call overlaps the imports and step 5
        importlib.import_module("bonseyes_py.licences")  # timed apart: most of step 5 is this import

        timings["bl_imports"] = time.perf_counter() - began
        began = time.perf_counter()
        claims = verify_host_licence(artefact)
        timings["bl_step5"] = time.perf_counter() - began
        licence = authorize_artefact(artefact, claims, timings, early)
        # The start-up hook disabled the collector for the imports; what they loaded stays for good.
        gc.freeze()
        gc.enable()
        confine_payload()  # before the relay's threads and the payload exist
        from bonseyes_py.bl import relay

        try:
            listeners, overrides = relay.plan(dict(os.environ))
            credentials = relay.Credentials(claims, licence.host_licence)
        except protocol.ProtocolError as exc:
            raise LayerError(exc.check, exc.message, EXIT_CONFIG) from exc
        except OSError as exc:
            raise LayerError("relay", f"cannot bind the stage's ports: {exc}", EXIT_CONFIG) from exc
        overrides["BONSEYES_RUNTIME_NAME"] = credentials.runtime_name
        if listeners:
            relay.Relay(credentials, listeners).start()
        payload = start_payload(original, arguments, overrides)
    except LayerError as exc:
        print(f"bonseyes-layer: {exc}", file=sys.stderr, flush=True)
        return exc.status
    supervisor = Supervisor(payload)
    threading.Thread(target=renewal_loop, args=(artefact, licence, supervisor), name="bl-renewal",
                     daemon=True).start()
    return supervisor.wait()


if __name__ == "__main__":
    sys.exit(main())
