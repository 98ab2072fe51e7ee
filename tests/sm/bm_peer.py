"""A TEST PEER, not the Bonseyes Module: a small BM-like HTTPS service for the SM's step-3 calls.

It runs under the same gunicorn + mutual TLS stack as the SM, with a real host certificate, on a
loopback address of its own (127.0.0.2), and answers the two calls of
``bonseyes_py.sm.bm_client``: ``/v1/images/fetch`` reports a digest for each requested digest
(the requested one, unless the state file says to report another, which simulates a tampered
image) and ``/v1/images/remove`` appends the removed digests to the state file's log. Only a
client certificate of role ``sm`` is accepted.

Usage: ``python bm_peer.py BIND CERT KEY CA_FILE STATE_JSON``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from flask import Flask, jsonify

from bonseyes_py.pki.certs import load_certificate_chain
from bonseyes_py.pki.roles import Role
from bonseyes_py.pki.verify import TrustStore
from bonseyes_py.web.flaskapp import Authenticator, create_flask_app, json_body
from bonseyes_py.web.server import ServerSettings, WSGIServer


def create_peer_app(ca_file: str, state_file: Path) -> Flask:
    root, *intermediates = sorted(load_certificate_chain(Path(ca_file).read_bytes()),
                                  key=lambda c: c.issuer != c.subject)
    trust = TrustStore(root=root, intermediates=intermediates)
    auth = Authenticator(lambda: trust)
    app = create_flask_app("bm_peer")

    def state() -> dict[str, Any]:
        return json.loads(state_file.read_text())

    @app.post("/v1/images/fetch")
    def fetch() -> Any:
        auth.peer([Role.SECURITY_MANAGER])
        digests = json_body()["digests"]
        overrides = state().get("overrides", {})
        return jsonify({"digests": {d: overrides.get(d, d) for d in digests}})

    @app.post("/v1/images/remove")
    def remove() -> Any:
        auth.peer([Role.SECURITY_MANAGER])
        digests = json_body()["digests"]
        current = state()
        current.setdefault("removed", []).extend(digests)
        state_file.write_text(json.dumps(current))
        return jsonify({"removed": digests})

    return app


def main() -> None:
    bind, cert, key, ca_file, state_file = sys.argv[1:6]
    settings = ServerSettings(bind=bind, certfile=cert, keyfile=key, ca_file=ca_file, workers=1, threads=2,
                              proc_name="bm-test-peer")
    WSGIServer(lambda: create_peer_app(ca_file, Path(state_file)), settings).run()


if __name__ == "__main__":
    main()
