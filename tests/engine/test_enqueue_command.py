from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rq.job import Job

from ops.engine.enqueue import forget_registered_queues

pytestmark = pytest.mark.django_db


def test_it_enqueues_canary_jobs_a_plain_rq_worker_can_run(raw_redis):
    out = StringIO()
    call_command("enqueue", "batch-jobs", "--count", "3", "--json", stdout=out)
    body = json.loads(out.getvalue())
    assert body["queue"] == "batch-jobs"
    assert len(body["jobIds"]) == 3
    assert raw_redis.llen("rq:queue:batch-jobs") == 3
    job = Job.fetch(body["jobIds"][0], connection=raw_redis)
    assert job.func_name == "ops.jobs.noop"


def test_sleep_jobs_carry_their_duration_and_timeout(raw_redis):
    out = StringIO()
    call_command(
        "enqueue",
        "seed-jobs",
        "--kind",
        "sleep",
        "--sleep-ms",
        "250",
        "--timeout",
        "7",
        "--json",
        stdout=out,
    )
    job = Job.fetch(json.loads(out.getvalue())["jobIds"][0], connection=raw_redis)
    assert job.func_name == "ops.jobs.sleep"
    assert job.args == (250,)
    assert job.timeout == 7


def test_it_costs_one_command_per_job_plus_the_push(wire, raw_redis):
    forget_registered_queues()
    call_command("enqueue", "batch-jobs", "--count", "3", stdout=StringIO())
    sent = wire.snapshot()
    sent.pop("AUTH", None)
    # The first enqueue on the queue in this process adds it to rq:queues.
    assert sent == {"SADD": 1, "HSET": 3, "RPUSH": 1}

    wire.reset()
    call_command("enqueue", "batch-jobs", "--count", "600", stdout=StringIO())
    # One pipeline and one RPUSH per 500 jobs.
    assert wire.billed() == 600 + 2
    assert raw_redis.llen("rq:queue:batch-jobs") == 603


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown queue 'nope'; valid queues: batch-jobs"),
        (
            ["batch-jobs", "--kind", "explode"],
            "--kind must be one of noop, sleep, fail, crash",
        ),
        (["batch-jobs", "--count", "many"], "--count must be an integer, got 'many'"),
        (["batch-jobs", "--count", "0"], "--count must be at least 1, got 0"),
        (["batch-jobs", "--count", "100001"], "--count must be at most 100000"),
        (["batch-jobs", "--sleep-ms", "-1"], "--sleep-ms must be at least 0"),
        (["batch-jobs", "--timeout", "0"], "--timeout must be at least 1"),
    ],
)
def test_it_rejects_bad_input(args, message, raw_redis):
    with pytest.raises(CommandError) as excinfo:
        call_command("enqueue", *args)
    assert message in str(excinfo.value)
    assert raw_redis.dbsize() == 0


def test_it_says_when_redis_is_unreachable(settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(CommandError, match="Redis is unreachable"):
        call_command("enqueue", "batch-jobs")
