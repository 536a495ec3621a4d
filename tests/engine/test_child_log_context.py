"""A drain's queue workers started by spawn (the web server's way, not fork)
write the run id on their JSON log lines, like forked ones."""

from __future__ import annotations

import json

import pytest
from rq import Queue as RQQueue

from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.models import DrainRun
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spawned_children_log_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the spawned children's own settings; this process keeps its own.
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("DATABASE_URL", database_url())
    # A run id left in this process's environment must not leak into a child.
    monkeypatch.setenv("KAIREON_LOG_RUN_ID", "not-this-run")


@pytest.mark.parametrize("executor", ["lean", "rq"])
def test_a_spawned_childs_log_lines_carry_the_run_id(
    settings, rq_client, capfd, spawned_children_log_json, executor
):
    settings.DRAIN_EXECUTOR = executor
    job = RQQueue("dsar-jobs", connection=rq_client).enqueue(
        "logging.warning", "hello from %s", "a spawned child"
    )
    run = drain(
        trigger=DrainRun.Trigger.CLI,
        options=parse_options(max_duration_ms=30_000, queues=["dsar-jobs"]),
        fork_children=False,
    )
    assert run.status == DrainRun.Status.SUCCEEDED, run.error
    err = capfd.readouterr().err
    lines = [json.loads(raw) for raw in err.splitlines() if raw.startswith("{")]
    hello = [line for line in lines if line["message"] == "hello from a spawned child"]
    assert len(hello) == 1, err
    assert hello[0]["run_id"] == str(run.public_id)
    assert hello[0]["queue"] == "dsar-jobs"
    assert hello[0]["job_id"] == job.id
