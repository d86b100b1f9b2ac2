"""`noctis api`: the web application under uvicorn."""

from __future__ import annotations

import uvicorn

from noctis import heap
from noctis.api.app import create_app
from noctis.settings import Settings


def run(settings: Settings) -> None:
    app = create_app(settings)
    heap.settle()
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        # X-Forwarded-Proto/For (URLs in responses, client addresses in the audit trail) are
        # trusted only from the addresses in FORWARDED_ALLOW_IPS (uvicorn's variable; default
        # 127.0.0.1): set it to the ingress controller's, or clients could forge their address.
        proxy_headers=True,
        forwarded_allow_ips=None,
        log_level="info",
        access_log=False,  # /metrics counts requests; the audit trail records patient data
    )
