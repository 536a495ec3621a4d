"""Shared fixtures: a private redis-server for the whole session (random port,
password, nothing on disk), flushed before every test, and a counting proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from bench.redis_server import PrivateRedis
from bench.wire_proxy import WireProxy


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    try:
        yield server
    finally:
        server.stop()


def _point_at(url: str) -> None:
    # Children of the drain engine read the environment; this process reads
    # settings. Both must agree.
    os.environ["REDIS_URL"] = url
    settings.REDIS_URL = url


@pytest.fixture(scope="session")
def raw_redis(redis_server: PrivateRedis) -> Iterator[redis.Redis]:
    """A plain client for arranging and inspecting state; not counted anywhere."""
    client = redis.Redis.from_url(redis_server.url())
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: PrivateRedis, raw_redis: redis.Redis) -> Iterator[None]:
    raw_redis.flushall()
    _point_at(redis_server.url())
    yield
    _point_at(redis_server.url())


@pytest.fixture
def wire(redis_server: PrivateRedis) -> Iterator[WireProxy]:
    """Route the project's Redis traffic through a counting proxy."""
    with WireProxy(redis_server.port) as proxy:
        _point_at(proxy.url(redis_server.password))
        yield proxy
    _point_at(redis_server.url())


@pytest.fixture
def rq_client(raw_redis: redis.Redis) -> redis.Redis:
    """What a plain `rq`/django-rq user would enqueue with."""
    return raw_redis
