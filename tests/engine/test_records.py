"""Per-job records: the `record` line, its parser, the writer, and the RQ
executor's lines against a real redis-server."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sys
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from ops.engine import children, records
from ops.engine.drain_worker import DrainWorker
from ops.engine.records import (
    RecordWriter,
    exception_fields,
    parse_record,
    record_line,
)
from ops.jobs import CanaryFailure
from ops.models import DrainRun, JobRecord, Source
from ops.usage.redis_client import CommandMeter, make_client

STARTED = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
ENDED = STARTED + timedelta(milliseconds=1500, microseconds=700)


def payload(line: str) -> str:
    assert line.startswith("record ")
    return line[len("record ") :]


def parsed(**overrides) -> dict:
    fields = {
        "job_id": "job-1",
        "queue": "batch-jobs",
        "func": "tests.jobs.add",
        "status": "finished",
        "started": STARTED,
        "ended": ENDED,
    }
    fields.update(overrides)
    data = parse_record(payload(record_line(**fields)))
    assert data is not None
    return data


# --- The line and its parser ---------------------------------------------------


def test_it_round_trips_a_failed_job_with_a_multiline_non_ascii_message():
    message = "première ligne\nseconde ligne\r\n\u2028fin — ✓ 🚀"
    line = record_line(
        job_id="0b6c1f0e-job",
        queue="dsar-jobs",
        func="ops.jobs.fail",
        status="failed",
        started=STARTED,
        ended=ENDED,
        exc_type="CanaryFailure",
        exc_message=message,
    )

    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    assert line.isascii()
    assert line.startswith("record {")
    assert parse_record(payload(line)) == {
        "job_id": "0b6c1f0e-job",
        "queue": "dsar-jobs",
        "func": "ops.jobs.fail",
        "status": "failed",
        "started": STARTED,
        "ended": ENDED,
        "duration_ms": 1500,
        "exc_type": "CanaryFailure",
        "exc_message": message,
    }


def test_it_round_trips_a_finished_job_and_keeps_the_line_compact():
    line = record_line(
        job_id="j",
        queue="q",
        func="",
        status="finished",
        started=STARTED,
        ended=ENDED,
    )
    assert ": " not in line and ", " not in line
    assert "exc_" not in line  # empty exception fields are left out
    data = parse_record(payload(line))
    assert data is not None
    assert data["func"] == data["exc_type"] == data["exc_message"] == ""
    assert data["status"] == "finished"


def test_times_are_iso_8601_utc_and_naive_ones_are_taken_as_utc():
    paris = STARTED.astimezone(timezone(timedelta(hours=1)))
    line = record_line(
        job_id="j",
        queue="q",
        func="f",
        status="finished",
        started=paris,
        ended=ENDED.replace(tzinfo=None),
    )
    raw = json.loads(payload(line))
    assert raw["started"] == "2026-03-01T12:00:00.123456+00:00"
    assert raw["ended"] == "2026-03-01T12:00:01.624156+00:00"
    data = parse_record(payload(line))
    assert data["started"] == STARTED and data["ended"] == ENDED


def test_missing_times_give_no_duration_and_clock_steps_back_give_zero():
    assert parsed(started=None)["duration_ms"] is None
    assert parsed(ended=None)["started"] == STARTED
    assert parsed(ended=None)["duration_ms"] is None
    assert parsed(ended=STARTED - timedelta(seconds=1))["duration_ms"] == 0


def test_it_cuts_long_values_to_their_columns():
    data = parsed(
        job_id="j" * 300,
        queue="q" * 300,
        func="f" * 300,
        status="failed",
        exc_type="T" * 300,
        exc_message="m" * 5000,
    )
    assert len(data["job_id"]) == 128
    assert len(data["queue"]) == 100
    assert len(data["func"]) == 255
    assert len(data["exc_type"]) == 200
    assert len(data["exc_message"]) == 2000
    # The parser cuts too, whoever wrote the line.
    raw = json.dumps({"job": "j", "queue": "q", "status": "failed", "func": "f" * 999})
    assert len(parse_record(raw)["func"]) == 255


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not json",
        "{",
        "null",
        "[]",
        '"finished"',
        "42",
        "{}",
        '{"queue":"q","status":"finished"}',  # no job id
        '{"job":"","queue":"q","status":"finished"}',
        '{"job":"j","status":"finished"}',  # no queue
        '{"job":"j","queue":"q"}',  # no status
        '{"job":"j","queue":"q","status":"exploded"}',
        '{"job":"j","queue":"q","status":["failed"]}',
        '{"job":7,"queue":"q","status":"finished"}',
        '{"job":"j","queue":"q","status":"finished","func":3}',
        '{"job":"j","queue":"q","status":"failed","exc_type":{}}',
        '{"job":"j","queue":"q","status":"failed","exc_message":false}',
        '{"job":"j","queue":"q","status":"finished","started":"yesterday"}',
        '{"job":"j","queue":"q","status":"finished","ended":1700000000}',
        "[" * 100_000,
        "\udcff",
    ],
)
def test_malformed_payloads_give_none(text):
    assert parse_record(text) is None


def test_it_never_raises_on_non_text():
    assert parse_record(None) is None  # type: ignore[arg-type]
    assert parse_record(b"\xff") is None  # type: ignore[arg-type]


def test_the_statuses_and_sizes_agree_with_the_model():
    # records.py spells them out (children load it before Django is set up).
    assert set(JobRecord.Status.values) == records.STATUSES
    field = JobRecord._meta.get_field
    assert field("job_id").max_length == records.JOB_ID_MAX
    assert field("queue").max_length == records.QUEUE_MAX
    assert field("func").max_length == records.FUNC_MAX
    assert field("exc_type").max_length == records.EXC_TYPE_MAX
    assert field("worker").max_length == records.WORKER_MAX


# --- Exceptions -----------------------------------------------------------------


def test_it_names_an_exception_and_its_message():
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        caught = exc
        info = sys.exc_info()
    assert exception_fields(info) == ("ZeroDivisionError", "division by zero")
    assert exception_fields(caught) == ("ZeroDivisionError", "division by zero")
    assert exception_fields(
        (JobTimeoutException, JobTimeoutException("Task exceeded 1 s"), None)
    ) == ("JobTimeoutException", "Task exceeded 1 s")


def test_exception_fields_cope_with_odd_input():
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert exception_fields(None) == ("", "")
    assert exception_fields((None, None, None)) == ("", "")
    assert exception_fields(()) == ("", "")
    assert exception_fields((KeyError, None, None)) == ("KeyError", "")
    assert exception_fields(Unprintable()) == (
        "Unprintable",
        "<unprintable Unprintable>",
    )
    assert exception_fields(ValueError("x" * 9000))[1] == "x" * 2000


# --- The writer -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_writer_stores_a_batch_in_one_insert():
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    writer = RecordWriter(run=run, worker="kdrain.abc.batch-jobs.1")
    writer.add(parsed(job_id="a"))
    writer.add(
        parsed(job_id="b", status="failed", exc_type="E", exc_message="m"),
        worker="kdrain.abc.batch-jobs.2",
    )
    writer.add(parsed(job_id="c", status="retried"))
    assert len(writer) == 3

    with CaptureQueriesContext(connection) as queries:
        assert writer.flush() == 3
    inserts = [q for q in queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    assert len(writer) == 0 and writer.flush() == 0

    rows = list(run.jobs.order_by("id"))
    assert [r.job_id for r in rows] == ["a", "b", "c"]
    assert [r.status for r in rows] == ["finished", "failed", "retried"]
    assert [r.worker for r in rows] == [
        "kdrain.abc.batch-jobs.1",
        "kdrain.abc.batch-jobs.2",
        "kdrain.abc.batch-jobs.1",
    ]
    assert rows[0].duration_ms == 1500
    assert rows[0].started == STARTED and rows[0].ended == ENDED
    assert (rows[1].exc_type, rows[1].exc_message) == ("E", "m")


@pytest.mark.django_db
def test_the_writer_without_a_run_stores_records_without_one():
    writer = RecordWriter()
    writer.add(parsed())
    assert writer.flush() == 1
    assert JobRecord.objects.get().run is None


@pytest.mark.django_db
def test_a_database_error_is_logged_and_the_batch_dropped(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise DatabaseError("database is locked")

    writer = RecordWriter()
    writer.add(parsed())
    monkeypatch.setattr(JobRecord.objects, "bulk_create", broken)

    with caplog.at_level(logging.ERROR, logger="ops.engine.records"):
        assert writer.flush() == 0

    assert len(writer) == 0
    assert "could not write 1 job records" in caplog.text
    assert "database is locked" in caplog.text
    monkeypatch.undo()
    writer.add(parsed(job_id="next"))
    assert writer.flush() == 1
    assert list(JobRecord.objects.values_list("job_id", flat=True)) == ["next"]


@pytest.mark.django_db
def test_a_rejected_row_leaves_the_callers_transaction_usable(caplog):
    # A real error from the database (duration_ms is CHECKed >= 0), inside the
    # test's transaction: the writer's savepoint keeps that transaction alive.
    writer = RecordWriter()
    writer.add({**parsed(), "duration_ms": -1})
    with caplog.at_level(logging.ERROR, logger="ops.engine.records"):
        assert writer.flush() == 0
    assert "could not write" in caplog.text
    assert JobRecord.objects.count() == 0  # would raise if the transaction broke
    writer.add(parsed())
    assert writer.flush() == 1


@pytest.mark.django_db(transaction=True)
def test_records_of_a_run_deleted_meanwhile_are_dropped_not_raised(caplog):
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    writer = RecordWriter(run=run)
    writer.add(parsed())
    DrainRun.objects.filter(pk=run.pk).delete()

    with caplog.at_level(logging.ERROR, logger="ops.engine.records"):
        assert writer.flush() == 0

    assert "could not write 1 job records" in caplog.text
    assert JobRecord.objects.count() == 0
    again = RecordWriter()  # the connection is fine for the next batch
    again.add(parsed())
    assert again.flush() == 1


# --- The RQ executor's lines ----------------------------------------------------


def run_executor(queue: str, worker_name: str, timeout: float = 60) -> list[str]:
    """Run `python -m ops.engine.drain_worker` as the engine does; its lines."""
    tally = children.SharedTally()
    proc, reader = children.spawn(
        "ops.engine.drain_worker",
        [
            "--queue",
            queue,
            "--deadline",
            repr(time.time() + timeout),
            "--worker-name",
            worker_name,
        ],
        tally,
    )
    data = b""
    give_up = time.monotonic() + timeout + 10
    try:
        while True:
            left = give_up - time.monotonic()
            assert left > 0, "the executor did not finish"
            ready, _, _ = select.select([reader], [], [], left)
            if not ready:
                continue
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            data += chunk
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(reader)
        tally.close()
    return data.decode("utf-8").splitlines()


@pytest.mark.django_db
def test_the_rq_executor_reports_a_record_before_each_end(rq_client):
    queue = RQQueue("dsar-jobs", connection=rq_client)
    ok = queue.enqueue("tests.jobs.add", 1, 2)
    canary = queue.enqueue("ops.jobs.fail")
    zero = queue.enqueue("operator.truediv", 1, 0)
    retried_now = queue.enqueue("ops.jobs.fail", retry=Retry(max=1))
    retried_later = queue.enqueue("ops.jobs.fail", retry=Retry(max=1, interval=3600))
    timed_out = queue.enqueue("ops.jobs.sleep", 5000, job_timeout=1)
    worker = "kdrain.test.dsar-jobs.1"

    lines = run_executor("dsar-jobs", worker)

    # The existing protocol is unchanged; a record sits between start and end.
    assert lines[-1].split()[0] == "done"
    body = lines[:-1]
    assert len(body) == 3 * 7  # six jobs, one of them run twice
    found = []
    for start, record, end in zip(body[0::3], body[1::3], body[2::3], strict=True):
        job_id = start.split()[1]
        assert start == f"start {job_id}"
        assert end.split()[:2] == ["end", job_id]
        data = parse_record(payload(record))
        assert data is not None and data["job_id"] == job_id
        assert data["queue"] == "dsar-jobs"
        assert end.split()[2] == ("ok" if data["status"] == "finished" else "failed")
        assert data["started"] <= data["ended"]
        assert data["duration_ms"] is not None
        found.append(data)

    outcome = [(d["job_id"], d["status"], d["exc_type"]) for d in found]
    assert outcome == [
        (ok.id, "finished", ""),
        (canary.id, "failed", "CanaryFailure"),
        (zero.id, "failed", "ZeroDivisionError"),
        (retried_now.id, "retried", "CanaryFailure"),
        (retried_later.id, "retried", "CanaryFailure"),
        (timed_out.id, "failed", "JobTimeoutException"),
        (retried_now.id, "failed", "CanaryFailure"),  # its one retry, failed
    ]
    by_id = {d["job_id"]: d for d in found}
    assert by_id[ok.id]["func"] == "tests.jobs.add"
    assert by_id[zero.id]["func"] == "operator.truediv"
    assert by_id[zero.id]["exc_message"] == "division by zero"
    assert by_id[canary.id]["exc_message"] == "canary job failed on purpose"
    assert "timeout" in by_id[timed_out.id]["exc_message"]
    assert 900 <= by_id[timed_out.id]["duration_ms"] < 5000

    # What the engine will do with them: one insert, attached to the run.
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    writer = RecordWriter(run=run, worker=worker)
    for data in found:
        writer.add(data)
    assert writer.flush() == 7
    assert run.jobs.filter(status="failed").count() == 4
    assert set(run.jobs.values_list("worker", flat=True)) == {worker}


def test_building_a_record_sends_no_redis_command(rq_client, wire):
    # The executor builds the line from the job it already holds: count what
    # that costs on a metered client, as the child's own.
    queue = RQQueue("batch-jobs", connection=rq_client)
    done = queue.enqueue("tests.jobs.add", 1, 2)
    failed = queue.enqueue("ops.jobs.fail")
    run_executor("batch-jobs", "kdrain.test.batch-jobs.1")
    meter = CommandMeter(Source.DRAIN_JOBS, record_usage=False)
    client = make_client(meter)
    try:
        worker = DrainWorker(
            [RQQueue("batch-jobs", connection=client)],
            name="kdrain.test.batch-jobs.2",
            connection=client,
            deadline=time.time() + 60,
            report=io.StringIO(),
            meter=meter,
            prepare_for_work=False,
        )
        rq_queue = worker.queues[0]
        jobs = [Job.fetch(j.id, connection=client) for j in (done, failed)]
        wire.reset()
        before = meter.total

        lines = [worker._record(jobs[0], rq_queue, JobStatus.FINISHED)]
        try:
            raise CanaryFailure("canary job failed on purpose")
        except CanaryFailure:
            worker._exc_info = sys.exc_info()
        lines.append(worker._record(jobs[1], rq_queue, JobStatus.FAILED))

        assert meter.total == before
        assert wire.snapshot() == {}
    finally:
        client.close()
    first, second = (parse_record(payload(line)) for line in lines)
    assert (first["status"], first["func"]) == ("finished", "tests.jobs.add")
    assert first["duration_ms"] is not None
    assert (second["status"], second["exc_type"]) == ("failed", "CanaryFailure")
