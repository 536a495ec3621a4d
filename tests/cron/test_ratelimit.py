"""The database rate limit: exact, per client, and before the token check."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from ops.cron import ratelimit
from ops.models import RateBucket

URL = "/api/v1/cron/drain-queues"


@pytest.mark.django_db
def test_it_admits_the_limit_then_refuses_with_a_retry_after():
    now = 1_000_000.0
    decisions = [ratelimit.hit("k", per_minute=12, now=now) for _ in range(13)]
    assert [d.allowed for d in decisions] == [True] * 12 + [False]
    assert decisions[-1].retry_after_s == 5


@pytest.mark.django_db
def test_it_refills_one_request_per_interval():
    now = 1_000_000.0
    for _ in range(12):
        ratelimit.hit("k", per_minute=12, now=now)
    assert not ratelimit.hit("k", per_minute=12, now=now + 4.9).allowed
    assert ratelimit.hit("k", per_minute=12, now=now + 5.0).allowed
    assert not ratelimit.hit("k", per_minute=12, now=now + 5.0).allowed


@pytest.mark.django_db
def test_a_burst_across_a_minute_boundary_gets_no_second_allowance():
    # A fixed window would admit 12 at :59 and 12 more at :00.
    edge = 1_000_020.0 - 0.5
    admitted = sum(
        ratelimit.hit("k", per_minute=12, now=edge).allowed for _ in range(12)
    )
    admitted += sum(
        ratelimit.hit("k", per_minute=12, now=edge + 1).allowed for _ in range(12)
    )
    assert admitted == 12


@pytest.mark.django_db
def test_clients_have_separate_buckets():
    now = 1_000_000.0
    for _ in range(12):
        ratelimit.hit("a", per_minute=12, now=now)
    assert not ratelimit.hit("a", per_minute=12, now=now).allowed
    assert ratelimit.hit("b", per_minute=12, now=now).allowed


@pytest.mark.django_db
def test_stale_buckets_are_pruned():
    ratelimit.hit("old", per_minute=12, now=1_000.0)
    ratelimit.hit("new", per_minute=12, now=1_000_000.0)
    assert ratelimit.prune(now=1_000_000.0) == 1
    assert list(RateBucket.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_hits_never_overshoot():
    barrier = threading.Barrier(10)
    results: list[bool] = []

    def burst() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(5):
                results.append(ratelimit.hit("shared", per_minute=12).allowed)
        finally:
            connection.close()

    threads = [threading.Thread(target=burst) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 50
    assert results.count(True) == 12


@pytest.mark.django_db(transaction=True)
def test_the_endpoint_limits_before_checking_the_token_and_spends_no_redis(
    client, settings, wire
):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 3
    codes = [
        client.post(URL, HTTP_X_CRON_TOKEN=f"guess-number-{i:04d}-xxxxxxxx").status_code
        for i in range(5)
    ]
    assert codes == [401, 401, 401, 429, 429]
    response = client.post(URL, HTTP_X_CRON_TOKEN="guess")
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"] == "rate_limited"
    assert wire.billed() == 0


@pytest.mark.django_db(transaction=True)
def test_a_spoofed_forwarded_for_buys_nothing(client, settings):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 2
    codes = [
        client.post(URL, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(4)
    ]
    assert codes == [401, 401, 429, 429]


@pytest.mark.django_db(transaction=True)
def test_behind_a_trusted_proxy_each_real_client_has_its_own_bucket(client, settings):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1
    settings.TRUSTED_PROXY_HOPS = 1
    first = client.post(URL, HTTP_X_FORWARDED_FOR="203.0.113.1")
    spoof = client.post(URL, HTTP_X_FORWARDED_FOR="9.9.9.9, 203.0.113.1")
    other = client.post(URL, HTTP_X_FORWARDED_FOR="203.0.113.2")
    assert (first.status_code, spoof.status_code, other.status_code) == (401, 429, 401)


@pytest.mark.django_db
def test_an_ipv4_client_and_its_ipv4_mapped_form_share_one_bucket(client, settings):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 2
    codes = [
        client.post(URL, REMOTE_ADDR=address).status_code
        for address in ("203.0.113.9", "::ffff:203.0.113.9", "::ffff:cb00:7109")
    ]
    assert codes == [401, 401, 429]


@pytest.mark.django_db
def test_ipv6_clients_are_limited_per_64(client, settings):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 3
    same_64 = [f"2001:db8:1:2::{i:x}" for i in range(1, 6)]
    codes = [client.post(URL, REMOTE_ADDR=a).status_code for a in same_64]
    assert codes == [401, 401, 401, 429, 429]
    # The neighbouring /64 is another client.
    assert client.post(URL, REMOTE_ADDR="2001:db8:1:3::1").status_code == 401


@pytest.mark.django_db
def test_behind_a_trusted_proxy_forwarded_ipv6_clients_are_limited_per_64(
    client, settings
):
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1
    settings.TRUSTED_PROXY_HOPS = 1
    first = client.post(URL, HTTP_X_FORWARDED_FOR="2001:db8:9:9::1")
    same_64 = client.post(URL, HTTP_X_FORWARDED_FOR="2001:db8:9:9:ffff::2")
    assert (first.status_code, same_64.status_code) == (401, 429)


def test_rate_limit_keys_name_the_bucket_not_the_address():
    assert ratelimit.bucket_key("drain_queues:::ffff:192.0.2.1") == (
        "drain_queues:192.0.2.1"
    )
    assert ratelimit.bucket_key("drain_queues:2001:db8::7") == "drain_queues:2001:db8::"
    assert ratelimit.bucket_key("k") == "k"
