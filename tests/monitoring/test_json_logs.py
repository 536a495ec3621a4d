"""LOG_FORMAT=json: one JSON object a line, with the run id, queue and job id
of the drain and job that wrote it."""

from __future__ import annotations

import json
import logging

import pytest
from rq import Queue as RQQueue

from ops.logcontext import ContextFilter, bind, log_context, scoped
from ops.models import DrainRun


def json_lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


@pytest.mark.django_db(transaction=True)
def test_a_jobs_log_line_carries_the_run_queue_and_job(manage_py, rq_client):
    # The job is logging.warning itself: what a job's own logging looks like.
    job = RQQueue("dsar-jobs", connection=rq_client).enqueue(
        "logging.warning", "hello from %s", "a job"
    )
    done = manage_py("drain", "--json", env={"LOG_FORMAT": "json"})
    assert done.returncode == 0, done.stderr
    run = DrainRun.objects.get()
    lines = json_lines(done.stderr)
    hello = [line for line in lines if line.get("message") == "hello from a job"]
    assert len(hello) == 1, done.stderr
    line = hello[0]
    assert line["level"] == "WARNING"
    assert line["logger"] == "root"
    assert line["time"].startswith(str(run.started.year))
    assert line["run_id"] == str(run.public_id)
    assert line["queue"] == "dsar-jobs"
    assert line["job_id"] == job.id
    assert line["worker"].startswith(run.worker_prefix)
    # Every line on stderr is JSON (nothing printed as text around them).
    assert all(raw.startswith("{") for raw in done.stderr.splitlines() if raw)


@pytest.mark.django_db(transaction=True)
def test_text_stays_the_default(manage_py, rq_client):
    RQQueue("dsar-jobs", connection=rq_client).enqueue("logging.warning", "plain")
    done = manage_py("drain", "--json", env={"LOG_FORMAT": ""})
    assert done.returncode == 0, done.stderr
    assert " WARNING root plain" in done.stderr
    assert json_lines(done.stderr) == []


def test_the_context_ends_with_its_block_and_its_scope(caplog):
    logger = logging.getLogger("tests.logcontext")
    caplog.handler.addFilter(ContextFilter())

    @scoped
    def job() -> None:
        bind(job_id="j1")
        logger.warning("inside the job")

    with log_context(run_id="r1", queue="q"):
        job()
        logger.warning("after the job")
    logger.warning("after the run")
    inside, after_job, after_run = caplog.records
    assert (inside.run_id, inside.queue, inside.job_id) == ("r1", "q", "j1")
    assert (after_job.run_id, after_job.queue) == ("r1", "q")
    assert not hasattr(after_job, "job_id")
    assert not hasattr(after_run, "run_id")


def test_an_unknown_field_is_refused():
    with pytest.raises(ValueError, match="unknown log context fields: user"):
        bind(user="x")
