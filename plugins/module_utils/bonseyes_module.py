# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared adapter of the bonseyes.vp modules, in the style of openstack.cloud's ``OpenStackModule``.

A module subclasses ``BonseyesModule``, declares ``argument_spec`` (and, if it talks to the Security
Manager, sets ``sm_connection = True`` to receive the common connection options), and implements
``run()``, which returns the result dict. The base class does the rest once, for every module:

- reports a missing ``bonseyes_py`` (or ``cryptography``) on the managed host via ``missing_required_lib``,
  so the operator learns which interpreter lacks what instead of reading a traceback;
- turns every error the core raises on purpose (``BonseyesError``: its ``str`` is ``"<check>: <message>"``)
  and every ``OSError`` into one ``fail_json(msg=...)``, adding the failed check as ``check`` so that
  playbooks can branch on it without parsing text.

The logic itself lives in ``bonseyes_py``; nothing here knows about CAs, keys or licences.
"""

from __future__ import annotations

import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from bonseyes_py.errors import BonseyesError
except ImportError:
    HAS_BONSEYES_PY = False
    BONSEYES_PY_IMPORT_ERROR = traceback.format_exc()

    class BonseyesError(Exception):  # type: ignore[no-redef]
        """Stand-in so that ``except BonseyesError`` stays valid when the library is missing."""

        check = "error"

else:
    HAS_BONSEYES_PY = True
    BONSEYES_PY_IMPORT_ERROR = None


def sm_connection_argument_spec():
    """Options shared by every module that calls the Security Manager over mutual TLS.

    Documented once in the ``bonseyes.vp.sm_connection`` doc fragment. The client key is given as a
    path, never inline, so it cannot end up in a task result; its passphrase is the one secret and
    carries ``no_log``.
    """
    return dict(
        sm_url=dict(type="str", required=True),
        client_cert=dict(type="path", required=True),
        client_key=dict(type="path", required=True),
        client_key_passphrase=dict(type="str", no_log=True),
        ca_cert=dict(type="path", required=True),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="float", default=30.0),
    )


class BonseyesModule:
    """Base of the bonseyes.vp modules: argument handling, library check and error mapping in one place."""

    argument_spec = {}
    module_kwargs = {}
    sm_connection = False

    def __init__(self):
        spec = dict(self.argument_spec)
        if self.sm_connection:
            spec.update(sm_connection_argument_spec())
        self.ansible = AnsibleModule(argument_spec=spec, **self.module_kwargs)
        self.params = self.ansible.params
        self.check_mode = self.ansible.check_mode
        self.diff_mode = self.ansible._diff

    def run(self):
        """Do the module's work and return the result dict (must contain ``changed``)."""
        raise NotImplementedError

    def fail(self, msg, **kwargs):
        self.ansible.fail_json(msg=msg, **kwargs)

    def __call__(self):
        if not HAS_BONSEYES_PY:
            self.fail(msg=missing_required_lib("bonseyes_py (pip install bonseyes-py)"),
                      exception=BONSEYES_PY_IMPORT_ERROR)
        try:
            result = self.run()
        except BonseyesError as err:
            self.fail(msg=str(err), check=err.check)
        except OSError as err:
            where = " ".join(str(name) for name in (err.filename, err.filename2) if name)
            self.fail(msg=f"{err.strerror or err}: {where}" if where else str(err.strerror or err), check="os")
        self.ansible.exit_json(**result)

    # -- helpers for subclasses --------------------------------------------------------------------------

    def sm_call(self, method, path, body=None, expect=(200, 201), missing_ok=False):
        """One call to the Security Manager over mutual TLS with the ``sm_connection`` options.

        Returns the decoded JSON answer, or ``None`` for a 404 when ``missing_ok``. An SM that cannot be
        reached fails the task with ``check=sm-unreachable`` and the URL, before anything was written
        on the host, so a play stopped there leaves the host as it was. A refusal fails with the SM's
        own error check (``hardware-changed``, ``host-owner``, ...) and message.
        """
        import requests  # bonseyes_py depends on requests: present whenever HAS_BONSEYES_PY

        from bonseyes_py import safejson  # bounded JSON: a deeply nested answer is an error, not a traceback

        url = self.params["sm_url"].rstrip("/") + path
        if not url.startswith("https://"):
            self.fail(msg=f"sm_url {self.params['sm_url']} is not https://; the Security Manager only speaks mTLS",
                      check="input")
        verify = self.params["ca_cert"] if self.params["validate_certs"] else False
        try:
            response = requests.request(method, url, json=body, timeout=self.params["timeout"], verify=verify,
                                        cert=(self.params["client_cert"], self.params["client_key"]))
        except requests.exceptions.SSLError as err:
            self.fail(msg=f"TLS with the Security Manager at {self.params['sm_url']} failed: {err}", check="sm-tls")
        except requests.RequestException as err:
            self.fail(msg=f"the Security Manager at {self.params['sm_url']} is unreachable: {err}",
                      check="sm-unreachable")
        if missing_ok and response.status_code == 404:
            return None
        try:
            answer = safejson.loads(response.content, what=f"the Security Manager's answer to {method} {path}")
        except BonseyesError:  # not JSON, or too large or deep to parse: kept as text, as before
            answer = {"message": response.text[:300]}
        if response.status_code not in expect:
            check = answer.get("error", "sm-refused") if isinstance(answer, dict) else "sm-refused"
            message = answer.get("message", "") if isinstance(answer, dict) else str(answer)
            self.fail(msg=f"the Security Manager refused {method} {path} ({response.status_code} {check}): {message}",
                      check=check, status=response.status_code)
        return answer

    def write_file_atomic(self, path, content, mode):
        """Write ``content`` (bytes) to ``path`` through a temporary file in the same directory.

        The temporary file is created 0600 by ``mkstemp``, chmodded to ``mode`` before any byte is
        written, then moved over ``path`` with ``atomic_move``: a crash never leaves half a file, and a
        key never exists with a looser mode, not even for a moment.
        """
        directory = os.path.dirname(path) or "."
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            self.ansible.atomic_move(tmp_name, path)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        # atomic_move copies the old file's attributes when it replaces one: set the mode explicitly.
        os.chmod(path, mode)
