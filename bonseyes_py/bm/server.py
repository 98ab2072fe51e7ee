"""``serve``: authenticate to the SM (step 2), reconcile containers, then serve mTLS under gunicorn.

One gunicorn worker with threads: the runtime records, the waits for BL and the background loops
live in one process. The first authentication happens before gunicorn starts, so a BM the SM
refuses (unregistered or revoked host) exits with a one-line error instead of serving.
"""

from __future__ import annotations

import logging

from bonseyes_py.bm.agent import BonseyesModule
from bonseyes_py.bm.app import create_app
from bonseyes_py.bm.config import BMConfig
from bonseyes_py.web.server import ServerSettings, WSGIServer

log = logging.getLogger(__name__)


def server_settings(config: BMConfig) -> ServerSettings:
    # The BL wait in a start request can outlast gunicorn's default worker timeout.
    return ServerSettings(bind=f"{config.bind_ip}:{config.port}", certfile=str(config.certificate),
                          keyfile=str(config.key), ca_file=str(config.ca_bundle), workers=1, worker_class="gthread",
                          threads=config.threads, timeout=int(config.bl_timeout_seconds) + 60,
                          loglevel=config.loglevel, proc_name=f"bonseyes-bm-{config.host_id[:20]}")


def preflight(config: BMConfig) -> dict[str, object]:
    """Step 2 and clean-up before serving; raises when the SM refuses this host."""
    bm = BonseyesModule(config)
    try:
        answer = bm.authenticate()
        reconciled = bm.reconcile()
    finally:
        bm.close()
        bm.docker.close()
    return {"heartbeat": answer, "reconciled": reconciled}


def serve(config: BMConfig) -> None:
    preflight(config)

    def factory() -> object:
        bm = BonseyesModule(config)
        bm.authenticate()
        bm.start_background()
        return create_app(bm)

    WSGIServer(factory, server_settings(config)).run()  # type: ignore[arg-type]
