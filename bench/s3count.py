"""A counting HTTP proxy in front of an S3 endpoint (used with ``--moto``).

Every engine talks to the proxy instead of the server, so the benchmark can
count the object-store requests of any engine the same way, by kind:

    LIST (GET ?list-type), GET, GET_RANGE (GET with Range), HEAD,
    PUT, PUT_IF_ABSENT (If-None-Match), PUT_IF_MATCH (If-Match),
    DELETE, POST (multi-delete, multipart), OTHER

``GET /__bench__/counts`` on the proxy returns the counts so far as JSON
(that request is not counted).  Requests are forwarded unchanged (same path,
query, headers and body), so signatures stay valid; responses are buffered
and returned whole.  Meant for a loopback test server, not for real S3 over
TLS.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CountingProxy", "fetch_counts"]

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
COUNTS_PATH = "/__bench__/counts"


def classify(method: str, path: str, headers) -> str:
    query = urllib.parse.urlsplit(path).query
    if method == "GET":
        if "list-type" in query or (query and "prefix=" in query) or urllib.parse.urlsplit(path).path.count("/") <= 1:
            return "LIST"
        return "GET_RANGE" if headers.get("Range") else "GET"
    if method == "PUT":
        if headers.get("If-None-Match"):
            return "PUT_IF_ABSENT"
        if headers.get("If-Match"):
            return "PUT_IF_MATCH"
        return "PUT"
    if method in ("HEAD", "DELETE", "POST"):
        return method
    return "OTHER"


class CountingProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        up = urllib.parse.urlsplit(upstream)
        if up.scheme != "http":
            raise ValueError("the counting proxy forwards to http:// endpoints only")
        self.upstream_host = up.hostname
        self.upstream_port = up.port or 80
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY,
            # Nagle plus delayed ACKs would add ~40 ms to every response.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def _upstream(self) -> http.client.HTTPConnection:
                conn = getattr(self, "_conn", None)
                if conn is None:
                    conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=300)
                    conn.connect()
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._conn = conn
                return conn

            def _read_body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        line = self.rfile.readline()
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(parts)
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else None

            def _handle(self) -> None:
                if self.command == "GET" and self.path == COUNTS_PATH:
                    with proxy.lock:
                        body = json.dumps(proxy.counts).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                body = self._read_body()
                kind = classify(self.command, self.path, self.headers)
                with proxy.lock:
                    proxy.counts[kind] = proxy.counts.get(kind, 0) + 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                for attempt in (0, 1):
                    try:
                        conn = self._upstream()
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (http.client.HTTPException, ConnectionError, OSError):
                        if getattr(self, "_conn", None) is not None:
                            self._conn.close()
                        self._conn = None
                        if attempt:
                            self.send_error(502, "upstream failed")
                            return
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                if self.command == "HEAD":
                    self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD" and data:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server((host, 0), Handler)
        self.endpoint_url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-count-proxy", daemon=True)

    def start(self) -> "CountingProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def fetch_counts(endpoint_url: str, timeout: float = 10.0) -> dict[str, int] | None:
    """The counts of the proxy at ``endpoint_url`` (None if unreachable)."""
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + COUNTS_PATH, timeout=timeout) as r:
            return {str(k): int(v) for k, v in json.loads(r.read()).items()}
    except (OSError, ValueError):
        return None
