"""The login rate limit's buckets: one per IPv4 address, one per IPv6 /64 (whoever holds a
/64 could otherwise rotate through 2^64 fresh buckets)."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from noctis.api.auth.flood import rate_limit_key
from noctis.api.auth.settings import AuthSettings
from noctis.core.runtime import Runtime
from support.web import auth_app, running


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.2", "198.51.100.2"),  # an IPv4 client on a dual-stack socket
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_ipv4_is_keyed_by_its_address_and_ipv6_by_its_64(address: str, key: str) -> None:
    assert rate_limit_key(address) == key


def test_addresses_of_one_ipv6_64_share_one_allowance(accounts_archive: Runtime) -> None:
    """Through the app, behind a trusted proxy: six addresses of one /64 get the burst of
    three between them (each had its own before), another /64 its own."""
    auth = AuthSettings(login_rate_burst=3, login_rate_per_minute=0.01)
    app = auth_app(accounts_archive, auth)
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=["127.0.0.1"])

    def attempt(client: httpx.Client, address: str, n: int) -> int:
        answer = client.post(
            "/login",
            data={"username": f"nobody-{n}", "password": "guess-guess", "next": "/"},
            headers={"X-Forwarded-For": address},
            follow_redirects=False,
        )
        return answer.status_code

    with running(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        same_64 = Counter(attempt(client, f"2001:db8:1:2::{n + 1:x}", n) for n in range(6))
        other_64 = attempt(client, "2001:db8:1:3::1", 6)
    assert same_64 == {401: 3, 429: 3}, same_64
    assert other_64 == 401
