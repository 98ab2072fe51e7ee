"""Bad arguments and bad files given to ``bonseyes``: always one line ``error: ...``, a non-zero exit, no traceback.

Every case here once ended in a traceback, or was accepted although wrong (an already expired licence, a
hardware ID computed over a file given as the system root, a BM bound to "not-an-ip"). Arguments with a
format are checked by argparse type functions, so the line names the option; files the CLI reads for
a command (``sm.json``, ``bm.json``, policies) are read with bounds and named when they are unusable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BONSEYES = [sys.executable, "-m", "bonseyes_py.cli.main"]
DIGEST = "sha256:" + "c" * 64


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BONSEYES, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """One ``error:`` line on stderr naming every fragment, nothing on stdout, a non-zero exit."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cliargs")
    assert run("ca", "init", "ca", "--plaintext-root", cwd=directory).returncode == 0
    (directory / "file.txt").write_text("not a directory\n")
    (directory / "pw").write_text("correct horse battery\n")
    return directory


@pytest.fixture(scope="module")
def sm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cliargs-sm")
    result = run("sm", "init", "sm", "--bind", "127.0.0.1:18999", "--plaintext-root", cwd=directory)
    assert result.returncode == 0, result.stderr
    return directory


# -- validities -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["99999999999999", "-5", "0", "nan", "inf", "-inf", "1e999", "36526", "ten"])
def test_certificate_validity_must_be_positive_and_at_most_100_years(workdir: Path, value: str) -> None:
    result = run("ca", "issue", "--ca", "ca", "--role", "user", "--name", "v-user", "--new-key", "v.key",
                 "--out", "v.pem", f"--validity-days={value}", cwd=workdir)
    assert_one_line_error(result, "--validity-days")
    assert result.returncode == 2
    assert not (workdir / "v.pem").exists()


def test_certificate_validity_within_bounds_is_used(workdir: Path) -> None:
    result = run("ca", "issue", "--ca", "ca", "--role", "user", "--name", "v-ok", "--new-key", "ok.key",
                 "--out", "ok.pem", "--validity-days", "1.5", cwd=workdir)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", ["-5", "0", "99999999999999", "3155760001", "1.5", "soon"])
def test_licence_validity_must_be_positive_and_bounded(workdir: Path, value: str) -> None:
    result = run("licence", "issue", "--ca", "ca", "--host-id", "h-1", "--host-ip", "127.0.0.2", "--digest", DIGEST,
                 "--artefact", "demo", "--user", "alice", "--out", "expired.jwt", f"--validity={value}", cwd=workdir)
    assert_one_line_error(result, "--validity")
    assert result.returncode == 2
    assert not (workdir / "expired.jwt").exists()


# -- directories and files --------------------------------------------------------------------------


@pytest.mark.parametrize("sysroot", ["file.txt", "no-such-dir"])
def test_hardware_sysroot_must_be_a_directory(workdir: Path, sysroot: str) -> None:
    assert_one_line_error(run("id", "hardware", "--sysroot", sysroot, cwd=workdir), "--sysroot", sysroot)


def test_hardware_facts_refuse_a_file_as_the_system_root(workdir: Path) -> None:
    from bonseyes_py.errors import InputError
    from bonseyes_py.identity.hardware import collect_hardware_facts

    with pytest.raises(InputError, match="not a directory"):
        collect_hardware_facts(workdir / "file.txt")


@pytest.mark.parametrize(("content", "fragment"), [
    (b"\xff\xfe\x00p\x00e\x00r\x00m", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "deep"),
    (b'permit(principal, action, resource) when { ' + b"(" * 5000 + b"true" + b")" * 5000 + b" };", "deep"),
    (b"permit(principal, action, resource);" + b" " * 300_000, "bytes"),
])
def test_policy_files_that_cannot_be_policies_are_one_line(workdir: Path, content: bytes, fragment: str) -> None:
    (workdir / "bad.cedar").write_bytes(content)
    assert_one_line_error(run("sm", "policy", "validate", "bad.cedar", cwd=workdir), "bad.cedar", fragment)


def test_policy_file_that_is_a_directory_is_one_line(workdir: Path) -> None:
    (workdir / "policy.d").mkdir(exist_ok=True)
    assert_one_line_error(run("sm", "policy", "validate", "policy.d", cwd=workdir), "policy.d", "directory")


def test_premise_policy_file_is_read_with_the_same_bounds(sm_dir: Path) -> None:
    (sm_dir / "latin1.cedar").write_bytes("// caf\xe9\npermit(principal, action, resource);\n".encode("latin-1"))
    assert_one_line_error(run("sm", "premise", "create", "sm", "lab", "--policy", "latin1.cedar", cwd=sm_dir),
                          "latin1.cedar", "UTF-8")


@pytest.mark.parametrize("content", [b"garbage", b"[1, 2]", b"\xff\xfe{}", b"[" * 50_000, b'{"bind": 5}',
                                     b'{"workers": "many"}', b""])
@pytest.mark.parametrize("command", [("sm", "host", "list"), ("audit", "verify"), ("sm", "serve"),
                                     ("audit", "list")], ids=" ".join)
def test_garbage_sm_json_is_one_line_naming_it(tmp_path: Path, content: bytes, command: tuple[str, ...]) -> None:
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "sm.json").write_bytes(content)
    assert_one_line_error(run(*command, "sm", cwd=tmp_path), "sm.json")


def test_sm_json_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "sm" / "sm.json").mkdir(parents=True)
    assert_one_line_error(run("sm", "host", "list", "sm", cwd=tmp_path), "sm.json")


def test_garbage_bm_json_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "bm").mkdir()
    (tmp_path / "bm" / "bm.json").write_text(json.dumps({"port": "eighty"}))
    assert_one_line_error(run("bm", "serve", "bm", cwd=tmp_path), "bm.json", "port")
    (tmp_path / "bm" / "bm.json").write_bytes(b"{{{")
    assert_one_line_error(run("bm", "serve", "bm", cwd=tmp_path), "bm.json")


# -- addresses and names ----------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("--bind-ip", "not-an-ip"), ("--bind-ip", "999.1.1.1"), ("--port", "0"), ("--port", "70000"),
    ("--sm-url", "ftp://sm.example:8443"), ("--sm-url", "https://"), ("--sm-url", "https://sm:99999"),
    ("--registry", "registry with space:5000"), ("--registry", "registry:notaport"), ("--premise", "bad premise"),
    ("--sysroot", "file.txt"), ("--ca", "no-such.pem"),
])
def test_bm_enrol_refuses_malformed_arguments_before_anything(workdir: Path, option: str, value: str) -> None:
    args = {"--sm-url": "https://127.0.0.1:1", "--ca": "ca/root.pem", "--owner-cert": "ca/root.pem",
            "--owner-key": "pw", "--bind-ip": "127.0.0.1"}
    args[option] = value
    result = run("bm", "enrol", "bm-new", *[part for item in args.items() for part in item], cwd=workdir)
    assert_one_line_error(result, option)
    assert result.returncode == 2
    assert not (workdir / "bm-new").exists()


@pytest.mark.parametrize("argv", [
    ("ca", "issue", "--ca", "ca", "--role", "user", "--name", "bad\nname", "--new-key", "n.key", "--out", "n.pem"),
    ("ca", "issue", "--ca", "ca", "--role", "host", "--name", "h-2", "--new-key", "n.key", "--out", "n.pem",
     "--ip", "999.1.1.1"),
    ("ca", "issue", "--ca", "ca", "--role", "host", "--name", "h-2", "--new-key", "n.key", "--out", "n.pem",
     "--dns", "bad name"),
    ("ca", "issue", "--ca", "file.txt", "--role", "user", "--name", "u", "--new-key", "n.key", "--out", "n.pem"),
    ("ca", "init", "new-ca", "--trust-domain", "Bad Domain"),
    ("ca", "init", "new-ca"),
    ("ca", "init", "new-ca", "--plaintext-root", "--root-passphrase-file", "pw"),
    ("ca", "export-user", "--ca", "ca", "--name", "tab\tname", "--out", "t.p12", "--passphrase-file", "pw"),
    ("licence", "issue", "--ca", "ca", "--host-id", "h-1", "--host-ip", "999.1.1.1", "--digest", DIGEST,
     "--artefact", "demo", "--user", "alice", "--out", "n.jwt"),
    ("licence", "issue", "--ca", "ca", "--host-id", "h-1", "--host-ip", "127.0.0.2", "--digest", "sha256:nope",
     "--artefact", "demo", "--user", "alice", "--out", "n.jwt"),
    ("licence", "issue", "--ca", "ca", "--host-id", "h\n1", "--host-ip", "127.0.0.2", "--digest", DIGEST,
     "--artefact", "demo", "--user", "alice", "--out", "n.jwt"),
    ("licence", "issue", "--ca", "ca", "--host-id", "h-1", "--host-ip", "127.0.0.2", "--digest", DIGEST,
     "--artefact", "demo", "--user", "alice", "--out", "n.jwt", "--nonce", "short"),
    ("licence", "verify", "file.txt", "--root", "ca", "--expect-ip", "127.0.0.2"),
    ("licence", "verify", "file.txt", "--root", "ca/root.pem", "--expect-ip", "999.1.1.1"),
    ("id", "sign-host", "--owner-cert", "ca/root.pem", "--owner-key", "pw", "--hardware-id", "hw-zz",
     "--out", "n.jwt"),
    ("sm", "init", "new-sm", "--bind", "127.0.0.1"),
    ("sm", "init", "new-sm", "--bind", "127.0.0.1:0"),
    ("sm", "init", "new-sm", "--server-ip", "localhost"),
    ("sm", "init", "new-sm", "--server-name", "bad_name!"),
    ("sm", "init", "new-sm", "--trust-domain", "has spaces.local"),
    ("sm", "init", "new-sm", "--admin", "ad\nmin"),
    ("sm", "init", "new-sm"),
    ("sm", "init", "new-sm", "--plaintext-root", "--root-passphrase-file", "pw"),
    ("sm", "serve", "new-sm", "--workers", "0"),
    ("sm", "serve", "new-sm", "--threads", "-1"),
    ("sm", "serve", "new-sm", "--bind", "nowhere"),
    ("sm", "premise", "show", "new-sm", "lab", "--revision", "0"),
    ("sm", "premise", "create", "new-sm", "bad name"),
    ("sm", "host", "show", "new-sm", "h\x1b[31m"),
    ("sm", "user", "enrol", "new-sm", "bad user", "--out", "x.p12", "--passphrase-file", "pw"),
    ("audit", "list", "new-sm", "--limit", "0"),
    ("audit", "list", "new-sm", "--limit", "100000"),
    ("audit", "list", "new-sm", "--after", "-1"),
    ("pipeline", "run", "--sm-url", "https://127.0.0.1:1", "--ca", "ca/root.pem", "--cert", "ca/root.pem", "--key",
     "pw", "--premise", "lab", "no-host-here"),
    ("pipeline", "status", "--sm-url", "not a url", "--ca", "ca/root.pem", "--cert", "ca/root.pem", "--key", "pw",
     "p-1"),
    ("pipeline", "stop", "--sm-url", "https://127.0.0.1:1", "--ca", "missing.pem", "--cert", "ca/root.pem",
     "--key", "pw", "p-1"),
    ("deploy", "-i", "no-such-inventory"),
    ("deploy", "-i", "file.txt", "--forks", "0"),
    ("deploy", "-i", "file.txt", "-e", "no-value\nhere"),
    ("ca", "issue"),
    ("nosuchgroup",),
    ("ca", "init", "d", "extra\nargument"),
], ids=lambda argv: " ".join(argv)[:60].replace("\n", "\\n"))
def test_every_malformed_argument_is_one_line(workdir: Path, argv: tuple[str, ...]) -> None:
    result = run(*argv, cwd=workdir)
    assert_one_line_error(result)
    assert result.returncode == 2
    for created in ("n.pem", "n.key", "n.jwt", "new-ca", "new-sm", "t.p12", "x.p12"):
        assert not (workdir / created).exists(), created


def test_usage_errors_name_the_option(workdir: Path) -> None:
    line = assert_one_line_error(run("bm", "enrol", "bm-x", "--sm-url", "https://127.0.0.1:1", "--ca", "ca/root.pem",
                                     "--owner-cert", "ca/root.pem", "--owner-key", "pw", "--bind-ip", "not-an-ip",
                                     cwd=workdir), "--bind-ip", "not-an-ip")
    assert "IP address" in line


def test_os_errors_with_control_characters_in_paths_stay_one_line(workdir: Path) -> None:
    (workdir / "a\nb.pem").mkdir()
    result = run("ca", "issue", "--ca", "ca", "--role", "user", "--name", "nl-user", "--new-key", "nl.key",
                 "--out", "a\nb.pem", cwd=workdir)
    line = assert_one_line_error(result, "a\\nb.pem")
    assert result.returncode == 2, line


# -- in-process: the last-resort mapping and the parser's constants ---------------------------------


def test_an_unexpected_exception_is_one_line_with_exit_70(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bonseyes_py.cli import id_commands, main

    def broken(_sysroot: str = "/") -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.delenv("BONSEYES_DEBUG", raising=False)
    monkeypatch.setattr(id_commands, "collect_hardware_facts", broken)
    assert main.main(["id", "hardware"]) == main.EXIT_SOFTWARE
    captured = capsys.readouterr()
    assert captured.err == "error: internal error (RuntimeError): boom\\nsecond line; BONSEYES_DEBUG=1 shows where\n"


@pytest.mark.parametrize(("error", "fragment"), [
    (ValueError("bad value"), "invalid value: bad value"),
    (OverflowError("too big"), "invalid value: too big"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not UTF-8 text"),
    (RecursionError(), "nests too deeply"),
])
def test_value_errors_from_arguments_are_one_line_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str],
                                                              error: Exception, fragment: str) -> None:
    from bonseyes_py.cli import id_commands, main

    def broken(_sysroot: str = "/") -> None:
        raise error

    monkeypatch.setattr(id_commands, "collect_hardware_facts", broken)
    assert main.main(["id", "hardware"]) == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert fragment in err


def test_revocable_kinds_match_the_service() -> None:
    from bonseyes_py.cli.sm_commands import REVOCABLE
    from bonseyes_py.sm.revocation import REVOCABLE as SERVICE_REVOCABLE

    assert REVOCABLE == SERVICE_REVOCABLE


@pytest.mark.parametrize("registry", ["127.0.0.1:5001", "127.8.9.10:443", "localhost:5000", "[::ffff:127.0.0.1]:5000",
                                      "reg.localhost:5000"])
def test_bm_enrol_refuses_a_registry_the_engine_treats_as_insecure(workdir: Path, registry: str) -> None:
    result = run("bm", "enrol", "bm-new", "--sm-url", "https://127.0.0.1:1", "--ca", "ca/root.pem", "--owner-cert",
                 "ca/root.pem", "--owner-key", "pw", "--bind-ip", "127.0.0.1", "--registry", registry, cwd=workdir)
    assert_one_line_error(result, "--registry", "insecure registry")


def test_deploy_refuses_a_playbook_outside_the_project(workdir: Path) -> None:
    assert_one_line_error(run("deploy", "-i", "file.txt", "--playbook", "nope.yml", cwd=workdir), "nope.yml")
