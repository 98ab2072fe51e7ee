"""The payload of the e2e relay artefact (runs inside the container, as user nobody, after BL).

It speaks plain HTTP only: BL terminates the stages' mutual TLS with the runtime certificate and
hands the payload loopback endpoints. A stage serves on ``BONSEYES_LISTEN`` (127.0.0.1:PORT from
BL); a stage with ``BONSEYES_NEXT`` (http://127.0.0.1:PORT, BL's local port for the next stage)
sends its message there. It also reports whether it can read the runtime key BM handed to BL
(it must not, even as root), whether it can read BL's memory or BM's relay sockets, which network
interfaces it has, and whether any TLS material reached its environment. Results go to stdout.
"""

import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.request

POSITION = os.environ.get("BONSEYES_POSITION", "?")


def log(*parts):
    print(*parts, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        log("RECEIVED", body.decode(), "FROM", self.client_address[0])
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
    log("LISTENING", os.environ["BONSEYES_LISTEN"], "uid", os.getuid())
    server.serve_forever()


def send():
    url = os.environ["BONSEYES_NEXT"]
    message = f"hello-from-stage-{POSITION}".encode()
    last = None
    for _attempt in range(600):
        try:
            request = urllib.request.Request(url + "/data", data=message, method="POST")  # noqa: S310 (BL's loopback)
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                log("SENT", response.read().decode())
                return
        except Exception as exc:  # the next stage may not listen yet
            last = exc
            time.sleep(0.2)
    log("SEND FAILED", last)


def report_secrets():
    try:
        with open("/run/bonseyes/runtime.key", "rb"):
            log("KEY READABLE")
    except OSError as exc:
        log("KEY UNREADABLE", type(exc).__name__)
    # BL (PID 1) holds the key in memory: its memory and environment must be closed to the payload too.
    try:
        with open("/proc/1/environ", "rb") as handle:
            handle.read(1)
        log("BL MEMORY READABLE")
    except OSError as exc:
        log("BL MEMORY UNREADABLE", type(exc).__name__)
    # BM's relay sockets are BL's alone, and the container has no network but loopback: the payload
    # reaches other stages, the SM and BM only through BL's licensed channels.
    try:
        os.listdir("/run/bonseyes-net")
        log("RELAY SOCKETS REACHABLE")
    except OSError as exc:
        log("RELAY SOCKETS UNREACHABLE", type(exc).__name__)
    log("INTERFACES", sorted(entry[1] for entry in socket.if_nameindex()))
    log("PAYLOAD UID", os.getuid())
    leaked = sorted(name for name in os.environ if "TLS" in name or "KEY" in name)
    log("TLS ENV", leaked)


if __name__ == "__main__":
    report_secrets()
    if os.environ.get("BONSEYES_LISTEN"):
        threading.Thread(target=serve, daemon=True).start()
    if os.environ.get("BONSEYES_NEXT"):
        send()
    log("PAYLOAD RUNNING", " ".join(sys.argv[1:]))
    while True:
        time.sleep(3600)
