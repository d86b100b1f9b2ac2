"""Real receivers of notifications for tests, on 127.0.0.1: a webhook (http.server) that
checks each call's HMAC signature the way the README tells receivers to, and an SMTP server
(aiosmtpd) that keeps every message it is given."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from support.cluster.pki import CertificateFiles
from support.ports import LOOPBACK, free_port


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers ``fail_first`` calls with 500, then 200; records every call. With ``tls``, an
    https receiver presenting that certificate."""

    secret: str
    fail_first: int = 0
    tls: CertificateFiles | None = None
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    failing = len(receiver.calls) < receiver.fail_first
                    status = 500 if failing else 200
                    receiver.calls.append(
                        Call(headers, body, receiver.verify(headers, body), status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, free_port()), Handler)
        self.server_names: list[str] = []  # the TLS server name each client asked for
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def verify(self, headers: dict[str, str], body: bytes, max_age: float = 300) -> bool:
        """What a receiver does (README, "Verifying a webhook"): recompute the HMAC over
        timestamp + "." + raw body, compare in constant time, refuse an old timestamp."""
        timestamp = headers.get("x-noctis-timestamp", "")
        given = headers.get("x-noctis-signature", "")
        expected = (
            "sha256="
            + hmac.new(
                self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
        )
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= max_age
        return fresh and hmac.compare_digest(given, expected)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}/hook"

    def succeeded(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.status == 200]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class _Keep:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """aiosmtpd on a loopback port, keeping (recipients, message) of each mail. With a
    certificate it requires STARTTLS (or, ``implicit_tls``, speaks TLS from the start); with
    ``login`` (user, password) it requires AUTH."""

    def __init__(
        self,
        *,
        tls: CertificateFiles | None = None,
        implicit_tls: bool = False,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self._handler = _Keep()
        options: dict[str, Any] = {}
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            if implicit_tls:  # TLS from the first byte (port 465's way); aiosmtpd cannot
                # tell, so AUTH must not wait for a STARTTLS that never comes
                options |= {"ssl_context": context, "auth_require_tls": False}
            else:
                options |= {"tls_context": context, "require_starttls": True}
        if login is not None:

            def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
                given = (data.login.decode(), data.password.decode())
                return AuthResult(success=given == login)

            options |= {"authenticator": authenticate, "auth_required": True}
        self._controller = Controller(self._handler, hostname=LOOPBACK, port=self.port, **options)

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return list(self._handler.messages)

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()
