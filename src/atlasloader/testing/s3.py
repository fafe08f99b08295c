"""An S3-compatible server on loopback, optionally behind a proxy that adds latency and faults.

For tests and benchmarks of remote stores without a cloud account: moto's S3 application answers
the S3 API on ``127.0.0.1``; :class:`FaultProxy` sits in front of it and, per request, waits a
fixed latency, answers with an error status, or stalls (accepts the request and says nothing), as
a rule given by the caller decides. Needs ``moto[server]`` (a test dependency, not a runtime one).

::

    with S3Server() as s3, FaultProxy(s3.endpoint, latency=0.010) as proxy:
        opts = s3.storage_options(proxy.endpoint)
        loader = ...("s3://atlas/a.zarr", storage_options=opts)
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "S3Server", "free_port"]

# What the fault rule may return for a request: None (forward it), ("status", code) to answer
# with that HTTP status, or ("stall", seconds) to hold the connection open without answering.
Fault = tuple[str, float] | None
FaultRule = Callable[[str, str, dict[str, str]], Fault]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """moto's S3 server on a free loopback port, with one bucket created.

    Serves moto's S3 application alone (werkzeug's threaded server, as ``ThreadedMotoServer``)
    rather than moto's dispatcher, which finds the service of every request among all of AWS's
    by matching hundreds of URL patterns under one lock: about 60 % more requests per second.
    """

    def __init__(self, bucket: str = "atlas", key: str = "testing", secret: str = "testing"):
        self.bucket = bucket
        self.key, self.secret = key, secret
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> S3Server:
        import logging

        from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        app = create_backend_app("s3")
        self._server = make_server(
            "127.0.0.1", self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        fs = self.filesystem()
        # moto's backend is shared by every server of a process: the bucket may exist.
        if not fs.exists(self.bucket):
            fs.mkdir(self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def storage_options(self, endpoint: str | None = None, **config: Any) -> dict[str, Any]:
        """fsspec/s3fs options reaching this server (or a proxy of it at ``endpoint``)."""
        opts: dict[str, Any] = {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {
                "endpoint_url": endpoint or self.endpoint,
                "region_name": "eu-west-1",
            },
        }
        if config:
            opts["config_kwargs"] = config
        return opts

    def filesystem(self, endpoint: str | None = None) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options(endpoint), skip_instance_cache=True)


class FaultProxy:
    """An HTTP proxy in front of ``upstream`` that adds latency and injects faults.

    Parameters
    ----------
    upstream
        ``http://host:port`` of the real server.
    latency
        Seconds waited before forwarding each request (a round trip to a distant region).
    rule
        ``rule(method, path, headers)`` per request; see :data:`Fault`. Called from the proxy's
        threads; keep it thread safe (e.g. a counter under a lock).
    """

    def __init__(self, upstream: str, latency: float = 0.0, rule: FaultRule | None = None):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = int(parts.port or 80)
        self.latency = float(latency)
        self.rule = rule
        self.requests = 0
        self.faults = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()}
                with proxy._lock:
                    proxy.requests += 1
                fault = proxy.rule(self.command, self.path, headers) if proxy.rule else None
                if proxy.latency:
                    time.sleep(proxy.latency)
                if fault is not None:
                    with proxy._lock:
                        proxy.faults += 1
                    kind, value = fault
                    if kind == "stall":
                        proxy._stop.wait(value)
                        self.close_connection = True
                        return
                    self._answer(int(value), b"", {"Content-Type": "application/xml"})
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() != "transfer-encoding"}
                    out["Content-Length"] = str(len(data))
                    self._answer(resp.status, data, out)
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("connection", "server", "date"):
                        self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # releases stalled requests
        self._server.shutdown()
        self._server.server_close()
