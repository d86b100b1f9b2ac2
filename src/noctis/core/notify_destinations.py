"""Where a webhook call may go: never into a blocked network (``NOCTIS_WEBHOOK_BLOCKED_NETWORKS``;
by default this host, link-local addresses with the cloud's metadata endpoint, unspecified and
multicast addresses).

A facility administrator sets webhook URLs over REST. Unchecked, the archive's worker would
POST, on their behalf, to services listening on its own host or to the metadata endpoint that
hands out the node's cloud credentials, and show what answered in the delivery's last error.
So a URL is refused when it is set if it names a blocked address (or ``localhost``), and
checked again at every call: its host is resolved, every address it resolves to must be
outside the blocked networks, and the call connects to the address that was checked (the
Host header and the TLS server name stay the URL's host, so certificates are verified as
before). A name that resolves elsewhere between the check and the call (DNS rebinding) gains
nothing. Private LAN ranges are not blocked by default: that is where hospitals' integration
engines listen.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SETTING = "NOCTIS_WEBHOOK_BLOCKED_NETWORKS"


class BlockedDestination(ValueError):
    """The URL leads into a blocked network: refused, never tried."""


@dataclass(frozen=True)
class PinnedCall:
    """A webhook call that connects to addresses checked beforehand."""

    urls: tuple[str, ...]  # the URL with its host replaced by each checked address, in turn
    host_header: str  # the URL's own host (and port, if it names one)
    server_name: str | None  # the TLS server name (https only): the URL's host


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def refuse_named_blocked(url: str, blocked: tuple[Network, ...]) -> None:
    """When a URL is set: `BlockedDestination` if its host is a blocked address or
    ``localhost`` (names are resolved at each call, not here: DNS may differ by then)."""
    import httpx  # parsed as the client that calls it parses it; imported when needed

    host = httpx.URL(url).host
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        if _blocked(ipaddress.ip_address("127.0.0.1"), blocked) is not None:
            raise BlockedDestination(f"{url}: localhost is this host, a blocked destination")
        return
    address = _literal(host)
    if address is not None:
        _refuse(url, address, blocked)


def pin(url: str, blocked: tuple[Network, ...]) -> PinnedCall:
    """Resolve the URL's host, check every address, and pin the call to them (tried in the
    resolver's order, as a client tries a name's addresses). `BlockedDestination` if any
    address is blocked; OSError if the name does not resolve."""
    import httpx

    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = _literal(host)
    if address is not None:
        addresses = [address]
    else:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in found]
        addresses = list(dict.fromkeys(addresses))  # once each, in the resolver's order
        if not addresses:
            raise OSError(f"{host} resolves to no address")
    for each in addresses:
        _refuse(url, each, blocked)
    host_header = host if parsed.port is None else f"{_bracketed(host)}:{parsed.port}"
    return PinnedCall(
        urls=tuple(str(parsed.copy_with(host=str(each))) for each in addresses),
        host_header=host_header,
        server_name=host if parsed.scheme == "https" else None,
    )


def _refuse(url: str, address: Address, blocked: tuple[Network, ...]) -> None:
    network = _blocked(address, blocked)
    if network is not None:
        raise BlockedDestination(
            f"{url} leads to {address}, in {network}, where webhook calls never go ({_SETTING})"
        )


def _blocked(address: Address, blocked: tuple[Network, ...]) -> Network | None:
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # ::ffff:127.0.0.1 is 127.0.0.1
    for candidate in candidates:
        for network in blocked:
            if candidate.version == network.version and candidate in network:
                return network
    return None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
