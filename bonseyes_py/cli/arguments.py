"""argparse type functions: every CLI argument with a format is checked while the command line is parsed.

A malformed value then ends as one line ``error: argument --OPTION: ...`` with exit code 2 before
anything is read, written or sent, instead of a traceback (or an accepted wrong value) deep inside a
command. The checks are the trust core's own (``check_name``, ``check_trust_domain``, ``check_ip``,
``check_digest`` ...), so the CLI refuses exactly what the core would refuse, only earlier and named.

Every function here raises ``argparse.ArgumentTypeError`` with a message that quotes the value with
``repr`` (a control character in a value never breaks the one-line error).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bonseyes_py.errors import BonseyesError

# The longest validity any option accepts: 100 years (in the option's unit). Longer is never meant,
# and beyond ~2.7 million years a timedelta overflows.
MAX_VALIDITY_DAYS = 36525
MAX_VALIDITY_SECONDS = MAX_VALIDITY_DAYS * 24 * 3600
MAX_PORT = 65535
# An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 characters at most.
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME_RE = re.compile(rf"^(?=.{{1,253}}\Z){_DNS_LABEL}(\.{_DNS_LABEL})*\Z")


def _fail(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def _core_check(check: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse type from a trust-core check that raises a ``BonseyesError``."""

    def parse(text: str) -> str:
        try:
            check(text)
        except BonseyesError as exc:
            raise _fail(str(exc.args[0])) from exc
        return text

    parse.__name__ = getattr(check, "__name__", "value")
    return parse


# -- numbers ----------------------------------------------------------------------------------------


def bounded_int(minimum: int, maximum: int, unit: str = "") -> Callable[[str], int]:
    """An integer in [minimum, maximum]."""
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise _fail(f"{text!r} is not a whole number{suffix}") from None
        if not minimum <= value <= maximum:
            raise _fail(f"{value}{suffix} is out of range: give {minimum} to {maximum}")
        return value

    parse.__name__ = "int"
    return parse


def bounded_float(minimum: float, maximum: float, unit: str = "", *, exclusive_minimum: bool = False
                  ) -> Callable[[str], float]:
    """A finite number in [minimum, maximum] (or (minimum, maximum] with ``exclusive_minimum``)."""
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _fail(f"{text!r} is not a number{suffix}") from None
        too_small = value <= minimum if exclusive_minimum else value < minimum
        if not math.isfinite(value) or too_small or value > maximum:
            low = f"more than {minimum:g}" if exclusive_minimum else f"at least {minimum:g}"
            raise _fail(f"{text!r}{suffix} is out of range: give {low} and at most {maximum:g}")
        return value

    parse.__name__ = "number"
    return parse


validity_days = bounded_float(0, MAX_VALIDITY_DAYS, "days", exclusive_minimum=True)
validity_days.__doc__ = "A certificate validity in days: more than 0, at most 100 years."
validity_seconds = bounded_int(1, MAX_VALIDITY_SECONDS, "seconds")
validity_seconds.__doc__ = "A licence validity in whole seconds: at least 1, at most 100 years."
port = bounded_int(1, MAX_PORT)
positive_int = bounded_int(1, 2**31 - 1)
non_negative_int = bounded_int(0, 2**62)


# -- names ------------------------------------------------------------------------------------------


def name(what: str) -> Callable[[str], str]:
    """A name as certificates and IDs carry it (``bonseyes_py.pki.roles.check_name``)."""
    from bonseyes_py.pki.roles import check_name

    return _core_check(lambda text: check_name(text, what))


def trust_domain(text: str) -> str:
    from bonseyes_py.pki.roles import check_trust_domain

    return _core_check(check_trust_domain)(text)


def digest(text: str) -> str:
    from bonseyes_py.identity.ids import check_digest

    return _core_check(check_digest)(text)


def hardware_id(text: str) -> str:
    from bonseyes_py.identity.ids import check_hardware_id

    return _core_check(check_hardware_id)(text)


def nonce(text: str) -> str:
    from bonseyes_py.identity.ids import check_nonce

    return _core_check(check_nonce)(text)


def dns_name(text: str) -> str:
    """A DNS host name (RFC 1123), as put in a certificate's subjectAltName."""
    if not _DNS_NAME_RE.match(text):
        raise _fail(f"{text!r} is not a DNS name (labels of letters, digits and inner hyphens)")
    return text


# -- addresses --------------------------------------------------------------------------------------


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address, returned in its canonical form."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _fail(f"{text!r} is not an IP address") from None


def host_port(text: str) -> str:
    """``HOST:PORT`` with HOST a DNS name or an IP address (IPv6 in brackets) and PORT 1-65535."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise _fail(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _fail(f"{text!r}: {host} is not an IPv6 address") from None
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _DNS_NAME_RE.match(host):
                raise _fail(f"{text!r} is not HOST:PORT (HOST a DNS name or an IP address, IPv6 in [])") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
        raise _fail(f"{text!r}: port {port_text!r} is not 1-{MAX_PORT}")
    return text


def insecure_registry_host(host: str) -> bool:
    """Whether the Docker engine treats a registry on ``host`` as insecure: 127.0.0.0/8, by address or name.

    The engine pulls from such a registry without checking its certificate and without presenting the
    host's client certificate (``certs.d``), so a pull endpoint there defeats the mutual TLS the hosts
    rely on. ``localhost`` (and ``*.localhost``, RFC 6761) always resolves there.
    """
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return isinstance(address, ipaddress.IPv4Address) and address in ipaddress.IPv4Network("127.0.0.0/8")


def pull_registry(text: str) -> str:
    """``HOST:PORT`` of the Marketplace's mTLS pull endpoint: not a registry the engine treats as insecure."""
    host_port(text)
    if insecure_registry_host(text.rpartition(":")[0]):
        raise _fail(f"{text!r} is in 127.0.0.0/8, which the Docker engine treats as an insecure registry (no "
                    "server check, no client certificate); name the pull endpoint by a DNS name or another address")
    return text


def https_url(text: str) -> str:
    """An ``https://HOST[:PORT][/PATH]`` URL, without credentials, query or fragment."""
    if any(not c.isprintable() or c.isspace() for c in text):
        raise _fail(f"{text!r} is not a URL (it holds spaces or control characters)")
    parts = urlsplit(text)
    if parts.scheme != "https":
        raise _fail(f"{text!r} is not an https:// URL")
    try:
        port_number = parts.port
    except ValueError:
        raise _fail(f"{text!r} has no valid port (1-{MAX_PORT})") from None
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.query or parts.fragment or port_number == 0:
        raise _fail(f"{text!r} is not https://HOST[:PORT][/PATH]")
    if ":" in host:
        ip_address(host)
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _DNS_NAME_RE.match(host):
                raise _fail(f"{text!r}: {host!r} is not a host name or an IP address") from None
    return text


# -- files ------------------------------------------------------------------------------------------


def _stat(text: str) -> os.stat_result:
    if not text or "\0" in text:
        raise _fail(f"{text!r} is not a path")
    try:
        return os.stat(text)
    except FileNotFoundError:
        raise _fail(f"{text!r} does not exist") from None
    except OSError as exc:
        raise _fail(f"cannot use {text!r}: {exc.strerror or exc}") from None


def existing_file(text: str) -> str:
    """A path to an existing regular file (a directory or a device is refused)."""
    mode = _stat(text).st_mode
    if stat.S_ISDIR(mode):
        raise _fail(f"{text!r} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise _fail(f"{text!r} is not a regular file")
    return text


def existing_directory(text: str) -> str:
    """A path to an existing directory."""
    if not stat.S_ISDIR(_stat(text).st_mode):
        raise _fail(f"{text!r} is not a directory")
    return text


def existing_path(text: str) -> str:
    """A path to an existing file or directory (an inventory may be either)."""
    _stat(text)
    return text


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of an extra variable; KEY an identifier."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise _fail(f"{text!r} is not KEY=VALUE (KEY a variable name)")
    return key, value


def stage(text: str) -> dict[str, str]:
    """``ARTEFACT@HOST_ID`` of a pipeline stage, both names as certificates carry them."""
    artefact, sep, host = text.partition("@")
    if not sep:
        raise _fail(f"stage {text!r} must be ARTEFACT@HOST_ID")
    return {"artefact_id": name("artefact ID")(artefact), "host_id": name("host ID")(host)}
