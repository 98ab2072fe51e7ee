"""The payload of the e2e relay artefact (runs inside the container, as user nobody, after BL).

Every stage serves HTTPS on ``BONSEYES_LISTEN`` with its runtime certificate and accepts only
clients presenting a *runtime* certificate chaining to the SM root; a stage with ``BONSEYES_NEXT``
sends its message to the next stage over the same kind of channel, checking that the server is a
runtime certificate for the next stage's IP. Results go to stdout, which the tests read.
"""

import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.request

CERT, KEY, CA = os.environ["BONSEYES_TLS_CERT"], os.environ["BONSEYES_TLS_KEY"], os.environ["BONSEYES_TLS_CA"]
POSITION = os.environ.get("BONSEYES_POSITION", "?")


def log(*parts):
    print(*parts, flush=True)


def peer_uri(cert):
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        uris = peer_uri(self.connection.getpeercert() or {})
        if not uris or "/runtime/" not in uris[0]:
            log("REFUSED", uris)
            self.send_response(403)
            self.end_headers()
            self.wfile.write(b"only licensed runtimes may call this stage\n")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        log("RECEIVED", body.decode(), "FROM", uris[0])
        answer = json.dumps({"stage": POSITION, "echo": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def serve():
    host, port = os.environ["BONSEYES_LISTEN"].rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    context.load_verify_locations(CA)
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    log("LISTENING", os.environ["BONSEYES_LISTEN"], "uid", os.getuid())
    server.serve_forever()


def send():
    url = os.environ["BONSEYES_NEXT"]
    context = ssl.create_default_context(cafile=CA)
    context.load_cert_chain(CERT, KEY)
    message = f"hello-from-stage-{POSITION}".encode()
    last = None
    for _attempt in range(600):
        try:
            request = urllib.request.Request(url + "/data", data=message, method="POST")  # noqa: S310 (https URL from BM)
            with urllib.request.urlopen(request, context=context, timeout=5) as response:  # noqa: S310
                log("SENT", response.read().decode())
                return
        except Exception as exc:  # the next stage may not listen yet
            last = exc
            time.sleep(0.2)
    log("SEND FAILED", last)


if __name__ == "__main__":
    if os.environ.get("BONSEYES_LISTEN"):
        threading.Thread(target=serve, daemon=True).start()
    if os.environ.get("BONSEYES_NEXT"):
        send()
    log("PAYLOAD RUNNING", " ".join(sys.argv[1:]))
    while True:
        time.sleep(3600)
