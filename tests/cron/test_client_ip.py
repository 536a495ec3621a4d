from __future__ import annotations

import ipaddress

import pytest
from django.test import RequestFactory

from ops.cron.client_ip import bucket, client_ip


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


def test_an_ipv4_mapped_peer_is_its_ipv4_address(proxies):
    # What a dual-stack socket reports for an IPv4 client.
    assert client_ip(request("::ffff:198.51.100.9")) == "198.51.100.9"


def test_an_ipv4_mapped_proxy_is_trusted_by_its_ipv4_network(proxies):
    proxies(networks="10.0.0.0/8")
    assert client_ip(request("::ffff:10.0.0.5", "203.0.113.9")) == "203.0.113.9"
    assert client_ip(request("10.0.0.5", "::ffff:203.0.113.9")) == "203.0.113.9"


def test_ipv6_addresses_come_out_in_one_form(proxies):
    assert client_ip(request("2001:DB8:0:0::7")) == "2001:db8::7"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
        ("2001:db8:1:2::1", "2001:db8:1:2::"),
        ("2001:db8:1:3::1", "2001:db8:1:3::"),
        ("fe80::1%eth0", "fe80::"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_a_throttle_counts_ipv4_by_address_and_ipv6_by_64(address, expected):
    assert bucket(address) == expected
