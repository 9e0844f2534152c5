"""The HTTP client's address, through the reverse proxies the configuration trusts.

``X-Forwarded-For`` is whatever the client wrote, except for the entries that trusted
proxies appended.  So the client is found from the right: the peer of the TCP connection,
then each ``X-Forwarded-For`` entry from the last, for as long as the address in hand is a
trusted proxy (``server.trusted_proxies``).  The first address that is not a trusted proxy
is the client.  Without trusted proxies the header is ignored.

Pure: no I/O.  A malformed entry stops the walk at the proxy that passed it on, so a client
cannot hide behind garbage.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from imapjmap.credentials import ClientAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``server.trusted_proxies`` entries (addresses or CIDR networks) as networks.

    Raises:
        ValueError: an entry is neither.
    """
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def client_address(
    peer: str | None,
    peer_port: int | None,
    forwarded_for: Sequence[str],
    trusted: Sequence[Network],
) -> ClientAddress | None:
    """The client of a request whose TCP peer is ``peer``, with its ``X-Forwarded-For``
    header lines ``forwarded_for``; None when the peer is not an IP address (a Unix socket).
    The port is known only when the peer is the client itself."""
    current = _address(peer)
    if current is None:
        return None
    if not _trusted(current, trusted):
        return ClientAddress(str(current), peer_port)
    port = peer_port
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",")]
    for hop in reversed(hops):
        previous = _address(hop)
        if previous is None:
            break
        current, port = previous, None
        if not _trusted(current, trusted):
            break
    return ClientAddress(str(current), port)


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[Network]
) -> bool:
    return any(address.version == net.version and address in net for net in trusted)
