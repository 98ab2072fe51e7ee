"""The one mutual-TLS JSON client of the project: every call from one component to another goes through it.

SM, MP, BM, the CLI and the Ansible modules talk to each other over HTTPS with client certificates.
Each caller used to carry its own client, with its own response-size cap, error mapping and, in some,
a new connection pool per call. ``MTLSClient`` is the one way now, and it behaves the same for all:

- One connection pool per client object, kept alive and reused across calls (thread-safe), and the
  SSL context built once per client (or shared, ``ssl_context=``), with TLS 1.2 as the floor.
- Answers are read as a stream and cut off at ``max_response_bytes``: a server (or something posing
  as one) that answers with a gigabyte costs the caller one cap's worth of memory, not the gigabyte.
  A ``Content-Length`` above the cap is refused before the body is read at all.
- Connect and read timeouts on every call.
- Retries only for idempotent methods (GET, HEAD, PUT, DELETE), and only when the connection failed
  (refused, reset, dropped before the answer), never on a timeout while waiting for the answer and
  never for a POST: a POST the server may have acted on is not sent twice.
- One family of typed errors (``ClientError``) whose message is one line naming the URL and what to
  do; callers that have their own error contract map ``ClientError`` to it in one place.
- JSON answers are parsed only through ``bonseyes_py.safejson`` (size and nesting bounded).

Why urllib3 directly and not requests (both are dependencies): requests reads ``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE`` and proxy variables from the environment and lets them override the trust anchor
and route mTLS calls through a proxy, unless every call repeats ``verify=`` and ``cert=``; it builds a
new SSL context per connection unless an adapter is subclassed; and its bodies are read whole unless
``stream=True``. urllib3 takes an ``ssl_context`` per pool, never reads the environment, streams by
``preload_content=False``, and has the pinning knobs the callers need (``assert_hostname`` for a BM's
host-ID name, ``assert_fingerprint`` for a pinned Marketplace certificate, ``source_address`` for a
BM that must connect from its own IP).

Not used by the Bonseyes Layer (``bonseyes_py/bl/``): BL is a frozen PyInstaller executable built
without urllib3 or requests, so it keeps its own small ``http.client`` code.
"""

from __future__ import annotations

import functools
import json as jsonlib
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, NamedTuple
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.web.tls import new_client_ssl_context

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Connecting is quick on every network these components share; a long connect wait only hides an outage.
MAX_CONNECT_TIMEOUT = 10.0
_CHUNK = 64 * 1024
# Uploads (registration archives) are sent in blocks of this size instead of urllib3's 16 KiB.
_UPLOAD_BLOCK = 256 * 1024


class ClientError(BonseyesError):
    """A call to another component failed; ``url`` is what was called."""

    check = "client"

    def __init__(self, message: str, *, check: str | None = None, url: str = "") -> None:
        super().__init__(message, check=check)
        self.url = url


class Unreachable(ClientError):
    """No answer: refused, name not resolved, connection dropped, or a timeout. Retrying later may work."""

    check = "unreachable"


class TLSFailure(ClientError):
    """The TLS handshake failed (untrusted or misnamed server certificate, refused client certificate),
    or the client's own certificate or key could not be loaded."""

    check = "tls"


class ResponseTooLarge(ClientError):
    """The answer is bigger than the client's cap; the rest of it was not read."""

    check = "response-too-large"


class BadResponse(ClientError):
    """The answer is not (bounded) JSON where JSON was expected."""

    check = "bad-response"


class ServerRefused(ClientError):
    """The server answered with a status the caller did not expect.

    ``status`` is the HTTP status, ``error`` the server's machine-readable ``error`` field (the
    project's services answer ``{"error": "<check>", "message": "..."}``; "" when absent), ``message``
    the server's ``message`` (or the start of the body), ``body`` the parsed JSON answer if any.
    ``check`` is the server's ``error`` when there is one, so adapters that print ``str(error)`` show
    the server's own check name.
    """

    check = "refused"

    def __init__(self, status: int, message: str, *, error: str = "", url: str = "", method: str = "",
                 body: Any = None) -> None:
        self.status = status
        self.message = message
        self.error = error
        self.body = body
        where = f"{method} {url}".strip()
        detail = f": {message}" if message else ""
        super().__init__(f"{where} answered {status}{f' ({error})' if error else ''}{detail}",
                         check=error or None, url=url)


class Response(NamedTuple):
    """A raw answer: status, headers (case-insensitive lookup) and the body, at most the cap in bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as bounded JSON (``BadResponse`` if it is not)."""
        try:
            return safejson.loads(self.body, what=f"answer with status {self.status}", max_bytes=len(self.body) + 1)
        except InputError as exc:
            raise BadResponse(f"{exc.args[0]}; check that the URL names the right service") from exc


class _ConnectionRetry(Retry):
    """urllib3's Retry, but a read timeout is not a reason to send the request again.

    urllib3 counts a dropped connection (``ProtocolError``) and a read timeout alike as read errors;
    only the first says the request never got an answer for a reason a second attempt can fix.
    """

    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


class MTLSClient:
    """A client of one HTTPS service (``base_url``), optionally presenting a client certificate.

    ``ca_file`` holds the only roots the server's certificate may chain to. ``check_hostname=False``
    with neither ``assert_hostname`` nor ``assert_fingerprint`` trusts any certificate that chains to
    ``ca_file`` whatever its name; callers that do so check the peer some other way (its role).
    ``assert_hostname`` checks the server's certificate for that name instead of the URL's host (an SM
    reaching a BM by IP expects the host ID); ``assert_fingerprint`` pins the certificate's SHA-256
    fingerprint (hex). ``source_address`` is the local IP connections leave from. ``ssl_context``
    replaces the context built from the files (so many clients can share one); with it the file
    arguments are ignored. ``allow_http=True`` also accepts an ``http://`` URL (no TLS at all): only for
    a legacy plain endpoint a deployment chose explicitly (BM's ``registry_scheme: http``).
    """

    def __init__(self, base_url: str, *, ca_file: str | Path | None, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None, key_passphrase: bytes | None = None,
                 timeout: float = 30.0, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 retries: int = 2, check_hostname: bool = True, assert_hostname: str | None = None,
                 assert_fingerprint: str | None = None, source_address: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, pool_maxsize: int = 16,
                 allow_http: bool = False) -> None:
        parts = urlsplit(base_url)
        plain = allow_http and parts.scheme == "http"
        if not (parts.scheme == "https" or plain) or not parts.hostname:
            raise InputError(f"service URL must be https://HOST[:PORT][/PATH], not {base_url!r}", check="url")
        if timeout <= 0 or max_response_bytes <= 0 or retries < 0:
            raise InputError("timeout and max_response_bytes must be positive and retries not negative",
                             check="client-settings")
        self.base_url = base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.retries = retries
        self.ssl_context: ssl.SSLContext | None = None
        common: dict[str, Any] = {"maxsize": pool_maxsize, "block": False, "retries": False,
                                  "blocksize": _UPLOAD_BLOCK,
                                  "source_address": (source_address, 0) if source_address else None}
        if plain:
            self._new_pool: Callable[[], urllib3.HTTPConnectionPool] = functools.partial(
                urllib3.HTTPConnectionPool, parts.hostname, parts.port or 80, **common)
        else:
            if ssl_context is None:
                if not ca_file:
                    raise InputError(f"a CA file is needed to trust {self.base_url}", check="client-settings")
                try:
                    ssl_context = new_client_ssl_context(
                        str(ca_file), certfile=str(cert_file) if cert_file else None,
                        keyfile=str(key_file) if key_file else None, password=key_passphrase,
                        check_hostname=check_hostname)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    raise TLSFailure(f"cannot load the TLS files for {self.base_url} (CA {ca_file}, certificate "
                                     f"{cert_file}, key {key_file}): {_one_line(str(exc))}; check the paths, that "
                                     "the key matches the certificate, and the key passphrase",
                                     check="client-identity", url=self.base_url) from exc
            self.ssl_context = ssl_context
            hostname: str | Literal[False] | None = assert_hostname
            if hostname is None and not check_hostname and not assert_fingerprint:
                hostname = False
            self._new_pool = functools.partial(
                urllib3.HTTPSConnectionPool, parts.hostname, parts.port or 443, ssl_context=ssl_context,
                assert_hostname=hostname, assert_fingerprint=assert_fingerprint, **common)
        self._pool = self._new_pool()

    # -- the calls ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
                expected: Iterable[int] = (200,), headers: Mapping[str, str] | None = None,
                timeout: float | None = None, max_response_bytes: int | None = None,
                body: bytes | IO[bytes] | None = None) -> Any:
        """Call and return the parsed JSON answer (``None`` for an empty body).

        ``body`` sends bytes or a file object (an upload) instead of ``json``.
        """
        limit = max_response_bytes or self.max_response_bytes
        answer = self.raw(method, path, json=json, body=body, params=params, expected=expected,
                          headers={"Accept": "application/json", **(headers or {})}, timeout=timeout,
                          max_response_bytes=limit)
        if not answer.body.strip():
            return None
        url = self.url(path, params)
        try:
            return safejson.loads(answer.body, what=f"answer to {method} {url}", max_bytes=limit)
        except InputError as exc:
            raise BadResponse(f"{method} {url} answered {answer.status} with a body that is not JSON "
                              f"({exc.args[0]}); check that the URL names the right service", url=url) from exc

    def raw(self, method: str, path: str, *, json: Any = None, body: bytes | IO[bytes] | None = None,
            params: Mapping[str, str] | None = None, expected: Iterable[int] | None = (200,),
            headers: Mapping[str, str] | None = None, timeout: float | None = None,
            max_response_bytes: int | None = None) -> Response:
        """Call and return status, headers and body; ``expected=None`` accepts any status."""
        limit = max_response_bytes or self.max_response_bytes
        with self.stream(method, path, json=json, body=body, params=params, expected=expected,
                         headers=headers, timeout=timeout) as response:
            url = self.url(path, params)
            # A HEAD answer has no body; its Content-Length is the size a GET would get.
            body = b"" if method.upper() == "HEAD" else _read_bounded(response, limit, method, url)
            return Response(response.status, response.headers, body)

    @contextmanager
    def stream(self, method: str, path: str, *, json: Any = None, body: bytes | IO[bytes] | None = None,
               params: Mapping[str, str] | None = None, expected: Iterable[int] | None = (200,),
               headers: Mapping[str, str] | None = None,
               timeout: float | None = None) -> Iterator[urllib3.BaseHTTPResponse]:
        """Call and yield the unread answer (for line-by-line progress streams); closed on exit.

        An unexpected status raises ``ServerRefused`` before anything is yielded. Read errors while
        the caller reads are raised as ``ClientError`` too.
        """
        method = method.upper()
        url = self.url(path, params)
        all_headers: dict[str, str] = {}
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        if body is not None and not isinstance(body, bytes) and hasattr(body, "__len__"):
            # A sized file object (an upload): say its length rather than sending it chunked.
            all_headers["Content-Length"] = str(len(body))
        all_headers.update(headers or {})
        seconds = timeout or self.timeout
        replayable = body is None or isinstance(body, bytes)
        retry: Retry | bool = False
        if method in IDEMPOTENT_METHODS and replayable and self.retries:
            retry = _ConnectionRetry(total=self.retries, connect=self.retries, read=self.retries, status=0,
                                     other=0, redirect=0, allowed_methods=IDEMPOTENT_METHODS,
                                     raise_on_redirect=False, raise_on_status=False, backoff_factor=0.1)
        try:
            response = self._pool.urlopen(
                method, self._prefix + _path_with_params(path, params), body=body, headers=all_headers,
                retries=retry, redirect=False, preload_content=False, release_conn=False,
                timeout=urllib3.Timeout(connect=min(seconds, MAX_CONNECT_TIMEOUT), read=seconds))
        except (HTTPError, OSError) as exc:
            raise _mapped(exc, method, url) from exc
        try:
            if expected is not None and response.status not in set(expected):
                raise _refusal(response, method, url, self.max_response_bytes)
            try:
                yield response
            except (HTTPError, OSError) as exc:
                raise _mapped(exc, method, url) from exc
        finally:
            _finish(response)

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """The full URL of ``path``, as error messages name it."""
        return self.base_url + _path_with_params(path, params)

    # -- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection; the client can still be used (it reconnects)."""
        pool, self._pool = self._pool, self._new_pool()
        pool.close()

    def __enter__(self) -> MTLSClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def iter_lines(response: urllib3.BaseHTTPResponse, *, max_line_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
               url: str = "") -> Iterator[bytes]:
    """The lines of a streamed answer (NDJSON progress), each at most ``max_line_bytes``.

    urllib3's own line iterator buffers a line without end for ever; this one stops at the cap.
    """
    pending = b""
    try:
        while True:
            # read1: what has arrived (up to a chunk), so each event reaches the caller when it is sent.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete
            if len(pending) > max_line_bytes:
                raise ResponseTooLarge(f"a line of the answer from {url or 'the server'} is longer than "
                                       f"{max_line_bytes} bytes; the stream is not what was expected", url=url)
    except (HTTPError, OSError) as exc:
        raise _mapped(exc, "reading", url) from exc
    if pending:
        yield pending


def _path_with_params(path: str, params: Mapping[str, str] | None) -> str:
    if not path.startswith("/"):
        path = "/" + path
    if params:
        path += ("&" if "?" in path else "?") + urlencode(dict(params))
    return path


def _read_bounded(response: urllib3.BaseHTTPResponse, limit: int, method: str, url: str) -> bytes:
    """At most ``limit`` bytes of the body; more raises ``ResponseTooLarge`` without reading the rest."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"{method} {url} answered {declared} bytes, over this client's {limit}-byte "
                               "limit; ask for less (a filter or a page) or raise the limit", url=url)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = response.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"{method} {url} answered more than this client's {limit}-byte limit; "
                                       "ask for less (a filter or a page) or raise the limit", url=url)
    except (HTTPError, OSError) as exc:
        raise _mapped(exc, method, url) from exc
    return b"".join(chunks)


def _finish(response: urllib3.BaseHTTPResponse) -> None:
    """Give a fully read connection back to the pool; close one with unread bytes first (they would
    otherwise be read as the next answer)."""
    try:
        if not response.closed:
            response.close()
    except (HTTPError, OSError):
        pass
    response.release_conn()


def _refusal(response: urllib3.BaseHTTPResponse, method: str, url: str, limit: int) -> ServerRefused:
    try:
        raw = _read_bounded(response, min(limit, 64 * 1024), method, url)
    except ClientError:
        raw = b""
    error, message, body = "", _one_line(raw.decode("utf-8", errors="replace")), None
    try:
        body = safejson.loads(raw, what="error answer") if raw.strip() else None
    except InputError:
        body = None
    if isinstance(body, dict):
        error = _one_line(str(body.get("error") or ""), 80)
        message = _one_line(str(body.get("message") or body.get("error") or ""), 500)
    return ServerRefused(response.status, message, error=error, url=url, method=method, body=body)


def _mapped(exc: BaseException, method: str, url: str) -> ClientError:
    """One typed, one-line error for whatever urllib3 (or the socket under it) raised."""
    reason: BaseException = exc
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        reason = exc.reason
    if isinstance(reason, ProtocolError) and reason.args and isinstance(reason.args[-1], BaseException):
        inner = reason.args[-1]
        if isinstance(inner, ssl.SSLError):
            reason = inner
    if isinstance(reason, (Urllib3SSLError, ssl.SSLError, ssl.CertificateError)):
        return TLSFailure(f"TLS with {url} failed ({_one_line(str(reason))}); check that the CA file holds the "
                          "root the server's certificate chains to, that the certificate names the host, and "
                          "that the client certificate is valid and not revoked", url=url)
    if isinstance(reason, ReadTimeoutError):
        return Unreachable(f"{method} {url} got no answer in time ({_one_line(str(reason))}); check the service's "
                           "load or raise the timeout", check="timeout", url=url)
    if isinstance(reason, NewConnectionError):
        return Unreachable(f"cannot connect to {url} ({_one_line(str(reason))}); check that the service runs "
                           "and the URL is right", url=url)
    if isinstance(reason, ConnectTimeoutError):
        return Unreachable(f"connecting to {url} timed out; check the address and the network", check="timeout",
                           url=url)
    return Unreachable(f"{method} {url} failed ({_one_line(str(reason))}); check that the service runs and "
                       "retry", url=url)
