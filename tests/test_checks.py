from __future__ import annotations

import pytest
from django.core.checks import run_checks

from ops.models import Queue

pytestmark = pytest.mark.django_db


def test_it_warns_when_no_queue_is_enabled():
    Queue.objects.update(enabled=False)
    ids = [m.id for m in run_checks(databases=["default"])]
    assert "ops.W001" in ids


def test_it_is_quiet_when_a_queue_is_enabled():
    ids = [m.id for m in run_checks(databases=["default"])]
    assert "ops.W001" not in ids


# --- Double consumption (ops.W002): only a drain that overlapped a worker ----------


def _live_worker(started):
    from ops.models import WorkerProcess

    return WorkerProcess.objects.create(
        name="kwork.h.1",
        role="dedicated",
        host="h",
        pid=1,
        state="idle",
        started=started,
    )


def _drain(started, finished):
    from ops.models import DrainRun

    return DrainRun.objects.create(
        trigger="cron",
        status="succeeded",
        total_processed=3,
        started=started,
        finished=finished,
    )


def _w002() -> list[str]:
    return [m.msg for m in run_checks(databases=["default"]) if m.id == "ops.W002"]


@pytest.fixture
def schedule_off():
    from ops.models import ConsoleSettings

    ConsoleSettings.objects.create(pk=1, schedule_enabled=False)


def test_a_drain_that_ended_before_the_worker_started_is_no_double_consumption(
    schedule_off,
):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    # Switched from cron drains to always-on: the last drain finished, then
    # the worker started.
    _drain(now - timedelta(minutes=10), now - timedelta(minutes=9))
    _live_worker(now - timedelta(minutes=5))
    assert _w002() == []


def test_a_drain_that_ended_after_the_worker_started_is_double_consumption(
    schedule_off,
):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    _live_worker(now - timedelta(minutes=5))
    _drain(now - timedelta(minutes=6), now - timedelta(minutes=4))
    [message] = _w002()
    assert "processed jobs while 1 always-on worker process(es)" in message


def test_a_drain_still_running_beside_a_worker_is_double_consumption(schedule_off):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    _live_worker(now - timedelta(minutes=5))
    _drain(now - timedelta(minutes=1), None)
    assert len(_w002()) == 1
