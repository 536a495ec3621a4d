from __future__ import annotations

import ipaddress

import pytest
from django.test import RequestFactory

from ops.cron.client_ip import client_ip


def request(remote: str = "10.0.0.5", xff: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return RequestFactory().post("/api/v1/cron/drain-queues", **extra)


@pytest.fixture
def proxies(settings):
    def configure(hops: int = 0, networks: str = "") -> None:
        settings.TRUSTED_PROXY_HOPS = hops
        settings.TRUSTED_PROXY_NETWORKS = [
            ipaddress.ip_network(n, strict=False) for n in networks.split(",") if n
        ]

    configure()
    return configure


def test_without_trusted_proxies_the_header_is_ignored(proxies):
    assert client_ip(request("198.51.100.9", "1.2.3.4")) == "198.51.100.9"


def test_with_one_trusted_hop_the_entry_the_proxy_added_counts(proxies):
    proxies(hops=1)
    assert client_ip(request("10.0.0.5", "203.0.113.9")) == "203.0.113.9"


def test_a_spoofed_left_entry_is_ignored_with_a_hop_count(proxies):
    proxies(hops=1)
    # The client sent "X-Forwarded-For: 6.6.6.6"; the proxy appended the real one.
    assert client_ip(request("10.0.0.5", "6.6.6.6, 203.0.113.9")) == "203.0.113.9"


def test_a_missing_header_behind_a_hop_falls_back_to_the_peer(proxies):
    proxies(hops=1)
    assert client_ip(request("10.0.0.5")) == "10.0.0.5"


def test_with_cidrs_the_right_most_untrusted_entry_counts(proxies):
    proxies(networks="10.0.0.0/8,192.168.1.1/32")
    xff = "6.6.6.6, 203.0.113.9, 192.168.1.1"
    assert client_ip(request("10.0.0.5", xff)) == "203.0.113.9"


def test_an_untrusted_peer_cannot_set_the_header(proxies):
    proxies(networks="10.0.0.0/8")
    assert client_ip(request("198.51.100.1", "203.0.113.9")) == "198.51.100.1"


def test_garbage_in_the_header_is_attributed_to_the_proxy_that_wrote_it(proxies):
    proxies(hops=1)
    assert client_ip(request("10.0.0.5", "not-an-ip")) == "10.0.0.5"
    proxies(networks="10.0.0.0/8")
    assert client_ip(request("10.0.0.5", "garbage, 10.1.1.1")) == "10.1.1.1"


def test_ipv6_peers_work(proxies):
    proxies(networks="::1/128")
    assert client_ip(request("::1", "2001:db8::7")) == "2001:db8::7"
