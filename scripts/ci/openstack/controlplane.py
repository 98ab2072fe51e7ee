"""Start and stop a real OpenStack control plane on 127.0.0.1, for tests and benchmarks.

Runs with the Python of the OpenStack venv that ``install.sh`` fills (it imports openstacksdk from
there). What runs, each as its own process:

- RabbitMQ (Debian ``rabbitmq-server``) with its own ``epmd``, as the oslo.messaging transport.
  The ``fake:/`` driver keeps its queues in a Python dict of one process, so nova-api (a WSGI app),
  nova-conductor, nova-scheduler and nova-compute would all have to share one interpreter; Nova's
  commands set up configuration, logging and RPC servers per process and cannot be stacked without
  re-creating Nova's own functional-test harness. A real broker keeps every service the stock one.
- Keystone, Placement, Glance, Nova API and Neutron API: their stock WSGI applications
  (``<service>.wsgi.*:application``) under gunicorn, each on its own port.
- nova-conductor, nova-scheduler, nova-compute (``compute_driver = fake.FakeDriver``): stock commands.
- neutron-server's API with ML2 (``openvswitch`` mechanism driver, VXLAN tenant networks) and no
  agent processes. ML2 binds a port only to a host with a live L2 agent, so the start writes one
  Open vSwitch agent record for the compute host into Neutron's own ``agents`` table (the row an
  agent's first state report would create) and sets ``agent_down_time`` high enough that it stays
  alive. Nothing else about Neutron is stubbed: ports, security groups, networks, subnets and
  routers are Neutron's own.

Every start resets all databases (a fresh private PostgreSQL cluster, and Neutron's SQLite file,
under the state directory: see ``start_postgres`` for why not SQLite throughout), because the fake driver
makes a new compute-node identity each start, and because tests want a known, empty cloud. The
result is a ``clouds.yaml`` (0600) in the state directory with an admin cloud ``bonseyes-local``.

    python controlplane.py start|stop|status    (state in $OPENSTACK_STATE, ports from $OPENSTACK_PORT_BASE)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STATE = Path(os.environ.get("OPENSTACK_STATE", "/var/lib/bonseyes/openstack"))
PORT_BASE = int(os.environ.get("OPENSTACK_PORT_BASE", "18770"))
VENV = Path(sys.prefix)
BIN = Path(sys.prefix) / "bin"
HOST = "127.0.0.1"
COMPUTE_HOST = "bonseyes-compute"
REGION = "RegionOne"
CLOUD_NAME = "bonseyes-local"


@dataclass(frozen=True)
class Ports:
    keystone: int = PORT_BASE
    placement: int = PORT_BASE + 1
    glance: int = PORT_BASE + 2
    nova: int = PORT_BASE + 3
    neutron: int = PORT_BASE + 4
    rabbit: int = PORT_BASE + 5
    rabbit_dist: int = PORT_BASE + 6
    epmd: int = PORT_BASE + 7
    postgres: int = PORT_BASE + 8


PORTS = Ports()
ETC = STATE / "etc"
DB = STATE / "db"
LOG = STATE / "log"
RUN = STATE / "run"


def url(port: int, path: str = "") -> str:
    return f"http://{HOST}:{port}{path}"


def postgres_url(name: str) -> str:
    return f"postgresql+psycopg2://postgres@{HOST}:{PORTS.postgres}/{name}"


def sqlite_url(name: str) -> str:
    # Several processes share these files: wait for a lock (60 s) instead of failing after 5 s.
    return f"sqlite:///{DB / (name + '.sqlite')}?timeout=60"


def log(message: str) -> None:
    print(f"[openstack] {message}", flush=True)


# -- configuration -------------------------------------------------------------------------------------


def authtoken(password: str, user: str) -> str:
    return f"""
[keystone_authtoken]
www_authenticate_uri = {url(PORTS.keystone, '/v3')}
auth_url = {url(PORTS.keystone, '/v3')}
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = {user}
password = {password}
service_token_roles_required = true
"""


def service_auth(section: str, password: str, user: str) -> str:
    return f"""
[{section}]
auth_url = {url(PORTS.keystone, '/v3')}
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = {user}
password = {password}
region_name = {REGION}
"""


def transport() -> str:
    return f"rabbit://guest:guest@{HOST}:{PORTS.rabbit}/"


def write_configs(password: str) -> None:
    (ETC / "keystone").mkdir(parents=True)
    (ETC / "keystone" / "keystone.conf").write_text(f"""
[DEFAULT]
log_dir = {LOG}
[database]
connection = {postgres_url('keystone')}
[token]
provider = fernet
[fernet_tokens]
key_repository = {STATE / 'keystone-fernet'}
[fernet_receipts]
key_repository = {STATE / 'keystone-fernet-receipts'}
[credential]
key_repository = {STATE / 'keystone-credential'}
""")
    (ETC / "placement").mkdir()
    (ETC / "placement" / "placement.conf").write_text(f"""
[placement_database]
connection = {postgres_url('placement')}
[api]
auth_strategy = keystone
{authtoken(password, 'placement')}
""")
    (ETC / "glance").mkdir()
    shutil.copy(VENV / "etc" / "glance" / "glance-api-paste.ini", ETC / "glance" / "glance-api-paste.ini")
    (ETC / "glance" / "glance-api.conf").write_text(f"""
[DEFAULT]
enabled_backends = fs:file
[database]
connection = {postgres_url('glance')}
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {STATE / 'images'}
[os_glance_staging_store]
filesystem_store_datadir = {STATE / 'images-staging'}
[os_glance_tasks_store]
filesystem_store_datadir = {STATE / 'images-tasks'}
[paste_deploy]
flavor = keystone
config_file = {ETC / 'glance' / 'glance-api-paste.ini'}
[oslo_concurrency]
lock_path = {STATE / 'locks'}
{authtoken(password, 'glance')}
""")
    (ETC / "neutron" / "plugins" / "ml2").mkdir(parents=True)
    shutil.copy(VENV / "etc" / "neutron" / "api-paste.ini", ETC / "neutron" / "api-paste.ini")
    (ETC / "neutron" / "neutron.conf").write_text(f"""
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = {transport()}
api_paste_config = {ETC / 'neutron' / 'api-paste.ini'}
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
# No agent process runs: the one agent record written at start must never be seen as down.
agent_down_time = 2000000
api_workers = 1
rpc_workers = 0
state_path = {STATE / 'neutron'}
[database]
connection = {sqlite_url('neutron')}
[oslo_concurrency]
lock_path = {STATE / 'locks'}
{authtoken(password, 'neutron')}
{service_auth('nova', password, 'nova')}
""")
    (ETC / "neutron" / "plugins" / "ml2" / "ml2_conf.ini").write_text("""
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security
[ml2_type_vxlan]
vni_ranges = 1:10000
[ml2_type_flat]
flat_networks = public
[securitygroup]
enable_security_group = true
""")
    (ETC / "nova").mkdir()
    shutil.copy(VENV / "etc" / "nova" / "api-paste.ini", ETC / "nova" / "api-paste.ini")
    (ETC / "nova" / "nova.conf").write_text(f"""
[DEFAULT]
host = {COMPUTE_HOST}
my_ip = {HOST}
transport_url = {transport()}
compute_driver = fake.FakeDriver
state_path = {STATE / 'nova'}
log_dir = {LOG}
# Servers of a premise boot in parallel; the fake driver needs no retries nor waits.
max_concurrent_builds = 20
# SQLite serialises writers: a small RPC thread pool keeps the conductor from racing itself.
executor_thread_pool_size = 4
[wsgi]
api_paste_config = {ETC / 'nova' / 'api-paste.ini'}
[api]
auth_strategy = keystone
[api_database]
connection = {postgres_url('nova_api')}
[database]
connection = {postgres_url('nova_cell1')}
[oslo_messaging_rabbit]
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = -1
[oslo_concurrency]
lock_path = {STATE / 'locks'}
[vnc]
enabled = false
[glance]
region_name = {REGION}
[quota]
driver = nova.quota.DbQuotaDriver
{authtoken(password, 'nova')}
{service_auth('placement', password, 'placement')}
{service_auth('neutron', password, 'neutron')}
""")


# -- processes -----------------------------------------------------------------------------------------


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Start one service in its own process group; its pid goes to run/<name>.pid for ``stop``."""
    out = open(LOG / f"{name}.out", "ab")  # noqa: SIM115 - handed to the child, closed below
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True, cwd=STATE)
    out.close()
    (RUN / f"{name}.pid").write_text(str(proc.pid))


def wsgi(name: str, module: str, port: int, env: dict[str, str], threads: int = 8) -> None:
    spawn(name, [sys.executable, str(Path(__file__).with_name("wsgi_serve.py")), name, f"{HOST}:{port}", module],
          env={**env, "BONSEYES_WSGI_THREADS": str(threads)})


def use_wal(names: list[str]) -> None:
    """SQLite in write-ahead-log mode: readers in one service no longer block writers in another."""
    for name in names:
        with sqlite3.connect(DB / f"{name}.sqlite") as connection:
            connection.execute("PRAGMA journal_mode=WAL")


def wait_port(port: int, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        check_alive(name)
        time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on {HOST}:{port} within {timeout:.0f} s; see {LOG / (name + '.out')}")


def wait_postgres_ready(timeout: float = 120.0) -> None:
    """PostgreSQL listens before it accepts sessions ("the database system is starting up"): wait for both."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = subprocess.run([str(pg_bin() / "pg_isready"), "-h", HOST, "-p", str(PORTS.postgres), "-U", "postgres"],
                               capture_output=True, check=False)
        if ready.returncode == 0:
            return
        check_alive("postgres")
        time.sleep(0.2)
    raise SystemExit(f"postgres did not accept sessions within {timeout:.0f} s; see {LOG / 'postgres.out'}")


def check_alive(name: str) -> None:
    pid = int((RUN / f"{name}.pid").read_text())
    try:
        finished, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        finished, status = 0, 0
    if finished:
        tail = (LOG / f"{name}.out").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} exited with status {status}:\n{tail}")


def run(argv: list[str], **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=STATE, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}): {' '.join(argv)}\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")


def stop() -> None:
    if not RUN.is_dir():
        return
    pids = {}
    for pid_file in RUN.glob("*.pid"):
        pids[pid_file.stem] = int(pid_file.read_text())
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for name, pid in pids.items():
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        (RUN / f"{name}.pid").unlink(missing_ok=True)
    if pids:
        log(f"stopped {', '.join(sorted(pids))}")


# -- bootstrap -----------------------------------------------------------------------------------------


def start() -> None:
    started = time.monotonic()
    stop()
    if STATE.exists():
        shutil.rmtree(STATE)
    for directory in (ETC, DB, LOG, RUN, STATE / "locks", STATE / "images", STATE / "images-staging",
                      STATE / "images-tasks", STATE / "nova", STATE / "neutron", STATE / "rabbit"):
        directory.mkdir(parents=True, exist_ok=True)
    # Traversable (not listable) so that PostgreSQL, which runs as its own user, reaches its directory.
    STATE.chmod(0o711)
    password = secrets.token_urlsafe(18)
    write_configs(password)

    # The broker first: it takes a few seconds and the migrations below run meanwhile.
    rabbit = STATE / "rabbit"
    rabbit_env = {"HOME": str(rabbit), "RABBITMQ_NODENAME": f"bonseyes{PORTS.rabbit}@localhost",
                  "RABBITMQ_NODE_IP_ADDRESS": HOST, "RABBITMQ_NODE_PORT": str(PORTS.rabbit),
                  "RABBITMQ_DIST_PORT": str(PORTS.rabbit_dist), "ERL_EPMD_PORT": str(PORTS.epmd),
                  "ERL_EPMD_ADDRESS": HOST, "RABBITMQ_MNESIA_BASE": str(rabbit / "mnesia"),
                  "RABBITMQ_LOG_BASE": str(LOG), "RABBITMQ_ENABLED_PLUGINS_FILE": str(rabbit / "enabled_plugins"),
                  "RABBITMQ_CONFIG_FILE": str(rabbit / "rabbitmq"), "RABBITMQ_ADVANCED_CONFIG_FILE":
                  str(rabbit / "advanced.config"), "RABBITMQ_PID_FILE": str(rabbit / "rabbit.pid")}
    (rabbit / "enabled_plugins").write_text("[].\n")
    spawn("epmd", ["epmd", "-port", str(PORTS.epmd), "-address", HOST], env=rabbit_env)
    spawn("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=rabbit_env)

    start_postgres()
    wait_port(PORTS.postgres, "postgres")
    wait_postgres_ready()
    for database in ("keystone", "glance", "placement", "nova_api", "nova_cell0", "nova_cell1"):
        run(["runuser", "-u", "postgres", "--", str(pg_bin() / "createdb"), "-h", HOST, "-p", str(PORTS.postgres),
             database])

    kconf = ETC / "keystone" / "keystone.conf"
    manage = [str(BIN / "keystone-manage"), "--config-file", str(kconf)]
    run([*manage, "db_sync"])
    run([*manage, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root"])
    run([*manage, "credential_setup", "--keystone-user", "root", "--keystone-group", "root"])
    # The password goes by environment (keystone-manage reads OS_BOOTSTRAP_PASSWORD), not argv: argv is
    # world-readable in /proc, is printed by run() on failure, and a token starting with "-" (1 in 64
    # token_urlsafe values) was taken by argparse for an option ("expected one argument").
    run([*manage, "bootstrap", "--bootstrap-admin-url",
         url(PORTS.keystone, "/v3"), "--bootstrap-public-url", url(PORTS.keystone, "/v3"),
         "--bootstrap-internal-url", url(PORTS.keystone, "/v3"), "--bootstrap-region-id", REGION],
        env={**os.environ, "OS_BOOTSTRAP_PASSWORD": password})
    wsgi("keystone", "keystone.wsgi.api", PORTS.keystone, {"OS_KEYSTONE_CONFIG_DIR": str(ETC / "keystone")})

    run([str(BIN / "placement-manage"), "--config-file", str(ETC / "placement" / "placement.conf"), "db", "sync"])
    run([str(BIN / "glance-manage"), "--config-file", str(ETC / "glance" / "glance-api.conf"), "db_sync"])
    neutron_conf = ["--config-file", str(ETC / "neutron" / "neutron.conf"),
                    "--config-file", str(ETC / "neutron" / "plugins" / "ml2" / "ml2_conf.ini")]
    # Neutron's alembic migrations alter constraints, which SQLite cannot do; Neutron's own unit
    # tests build the schema from the models instead. Do the same, then stamp the migration heads.
    run([sys.executable, "-c", "import sqlalchemy, sys; from neutron.db.migration.models import head; "
         "head.get_metadata().create_all(sqlalchemy.create_engine(sys.argv[1]))", sqlite_url("neutron")])
    run([str(BIN / "neutron-db-manage"), *neutron_conf, "stamp", "heads"])
    register_l2_agent()
    nconf = ["--config-file", str(ETC / "nova" / "nova.conf")]
    nova_manage = [str(BIN / "nova-manage"), *nconf]
    run([*nova_manage, "api_db", "sync"])
    run([*nova_manage, "cell_v2", "map_cell0", "--database_connection", postgres_url("nova_cell0")])
    run([*nova_manage, "cell_v2", "create_cell", "--name", "cell1", "--verbose"])
    run([*nova_manage, "db", "sync"])

    use_wal(["neutron"])
    wait_port(PORTS.keystone, "keystone")
    register_services(password)
    wsgi("placement", "placement.wsgi.api", PORTS.placement, {"OS_PLACEMENT_CONFIG_DIR": str(ETC / "placement")})
    wsgi("glance", "glance.wsgi.api", PORTS.glance, {"OS_GLANCE_CONFIG_DIR": str(ETC / "glance")})
    wsgi("neutron", "neutron.wsgi.api", PORTS.neutron, {
        "OS_NEUTRON_CONFIG_DIR": str(ETC / "neutron"),
        "OS_NEUTRON_CONFIG_FILES": "neutron.conf;plugins/ml2/ml2_conf.ini"}, threads=1)
    wait_port(PORTS.rabbit, "rabbitmq")
    for service in ("conductor", "scheduler", "compute"):
        spawn(f"nova-{service}", [str(BIN / f"nova-{service}"), *nconf])
    wsgi("nova-api", "nova.wsgi.osapi_compute", PORTS.nova, {"OS_NOVA_CONFIG_DIR": str(ETC / "nova")}, threads=2)
    for name, port in (("placement", PORTS.placement), ("glance", PORTS.glance), ("neutron", PORTS.neutron),
                       ("nova-api", PORTS.nova)):
        wait_port(port, name)
    wait_compute_discovered(nova_manage)
    wait_placement_inventory(password)
    write_clouds_yaml(password)
    log(f"control plane up in {time.monotonic() - started:.1f} s; clouds.yaml: {STATE / 'clouds.yaml'}")


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise SystemExit("PostgreSQL server binaries are missing: run scripts/ci/install_postgres.sh")
    return found[-1].parent


def start_postgres() -> None:
    """A private PostgreSQL cluster for Keystone, Glance, Placement and Nova.

    SQLite stays for Neutron only (one API thread, schema built from its models). With SQLite, every
    service that writes from several threads or processes at once got "database is locked" answered
    at once (a lock upgrade SQLite refuses to wait for, whatever the busy timeout): Keystone token
    requests failed with HTTP 500 at start-up, Placement allocation claims failed ("No valid host"),
    and Nova builds failed at random, seen here with 3-6 parallel server creates. PostgreSQL (Debian,
    the same binaries the SM tests use) has no such failure.
    """
    data = STATE / "postgres"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    run(["runuser", "-u", "postgres", "--", str(pg_bin() / "initdb"), "-D", str(data), "-A", "trust", "-U",
         "postgres", "--no-sync"])
    spawn("postgres", ["runuser", "-u", "postgres", "--", str(pg_bin() / "postgres"), "-D", str(data), "-p",
                       str(PORTS.postgres), "-h", HOST, "-k", str(data), "-c", "fsync=off", "-c",
                       "max_connections=300", "-c", "synchronous_commit=off"])


def register_l2_agent() -> None:
    """Write the Open vSwitch agent record that ML2 needs to bind ports on the compute host.

    This is the row ``neutron.db.agents_db`` creates on an agent's first state report; no agent
    process runs (there is no Open vSwitch here), which ``agent_down_time`` in neutron.conf allows.
    """
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    configurations = {"bridge_mappings": {}, "tunnel_types": ["vxlan"], "tunneling_ip": HOST,
                      "l2_population": False, "ovs_hybrid_plug": False, "datapath_type": "system",
                      "integration_bridge": "br-int", "ovs_capabilities": {"datapath_types": ["system"],
                                                                             "iface_types": ["vxlan"]}}
    with sqlite3.connect(DB / "neutron.sqlite") as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(agents)")}
        row = {"id": str(uuid.uuid4()), "agent_type": "Open vSwitch agent", "binary": "neutron-openvswitch-agent",
               "topic": "N/A", "host": COMPUTE_HOST, "admin_state_up": 1, "created_at": now, "started_at": now,
               "heartbeat_timestamp": now, "description": "record only: no agent process runs (tests/openstack)",
               "configurations": json.dumps(configurations), "load": 0, "availability_zone": None,
               "resource_versions": None, "resources_synced": None}
        row = {key: value for key, value in row.items() if key in columns}
        connection.execute(f"INSERT INTO agents ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                           list(row.values()))


def register_services(password: str) -> None:
    import openstack

    cloud = openstack.connect(auth_url=url(PORTS.keystone, "/v3"), username="admin", password=password,
                              project_name="admin", user_domain_name="Default", project_domain_name="Default",
                              region_name=REGION)
    identity = cloud.identity
    service_project = identity.create_project(name="service", domain_id="default")
    # Service users hold "service" too: the services check it on the service tokens they accept.
    roles = [identity.find_role("admin"), identity.find_role("service") or identity.create_role(name="service")]
    for user, service_type, port, path in (("nova", "compute", PORTS.nova, "/v2.1"),
                                            ("placement", "placement", PORTS.placement, ""),
                                            ("glance", "image", PORTS.glance, ""),
                                            ("neutron", "network", PORTS.neutron, "")):
        account = identity.create_user(name=user, password=password, domain_id="default")
        for role in roles:
            identity.assign_project_role_to_user(service_project, account, role)
        service = identity.create_service(name=user, type=service_type)
        for interface in ("public", "internal", "admin"):
            identity.create_endpoint(service_id=service.id, interface=interface, url=url(port, path),
                                     region_id=REGION)


def wait_compute_discovered(nova_manage: list[str], timeout: float = 180.0) -> None:
    """nova-compute registers itself through the conductor; then the cell learns about its node."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in ("nova-conductor", "nova-scheduler", "nova-compute"):
            check_alive(name)
        import psycopg2

        with psycopg2.connect(host=HOST, port=PORTS.postgres, user="postgres", dbname="nova_cell1") as connection, \
                connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM compute_nodes WHERE deleted = 0")
            nodes = cursor.fetchone()[0]
        if nodes:
            run([*nova_manage, "cell_v2", "discover_hosts", "--verbose"])
            return
        time.sleep(0.5)
    raise SystemExit(f"nova-compute registered no compute node within {timeout:.0f} s; see {LOG}")


def wait_placement_inventory(password: str, timeout: float = 120.0) -> None:
    """The scheduler finds no host until nova-compute has reported its inventory to Placement."""
    import openstack

    cloud = openstack.connect(auth_url=url(PORTS.keystone, "/v3"), username="admin", password=password,
                              project_name="admin", user_domain_name="Default", project_domain_name="Default",
                              region_name=REGION)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for provider in cloud.placement.resource_providers():
            response = cloud.placement.get(f"/resource_providers/{provider.id}/inventories")
            if "VCPU" in response.json().get("inventories", {}):
                return
        time.sleep(0.5)
    raise SystemExit(f"nova-compute reported no inventory to Placement within {timeout:.0f} s; see {LOG}")


def write_clouds_yaml(password: str) -> None:
    clouds = {"clouds": {CLOUD_NAME: {
        "auth": {"auth_url": url(PORTS.keystone, "/v3"), "username": "admin", "password": password,
                 "project_name": "admin", "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": REGION, "identity_api_version": 3, "interface": "public"}}}
    path = STATE / "clouds.yaml"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(clouds, handle, indent=2)  # JSON is YAML; no PyYAML import needed here.


def status() -> int:
    down = []
    for pid_file in sorted(RUN.glob("*.pid")) if RUN.is_dir() else []:
        try:
            os.killpg(int(pid_file.read_text()), 0)
        except ProcessLookupError:
            down.append(pid_file.stem)
    running = RUN.is_dir() and any(RUN.glob("*.pid"))
    print(json.dumps({"state": str(STATE), "running": running and not down, "down": down,
                      "clouds_yaml": str(STATE / "clouds.yaml")}))
    return 0 if running and not down else 1


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "status"
    if command == "start":
        start()
    elif command == "stop":
        stop()
    elif command == "status":
        return status()
    else:
        raise SystemExit(f"usage: {sys.argv[0]} start|stop|status")
    return 0


if __name__ == "__main__":
    sys.exit(main())
