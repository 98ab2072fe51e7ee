# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared adapter of the bonseyes.vp modules, in the style of openstack.cloud's ``OpenStackModule``.

A module subclasses ``BonseyesAnsibleModule`` (named apart from the host agent, ``bonseyes_py.bm.agent``'s
``BonseyesModule``), declares ``argument_spec`` (and, if it talks to the Security Manager, sets
``sm_connection = True`` to receive the common connection options; if it writes files the user names,
``file_module = True`` to receive owner/group/mode and ``backup``), and implements ``run()``, which returns
the result dict. The base class does the rest once, for every module:

- reports a missing ``bonseyes_py`` (or ``cryptography``) on the managed host via ``missing_required_lib``,
  so the operator learns which interpreter lacks what instead of reading a traceback;
- refuses, before anything is read from or sent to the Security Manager, a client key that group or others
  may read, an encrypted one without (or with the wrong) passphrase, and a CA file without a root;
- calls the Security Manager through the core's one mutual-TLS client (``bonseyes_py.web.client``) and maps
  its typed errors to ``fail_json`` in one place (``_fail_client_error``);
- turns every error the core raises on purpose (``BonseyesError``: its ``str`` is ``"<check>: <message>"``)
  and every ``OSError`` into one ``fail_json(msg=...)``, adding the failed check as ``check`` so that
  playbooks can branch on it without parsing text.

The logic itself lives in ``bonseyes_py``; nothing here knows about CAs, keys or licences beyond reading them.
"""

from __future__ import annotations

import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from bonseyes_py.errors import BonseyesError, InputError, KeyFileError
except ImportError:
    HAS_BONSEYES_PY = False
    BONSEYES_PY_IMPORT_ERROR = traceback.format_exc()

    class BonseyesError(Exception):  # type: ignore[no-redef]
        """Stand-in so that ``except BonseyesError`` stays valid when the library is missing."""

        check = "error"

    InputError = KeyFileError = BonseyesError  # type: ignore[misc,assignment]

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


def check_private_key_file(path, what):
    """Refuse a private key (or other secret) file that group or others may read, naming ``what`` and the fix.

    Every module that reads or writes a private key goes through here, so the 0600 rule is the same for all
    of them; the check itself is the core's (``bonseyes_py.pki.keys.check_private_file``).
    """
    from bonseyes_py.pki.keys import check_private_file

    check_private_file(path, what)


def load_ca_bundle(path, option):
    """The root and the intermediates of a CA bundle file, or a one-line ``InputError`` naming ``option``.

    A bundle without a self-signed root cannot anchor anything; saying so beats the ``StopIteration`` a bare
    ``next()`` over the bundle would raise.
    """
    from bonseyes_py.pki.certs import load_certificate_chain

    with open(path, "rb") as handle:
        try:
            bundle = load_certificate_chain(handle.read())
        except BonseyesError as err:
            raise InputError(f"{option} {path} is not a PEM certificate bundle ({err.args[0]}); give the Security"
                             " Manager's CA bundle (root, then intermediate)", check="ca-bundle") from err
    roots = [c for c in bundle if c.issuer == c.subject]
    if not roots:
        raise InputError(f"{option} {path} holds {len(bundle)} certificate(s) but no root (self-signed) certificate;"
                         " give the Security Manager's CA bundle (root, then intermediate)", check="ca-bundle")
    return roots[0], [c for c in bundle if c.issuer != c.subject]


class BonseyesAnsibleModule:
    """Base of the bonseyes.vp modules: argument handling, library check and error mapping in one place."""

    argument_spec = {}
    module_kwargs = {}
    sm_connection = False
    file_module = False

    def __init__(self):
        spec = dict(self.argument_spec)
        kwargs = dict(self.module_kwargs)
        if self.sm_connection:
            spec.update(sm_connection_argument_spec())
        if self.file_module:
            spec.setdefault("backup", dict(type="bool", default=False))
            kwargs["add_file_common_args"] = True
        self.ansible = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.ansible.params
        self.check_mode = self.ansible.check_mode
        self.diff_mode = self.ansible._diff
        self._sm_client = None
        self._client_key = None

    def check_params(self):
        """Refuse malformed options (no I/O) before anything else, the connection's files included."""

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
            self.check_params()
            if self.sm_connection:
                self._check_sm_connection()
            result = self.run()
        except BonseyesError as err:
            self.fail(msg=str(err), check=err.check)
        except OSError as err:
            where = " ".join(str(name) for name in (err.filename, err.filename2) if name)
            self.fail(msg=f"{err.strerror or err}: {where}" if where else str(err.strerror or err), check="os")
        finally:
            if self._sm_client is not None:
                self._sm_client.close()
        self.ansible.exit_json(**result)

    # -- the Security Manager -----------------------------------------------------------------------------

    def _check_sm_connection(self):
        """Refuse unusable connection options before the first call, each with the option at fault."""
        if not self.params["sm_url"].startswith("https://"):
            self.fail(msg=f"sm_url {self.params['sm_url']} is not https://; the Security Manager only speaks mTLS",
                      check="input")
        if self.params["validate_certs"]:
            load_ca_bundle(self.params["ca_cert"], "ca_cert")
        self._client_key = self.read_private_key("client_key", self.params["client_key"],
                                                 self.params["client_key_passphrase"], "client_key_passphrase")

    def read_private_key(self, option, path, passphrase=None, passphrase_option=None):
        """The private key at ``path`` (refused when group or others may read it), decrypted with ``passphrase``.

        A failure names the option and the file and says what to give, so an encrypted key without its
        passphrase is one clear line rather than a TLS error (or an OpenSSL prompt on a terminal nobody watches).
        """
        from bonseyes_py.pki.keys import load_private_key_pem

        check_private_key_file(path, option)
        with open(path, "rb") as handle:
            pem = handle.read()
        try:
            return load_private_key_pem(pem, passphrase.encode("utf-8") if passphrase else None)
        except KeyFileError as err:
            hint = f" (option {passphrase_option})" if passphrase_option else ""
            raise KeyFileError(f"{option} {path}: {err.args[0]}{hint}") from err

    @property
    def client_private_key(self):
        """The decrypted ``client_key`` (checked in ``_check_sm_connection``), for modules that also sign with it."""
        return self._client_key

    def _client(self):
        from bonseyes_py.web.client import MTLSClient

        if self._sm_client is None:
            passphrase = self.params["client_key_passphrase"]
            options = dict(ca_file=self.params["ca_cert"], cert_file=self.params["client_cert"],
                           key_file=self.params["client_key"],
                           key_passphrase=passphrase.encode("utf-8") if passphrase else None,
                           timeout=self.params["timeout"])
            if not self.params["validate_certs"]:
                self.ansible.warn(f"validate_certs=false: the certificate of the Security Manager at"
                                  f" {self.params['sm_url']} is not verified; anyone on the path can pose as it")
                options.update(ssl_context=self._unverified_context(options), check_hostname=False)
            self._sm_client = MTLSClient(self.params["sm_url"], **options)
        return self._sm_client

    @staticmethod
    def _unverified_context(options):
        """What validate_certs=false asks for: the client identity is presented, the server is not checked."""
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(options["cert_file"], options["key_file"], password=options["key_passphrase"])
        return context

    def sm_call(self, method, path, body=None, expect=(200, 201), missing_ok=False):
        """One call to the Security Manager over mutual TLS with the ``sm_connection`` options.

        Returns the decoded JSON answer, or ``None`` for a 404 when ``missing_ok``. An SM that cannot be
        reached fails the task with ``check=sm-unreachable`` and the URL, before anything was written
        on the host, so a play stopped there leaves the host as it was. A refusal fails with the SM's
        own error check (``hardware-changed``, ``host-owner``, ...) and message.
        """
        from bonseyes_py.web.client import ClientError, ServerRefused

        try:
            return self._client().request(method, path, json=body, expected=expect)
        except ServerRefused as err:
            if missing_ok and err.status == 404:
                return None
            self._fail_client_error(err, method, path)
        except ClientError as err:
            self._fail_client_error(err, method, path)

    def _fail_client_error(self, err, method, path):
        """The one translation of the core client's typed errors into task failures."""
        from bonseyes_py.web.client import ResponseTooLarge, ServerRefused, TLSFailure, Unreachable

        where = self.params["sm_url"]
        if isinstance(err, ServerRefused):
            check = err.error or "sm-refused"
            self.fail(msg=f"the Security Manager refused {method} {path} ({err.status} {check}): {err.message}",
                      check=check, status=err.status)
        if isinstance(err, TLSFailure):
            check = "client-identity" if err.check == "client-identity" else "sm-tls"
            self.fail(msg=f"TLS with the Security Manager at {where} failed: {err.args[0]}", check=check)
        if isinstance(err, Unreachable):
            self.fail(msg=f"the Security Manager at {where} is unreachable: {err.args[0]}", check="sm-unreachable")
        if isinstance(err, ResponseTooLarge):
            self.fail(msg=f"the Security Manager's answer to {method} {path} is too large: {err.args[0]}",
                      check="sm-response")
        self.fail(msg=f"the Security Manager's answer to {method} {path} is unusable: {err.args[0]}",
                  check="sm-response")

    # -- files ----------------------------------------------------------------------------------------------

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

    def backup(self, path):
        """With ``backup=true``, a timestamped copy of ``path`` before it is replaced or removed (community.crypto's
        ``backup_local``); ``None`` otherwise, in check mode, or when there is nothing to keep."""
        if not self.file_module or not self.params["backup"] or self.check_mode or not os.path.exists(path):
            return None
        return self.ansible.backup_local(path)

    def replace_file(self, path, content, default_mode):
        """Write ``content`` to ``path`` atomically (after a backup when asked); returns the backup's path or None.

        The file is written with ``default_mode``, or with the module's ``mode`` when it is an octal
        number, so it never exists with another mode; ``apply_file_attributes`` then sets owner, group and
        any symbolic mode.
        """
        backup_file = self.backup(path)
        self.write_file_atomic(path, content, self._octal_mode(default_mode))
        return backup_file

    def _octal_mode(self, default_mode):
        mode = self.params.get("mode") if self.file_module else None
        if isinstance(mode, int):
            return mode
        if isinstance(mode, str) and mode.isdigit():
            return int(mode, 8)
        return default_mode

    def check_secret_mode(self, path, secret):
        """Refuse a ``mode`` option that would let group or others read the private key ``path``, before
        anything is written (in check mode too), because every module of the collection refuses such a key."""
        mode = self.params.get("mode") if self.file_module else None
        if mode is None:
            return
        if isinstance(mode, int) or str(mode).isdigit():
            wanted = mode if isinstance(mode, int) else int(mode, 8)
        else:
            # A key that does not exist yet starts from the 0600 regular file this collection writes.
            current = os.stat(path) if os.path.exists(path) else os.stat_result((0o100600,) + (0,) * 9)
            try:
                wanted = AnsibleModule._symbolic_mode_to_octal(current, mode)
            except ValueError as err:
                raise InputError(f"mode {mode!r} is not a valid mode: {err}", check="input") from err
        if wanted & 0o077:
            raise KeyFileError(f"mode {mode} would let group or others read the {secret} {path};"
                               " give a mode like 0600 or 0400", check="key-file")

    def apply_file_attributes(self, path, changed, with_mode=True):
        """owner, group and mode (and SELinux context) of ``path`` from the file options; returns ``changed``.

        In check mode it predicts without touching the file. ``with_mode=False`` leaves the mode alone, for a
        module's second file (a CSR beside its key) whose mode the option does not describe.
        """
        if not self.file_module or not os.path.exists(path):
            return changed
        file_args = self.ansible.load_file_common_arguments(self.params, path=path)
        if not with_mode:
            file_args["mode"] = None
        return self.ansible.set_fs_attributes_if_different(file_args, changed)

    def remove_file(self, path):
        """Remove ``path`` (after a backup when asked) unless in check mode; returns (removed, backup_file)."""
        if not os.path.lexists(path):
            return False, None
        backup_file = self.backup(path)
        if not self.check_mode:
            os.unlink(path)
        return True, backup_file
