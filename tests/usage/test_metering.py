"""Client-side metering: attributed per source, flushed to the database without
Redis, and matching what the Redis server itself counted."""

from __future__ import annotations

import pytest
from django.db.models import Sum

from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.engine.enqueue import enqueue_canaries
from ops.models import CommandUsage, DrainRun
from ops.usage.metering import recorder

pytestmark = pytest.mark.django_db(transaction=True)

CRON_SECRET = "metering-test-cron-secret-0123456789"


@pytest.fixture(autouse=True)
def clean_recorder(settings):
    settings.CRON_SECRET = CRON_SECRET
    settings.CRON_RATE_LIMIT_PER_MINUTE = 1000
    recorder.discard()
    yield
    recorder.discard()


def server_calls(raw_redis) -> int:
    stats = raw_redis.info("commandstats")
    return sum(v["calls"] for v in stats.values())


def usage() -> dict[str, tuple[int, int]]:
    rows = CommandUsage.objects.values("source").annotate(
        billed=Sum("commands"), unbilled=Sum("unbilled")
    )
    return {r["source"]: (r["billed"], r["unbilled"]) for r in rows}


def run_drain() -> DrainRun:
    return drain(trigger=DrainRun.Trigger.CLI, options=parse_options())


def test_a_mixed_workload_matches_the_servers_own_count_within_1_percent(
    raw_redis, admin_client, client
):
    before = server_calls(raw_redis)
    for _ in range(5):
        run_drain()  # idle ticks
    enqueue_canaries("batch-jobs", kind="noop", count=120)
    enqueue_canaries("dsar-jobs", kind="fail", count=3)
    enqueue_canaries("seed-jobs", kind="noop", count=7)
    run_drain()  # with jobs: parent and child processes
    for _ in range(3):
        assert admin_client.get("/admin/ops/queue/").status_code == 200
    assert (
        client.get("/api/v1/cron/status", HTTP_X_CRON_TOKEN=CRON_SECRET).status_code
        == 200
    )
    run_drain()
    recorder.flush()
    # The INFO call that took `before` is counted by the server too.
    served = server_calls(raw_redis) - before - 1
    metered = sum(billed + unbilled for billed, unbilled in usage().values())
    assert served > 500
    assert abs(metered - served) <= served * 0.01, (metered, served)


def test_commands_are_attributed_to_their_source(admin_client, client):
    run_drain()
    recorder.flush()
    assert usage() == {"drain-check": (1, 1)}  # EXISTS, and AUTH (unbilled)

    enqueue_canaries("batch-jobs", kind="noop", count=2)
    run = run_drain()
    admin_client.get("/admin/ops/queue/")
    client.get("/api/v1/cron/status", HTTP_X_CRON_TOKEN=CRON_SECRET)
    recorder.flush()
    by_source = usage()
    # One pipeline: SADD (first use of the queue), 2 x HSET, RPUSH; unbilled:
    # AUTH.
    assert by_source["enqueue"] == (4, 1)
    # The idle drain's EXISTS; the busy drain's EXISTS and its look (5 LLEN,
    # 5 ZRANGEBYSCORE, an EXISTS over the intermediate lists).
    assert by_source["drain-check"][0] == 1 + 1 + 5 + 5 + 1
    # Everything else this drain sent is job work.
    assert by_source["drain-jobs"][0] == run.redis_commands - 12
    assert by_source["console"][0] == 4 * 5
    assert by_source["api"][0] == 4 * 5


def test_counts_land_in_hourly_rows_and_add_up_across_flushes():
    recorder.add("worker", 5, 1, ts=7200.0 + 10)
    recorder.add("worker", 2, 0, ts=7200.0 + 3599)
    recorder.add("worker", 1, 0, ts=7200.0 + 3600)
    recorder.flush()
    recorder.add("worker", 10, 0, ts=7200.0 + 20)
    recorder.flush()
    rows = list(
        CommandUsage.objects.order_by("hour").values_list(
            "hour", "commands", "unbilled"
        )
    )
    assert [(h.timestamp(), c, u) for h, c, u in rows] == [
        (7200.0, 17, 1),
        (10800.0, 1, 0),
    ]


def test_a_flush_that_fails_keeps_the_counts_for_the_next(monkeypatch):
    from django.db import DatabaseError

    import ops.usage.metering

    recorder.add("other", 3)

    def broken(*args, **kwargs):
        raise DatabaseError("down")

    monkeypatch.setattr(ops.usage.metering, "_increment", broken)
    assert recorder.flush() == 0
    monkeypatch.undo()
    assert recorder.flush() == 3
    assert usage() == {"other": (3, 0)}


def test_a_process_flushes_its_counts_at_exit(manage_py):
    result = manage_py("enqueue", "retrain-jobs", "--count", "4")
    assert result.returncode == 0, result.stderr
    # SADD, 4 x HSET, RPUSH; AUTH unbilled.
    assert usage() == {"enqueue": (6, 1)}
