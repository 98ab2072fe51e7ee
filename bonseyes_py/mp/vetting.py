"""Vetting of uploaded images ("image is verified for malicious content before being made available").

The rules are data (``VettingRules``) so an operator sets them per marketplace; a scanner hook
(for instance a wrapper around an external scanner) can add its own verdict. The libc check is not
optional: BL is a glibc executable, so an image without glibc (busybox-static, Alpine/musl) could
never start it, and is refused here with the reason rather than failing later on a host.
"""

from __future__ import annotations

import fnmatch
import re
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bonseyes_py.mp.archive import FileEntry, ImageArchive
from bonseyes_py.mp.errors import VettingError

Scanner = Callable[[ImageArchive], None]
"""A scanner hook inspects the parsed archive and raises ``VettingError`` to refuse it."""

_GLIBC_LOADER = re.compile(r"^ld-linux(-[a-z0-9_-]+)?\.so\.\d+$")
_MUSL_LOADER = re.compile(r"^ld-musl-[a-z0-9_]+\.so\.1$")
_LIB_DIRS = ("lib", "lib64", "usr/lib", "usr/lib64", "lib32", "usr/lib32")

DEFAULT_FORBIDDEN_PATHS = (
    "etc/ld.so.preload",  # would inject a library into every process, BL included
    "run/bonseyes/*",  # the mount point where BM hands BL its licence
    "opt/bonseyes/*",  # where the MP installs BL and its trust anchors
)

# The set-id programs of a Debian base system (login tools, mount): refusing these would refuse every
# Debian-derived image; anything beyond them is what a vetting rule should catch.
DEBIAN_BASE_SETID = (
    "usr/bin/chage", "usr/bin/chfn", "usr/bin/chsh", "usr/bin/expiry", "usr/bin/gpasswd", "usr/bin/mount",
    "usr/bin/newgrp", "usr/bin/passwd", "usr/bin/su", "usr/bin/umount", "usr/sbin/unix_chkpwd",
    "usr/bin/wall", "usr/bin/write.ul", "usr/bin/ssh-agent", "usr/lib/openssh/ssh-keysign",
    "usr/lib/dbus-1.0/dbus-daemon-launch-helper", "usr/bin/sudo", "usr/sbin/pam_extrausers_chkpwd",
)


@dataclass(frozen=True)
class VettingRules:
    max_size_bytes: int = 2 * 1024**3
    forbid_setuid: bool = True
    allowed_setid_paths: tuple[str, ...] = DEBIAN_BASE_SETID
    forbidden_paths: tuple[str, ...] = DEFAULT_FORBIDDEN_PATHS
    required_labels: tuple[str, ...] = ()
    scanners: tuple[Scanner, ...] = field(default=())


def detect_libc(files: Iterable[str]) -> str:
    """``glibc``, ``musl`` or ``none``, from the dynamic loaders present in library directories."""
    found = set()
    for path in files:
        directory, _, base = path.rpartition("/")
        if not any(directory == d or directory.startswith(d + "/") for d in _LIB_DIRS):
            continue
        if _GLIBC_LOADER.match(base):
            found.add("glibc")
        elif _MUSL_LOADER.match(base):
            found.add("musl")
    if "glibc" in found:
        return "glibc"
    return "musl" if "musl" in found else "none"


def _is_setid(entry: FileEntry) -> bool:
    return entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and bool(entry.mode & (stat.S_ISUID | stat.S_ISGID))


def vet(image: ImageArchive, rules: VettingRules) -> None:
    """Raise ``VettingError`` naming the first rule the image breaks."""
    config = image.container_config
    if not (config.get("Entrypoint") or config.get("Cmd")):
        raise VettingError("image has neither an entrypoint nor a command; BL would have nothing to start",
                           check="entrypoint")
    size = image.uncompressed_size
    if size > rules.max_size_bytes:
        raise VettingError(f"image holds {size} bytes of files, over the {rules.max_size_bytes}-byte limit",
                           check="size")
    missing = [label for label in rules.required_labels if label not in image.labels]
    if missing:
        raise VettingError(f"image lacks required labels {missing}", check="label")
    libc = detect_libc(image.files)
    if libc != "glibc":
        what = "musl libc (Alpine-style)" if libc == "musl" else "no dynamic glibc (static or busybox image)"
        raise VettingError(f"image has {what}; the Bonseyes Layer is a glibc executable and cannot run in it",
                           check="libc")
    for path, entry in sorted(image.files.items()):
        for pattern in rules.forbidden_paths:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path + "/", pattern):
                raise VettingError(f"image contains forbidden path /{path} (rule {pattern!r})",
                                   check="forbidden-path")
        if rules.forbid_setuid and _is_setid(entry) and path not in rules.allowed_setid_paths:
            raise VettingError(f"image contains setuid/setgid file /{path} (mode {entry.mode:o})", check="setuid")
    for scanner in rules.scanners:
        scanner(image)
