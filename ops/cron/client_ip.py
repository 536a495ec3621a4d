"""Who is calling: the client address used for rate limits, the admin login's
throttle and "last used from".

REMOTE_ADDR unless trusted proxies are configured (settings.TRUSTED_PROXIES).
Then the right-most X-Forwarded-For entry that a trusted proxy did not add:
entries to its left were written by the client and prove nothing, so a spoofed
header cannot buy a fresh rate-limit bucket.

Addresses are compared in one form: an IPv4-mapped IPv6 address
(`::ffff:192.0.2.7`, what a dual-stack socket reports for an IPv4 client) is
the IPv4 address it carries. Throttles count a client under `bucket(address)`:
its IPv4 address, or the /64 network of its IPv6 address, since one host or
subscriber usually holds a whole /64 and could otherwise take a fresh bucket
for every request.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPV6_BUCKET_PREFIX = 64

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(address: str) -> _Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _normal(address: str) -> str:
    """The address in one canonical form (unchanged when it is not one)."""
    ip = _parse(address)
    return address if ip is None else str(ip)


def _valid(address: str) -> bool:
    return _parse(address) is not None


def _trusted(address: str) -> bool:
    ip = _parse(address)
    if ip is None:
        return False
    return any(ip in net for net in settings.TRUSTED_PROXY_NETWORKS)


def bucket(address: str) -> str:
    """What a throttle counts `address` under: an IPv4 address (IPv4-mapped
    ones unwrapped) as itself, an IPv6 address as the first address of its
    /64. Anything else is returned unchanged."""
    ip = _parse(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        keep = ipaddress.IPV6LENGTH - IPV6_BUCKET_PREFIX
        # From the integer, so that a scope id (fe80::1%eth0) does not matter.
        return str(ipaddress.IPv6Address(int(ip) >> keep << keep))
    return str(ip)


def throttle_address(request: HttpRequest) -> str:
    """The admin login throttle's client address (settings.AXES_CLIENT_IP_CALLABLE):
    the same client, and the same bucket, as the cron rate limit's."""
    return bucket(client_ip(request))


def client_ip(request: HttpRequest) -> str:
    remote = _normal(request.META.get("REMOTE_ADDR", "") or "0.0.0.0")
    hops = settings.TRUSTED_PROXY_HOPS
    networks = settings.TRUSTED_PROXY_NETWORKS
    if not hops and not networks:
        return remote
    forwarded = [
        _normal(part.strip())
        for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if part.strip()
    ]
    chain = [*forwarded, remote]  # left: claimed client ... right: our peer
    if hops:
        # The last `hops` addresses are our proxies; the one before them is
        # what the outermost proxy saw. A shorter chain means a proxy is
        # missing: trust nothing beyond the peer.
        if len(chain) <= hops:
            return remote
        candidate_index = len(chain) - 1 - hops
    else:
        if not _trusted(remote):
            return remote
        candidate_index = len(chain) - 1
        while candidate_index > 0 and _trusted(chain[candidate_index]):
            candidate_index -= 1
    candidate = chain[candidate_index]
    # Garbage in the header: attribute the request to the proxy that wrote it.
    while not _valid(candidate) and candidate_index < len(chain) - 1:
        candidate_index += 1
        candidate = chain[candidate_index]
    return candidate if _valid(candidate) else remote
