"""The application's Redis traffic, metered where we can: every connection
django-rq hands out in this project (RQ_QUEUES in kaireon/settings.py), and
redis-py clients made with the one-line factory `metered_redis`. Counted on a
real redis-server behind the counting proxy."""

from __future__ import annotations

import django_rq
import pytest
from django.db import transaction
from django.db.models import Sum

from ops.models import CommandUsage
from ops.usage.metering import recorder
from ops.usage.redis_client import metered_redis

pytestmark = pytest.mark.django_db(transaction=True)


def usage() -> dict[str, tuple[int, int]]:
    rows = CommandUsage.objects.values("source").annotate(
        billed=Sum("commands"), unbilled=Sum("unbilled")
    )
    return {r["source"]: (r["billed"], r["unbilled"]) for r in rows}


def test_a_django_rq_enqueue_is_booked_under_its_own_source_as_the_wire_counts(
    wire, raw_redis
):
    queue = django_rq.get_queue("batch-jobs")
    for i in range(10):
        queue.enqueue("tests.jobs.add", i, 1)
    django_rq.enqueue("tests.jobs.add", 2, 2)  # the "default" queue
    django_rq.get_connection("seed-jobs").llen("rq:queue:seed-jobs")
    recorder.flush()

    assert raw_redis.llen("rq:queue:batch-jobs") == 10
    assert raw_redis.llen("rq:queue:default") == 1
    # Every command on the wire is on the meter, under "django-rq" alone.
    assert usage() == {
        "django-rq": (wire.billed(), wire.total - wire.billed()),
    }
    # One shared pool: one connection, one AUTH, and no handshake (HELLO,
    # CLIENT SETINFO) however many clients django-rq built.
    wire_counts = wire.snapshot()
    assert wire_counts["AUTH"] == 1
    assert "HELLO" not in wire_counts and "CLIENT" not in wire_counts
    # RQ's enqueue: SADD in its own MULTI/EXEC, then MULTI, HSET status, HSET
    # job, RPUSH, EXEC = 8 billed a job; plus the LLEN.
    assert wire.billed() == 11 * 8 + 1


def test_a_django_rq_enqueue_deferred_to_the_commit_is_metered_too(wire):
    queue = django_rq.get_queue("batch-jobs")
    with transaction.atomic():
        queue.enqueue("tests.jobs.add", 1, 1)
        assert wire.billed() == 0  # django-rq waits for the commit
    recorder.flush()
    assert wire.billed() == 8
    assert usage()["django-rq"][0] == 8


def test_the_metered_factory_books_application_code_under_app(wire):
    client = metered_redis(decode_responses=True)
    client.set("greeting", "hello")
    assert client.get("greeting") == "hello"
    with client.pipeline() as pipe:  # MULTI, INCR, EXPIRE, EXEC
        pipe.incr("hits").expire("hits", 60).execute()
    recorder.flush()

    assert wire.billed() == 2 + 4
    assert usage() == {"app": (6, wire.total - 6)}
    assert "HELLO" not in wire.snapshot()


def test_the_factory_takes_a_source_of_the_list_only():
    with pytest.raises(ValueError, match="source must be one of"):
        metered_redis(source="my-app")
    assert metered_redis(source="django-rq") is not None


@pytest.mark.parametrize("option", ["protocol", "driver_info", "lib_name"])
def test_the_factory_refuses_options_that_bring_the_handshake_back(option):
    with pytest.raises(TypeError, match="no billed command"):
        metered_redis(**{option: 3})
