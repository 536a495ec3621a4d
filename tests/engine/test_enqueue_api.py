"""The lean enqueue API: exact costs on the wire, jobs RQ reads and runs like
its own, and what it refuses."""

from __future__ import annotations

import pytest
import redis
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus
from rq.worker import SimpleWorker

from ops.engine.enqueue import (
    JobSpec,
    enqueue,
    enqueue_many,
    forget_registered_queues,
)
from ops.models import QuotaIncident
from ops.usage.metering import recorder
from ops.usage.quota_errors import is_quota_exhausted
from ops.usage.redis_client import CommandMeter, close_client, make_client

pytestmark = pytest.mark.django_db

QUEUE = "batch-jobs"
LIST = "rq:queue:batch-jobs"


@pytest.fixture(autouse=True)
def _fresh_registrations():
    # Every test starts on a flushed Redis: the SADD rq:queues is due again.
    forget_registered_queues()
    yield
    forget_registered_queues()


def billed_since_reset(wire) -> dict[str, int]:
    sent = wire.snapshot()
    sent.pop("AUTH", None)  # the private server's password: not billed
    return dict(sent)


# --- costs on the wire ----------------------------------------------------


def test_it_costs_3_commands_the_first_time_and_2_per_job_afterwards(wire):
    enqueue(QUEUE, "tests.jobs.add", 1, 2)
    assert billed_since_reset(wire) == {"SADD": 1, "HSET": 1, "RPUSH": 1}
    assert wire.billed() == 3

    for expected_total in (2, 2, 2):
        wire.reset()
        enqueue(QUEUE, "tests.jobs.add", 1, 2)
        assert billed_since_reset(wire) == {"HSET": 1, "RPUSH": 1}
        assert wire.billed() == expected_total


def test_it_registers_each_queue_once(wire, raw_redis):
    enqueue(QUEUE, "tests.jobs.add", 1, 2)
    wire.reset()
    enqueue("dsar-jobs", "tests.jobs.add", 1, 2)
    assert wire.billed() == 3  # another queue: its own SADD
    wire.reset()
    enqueue("dsar-jobs", "tests.jobs.add", 1, 2)
    enqueue(QUEUE, "tests.jobs.add", 1, 2)
    assert wire.billed() == 4
    assert {q.name for q in RQQueue.all(connection=raw_redis)} == {
        QUEUE,
        "dsar-jobs",
    }


def test_it_costs_one_more_command_with_a_ttl(wire, raw_redis):
    enqueue(QUEUE, "tests.jobs.add", 1, 2)
    wire.reset()
    job = enqueue(QUEUE, "tests.jobs.add", 1, 2, ttl=600)
    assert billed_since_reset(wire) == {"HSET": 1, "EXPIRE": 1, "RPUSH": 1}
    assert wire.billed() == 3
    assert 0 < raw_redis.ttl(job.key) <= 600


def test_it_costs_about_one_command_per_job_in_a_batch(wire, raw_redis):
    specs = [JobSpec("tests.jobs.add", (i, 1)) for i in range(100)]
    jobs = enqueue_many(QUEUE, specs)
    assert billed_since_reset(wire) == {"SADD": 1, "HSET": 100, "RPUSH": 1}
    assert wire.billed() == 102

    wire.reset()
    jobs += enqueue_many(QUEUE, specs)
    assert billed_since_reset(wire) == {"HSET": 100, "RPUSH": 1}
    assert wire.billed() == 101 <= 1.1 * 100

    assert raw_redis.lrange(LIST, 0, -1) == [job.id.encode() for job in jobs]


def test_a_big_batch_pushes_once_per_500_jobs(wire, raw_redis):
    enqueue_many(QUEUE, [JobSpec("tests.jobs.add", (1, 2))] * 1200)
    assert billed_since_reset(wire) == {"SADD": 1, "HSET": 1200, "RPUSH": 3}
    assert raw_redis.llen(LIST) == 1200


def test_a_mixed_batch_pushes_each_end_once(wire):
    enqueue_many(
        QUEUE,
        [
            JobSpec("tests.jobs.add", (1, 2)),
            JobSpec("tests.jobs.add", (3, 4), at_front=True),
            JobSpec("tests.jobs.add", (5, 6), ttl=60),
        ],
    )
    assert billed_since_reset(wire) == {
        "SADD": 1,
        "HSET": 3,
        "EXPIRE": 1,
        "RPUSH": 1,
        "LPUSH": 1,
    }


def test_an_empty_batch_sends_nothing(wire):
    assert enqueue_many(QUEUE, []) == []
    assert wire.total == 0


def test_its_commands_are_metered_as_enqueue_unless_the_caller_brings_a_client(
    raw_redis,
):
    recorder.discard()
    enqueue(QUEUE, "tests.jobs.add", 1, 2)
    pending = recorder.pending()
    assert {source for source, _ in pending} == {"enqueue"}
    assert sum(billed for billed, _ in pending.values()) == 3

    recorder.discard()
    meter = CommandMeter("other", record_usage=False)
    client = make_client(meter)
    try:
        enqueue(QUEUE, "tests.jobs.add", 1, 2, client=client)
        enqueue_many(QUEUE, [JobSpec("tests.jobs.add", (1, 2))] * 3, client=client)
        assert client.ping()
    finally:
        close_client(client)
    assert recorder.pending() == {}
    # One AUTH: the caller's connection was never closed under it.
    assert meter.by_command == {"AUTH": 1, "HSET": 4, "RPUSH": 2, "PING": 1}
    assert raw_redis.llen(LIST) == 5


# --- what RQ sees -----------------------------------------------------------


OPTION_SETS = [
    pytest.param({}, {}, id="defaults"),
    pytest.param(
        {
            "kwargs": {"b": 2},
            "job_id": "{}-job",
            "result_ttl": 300,
            "failure_ttl": 900,
            "ttl": 600,
            "description": "adds two numbers",
            "meta": {"tenant": "acme", "n": 1},
            "retry": Retry(max=3, interval=[10, 30]),
        },
        {"timeout": 45},
        id="every-option",
    ),
]


@pytest.mark.parametrize(("common", "timeout"), OPTION_SETS)
def test_it_writes_the_hash_rq_writes(common, timeout, rq_client, raw_redis):
    ours_opts = dict(common)
    theirs_opts = dict(common)
    if "job_id" in common:
        ours_opts["job_id"] = common["job_id"].format("ours")
        theirs_opts["job_id"] = common["job_id"].format("theirs")
    if timeout:
        ours_opts["timeout"] = timeout["timeout"]
        theirs_opts["job_timeout"] = timeout["timeout"]
    args = (1,) if "kwargs" in common else (1, 2)

    if "kwargs" in theirs_opts:  # RQ's explicit form: args= with kwargs=
        theirs_opts["args"] = args
        theirs_args: tuple = ()
    else:
        theirs_args = args
    theirs = RQQueue(QUEUE, connection=rq_client).enqueue(
        "tests.jobs.add", *theirs_args, **theirs_opts
    )
    ours = enqueue(QUEUE, "tests.jobs.add", *args, **ours_opts)

    # The hashes as stored: the same fields, the same values but for the
    # moments they were written.
    stored_theirs = raw_redis.hgetall(theirs.key)
    stored_ours = raw_redis.hgetall(ours.key)
    assert stored_ours.keys() == stored_theirs.keys()
    moments = {b"created_at", b"enqueued_at"}
    assert {k: v for k, v in stored_ours.items() if k not in moments} == {
        k: v for k, v in stored_theirs.items() if k not in moments
    }

    # And what RQ's public API reads back.
    a = Job.fetch(theirs.id, connection=raw_redis)
    b = Job.fetch(ours.id, connection=raw_redis)
    dict_a, dict_b = a.to_dict(), b.to_dict()
    assert dict_a.keys() == dict_b.keys()
    for key in dict_a.keys() - {"created_at", "enqueued_at"}:
        assert dict_a[key] == dict_b[key], key
    assert b.get_status() == a.get_status() == JobStatus.QUEUED
    for attr in (
        "func_name",
        "args",
        "kwargs",
        "meta",
        "timeout",
        "result_ttl",
        "failure_ttl",
        "ttl",
        "retries_left",
        "retry_intervals",
        "description",
        "origin",
    ):
        assert getattr(b, attr) == getattr(a, attr), attr
    assert b.enqueued_at is not None
    assert abs((b.enqueued_at - a.enqueued_at).total_seconds()) < 5
    if "ttl" in common:
        assert raw_redis.ttl(ours.key) > 0
        assert raw_redis.ttl(theirs.key) > 0
    else:
        assert raw_redis.ttl(ours.key) == raw_redis.ttl(theirs.key) == -1
    # Both are queued, RQ's first.
    assert RQQueue(QUEUE, connection=raw_redis).get_job_ids() == [theirs.id, ours.id]


def test_it_returns_jobs_like_rq_does(raw_redis):
    job = enqueue(QUEUE, "tests.jobs.add", 1, 2, job_id="my-id", meta={"k": "v"})
    assert isinstance(job, Job)
    assert job.id == "my-id"
    assert job.origin == QUEUE
    assert job.get_status(refresh=False) == JobStatus.QUEUED
    assert job.meta == {"k": "v"}
    assert job.timeout == RQQueue.DEFAULT_TIMEOUT


def test_it_takes_callables_as_well_as_dotted_paths(raw_redis):
    from tests.jobs import add

    job = enqueue(QUEUE, add, 1, 2)
    assert Job.fetch(job.id, connection=raw_redis).func_name == "tests.jobs.add"


def test_at_front_puts_jobs_in_rq_s_order(rq_client, raw_redis):
    rq = RQQueue(QUEUE, connection=rq_client)
    first = enqueue(QUEUE, "tests.jobs.add", 1, 0)
    second = enqueue(QUEUE, "tests.jobs.add", 2, 0)
    front = enqueue(QUEUE, "tests.jobs.add", 3, 0, at_front=True)
    assert rq.get_job_ids() == [front.id, first.id, second.id]


def test_a_batch_at_front_matches_rq_s_enqueue_many(rq_client, raw_redis):
    specs = [(i, i % 2 == 1) for i in range(6)]
    RQQueue("dsar-jobs", connection=rq_client).enqueue_many(
        [
            RQQueue.prepare_data("tests.jobs.add", (i, 0), at_front=front)
            for i, front in specs
        ]
    )
    enqueue_many(
        QUEUE, [JobSpec("tests.jobs.add", (i, 0), at_front=front) for i, front in specs]
    )

    def order(name: str) -> list[tuple]:
        ids = RQQueue(name, connection=raw_redis).get_job_ids()
        return [Job.fetch(i, connection=raw_redis).args for i in ids]

    # Front jobs in reverse order, then the others in order.
    expected = [(5, 0), (3, 0), (1, 0), (0, 0), (2, 0), (4, 0)]
    assert order("dsar-jobs") == expected
    assert order(QUEUE) == expected


def test_a_plain_rq_worker_runs_its_jobs(raw_redis):
    single = enqueue(QUEUE, "tests.jobs.add", 1, kwargs={"b": 2})
    batch = enqueue_many(
        QUEUE,
        [
            JobSpec("tests.jobs.add", (10, 20)),
            JobSpec("ops.jobs.sleep", kwargs={"ms": 1}, at_front=True),
            JobSpec("ops.jobs.noop", ttl=600, meta={"why": "canary"}),
        ],
    )
    rq = RQQueue(QUEUE, connection=raw_redis)
    assert SimpleWorker([rq], connection=raw_redis).work(burst=True)
    results: dict[str, list] = {}
    for job in [single, *batch]:
        fetched = Job.fetch(job.id, connection=raw_redis)
        assert fetched.get_status() == JobStatus.FINISHED
        results.setdefault(fetched.func_name, []).append(fetched.return_value())
    assert results == {
        "tests.jobs.add": [3, 30],
        "ops.jobs.sleep": ["slept 1 ms"],
        "ops.jobs.noop": ["ok"],
    }
    assert rq.count == 0


def test_a_retry_gives_the_job_its_retries(raw_redis):
    job = enqueue(QUEUE, "ops.jobs.fail", retry=Retry(max=2))
    fetched = Job.fetch(job.id, connection=raw_redis)
    assert fetched.retries_left == 2
    assert fetched.retry_intervals == [0]

    # A plain worker retries it twice, then fails it.
    rq = RQQueue(QUEUE, connection=raw_redis)
    SimpleWorker([rq], connection=raw_redis).work(burst=True)
    fetched = Job.fetch(job.id, connection=raw_redis)
    assert fetched.get_status() == JobStatus.FAILED
    assert fetched.retries_left == 0


@pytest.mark.django_db(transaction=True)
def test_a_drain_runs_its_jobs(raw_redis):
    from ops.engine.drain import drain
    from ops.engine.drain_options import parse_options
    from ops.models import DrainRun

    jobs = enqueue_many(QUEUE, [JobSpec("tests.jobs.add", (i, 1)) for i in range(3)])
    jobs.append(enqueue("seed-jobs", "tests.jobs.add", 5, kwargs={"b": 5}))
    run = drain(trigger=DrainRun.Trigger.CLI, options=parse_options())
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.total_processed == 4
    results = [Job.fetch(job.id, connection=raw_redis).return_value() for job in jobs]
    assert results == [1, 2, 3, 10]


# --- errors ---------------------------------------------------------------


def test_an_unknown_queue_is_refused_before_anything_is_sent(wire):
    with pytest.raises(ValueError, match="unknown queue 'nope'; valid queues: "):
        enqueue("nope", "tests.jobs.add", 1, 2)
    with pytest.raises(ValueError, match="unknown queue 'nope'"):
        enqueue_many("nope", [JobSpec("tests.jobs.add", (1, 2))])
    assert wire.total == 0


@pytest.mark.parametrize(
    "option", ["depends_on", "enqueue_at", "enqueue_in", "on_success", "repeat"]
)
def test_it_refuses_what_only_rq_s_queue_enqueue_does(option, wire):
    with pytest.raises(TypeError, match=rf"does not support {option}:.*Queue\.enqueue"):
        enqueue(QUEUE, "tests.jobs.add", 1, 2, **{option: "x"})
    with pytest.raises(TypeError, match=rf"does not support {option}:.*Queue\.enqueue"):
        JobSpec("tests.jobs.add", (1, 2), **{option: "x"})
    assert wire.total == 0


def test_it_says_where_function_keyword_arguments_go():
    with pytest.raises(TypeError, match=r"b \(the job function's keyword .* kwargs="):
        enqueue(QUEUE, "tests.jobs.add", 1, b=2)
    with pytest.raises(TypeError, match=r"job_timeout \(use timeout=\)"):
        enqueue(QUEUE, "tests.jobs.add", 1, 2, job_timeout=5)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (lambda: JobSpec(42), TypeError),
        (lambda: JobSpec("tests.jobs.add", args="12"), TypeError),
        (lambda: JobSpec("tests.jobs.add", kwargs=[("b", 2)]), TypeError),
        (lambda: JobSpec("tests.jobs.add", retry=2), TypeError),
    ],
)
def test_it_checks_a_spec(spec, error):
    with pytest.raises(error):
        spec()


def test_rq_s_own_checks_apply_before_anything_is_sent(wire, raw_redis):
    with pytest.raises(ValueError, match="0 timeout is not allowed"):
        enqueue(QUEUE, "tests.jobs.add", 1, 2, timeout=0)
    with pytest.raises(ValueError, match="ttl must be greater than 0"):
        enqueue_many(
            QUEUE,
            [JobSpec("tests.jobs.add", (1, 2)), JobSpec("tests.jobs.add", ttl=-1)],
        )
    with pytest.raises(TypeError, match="JobSpec"):
        enqueue_many(QUEUE, [("tests.jobs.add", (1, 2))])
    assert wire.total == 0
    assert raw_redis.dbsize() == 0


def test_a_quota_error_propagates_unchanged_and_opens_an_incident(fault, raw_redis):
    fault.exhaust()
    with pytest.raises(redis.ResponseError) as excinfo:
        enqueue(QUEUE, "tests.jobs.add", 1, 2)
    assert is_quota_exhausted(excinfo.value)
    assert QuotaIncident.objects.get().source == "enqueue"
    assert raw_redis.dbsize() == 0

    # Registration is retried once the quota is back.
    fault.restore()
    fault.reset_counts()
    enqueue(QUEUE, "tests.jobs.add", 1, 2)
    assert fault.forwarded["SADD"] == 1
    assert raw_redis.llen(LIST) == 1


def test_an_unreachable_redis_raises_connection_error(settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(redis.ConnectionError):
        enqueue(QUEUE, "tests.jobs.add", 1, 2)
