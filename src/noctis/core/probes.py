"""Liveness, readiness and metrics over HTTP, for Kubernetes probes and Prometheus.

Used by the processes that have no web framework of their own (the SCP and the worker):

- ``/healthz``: 200 while the process does its job (``alive``: the SCP's accept loop, the
  worker's consumer heartbeat).
- ``/readyz``: 200 when every dependency ``ready`` reports answers "ok" (the index and the
  object store: `Runtime.readiness`), else 503 with the reason per dependency, so a pod that
  cannot work is taken out of its Service.
- ``/metrics``: Prometheus text format, when the process exports metrics.

A stdlib HTTP server on its own thread: three tiny routes need no framework.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

Probe = Callable[[], dict[str, str]]


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        alive: Callable[[], bool],
        ready: Probe,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        name: str = "noctis-health",
    ) -> None:
        handler = _handler_class(alive, ready, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_class(
    alive: Callable[[], bool], ready: Probe, metrics: Callable[[], tuple[bytes, str]] | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not alive\n", "text/plain")
            elif path == "/readyz":
                try:
                    report = ready()
                except Exception as exc:  # a probe must answer, whatever broke
                    report = {"probe": f"failed: {type(exc).__name__}"}
                ok = bool(report) and all(v == "ok" for v in report.values())
                body = json.dumps(report, sort_keys=True).encode() + b"\n"
                self._send(200 if ok else 503, body, "application/json")
            elif path == "/metrics" and metrics is not None:
                body, content_type = metrics()
                self._send(200, body, content_type)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes hit these every few seconds: keep them out of the log.
            return

    return Handler
