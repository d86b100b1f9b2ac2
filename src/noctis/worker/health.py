"""The worker's probes over HTTP (the operator's worker Deployment probes these):

- ``/healthz``: 200 while the consumer's heartbeat is fresh (``noctis.worker.liveness``),
  503 before the worker consumes and when its consumer is stuck;
- ``/readyz``: 200 when the heartbeat is fresh and the index and object store answer
  (`Archive.readiness`), else 503 with the reason per dependency.

A stdlib HTTP server on its own thread: two tiny routes need no framework.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Probe = Callable[[], dict[str, str]]


class HealthServer:
    def __init__(self, host: str, port: int, *, alive: Callable[[], bool], ready: Probe) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_class(alive, ready))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="noctis-worker-health", daemon=True
        )

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


def _handler_class(alive: Callable[[], bool], ready: Probe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not consuming\n", "text/plain")
            elif path == "/readyz":
                report = {"consumer": "ok" if alive() else "no fresh heartbeat"}
                try:
                    report.update(ready())
                except Exception as exc:  # a probe must answer, whatever broke
                    report["probe"] = f"failed: {type(exc).__name__}"
                ok = all(v == "ok" for v in report.values())
                body = json.dumps(report, sort_keys=True).encode() + b"\n"
                self._send(200 if ok else 503, body, "application/json")
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
            return  # probes every few seconds: keep them out of the log

    return Handler
