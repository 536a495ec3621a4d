"""Who is calling: the client address used for rate limits and "last used from".

REMOTE_ADDR unless trusted proxies are configured (settings.TRUSTED_PROXIES).
Then the right-most X-Forwarded-For entry that a trusted proxy did not add:
entries to its left were written by the client and prove nothing, so a spoofed
header cannot buy a fresh rate-limit bucket.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in settings.TRUSTED_PROXY_NETWORKS)


def client_ip(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "") or "0.0.0.0"
    hops = settings.TRUSTED_PROXY_HOPS
    networks = settings.TRUSTED_PROXY_NETWORKS
    if not hops and not networks:
        return remote
    forwarded = [
        part.strip()
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
