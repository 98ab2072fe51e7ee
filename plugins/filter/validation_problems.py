# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter plugin: what is wrong with a role's variables, one message per variable, by the core's own checks."""

from __future__ import annotations

DOCUMENTATION = r"""
name: validation_problems
short_description: Check role variables against the formats bonseyes_py accepts
version_added: 0.1.0
description:
  - 'Takes a dictionary mapping each variable name to a list C([value, format]) or C([value, format, argument]) and
    returns one message C(<name>: <what is wrong>) per variable whose value does not have its format. An empty
    list means every variable is well formed.'
  - The checks are those of the C(bonseyes) CLI (C(bonseyes_py.cli.arguments)), which in turn are the trust core's
    (C(check_name), C(check_trust_domain) ...), so a role refuses in check mode what the core would refuse at run
    time. The roles of this collection use it in C(tasks/validate.yml), the first tasks they run.
  - Runs on the controller and needs C(bonseyes_py) importable there (the project's virtualenv).
  - "Formats: C(absolute_path), C(trust_domain), C(name) (argument: what it names), C(names), C(ip), C(ips),
    C(pull_address) (an IP address outside 127.0.0.0/8), C(dns_name), C(dns_names), C(pull_name) (a DNS name
    that is not C(localhost)), C(port), C(host_port), C(registry) (C(host:port), or empty for none),
    C(pull_registry) (C(host:port) outside 127.0.0.0/8, or empty for none), C(https_url), C(positive_int),
    C(positive_number), C(non_negative_number), C(validity_seconds) (1 s to 100 years), C(one_of) (argument: the
    allowed values)."
options:
  _input:
    description: Variable name to C([value, format]) or C([value, format, argument]).
    type: dict
    required: true
author:
  - Bonseyes virtual premise developers (@bonseyes)
"""

EXAMPLES = r"""
- name: Check the role's variables before anything else (in check mode too)
  vars:
    problems: >-
      {{ {'security_manager_bind_address': [security_manager_bind_address, 'ip'],
          'security_manager_port': [security_manager_port, 'port'],
          'security_manager_trust_domain': [security_manager_trust_domain, 'trust_domain']}
         | bonseyes.vp.validation_problems }}
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
    quiet: true
"""

RETURN = r"""
_value:
  description:
    - "One C(<variable>: <problem>) message per malformed variable, in the input's order."
    - Empty when every variable is well formed.
  type: list
  elements: str
"""

import argparse  # noqa: E402
import posixpath  # noqa: E402

from ansible.errors import AnsibleFilterError  # noqa: E402

try:
    from bonseyes_py.cli import arguments
except ImportError as import_error:  # pragma: no cover - the controller lacks the project's Python package
    arguments = None
    IMPORT_ERROR = import_error
else:
    IMPORT_ERROR = None


def _text(value):
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise ValueError(f"{value!r} is not a single value")
    return str(value)


def _absolute_path(value):
    text = _text(value)
    if not posixpath.isabs(text) or not text.isprintable():
        raise ValueError(f"{text!r} is not an absolute path (it must start with / and hold no control characters)")
    return text


def _each(check):
    def check_list(value, argument=None):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{value!r} is not a list")
        for item in value:
            check(item, argument)
        return value

    return check_list


def _checks():
    def typed(parse):
        return lambda value, _argument=None: parse(_text(value))

    def name(value, argument=None):
        return arguments.name(argument or "name")(_text(value))

    def pull_address(value, _argument=None):
        address = arguments.ip_address(_text(value))
        if arguments.insecure_registry_host(address):
            raise ValueError(f"{address!r} is in 127.0.0.0/8, which the Docker engine treats as an insecure registry "
                             "(no server check, no client certificate); use ::1 or a host address")
        return address

    def pull_registry(value, _argument=None):
        text = "" if value is None else _text(value)
        return arguments.pull_registry(text) if text else text

    def registry(value, _argument=None):
        text = "" if value is None else _text(value)
        return arguments.host_port(text) if text else text

    def pull_name(value, _argument=None):
        text = arguments.dns_name(_text(value))
        if arguments.insecure_registry_host(text):
            raise ValueError(f"{text!r} resolves into 127.0.0.0/8, which the Docker engine treats as an insecure "
                             "registry; name the pull endpoint by a name of its own")
        return text

    def one_of(value, allowed):
        if value not in (allowed or []):
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, allowed or [])) or '(none)'}")
        return value

    checks = {
        "absolute_path": lambda value, _argument=None: _absolute_path(value),
        "trust_domain": typed(arguments.trust_domain),
        "name": name,
        "ip": typed(arguments.ip_address),
        "pull_address": pull_address,
        "dns_name": typed(arguments.dns_name),
        "port": typed(arguments.port),
        "host_port": typed(arguments.host_port),
        "pull_registry": pull_registry,
        "registry": registry,
        "pull_name": pull_name,
        "https_url": typed(arguments.https_url),
        "positive_int": typed(arguments.positive_int),
        "positive_number": typed(arguments.bounded_float(0, 10**9, exclusive_minimum=True)),
        "non_negative_number": typed(arguments.bounded_float(0, 10**9)),
        "validity_seconds": typed(arguments.validity_seconds),
        "one_of": one_of,
    }
    checks.update({"names": _each(name), "ips": _each(checks["ip"]), "dns_names": _each(checks["dns_name"])})
    return checks


def validation_problems(variables):
    """``{name: [value, format(, argument)]}`` -> ``["name: problem", ...]``."""
    if arguments is None:
        raise AnsibleFilterError(f"bonseyes.vp.validation_problems needs bonseyes_py on the controller: {IMPORT_ERROR}")
    if not isinstance(variables, dict):
        raise AnsibleFilterError("bonseyes.vp.validation_problems takes a dictionary of name: [value, format]")
    checks = _checks()
    problems = []
    for name, spec in variables.items():
        if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3) or spec[1] not in checks:
            raise AnsibleFilterError(f"bonseyes.vp.validation_problems: {name}: expected [value, format(, argument)] "
                                     f"with a format among {', '.join(sorted(checks))}, not {spec!r}")
        value, kind = spec[0], spec[1]
        try:
            checks[kind](value, spec[2] if len(spec) == 3 else None)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            problems.append(f"{name}: {err}")
    return problems


class FilterModule:
    """bonseyes.vp filters."""

    def filters(self):
        return {"validation_problems": validation_problems}
