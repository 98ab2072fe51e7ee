"""Crash safety: SIGKILL the gunicorn master during a burst of licence requests, restart, check.

Every licence a client received must be in the database (a licence is committed before it is
returned), and re-sending the unanswered requests with their nonces after the restart yields at
most one licence per nonce.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path

import requests
from sm_fixtures import World, build_lab, launch_sm
from sm_testlib import nonce, start_sm, stop, wait_ready
from sqlalchemy import create_engine, text

THREADS = 6
REQUESTS_PER_THREAD = 40
KILL_AFTER = 25


def test_sigkill_during_licence_burst_loses_no_issued_licence(tmp_path: Path) -> None:
    server = launch_sm(tmp_path / "sm")
    world = World(server, tmp_path / "world")
    try:
        lab = build_lab(world, ip="127.0.0.7")
        received: dict[str, str] = {}
        sent: list[str] = []
        lock = threading.Lock()
        enough = threading.Event()

        def burst() -> None:
            for _ in range(REQUESTS_PER_THREAD):
                request_nonce = nonce()
                with lock:
                    sent.append(request_nonce)
                try:
                    response = lab.host.client.post("/v1/licences/host", lab.licence_request(request_nonce),
                                                    timeout=10)
                except requests.RequestException:
                    return  # The server died under us: expected.
                if response.status_code == 201:
                    with lock:
                        received[request_nonce] = response.json()["licence_id"]
                        if len(received) >= KILL_AFTER:
                            enough.set()

        threads = [threading.Thread(target=burst) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        assert enough.wait(60), "the burst never got going"
        server.process.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join(30)
        stop(server.process)
        assert received, "no licence was received before the crash"

        server.process = start_sm(server.config.directory, server.log)
        wait_ready(server.admin(), server.process, server.log)
        engine = create_engine(server.config.database_url)
        try:
            with engine.connect() as connection:
                stored = set(connection.execute(text("SELECT jti FROM licences")).scalars())
        finally:
            engine.dispose()
        missing = set(received.values()) - stored
        assert not missing, f"licences returned to clients but not stored: {sorted(missing)}"

        # Retrying the requests that got no answer must never mint a second licence for one nonce.
        for request_nonce in sorted(set(sent) - set(received)):
            response = lab.host.client.post("/v1/licences/host", lab.licence_request(request_nonce))
            assert response.status_code == 201, response.text
        for request_nonce, licence_id in received.items():
            again = lab.host.client.post("/v1/licences/host", lab.licence_request(request_nonce)).json()
            assert again["licence_id"] == licence_id
        engine = create_engine(server.config.database_url)
        try:
            with engine.connect() as connection:
                nonces = Counter(connection.execute(text("SELECT nonce FROM licences WHERE kind = 'host'")).scalars())
        finally:
            engine.dispose()
        assert max(nonces.values()) == 1
    finally:
        world.close()
        stop(server.process)
