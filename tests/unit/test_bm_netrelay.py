"""BM's byte relay (bm/netrelay.py) on real loopback TCP and Unix sockets: a `--network none` container's network."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bonseyes_py.bm.netrelay import INBOUND, OUTBOUND, NetRelay, Route, plan_routes, relay_map
from bonseyes_py.errors import InputError

SOURCE_IP = "127.0.0.9"  # not 127.0.0.1: proves the relay dials from the host's IP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_once(listener: socket.socket, seen: list[str]) -> None:
    """Answer one connection with ``<peer ip> <what it got>`` (what it got ends at the first newline)."""
    connection, peer = listener.accept()
    with connection:
        seen.append(peer[0] if isinstance(peer, tuple) else "unix")
        data = b""
        while not data.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            data += chunk
        connection.sendall(f"{seen[-1]} ".encode() + data)


def _exchange(sock: socket.socket, message: bytes) -> bytes:
    sock.settimeout(10)
    sock.sendall(message)
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


@pytest.fixture
def relay() -> Iterator[NetRelay]:
    relay = NetRelay(SOURCE_IP)
    yield relay
    relay.close_all()


@pytest.fixture
def deep_dir(tmp_path: Path) -> Path:
    """A directory whose socket paths exceed the 108 bytes of a Unix socket address, as a BM state dir may."""
    directory = tmp_path / ("d" * 60) / ("e" * 60)
    directory.mkdir(parents=True)
    return directory


def test_outbound_socket_reaches_the_tcp_target_from_the_hosts_ip(relay: NetRelay, deep_dir: Path) -> None:
    assert len(str(deep_dir / "sm.sock")) > 108
    with socket.create_server(("127.0.0.1", 0)) as target:
        seen: list[str] = []
        server = threading.Thread(target=_serve_once, args=(target, seen))
        server.start()
        relay.open("rt", deep_dir, [Route(OUTBOUND, "sm.sock", "127.0.0.1", target.getsockname()[1])])
        path = deep_dir / "sm.sock"
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        dirfd = os.open(deep_dir, os.O_RDONLY | os.O_DIRECTORY)  # the path is too long to connect to directly
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(f"/proc/self/fd/{dirfd}/sm.sock")
                answer = _exchange(client, b"hello through the relay\n")
        finally:
            os.close(dirfd)
        server.join(10)
    assert answer == f"{SOURCE_IP} hello through the relay\n".encode()
    assert seen == [SOURCE_IP]


def test_inbound_port_reaches_bl_once_it_listens(relay: NetRelay, tmp_path: Path) -> None:
    port = _free_port()
    relay.open("rt", tmp_path, [Route(INBOUND, "in.sock", "127.0.0.1", port)])
    answers: list[bytes] = []

    def peer() -> None:  # dials before BL listens: the relay holds the connection until BL's socket exists
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            answers.append(_exchange(client, b"from the previous stage\n"))

    dialler = threading.Thread(target=peer)
    dialler.start()
    with socket.socket(socket.AF_UNIX) as bl:
        bl.bind(str(tmp_path / "in.sock"))
        bl.listen(1)
        _serve_once(bl, [])
    dialler.join(10)
    assert answers == [b"unix from the previous stage\n"]


def test_closed_routes_stop_listening(relay: NetRelay, tmp_path: Path) -> None:
    port = _free_port()
    with socket.create_server(("127.0.0.1", 0)) as target:
        relay.open("rt", tmp_path, [Route(OUTBOUND, "next-0.sock", "127.0.0.1", target.getsockname()[1]),
                                    Route(INBOUND, "in.sock", "127.0.0.1", port)])
        assert relay.routes_open("rt") == 2
        relay.close("rt")
    assert relay.routes_open("rt") == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError):
        client.connect(str(tmp_path / "next-0.sock"))


def test_unreachable_target_closes_the_containers_connection(relay: NetRelay, tmp_path: Path) -> None:
    relay.open("rt", tmp_path, [Route(OUTBOUND, "sm.sock", "127.0.0.1", _free_port())])  # nothing listens there
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(tmp_path / "sm.sock"))
        try:
            answer = _exchange(client, b"anyone?\n")
        except ConnectionResetError:  # closed with the request unread
            answer = b""
        assert answer == b""


def test_a_busy_inbound_port_is_reported_and_nothing_stays_open(relay: NetRelay, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken, socket.create_server(("127.0.0.1", 0)) as target:
        routes = [Route(OUTBOUND, "sm.sock", "127.0.0.1", target.getsockname()[1]),
                  Route(INBOUND, "in.sock", "127.0.0.1", taken.getsockname()[1])]
        with pytest.raises(OSError):
            relay.open("rt", tmp_path, routes)
    assert relay.routes_open("rt") == 0
    with socket.socket(socket.AF_UNIX) as client, pytest.raises(ConnectionRefusedError):
        client.connect(str(tmp_path / "sm.sock"))


def test_routes_survive_a_record_round_trip() -> None:
    route = Route(OUTBOUND, "next-1.sock", "127.0.0.3", 40123)
    assert Route.from_dict(route.view()) == route


def test_relayed_connections_leave_no_descriptors_behind(relay: NetRelay, tmp_path: Path) -> None:
    """Many short connections (pipes, sockets and threads per connection) then close: nothing leaks."""
    with socket.create_server(("127.0.0.1", 0)) as target:
        target.settimeout(10)
        relay.open("rt", tmp_path, [Route(OUTBOUND, "sm.sock", "127.0.0.1", target.getsockname()[1])])
        before = len(os.listdir("/proc/self/fd"))
        for index in range(50):
            seen: list[str] = []
            server = threading.Thread(target=_serve_once, args=(target, seen))
            server.start()
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(tmp_path / "sm.sock"))
                assert _exchange(client, f"request {index}\n".encode()) == f"{SOURCE_IP} request {index}\n".encode()
            server.join(10)
        for _ in range(100):  # the relay's threads close their ends just after the answer
            if len(os.listdir("/proc/self/fd")) <= before:
                break
            threading.Event().wait(0.02)
        assert len(os.listdir("/proc/self/fd")) <= before
        relay.close("rt")
    assert len(os.listdir("/proc/self/fd")) < before


def test_a_flood_of_connections_is_refused_beyond_the_limit(tmp_path: Path) -> None:
    relay = NetRelay(SOURCE_IP, max_connections=2)
    held: list[socket.socket] = []
    try:
        with socket.create_server(("127.0.0.1", 0), backlog=16) as target:  # accepts, never answers
            relay.open("rt", tmp_path, [Route(OUTBOUND, "sm.sock", "127.0.0.1", target.getsockname()[1])])
            for _ in range(2):
                client = socket.socket(socket.AF_UNIX)
                client.connect(str(tmp_path / "sm.sock"))
                held.append(client)
            with socket.socket(socket.AF_UNIX) as extra:
                extra.connect(str(tmp_path / "sm.sock"))
                extra.settimeout(10)
                assert extra.recv(1) == b""  # closed at once, not held
            assert relay.refused == 1
            for client in held:  # the two within the limit are still relayed
                client.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    client.recv(1)
    finally:
        for client in held:
            client.close()
        relay.close_all()


def test_routes_of_a_middle_stage_and_what_bl_reads() -> None:
    routes = plan_routes(sm_url="https://127.0.0.1:8443", bind_ip="127.0.0.2", bm_port=8444, stage_env={
        "BONSEYES_LISTEN": "127.0.0.2:41000", "BONSEYES_NEXT": "https://127.0.0.3:41001, https://127.0.0.4:41002"})
    assert routes == [Route(OUTBOUND, "sm.sock", "127.0.0.1", 8443), Route(OUTBOUND, "bm.sock", "127.0.0.2", 8444),
                      Route(INBOUND, "in.sock", "127.0.0.2", 41000), Route(OUTBOUND, "next-0.sock", "127.0.0.3", 41001),
                      Route(OUTBOUND, "next-1.sock", "127.0.0.4", 41002)]
    assert relay_map(routes) == {"127.0.0.1:8443": "sm.sock", "127.0.0.2:8444": "bm.sock", "listen": "in.sock",
                                 "127.0.0.3:41001": "next-0.sock", "127.0.0.4:41002": "next-1.sock"}


@pytest.mark.parametrize(("env", "named"), [
    ({"BONSEYES_LISTEN": "127.0.0.3:41000"}, "this host's IP"),  # another host's address: BM would not own it
    ({"BONSEYES_LISTEN": "127.0.0.2:"}, "BONSEYES_LISTEN"),
    ({"BONSEYES_LISTEN": "127.0.0.2:70000"}, "BONSEYES_LISTEN"),
    ({"BONSEYES_NEXT": "http://127.0.0.3:41001"}, "BONSEYES_NEXT"),  # plain: never
    ({"BONSEYES_NEXT": "https://127.0.0.3"}, "BONSEYES_NEXT"),
    ({"BONSEYES_NEXT": "https://127.0.0.3:99999"}, "BONSEYES_NEXT"),
    ({"BONSEYES_NEXT": "https://127.0.0.3:port"}, "BONSEYES_NEXT"),
])
def test_malformed_stage_addresses_are_refused_with_the_variable_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(InputError) as refused:
        plan_routes(sm_url="https://127.0.0.1:8443", bind_ip="127.0.0.2", bm_port=8444, stage_env=env)
    assert refused.value.check == "env"
    assert named in str(refused.value)
