"""`noctis api`: the web application under uvicorn."""

from __future__ import annotations

import uvicorn

from noctis.api.app import create_app
from noctis.settings import Settings


def run(settings: Settings) -> None:
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        proxy_headers=True,  # X-Forwarded-Proto/For from the ingress, for URLs and audit
        forwarded_allow_ips="*" if settings.mode == "production" else "127.0.0.1",
        log_level="info",
        access_log=False,  # /metrics counts requests; the audit trail records patient data
    )
