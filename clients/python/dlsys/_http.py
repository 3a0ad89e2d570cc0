"""HTTP transport: keep-alive connections, timeouts, JSON errors, retries of 503s.

Standard library only (``http.client``). One connection per thread and server, reused across
requests (a metric batch costs one round trip, not a TCP handshake).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
import weakref
from typing import Any, BinaryIO, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

from .errors import DlsysError

__all__ = ["Transport", "Response", "quote_path", "quote_segment"]

Body = Union[None, bytes, BinaryIO]

_USER_AGENT = "dlsys-python"


def quote_segment(s: Any) -> str:
    """One path segment (a name, an id) with everything but unreserved characters escaped."""
    return urllib.parse.quote(str(s), safe="")


def quote_path(s: str) -> str:
    """A path of several segments (an artifact path): '/' kept, the rest escaped."""
    return urllib.parse.quote(str(s).lstrip("/"), safe="/")


class Response:
    """An answer read whole: ``status``, ``headers`` (lower-case names), ``body`` (bytes)."""

    def __init__(self, status: int, headers: Dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))


def _encode_query(query: Optional[Mapping[str, Any]]) -> str:
    if not query:
        return ""
    items = []
    for k, v in query.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v)
        items.append((k, str(v)))
    return "?" + urllib.parse.urlencode(items) if items else ""


def _body_length(body: Body) -> Optional[int]:
    if body is None:
        return 0
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    try:
        pos = body.tell()
        size = os.fstat(body.fileno()).st_size
        return size - pos
    except (AttributeError, OSError, ValueError):
        return None


class Transport:
    """Sends requests to one server; see :class:`dlsys.Client` for the options."""

    # Errors meaning a kept-alive connection was closed by the server meanwhile: the request
    # never reached it, so it is sent once more on a new connection.
    _STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
              http.client.CannotSendRequest, http.client.BadStatusLine)

    def __init__(self, url: str, token: Optional[str], timeout: float, retries: int = 3):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"server URL {url!r} must look like http://HOST:PORT (set DLSYS_URL or pass url=)")
        self.url = url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self._local = threading.local()
        # every connection opened, so that close_all() (and garbage collection) closes them
        self._all: "weakref.WeakSet[http.client.HTTPConnection]" = weakref.WeakSet()

    # ---- connections ----
    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._all.add(conn)
        return conn

    def _connection(self, timeout: float) -> Tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        conn = self._new_connection(timeout)
        self._local.conn = conn
        return conn, False

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _drop(self) -> None:
        self.close()

    def close_all(self) -> None:
        """Closes the connections of every thread."""
        for conn in list(self._all):
            try:
                conn.close()
            except OSError:
                pass
        self._local = threading.local()

    def __del__(self):
        try:
            self.close_all()
        except Exception:  # noqa: BLE001 - at interpreter exit modules may be gone
            pass

    # ---- requests ----
    def _headers(self, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
        h = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if extra:
            h.update(extra)
        return h

    def request(
        self,
        method: str,
        path: str,
        query: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        body: Body = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        ok: Iterable[int] = (),
    ) -> Response:
        """Sends one request and reads the whole answer.

        A 4xx/5xx answer raises :class:`DlsysError` with the server's code and message, unless
        its status is in ``ok``. A 503 (the server is busy) is retried with backoff, within the
        timeout; so is a request whose kept-alive connection the server had closed.
        """
        resp = self._send(method, path, query, json_body, body, headers, timeout, stream=False)
        if resp.status >= 400 and resp.status not in ok:
            raise self._error(method, path, resp.status, resp.headers, resp.body)
        return resp

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        query: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[http.client.HTTPResponse]:
        """A context manager giving the open answer of a GET-like request, to read in pieces.

        An error status raises :class:`DlsysError` at once. A connection whose answer was not
        read to its end is closed when the block ends (the next request opens another).
        """
        r = self._send(method, path, query, None, None, headers, timeout, stream=True)
        if isinstance(r, Response):
            raise self._error(method, path, r.status, r.headers, r.body)
        complete = False
        try:
            yield r
            complete = True
        except socket.timeout:
            self._drop()
            raise DlsysError(
                f"the answer from {self.url} stopped arriving (timeout {timeout or self.timeout:g}"
                " s)", code="TIMEOUT", method=method, path=path) from None
        except (http.client.HTTPException, ConnectionError) as e:
            self._drop()
            raise DlsysError(f"reading the answer from {self.url} failed: {e!r}",
                             code="BAD_RESPONSE", method=method, path=path) from None
        finally:
            if not complete or not r.isclosed() or r.will_close:
                r.close()
                self._drop()

    def _send(self, method, path, query, json_body, body, headers, timeout, stream):
        timeout = self.timeout if timeout is None else timeout
        full = self.prefix + path + _encode_query(query)
        hdrs = self._headers(headers)
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False, separators=(",", ":")).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        length = _body_length(body)
        if length is not None:
            hdrs["Content-Length"] = str(length)
        start_pos = None
        if body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
            try:
                start_pos = body.tell()
            except (AttributeError, OSError):
                start_pos = None
        rewindable = body is None or isinstance(body, (bytes, bytearray, memoryview)) or (
            start_pos is not None)
        deadline = time.monotonic() + max(timeout, 1.0) * (self.retries + 1)
        attempt = 0
        stale_retry_done = False
        while True:
            conn, reused = self._connection(timeout)
            try:
                if attempt > 0 and start_pos is not None:
                    body.seek(start_pos)
                conn.request(method, full, body=body, headers=hdrs)
                r = conn.getresponse()
            except self._STALE as e:
                self._drop()
                if reused and not stale_retry_done and rewindable:
                    stale_retry_done = True
                    attempt += 1
                    continue
                raise DlsysError(
                    f"the dlsys server at {self.url} closed the connection ({e.__class__.__name__}:"
                    f" {e}); is it still running? Try again, or check its log",
                    code="UNREACHABLE", method=method, path=path) from None
            except socket.timeout:
                self._drop()
                raise DlsysError(
                    f"no answer from the dlsys server at {self.url} within {timeout:g} s; "
                    "pass a larger timeout= to Client (or to this call) if the work is long",
                    code="TIMEOUT", method=method, path=path) from None
            except (ConnectionError, OSError) as e:
                self._drop()
                reason = getattr(e, "strerror", None) or str(e)
                raise DlsysError(
                    f"cannot reach the dlsys server at {self.url}: {reason}; start it with "
                    "`dlsys server`, or point DLSYS_URL (or Client(url=...)) at it",
                    code="UNREACHABLE", method=method, path=path) from None
            except http.client.HTTPException as e:
                self._drop()
                raise DlsysError(
                    f"the dlsys server at {self.url} sent a malformed answer: {e!r}",
                    code="BAD_RESPONSE", method=method, path=path) from None
            status = r.status
            if status == 503 and rewindable and attempt < self.retries:
                retry_after = r.getheader("Retry-After")
                r.read()
                if r.will_close:
                    self._drop()
                try:
                    wait = float(retry_after) if retry_after else 0.25 * (2 ** attempt)
                except ValueError:
                    wait = 0.25 * (2 ** attempt)
                wait = min(wait, 5.0)
                if time.monotonic() + wait < deadline:
                    time.sleep(wait)
                    attempt += 1
                    continue
                return self._read(method, path, r, 503)
            if stream and status < 400:
                return r
            return self._read(method, path, r, status)

    def _read(self, method, path, r, status) -> Response:
        try:
            data = r.read()
        except socket.timeout:
            self._drop()
            raise DlsysError(
                f"the answer from {self.url} stopped arriving (timeout {self.timeout:g} s)",
                code="TIMEOUT", method=method, path=path) from None
        except (http.client.HTTPException, OSError) as e:
            self._drop()
            raise DlsysError(f"reading the answer from {self.url} failed: {e!r}",
                             code="BAD_RESPONSE", method=method, path=path) from None
        headers = {k.lower(): v for k, v in r.getheaders()}
        if r.will_close:
            self._drop()
        return Response(status, headers, data)

    def _error(self, method, path, status, headers, body) -> DlsysError:
        rid = headers.get("x-request-id")
        code, message = None, None
        try:
            doc = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            err = doc.get("error")
            if isinstance(err, dict):  # /api/v1: {"error": {"code", "message"}}
                code, message = err.get("code"), err.get("message")
            elif isinstance(err, str):  # /v2 (Open Inference Protocol): {"error": "..."}
                message = err
        if message is None:
            text = body.decode("utf-8", "replace").strip()[:500] if body else ""
            message = text or http.client.responses.get(status, "error")
        if code is None:
            code = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                    404: "NOT_FOUND", 409: "ALREADY_EXISTS", 413: "PAYLOAD_TOO_LARGE",
                    503: "UNAVAILABLE"}.get(status, "HTTP_%d" % status)
        if status == 401 and "DLSYS_TOKEN" not in message:
            message += " (give a token: Client(token=...) or the DLSYS_TOKEN environment variable)"
        return DlsysError(message, status=status, code=code, method=method, path=path,
                          request_id=rid)

    def error_of(self, method: str, path: str, r: http.client.HTTPResponse) -> DlsysError:
        """The :class:`DlsysError` of an open answer with an error status (read and closed)."""
        resp = self._read(method, path, r, r.status)
        return self._error(method, path, resp.status, resp.headers, resp.body)
