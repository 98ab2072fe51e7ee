"""The strict settings loader behind ``sm.json``, ``mp.json`` and ``bm.json`` (``bonseyes_py.settings``).

A key no field declares, a value of the wrong JSON type or out of its bounds, and a missing required key
are each refused in one line naming the file and the key (with the closest declared key for a typo),
instead of being dropped or left to fail in a worker. Every declared field survives save and load. The
real services (``python -m bonseyes_py.sm|mp|bm``, what supervisord runs) exit with that one line, and the
configs the roles' templates render for ``inventories/local`` are accepted by the loader and by a real SM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bonseyes_py import settings
from bonseyes_py.bm.config import BMConfig
from bonseyes_py.errors import InputError
from bonseyes_py.mp.config import MPConfig
from bonseyes_py.sm.config import SMConfig

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sm"))
from sm_testlib import Client, free_port, start_sm, stop, wait_ready  # noqa: E402

CONFIGS: dict[str, type] = {"sm.json": SMConfig, "mp.json": MPConfig, "bm.json": BMConfig}
# What each file needs besides the key under test: BM its host ID, MP one of its two signers.
BASE: dict[str, dict[str, Any]] = {"sm.json": {}, "mp.json": {"ca_directory": "/srv/ca"}, "bm.json": {"host_id": "h-1"}}

# Every field but ``directory``, with a value other than its default. The MP needs exactly one of sm_url and
# ca_directory, so it has two sets; test_every_field_is_covered keeps these lists whole as fields are added.
ROUND_TRIPS: list[tuple[type, dict[str, Any]]] = [
    (SMConfig, {"database_url": "postgresql+psycopg://sm@db/sm", "bind": "0.0.0.0:9443", "workers": 3,
                "worker_class": "sync", "threads": 2, "heartbeat_ttl_seconds": 30, "host_licence_seconds": 600,
                "artefact_licence_seconds": 7200, "bm_port": 9444, "bm_timeout_seconds": 2.5,
                "max_body_bytes": 1024, "sqlite_synchronous": "FULL", "heartbeat_flush_seconds": 0.25,
                "pidfile": "/run/sm.pid", "accesslog": "-", "loglevel": "debug"}),
    (MPConfig, {"name": "mp-2", "bind": "0.0.0.0:9445", "workers": 1, "threads": 8, "worker_class": "sync",
                "max_body_bytes": 2048, "max_upload_bytes": 10**9, "database_url": "sqlite:////srv/mp.db",
                "ca_directory": "/srv/ca", "registry_directory": "/srv/registry", "registry_host": "::1",
                "registry_port": 15000, "manage_registry": False,
                "vetting": {"max_size_bytes": 10**8, "forbid_setuid": False, "allowed_setid_paths": ("usr/bin/su",),
                            "forbidden_paths": ("etc/shadow",),
                            "required_labels": ("org.opencontainers.image.source",)},
                "pidfile": "/run/mp.pid", "accesslog": "/var/log/mp.log", "loglevel": "error"}),
    (MPConfig, {"sm_url": "https://sm.example:8443"}),
    (BMConfig, {"host_id": "h-" + "a" * 32, "sm_url": "https://sm.example:8443", "bind_ip": "10.0.0.5", "port": 9444,
                "registry": "registry.example:5001", "registry_scheme": "http", "engine_certs_dir": "/srv/certs.d",
                "docker_url": "unix:///run/docker.sock", "heartbeat_seconds": 5.0, "renew_seconds": 60.0,
                "bl_timeout_seconds": 30.0, "threads": 4, "loglevel": "info"}),
]


def write_config(directory: Path, name: str, content: dict[str, Any] | str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def refusal(directory: Path, name: str, content: dict[str, Any] | str, **overrides: Any) -> str:
    """The one-line message the loader of ``name`` refuses ``content`` with."""
    write_config(directory, name, content)
    with pytest.raises(InputError) as error:
        CONFIGS[name].load(directory, **overrides)
    message = str(error.value.args[0])
    assert error.value.check == "config", message
    assert "\n" not in message, message
    return message


# -- round trip ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "values"), ROUND_TRIPS, ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_every_declared_field_round_trips(tmp_path: Path, cls: type, values: dict[str, Any]) -> None:
    declared = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        default = declared[key].default_factory() if declared[key].default_factory is not dataclasses.MISSING \
            else declared[key].default
        assert default != value, f"{key}: pick a value other than the default"
    config = cls(directory=tmp_path, **values)
    path = config.save()
    written = json.loads(path.read_text())
    assert set(written) == {f.name for f in dataclasses.fields(cls)}
    assert cls.load(tmp_path) == config
    # Moved elsewhere, the file's own location wins over the directory it names.
    moved = tmp_path / "moved"
    moved.mkdir()
    path.rename(moved / path.name)
    assert cls.load(moved) == dataclasses.replace(config, directory=moved)


def test_every_field_is_covered_by_a_round_trip() -> None:
    for cls in CONFIGS.values():
        covered = set().union(*(values for c, values in ROUND_TRIPS if c is cls))
        assert covered == {f.name for f in dataclasses.fields(cls)} - {"directory"}, cls.__name__


def test_save_is_atomic_and_keeps_the_file_mode(tmp_path: Path) -> None:
    config = SMConfig(directory=tmp_path)
    path = config.save()
    os.chmod(path, 0o600)
    dataclasses.replace(config, workers=5).save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert SMConfig.load(tmp_path).workers == 5
    assert [p.name for p in tmp_path.iterdir()] == ["sm.json"]  # no temporary file left behind


def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        SMConfig(directory=tmp_path, workers=0, bm_port=70000).save()
    assert error.value.args[0] == f'{tmp_path / "sm.json"}: "workers" must be at least 1, got 0'
    with pytest.raises(InputError) as error:
        BMConfig(directory=tmp_path, host_id="h-1", heartbeat_seconds="20").save()  # type: ignore[arg-type]
    assert error.value.args[0] == f'{tmp_path / "bm.json"}: "heartbeat_seconds" must be a number, got "20"'
    assert list(tmp_path.iterdir()) == []


# -- unknown keys ----------------------------------------------------------------------------------------


def test_unknown_top_level_key_is_refused_with_the_closest_known_key(tmp_path: Path) -> None:
    message = refusal(tmp_path, "sm.json", {"bm_prot": 9444})
    assert message == f'{tmp_path / "sm.json"}: key "bm_prot" is unknown (did you mean "bm_port"?)'
    message = refusal(tmp_path, "bm.json", {"host_id": "h-1", "heartbeat_secs": 5})
    assert message == f'{tmp_path / "bm.json"}: key "heartbeat_secs" is unknown (did you mean "heartbeat_seconds"?)'


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    message = refusal(tmp_path, "mp.json", {"ca_directory": "/ca", "colour": "blue"})
    assert message.startswith(f'{tmp_path / "mp.json"}: key "colour" is unknown; known keys: accesslog, bind, ')
    assert message.endswith("vetting, worker_class, workers")


def test_unknown_nested_key_is_refused_with_its_full_name(tmp_path: Path) -> None:
    message = refusal(tmp_path, "mp.json", {"ca_directory": "/ca", "vetting": {"max_sise_bytes": 10}})
    assert message == (f'{tmp_path / "mp.json"}: key "vetting.max_sise_bytes" is unknown '
                       f'(did you mean "vetting.max_size_bytes"?)')
    # Scanners are code: a file cannot name one.
    message = refusal(tmp_path, "mp.json", {"ca_directory": "/ca", "vetting": {"scanners": []}})
    assert 'key "vetting.scanners" is unknown' in message


def test_retired_extra_is_accepted_empty_and_refused_with_content(tmp_path: Path) -> None:
    write_config(tmp_path, "sm.json", {"extra": {}})
    assert SMConfig.load(tmp_path).bm_port == 8444
    message = refusal(tmp_path, "sm.json", {"extra": {"bm_port": 9444}})
    assert message.startswith(f'{tmp_path / "sm.json"}: key "extra" is no longer read; move its settings to the top')
    message = refusal(tmp_path, "bm.json", {"host_id": "h-1", "extra": {"x": 1}})
    assert 'key "extra" is no longer read' in message


# -- types and bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("bm.json", {"port": "80a"}, '"port" must be an integer, got "80a"'),
    ("bm.json", {"port": -1}, '"port" must be between 1 and 65535, got -1'),
    ("bm.json", {"port": 65536}, '"port" must be between 1 and 65535, got 65536'),
    ("bm.json", {"port": 8444.0}, '"port" must be an integer, got 8444.0'),
    ("sm.json", {"bm_port": 0}, '"bm_port" must be between 1 and 65535, got 0'),
    ("sm.json", {"workers": True}, '"workers" must be an integer, got true'),
    ("sm.json", {"workers": None}, '"workers" must be an integer, got null'),
    ("sm.json", {"workers": 0}, '"workers" must be at least 1, got 0'),
    ("mp.json", {"manage_registry": 1}, '"manage_registry" must be true or false, got 1'),
    ("mp.json", {"manage_registry": "false"}, '"manage_registry" must be true or false, got "false"'),
    ("mp.json", {"vetting": []}, '"vetting" must be an object, got []'),
    ("mp.json", {"vetting": {"required_labels": "org.x"}}, '"vetting.required_labels" must be a list, got "org.x"'),
    ("mp.json", {"vetting": {"required_labels": ["a", 1]}}, '"vetting.required_labels[1]" must be a string, got 1'),
    ("mp.json", {"vetting": {"max_size_bytes": "2G"}}, '"vetting.max_size_bytes" must be an integer, got "2G"'),
    ("mp.json", {"registry_port": 70000}, '"registry_port" must be between 1 and 65535, got 70000'),
    ("sm.json", {"bm_timeout_seconds": "10"}, '"bm_timeout_seconds" must be a number, got "10"'),
    ("sm.json", {"bm_timeout_seconds": 0}, '"bm_timeout_seconds" must be above 0, got 0'),
    ("bm.json", '{"host_id": "h-1", "heartbeat_seconds": NaN}', '"heartbeat_seconds" must be a finite number, got NaN'),
    ("bm.json", {"renew_seconds": -1}, '"renew_seconds" must be at least 0, got -1'),
    ("sm.json", {"worker_class": "eventlet"}, '"worker_class" must be one of "gthread", "sync", got "eventlet"'),
    ("sm.json", {"loglevel": "verbose"}, '"loglevel" must be one of "debug", "info", "warning", "error", "critical",'
                                         ' got "verbose"'),
    ("sm.json", {"sqlite_synchronous": "OFF"}, '"sqlite_synchronous" must be one of "NORMAL", "FULL", got "OFF"'),
    ("bm.json", {"registry_scheme": "ftp"}, '"registry_scheme" must be one of "https", "http", got "ftp"'),
    ("sm.json", {"pidfile": 5}, '"pidfile" must be null or a string, got 5'),
    ("sm.json", {"bind": ["127.0.0.1:8443"]}, '"bind" must be a string, got ["127.0.0.1:8443"]'),
    ("sm.json", {"bind": ""}, '"bind" must not be empty, got ""'),
    ("sm.json", {"directory": 5}, '"directory" must be a path (a non-empty string), got 5'),
    ("bm.json", {"host_id": ""}, '"host_id" must not be empty, got ""'),
    ("bm.json", {"sm_url": {"url": "https://sm"}}, '"sm_url" must be a string, got {"url": "https://sm"}'),
], ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else None)
def test_mistyped_value_is_refused_naming_file_key_and_expectation(tmp_path: Path, name: str,
                                                                   content: dict[str, Any] | str,
                                                                   expected: str) -> None:
    if isinstance(content, dict):
        content = {**BASE[name], **content}
    assert refusal(tmp_path, name, content) == f"{tmp_path / name}: {expected}"


def test_long_values_are_cut_short_in_the_message(tmp_path: Path) -> None:
    message = refusal(tmp_path, "sm.json", {"workers": "x" * 10_000})
    assert len(message) < len(str(tmp_path)) + 150, message
    assert message.endswith("...")


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    message = refusal(tmp_path, "bm.json", {"port": 8444})
    assert message == f'{tmp_path / "bm.json"}: key "host_id" is required (a string); add it'


def test_rule_across_keys_names_the_file(tmp_path: Path) -> None:
    message = refusal(tmp_path, "mp.json", {"ca_directory": "/ca", "sm_url": "https://sm:8443"})
    assert message.startswith(f"{tmp_path / 'mp.json'}: a Marketplace needs exactly one of sm_url")


def test_overrides_are_checked_like_the_file_and_none_means_not_given(tmp_path: Path) -> None:
    write_config(tmp_path, "sm.json", {"workers": 3})
    assert SMConfig.load(tmp_path, workers=None, bind="127.0.0.1:1").workers == 3
    assert SMConfig.load(tmp_path, workers=4).workers == 4
    message = refusal(tmp_path, "sm.json", {"workers": 3}, workers=0)
    assert message == f'{tmp_path / "sm.json"} (with the options given): "workers" must be at least 1, got 0'


def test_missing_file_says_what_to_run(tmp_path: Path) -> None:
    for name, hint in (("sm.json", "init_sm"), ("mp.json", "bonseyes mp init"), ("bm.json", "bonseyes bm enrol")):
        with pytest.raises(InputError) as error:
            CONFIGS[name].load(tmp_path)
        assert name in error.value.args[0]
        assert hint in error.value.args[0]


# -- the loader on dataclasses of its own: nested sections, lists of them, dicts ---------------------------


@dataclass
class Mirror:
    host: str
    port: int = settings.port(443)


@dataclass
class Example:
    directory: Path
    primary: Mirror = field(default_factory=lambda: Mirror("a.example"))
    mirrors: list[Mirror] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    paths: tuple[Path, ...] = ()
    timeout: float | None = None


def example(data: dict[str, Any]) -> Example:
    return settings.from_mapping(Example, data, source="example.json", fixed={"directory": Path("/x")})


def test_nested_dataclasses_lists_and_dicts_are_converted() -> None:
    loaded = example({"primary": {"host": "p.example", "port": 8443}, "mirrors": [{"host": "m.example"}],
                      "labels": {"a": "b"}, "paths": ["/p", "/q"], "timeout": 3})
    assert loaded == Example(Path("/x"), Mirror("p.example", 8443), [Mirror("m.example")], {"a": "b"},
                             (Path("/p"), Path("/q")), 3.0)
    assert settings.to_json(loaded)["paths"] == ["/p", "/q"]
    assert example(settings.to_json(loaded)) == loaded


@pytest.mark.parametrize(("data", "expected"), [
    ({"primary": {"host": "p", "prot": 1}}, 'key "primary.prot" is unknown (did you mean "primary.port"?)'),
    ({"mirrors": [{"host": "m"}, {"hots": "n"}]}, 'key "mirrors[1].hots" is unknown (did you mean "mirrors[1].host"?)'),
    ({"primary": {"port": 1}}, 'key "primary.host" is required (a string); add it'),
    ({"primary": {"host": "p", "port": 0}}, '"primary.port" must be between 1 and 65535, got 0'),
    ({"primary": "p.example"}, '"primary" must be an object, got "p.example"'),
    ({"labels": {"a": 1}}, '"labels.a" must be a string, got 1'),
    ({"paths": [""]}, '"paths[0]" must be a path (a non-empty string), got ""'),
    ({"timeout": "soon"}, '"timeout" must be null or a number, got "soon"'),
])
def test_nested_refusals_name_the_full_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as error:
        example(data)
    assert error.value.args[0] == f"example.json: {expected}"


# -- the real services -----------------------------------------------------------------------------------


def run_service(package: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    return subprocess.run([sys.executable, "-m", f"bonseyes_py.{package}", str(directory)], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


@pytest.mark.integration
@pytest.mark.parametrize(("package", "content", "expected"), [
    ("sm", {"bm_prot": 9444}, 'key "bm_prot" is unknown (did you mean "bm_port"?)'),
    ("mp", {"ca_directory": "/srv/ca", "registry_port": 70000},
     '"registry_port" must be between 1 and 65535, got 70000'),
    ("bm", {"host_id": "h-1", "port": "80a"}, '"port" must be an integer, got "80a"'),
])
def test_services_refuse_to_start_on_a_bad_config_in_one_line(tmp_path: Path, package: str, content: dict[str, Any],
                                                              expected: str) -> None:
    path = write_config(tmp_path, f"{package}.json", content)
    result = run_service(package, tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: config: {path}: {expected}"]


# -- what the roles' templates render ----------------------------------------------------------------------


def render_role_templates(tmp_path: Path, variables: dict[str, Any]) -> None:
    """Render sm.json.j2 and bm.json.j2 with ``inventories/local`` and each role's defaults (as the roles do).

    Two throw-away roles reuse the real roles' ``defaults`` and ``templates`` directories, so variable
    precedence is the roles' own (inventory over role defaults) without running the roles' other tasks.
    """
    roles = tmp_path / "roles"
    for role, template, directory in (("security_manager", "sm.json.j2", "security_manager_dir"),
                                      ("bonseyes_module", "bm.json.j2", "bonseyes_module_dir")):
        render = roles / f"render_{role}"
        (render / "tasks").mkdir(parents=True)
        (render / "defaults").symlink_to(REPO / "roles" / role / "defaults")
        (render / "templates").symlink_to(REPO / "roles" / role / "templates")
        (render / "tasks" / "main.yml").write_text(textwrap.dedent(f"""\
            - name: Render {template}
              ansible.builtin.template:
                src: {template}
                dest: "{{{{ {directory} }}}}/{template.removesuffix('.j2')}"
                mode: "0600"
            """))
    playbook = tmp_path / "render.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Render the service configs
          hosts: localhost
          gather_facts: false
          roles: [render_security_manager, render_bonseyes_module]
        """))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(roles),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_NOCOLOR="1")
    extra = [item for key, value in variables.items() for item in ("-e", f"{key}={value}")]
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "inventories/local",
                             *extra, str(playbook)], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_configs_the_role_templates_render_are_accepted_and_the_sm_starts_on_its(tmp_path: Path) -> None:
    from bonseyes_py.sm import init_sm

    sm_dir, bm_dir = tmp_path / "sm", tmp_path / "bm"
    port = free_port()
    init_sm(sm_dir)  # what the role's bootstrap does before it templates sm.json over the instance
    bm_dir.mkdir()
    render_role_templates(tmp_path, {"bonseyes_state_dir": tmp_path / "state", "security_manager_dir": sm_dir,
                                     "bonseyes_sm_port": port, "bonseyes_module_dir": bm_dir,
                                     "bonseyes_module_host_id": "h-" + "b" * 32})
    sm = SMConfig.load(sm_dir)
    assert (sm.bind, sm.loglevel) == (f"127.0.0.1:{port}", "warning")
    bm = BMConfig.load(bm_dir)
    assert (bm.host_id, bm.bind_ip, bm.port) == ("h-" + "b" * 32, "127.0.0.1", 18444)

    log = sm_dir / "server.log"
    process = start_sm(sm_dir, log)
    try:
        wait_ready(Client(f"https://127.0.0.1:{port}", sm.admin_certificate, sm.admin_key, sm.ca_bundle), process, log)
    finally:
        stop(process)


def test_init_sm_refuses_a_bad_setting_before_creating_anything(tmp_path: Path) -> None:
    """A value sm.json could not hold stops ``init_sm`` before the CA, the admin or the directory exist."""
    from bonseyes_py.sm.initialise import init_sm

    target = tmp_path / "sm"
    with pytest.raises(InputError, match='"bm_port" must be an integer') as raised:
        init_sm(target, bm_port="9444x", root_passphrase=b"correct horse battery staple")
    assert "\n" not in str(raised.value)
    assert not target.exists()


@pytest.mark.parametrize(("content", "message"), [
    ('{"algorithm": "ec-p256"}', 'key "trust_domain" is required'),
    ('{"trust_domain": "vp.example", "trust_domian": "x"}', 'key "trust_domian" is unknown'),
    ('{"trust_domain": "vp.example", "algorithm": "dsa"}', '"algorithm" must be one of'),
    ('{"trust_domain": ""}', '"trust_domain"'),
])
def test_a_hand_edited_ca_json_is_refused_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    """ca.json goes through the same loader: no KeyError traceback, no key silently ignored."""
    from bonseyes_py.pki.ca import CertificateAuthority

    authority = CertificateAuthority.init(tmp_path / "ca")
    (tmp_path / "ca" / "ca.json").write_text(content)
    with pytest.raises(InputError, match=message) as raised:
        CertificateAuthority.load(tmp_path / "ca")
    assert "\n" not in str(raised.value)
    assert "ca.json" in str(raised.value)
    assert authority.trust_domain


def test_enrol_host_refuses_a_bad_setting_before_registering_at_the_sm(tmp_path: Path) -> None:
    """Checked before the owner's files are read or the SM is called (neither exists here)."""
    from bonseyes_py.bm.enrol import OwnerIdentity, enrol_host

    owner = OwnerIdentity(certificate=tmp_path / "missing.pem", key=tmp_path / "missing.key")
    with pytest.raises(InputError, match='"heartbeat_seconds" must be') as raised:
        enrol_host(tmp_path / "bm", sm_url="https://127.0.0.1:1", ca_bundle=tmp_path / "ca.pem", owner=owner,
                   bind_ip="127.0.0.1", port=9444, heartbeat_seconds="often")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "bm").exists()


def test_init_mp_refuses_a_bad_setting_before_issuing_an_identity(tmp_path: Path) -> None:
    from bonseyes_py.mp.server import init_mp

    with pytest.raises(InputError, match='"workers" must be') as raised:
        init_mp(tmp_path / "mp", ca_directory=tmp_path / "no-ca", workers="many")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "mp").exists()
