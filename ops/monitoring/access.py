"""Who may read the metrics without a token: METRICS_ALLOWED_IPS."""

from __future__ import annotations

import ipaddress

from django.conf import settings


def allowed_without_token(address: str) -> bool:
    """Is `address` (as ops/cron/client_ip.py resolved it: canonical, proxies
    applied) inside one of the METRICS_ALLOWED_IPS networks?"""
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
