"""gunicorn workers whose own refusals carry the JSON error body every other refusal of the services has.

gunicorn answers some requests before any WSGI app sees them: a request line over ``limit_request_line``
(414), too many or too large header fields (431), a malformed request line or header (400), a bad
chunked body... Its stock ``handle_error`` writes an HTML page for these. Here the same errors answer
``{"error": "<check>", "message": "..."}`` with ``Content-Type: application/json``, as
``bonseyes_py.web.errors.error_response`` does for the app's own refusals.

gunicorn still decides the status and logs the error (its ``handle_error`` runs unchanged against a
stand-in socket that keeps the page it would send); only the body is replaced. The check names are
looked up by exception class name, so gunicorn versions that lack one of the classes still work.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

# gunicorn exception class name -> (check, what the message says first, status if gunicorn's is unknown).
_CHECKS: dict[str, tuple[str, str, int]] = {
    "LimitRequestLine": ("uri-too-long", "request line (method, URI, version) is too long", 414),
    "LimitRequestHeaders": ("headers-too-large", "request header fields are too many or too large", 431),
    "InvalidRequestLine": ("bad-request-line", "malformed request line", 400),
    "InvalidRequestMethod": ("bad-request-line", "invalid request method", 400),
    "InvalidHTTPVersion": ("bad-request-line", "invalid HTTP version", 400),
    "InvalidH2CPreface": ("bad-request-line", "HTTP/2 cleartext preface not supported", 400),
    "InvalidResponseHeader": ("internal", "", 500),  # the app's fault, not the client's
    "InvalidResponseHeaderName": ("internal", "", 500),
    "InvalidHeader": ("bad-header", "malformed request header", 400),
    "InvalidHeaderName": ("bad-header", "malformed request header name", 400),
    "ObsoleteFolding": ("bad-header", "obsolete header line folding", 400),
    "InvalidSchemeHeaders": ("bad-header", "contradictory scheme headers", 400),
    "UnsupportedTransferCoding": ("unsupported-transfer-coding", "unsupported transfer coding", 501),
    "InvalidChunkSize": ("bad-chunked-body", "malformed chunked body", 400),
    "ChunkMissingTerminator": ("bad-chunked-body", "malformed chunked body", 400),
    "InvalidChunkExtension": ("bad-chunked-body", "malformed chunked body", 400),
    "ExpectationFailed": ("expectation-failed", "unsupported Expect header", 417),
    "InvalidProxyLine": ("bad-request", "malformed PROXY protocol line", 400),
    "ForbiddenProxyRequest": ("forbidden", "request forbidden", 403),
    "ConfigurationProblem": ("internal", "server configuration problem", 500),
    "SSLError": ("tls", "TLS error", 403),
}
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")
MAX_DETAIL = 200


class _PageCatcher:
    """Stands in for the client socket while gunicorn writes its HTML error page, and keeps that page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # gunicorn's write_nonblock then writes at once, without toggling blocking mode

    def setblocking(self, _flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += bytes(data)

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)


def _classify(exc: BaseException) -> tuple[str, str, int]:
    for kind in type(exc).__mro__:
        if kind.__name__ in _CHECKS:
            return _CHECKS[kind.__name__]
    return ("internal", "", 500)


def json_error_answer(exc: BaseException, page: bytes) -> bytes:
    """The raw HTTP answer for ``exc``: gunicorn's status (read off ``page``), a JSON error body."""
    check, summary, status = _classify(exc)
    reason = {400: "Bad Request", 403: "Forbidden", 414: "URI Too Long", 417: "Expectation Failed",
              431: "Request Header Fields Too Large", 500: "Internal Server Error",
              501: "Not Implemented"}.get(status, "Error")
    found = _STATUS_LINE.match(page)
    if found:
        status, reason = int(found.group(1)), found.group(2).decode("latin-1")
    if status >= 500 and check != "unsupported-transfer-coding":
        check, message = "internal", "internal error; see the server log"
    else:
        detail = str(exc)[:MAX_DETAIL]
        message = f"{summary}: {detail}" if detail else summary
    body = json.dumps({"error": check, "message": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class JSONErrors:
    """Mixin for a gunicorn worker: ``handle_error`` answers JSON instead of gunicorn's HTML page."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        catcher = _PageCatcher()
        super().handle_error(req, catcher, addr, exc)  # type: ignore[misc]  # status, logs, access log
        try:
            util.write_nonblock(client, json_error_answer(exc, catcher.data))
        except Exception:
            self.log.debug("Failed to send error message.")  # type: ignore[attr-defined]  # as gunicorn does


class ThreadJSONWorker(JSONErrors, ThreadWorker):  # type: ignore[misc]
    """gunicorn's ``gthread`` worker with JSON error bodies."""


class SyncJSONWorker(JSONErrors, SyncWorker):  # type: ignore[misc]
    """gunicorn's ``sync`` worker with JSON error bodies."""


# ServerSettings.worker_class -> the class gunicorn loads. (Not named *SyncWorker: gunicorn would swap
# such a class for its own gthread worker when threads > 1; ``worker_class_for`` does that swap itself.)
WORKERS = {"gthread": f"{__name__}.ThreadJSONWorker", "sync": f"{__name__}.SyncJSONWorker"}


def worker_class_for(name: str, threads: int) -> str:
    """The dotted worker class for a ServerSettings name; ``sync`` with threads is gthread, as in gunicorn."""
    if name == "sync" and threads > 1:
        name = "gthread"
    return WORKERS[name]
