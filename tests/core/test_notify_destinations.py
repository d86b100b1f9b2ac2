"""Where webhook calls may go (`noctis.core.notify_destinations`): the spellings of this
host's address that a URL can hide it behind are all caught, LAN and public addresses pass,
and a pinned call keeps the URL's host for the Host header and the TLS server name."""

from __future__ import annotations

import pytest

from noctis.core.notify_destinations import BlockedDestination, networks, pin
from noctis.settings import WEBHOOK_BLOCKED_BY_DEFAULT

BLOCKED = networks(WEBHOOK_BLOCKED_BY_DEFAULT)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.9.9.9:8080/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://0x7f000001/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://0.0.0.0:9000/hook",
    ],
)
def test_this_host_and_the_metadata_endpoint_are_blocked_however_spelled(url: str) -> None:
    with pytest.raises(BlockedDestination, match="NOCTIS_WEBHOOK_BLOCKED_NETWORKS"):
        pin(url, BLOCKED)


def test_a_lan_address_is_pinned_with_the_urls_host_kept() -> None:
    call = pin("https://10.20.30.40:8443/hook?x=1", BLOCKED)
    assert call.urls == ("https://10.20.30.40:8443/hook?x=1",)
    assert (call.host_header, call.server_name) == ("10.20.30.40:8443", "10.20.30.40")


def test_nothing_is_blocked_when_the_setting_is_empty() -> None:
    call = pin("http://127.0.0.1:8080/hook", networks([]))
    assert call.urls == ("http://127.0.0.1:8080/hook",) and call.server_name is None
